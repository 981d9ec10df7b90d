//! orderflow's projections.
//!
//! - [`model`]: pure `apply(state, event)` logic for inventory, payment, fulfilment and
//!   history.
//! - [`process`]: pure `decide(state, input)` logic of the order process and the stock
//!   group, which decide rather than describe.
//! - [`registry`]: the one list of projections: names, tables, views, events read.
//! - [`store`]: the SQL side for PostgreSQL and SQLite: migrations, the analyst views, and
//!   [`store::Store::apply_batch`], which applies a batch of log records and advances the
//!   stored offsets in one transaction (exactly-once effects).

/// A status kept as text in the database and in JSON: one definition gives the enum, its
/// stored text, parsing back, `Display`, serde and the OpenAPI schema.
macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

pub mod model;
pub mod process;
pub mod registry;
pub mod store;

pub use registry::ProjectionKind;
