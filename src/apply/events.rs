//! What the executor reports as it goes: [`Event`]s, sent to a [`Subscriber`]. The executor
//! only emits them; the command line's progress display subscribes to them and renders them
//! (`cli::progress`), and [`Silent`] drops them. The journal is written by the executor itself,
//! before side effects, not through events.
//!
//! Depends on [`crate::plan`] (the action of a step) only.

use std::time::Duration;

use crate::plan::Action;

/// One thing that happened during an apply, about one step (one service) of the plan.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The apply starts; it has `steps` steps (the plan's, in its order).
    Begin {
        /// How many steps the apply runs.
        steps: usize,
    },
    /// A step started.
    StepStarted {
        /// The service of the step.
        service: &'a str,
        /// What the step does to it.
        action: Action,
    },
    /// A running step reports what it is doing (an instance started, a consumer wired), for
    /// `--verbose`.
    Progress {
        /// The service of the step.
        service: &'a str,
        /// What it is doing, in a short sentence.
        message: String,
    },
    /// A step finished and did what it was to do.
    StepDone {
        /// The service of the step.
        service: &'a str,
        /// What the step did to it.
        action: Action,
        /// How long the step ran (wall clock).
        elapsed: Duration,
    },
    /// A step failed; the steps that depend on it are skipped.
    StepFailed {
        /// The service of the step.
        service: &'a str,
        /// Why, as the summary shows it.
        error: &'a str,
    },
    /// A step did not run, because a step it depends on failed.
    StepSkipped {
        /// The service of the step.
        service: &'a str,
    },
}

/// Whatever listens to an apply's events; called from the executor's worker threads, so it
/// must be `Sync` and return quickly.
pub trait Subscriber: Sync {
    /// Takes one event.
    fn on(&self, event: &Event<'_>);
}

/// Ignores everything (benchmarks, tests).
#[derive(Debug, Default)]
pub struct Silent;

impl Subscriber for Silent {
    fn on(&self, _: &Event<'_>) {}
}
