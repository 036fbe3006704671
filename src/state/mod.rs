//! Recorded state: the model of `state/<env>.json` and the stores that read and write it, and
//! what a refresh saw of the recorded instances ([`observed`]), the compressed backups
//! ([`backup`]) and the lock of an environment ([`lock`]).
//!
//! May depend on [`crate::spec`] and the leaves (diagnostic, error, time, the process checks);
//! never on providers, plans or apply.

pub mod backup;
pub mod lock;
pub mod model;
mod new_node;
pub mod observed;
mod pieces;
mod split;
pub mod store;

pub use model::{AppliedSpec, InstanceState, InstanceStatus, NodeState, ServiceState, State};
pub use new_node::NewNode;
pub use store::{FileStore, MemoryStore, StateStore};
