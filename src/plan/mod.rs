//! The plan: what apply would change, per service, and in which order.
//!
//! [`diff::plan`] computes it (pure), [`placement`] decides which node every new instance runs
//! on, [`render`] shows it to a person, [`converge::apply_model`] is the state it leads to.
//!
//! May depend on [`crate::repo`], [`crate::graph`], [`crate::state`], [`crate::spec`] and the
//! leaves; never on providers or apply.

pub mod converge;
pub mod diff;
pub mod model;
pub mod placement;
pub mod render;

pub use diff::{PlanInput, Planned, plan, spec_digest};
pub use model::{Action, Change, Plan};
