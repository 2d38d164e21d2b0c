//! Domain types shared by every layer: money, identifiers and provider states.
//!
//! Owns: validated newtypes. Must not: do I/O. Invariant: a value of one of these types is always
//! valid (constructors validate, serde goes through the same constructors).

/// An enum that is stored and shown by name (TEXT columns, reports): one table of variant ↔
/// name, from which `ALL` (declaration order), `as_str`, `parse` and `Display` are made, so a
/// name is written once. `parse` of an unknown name is `None` (never a silent default).
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The stored and shown name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stored name reads back as its variant, names are distinct, and an unknown name is
    /// refused (never a default).
    #[test]
    fn named_enums_round_trip() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            name: impl Fn(T) -> &'static str,
            parse: impl Fn(&str) -> Option<T>,
        ) {
            let mut seen = std::collections::HashSet::new();
            for &v in all {
                assert_eq!(parse(name(v)), Some(v));
                assert!(seen.insert(name(v)), "{} twice", name(v));
            }
            assert_eq!(parse("NO_SUCH_NAME"), None);
        }
        check(&RowState::ALL, RowState::as_str, RowState::parse);
        check(
            &ReconCategory::ALL,
            ReconCategory::as_str,
            ReconCategory::parse,
        );
        check(&RunKind::ALL, RunKind::as_str, RunKind::parse);
        check(&EventKind::ALL, EventKind::as_str, EventKind::parse);
    }
}
