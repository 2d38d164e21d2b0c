//! Servers run by this crate. `sim`: the stateful Starpay simulator (issue 3); `accept`: the
//! accept loop it shares with the notification receiver.
//!
//! Owns: listeners and their tasks. Must not: share anything with the client beyond
//! `starpay::{model, sign, codes}` and `domain`.

pub mod accept;
pub mod sim;
