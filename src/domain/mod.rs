//! Domain types shared by every layer: money, identifiers and provider states.
//!
//! Owns: validated newtypes. Must not: do I/O. Invariant: a value of one of these types is always
//! valid (constructors validate, serde goes through the same constructors).

pub mod category;
pub mod event;
pub mod ids;
pub mod money;
pub mod run_kind;
pub mod state;

pub use category::ReconCategory;
pub use event::EventKind;
pub use ids::{IdError, MchId, MsgId};
pub use money::{Centavos, MoneyError};
pub use run_kind::RunKind;
pub use state::{RowState, TrxState};
