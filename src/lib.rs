//! enact: plan and apply service choreographies.
//!
//! The pipeline, one module each:
//!
//! - [`repo`] finds the config repository and reads `enact.json`;
//! - [`spec`] parses `chor.json` and the overlays (with positions) and validates them;
//! - [`env`] merges an environment's overlay onto the base spec;
//! - [`graph`] orders services, providers before consumers, cycles as groups;
//! - [`state`] reads and writes the recorded state of an environment, atomically;
//! - [`plan`] diffs the effective spec against the state (a pure function) and renders it;
//! - [`cli`] turns arguments into one of these operations and its output.

pub mod apply;
pub mod cli;
pub mod diagnostic;
pub mod env;
pub mod error;
pub mod graph;
pub mod paint;
pub mod plan;
pub mod process;
pub mod provider;
pub mod repo;
pub mod spec;
pub mod state;
pub mod suggest;
pub mod time;
pub mod timing;

pub use error::{Error, Result};
