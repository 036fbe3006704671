//! The request for one node: what placement (at plan time) hands to a provider (at apply time).
//! It sits at the state level so that both the plan, which makes it, and the providers, which
//! carry it out, may use it; the node it becomes is recorded as a [`crate::state::NodeState`].
//!
//! It depends on the spec only (a node's memory class).

use crate::spec::Memory;

/// A node the plan creates: its id in the state, the account and provider that make it, and
/// what it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    /// The node's id in the state: `<account>-<n>` for a node a provider makes (e.g. `local-3`),
    /// `<account>-<address>` for a fixed host.
    pub id: String,
    /// The account of `enact.json` whose provider makes it.
    pub account: String,
    /// The kind of that provider: `local`, `ssh`, `simulated`, …
    pub provider: &'static str,
    /// The memory class of the instances placed on it (CHOReOS `resourceImpact.memory`).
    pub memory: Memory,
    /// The node size: what the account names for that memory class, or the memory class itself
    /// (e.g. `SMALL`).
    pub size: String,
    /// For fixed hosts (ssh) the host's address; made up by the provider otherwise.
    pub address: Option<String>,
    /// Whether it costs anything to create (false for an ssh host used the first time).
    pub provisioned: bool,
    /// The ports the instances placed on it listen on: a provider that picks addresses avoids
    /// one where another process already holds one of them.
    pub ports: Vec<u16>,
}
