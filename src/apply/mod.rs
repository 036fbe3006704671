//! Apply: carrying a plan out on real machines, in dependency order, without losing anything.
//!
//! - [`executor`] walks the plan's steps and drives the providers;
//! - [`journal`] records intents and outcomes so a killed apply can be replayed;
//! - [`events`] is what the executor reports, and the progress display;
//! - [`readiness`] waits until a new instance can serve before consumers are told of it;
//! - [`refresh`] looks at every recorded instance before a plan (what really runs).

pub mod events;
pub mod executor;
pub mod journal;
pub mod readiness;
pub mod refresh;
pub mod session;
pub mod untracked;
