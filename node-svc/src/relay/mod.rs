//! Block relay: the pure decision core ([`core::Relay`]) and a seeded
//! discrete-event simulator ([`sim`]) that runs the same core at scale.

pub mod core;
pub mod sim;

pub use self::core::{Action, BlockId, Relay, RelayConfig, RelayCounts};
