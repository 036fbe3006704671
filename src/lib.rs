//! enact: plan and apply service choreographies (CHOReOS ChorSpecs) the way Terraform plans and
//! applies infrastructure: a spec in a git repository, a plan that diffs it against the recorded
//! state, an apply that makes the nodes and instances and wires consumers to providers.
//!
//! # The pipeline, one module each
//!
//! - [`repo`] finds the config repository, reads `enact.json` ([`repo::settings`]) and makes an
//!   environment's effective spec (base spec and overlay merged, validated), and turns a CHOReOS
//!   deployment report into a recorded state ([`repo::import`]);
//! - [`spec`] is the choreography: its model, `chor.json` and overlays parsed with positions,
//!   the one overlay merge ([`spec::overlay`], RFC 7396), validation, and CHOReOS XML
//!   ([`spec::xml`]);
//! - [`env`](mod@env) moves configuration between environments (promote, merge, diff of overlays);
//! - [`graph`] orders services, providers before consumers, cycles as groups, and walks that
//!   order in parallel;
//! - [`state`] reads and writes the recorded state of an environment (lineage, serial),
//!   atomically, with its lock and backups;
//! - [`plan`] diffs the effective spec against the state (a pure function), places new
//!   instances on nodes and renders the plan;
//! - [`provider`] makes and removes nodes and instances (local processes, SSH hosts, EC2
//!   instances, simulated) and sends the calls that wire consumers to providers;
//! - [`apply`] carries a plan out through the providers in dependency order, journalling every
//!   step so a killed apply can be resumed;
//! - [`cli`] turns arguments into one of these operations and its output;
//! - the leaves, used by all: [`diagnostic`] (located errors), [`error`], [`mapped`] (large
//!   files mapped, not read), [`suggest`] ("did you mean"), [`paint`] (colour), [`time`],
//!   [`timing`], [`pages`] (huge pages for enact's own memory), and `process` (processes of
//!   this machine).
//!
//! # Who may use whom
//!
//! Dependencies point down this list, never up (paths such as `crate::state::…` in code count;
//! links in doc comments do not):
//!
//! - `cli` (and `main.rs`) may use everything;
//! - `env` may use repo, graph, state, spec and the leaves;
//! - `apply` may use plan, provider, repo, graph, state, spec and the leaves;
//! - `plan` may use repo, graph, state, spec and the leaves;
//! - `provider` may use repo, state, spec and the leaves (not plan, not apply);
//! - `repo` may use state, graph, spec and the leaves (not env);
//! - `graph` may use spec and the leaves;
//! - `state` may use spec and the leaves (not provider);
//! - `spec` may use the leaves only (not state, not repo);
//! - a leaf may use other leaves only.

#![warn(missing_docs)]
#![warn(clippy::too_many_lines)]

pub mod apply;
pub mod cli;
pub mod diagnostic;
pub mod env;
pub mod error;
pub mod graph;
pub mod mapped;
pub mod pages;
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
