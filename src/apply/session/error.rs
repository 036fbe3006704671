//! Why a session failed: [`SessionError`], which becomes the crate's [`crate::Error`] (with the
//! same text) at the command line.

use std::path::PathBuf;

use crate::apply::executor::StepError;
use crate::apply::journal::JournalError;
use crate::diagnostic::Diagnostic;

/// Why a session on an environment failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The lock of the environment could not be taken: another session holds it (the error
    /// names the holder and what to do), or the lock file cannot be written.
    #[error("{source}")]
    Locked {
        /// The environment.
        env: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// The recorded state could not be read or written (damaged, another history, a full
    /// disk): the error locates it and says what to do.
    #[error("{source}")]
    State {
        /// The environment.
        env: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// The journal could not be created, read or removed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The executor could not be made (an account with nodes is gone), or the work given to
    /// [`super::Session::run`] failed before it had a report.
    #[error(transparent)]
    Executor(#[from] StepError),
    /// The apply ran, but its state could not be written: what was done, what runs, what
    /// failed and what is pending; the journal is kept, and the next apply replays it.
    #[error(
        "the apply on env `{env}` ran, but its state could not be recorded: {cause}\n  \
         done: {}\n  instances started: {}\n  failed: {}\n  pending (not started): {}\n  \
         nothing is lost: {} and the lineage every instance carries let the next apply recover it all",
        list(done),
        list(started),
        list(failed),
        list(pending),
        journal.display()
    )]
    Unrecorded {
        /// The environment.
        env: String,
        /// Why the state could not be written.
        cause: Box<crate::Error>,
        /// The services done.
        done: Vec<String>,
        /// The instances started, each `<id> on <nativeUri>`.
        started: Vec<String>,
        /// The services that failed, each `<service> (<error>)`.
        failed: Vec<String>,
        /// The services skipped and the node problems.
        pending: Vec<String>,
        /// The journal kept.
        journal: PathBuf,
    },
}

/// The items joined by `, `, or `none`.
fn list(items: &[String]) -> String {
    if items.is_empty() { "none".to_string() } else { items.join(", ") }
}

impl From<SessionError> for crate::Error {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Locked { source, .. } | SessionError::State { source, .. } => source,
            SessionError::Journal(e) => e.into(),
            SessionError::Executor(e) => Diagnostic::new(e.to_string()).into(),
            unrecorded @ SessionError::Unrecorded { .. } => Diagnostic::new(unrecorded.to_string())
                .hint("free space on the disk (or fix the error above), then run `enact apply`: it replays the journal, records the state and finishes what is pending")
                .into(),
        }
    }
}
