//! The crate's error type. Every error a user can cause is a [`Diagnostic`]: what, where, and
//! what to do. Exit codes are decided in [`crate::cli`]. A leaf: depends on
//! [`crate::diagnostic`] only.

use std::path::PathBuf;

use crate::diagnostic::{Diagnostic, Diagnostics};

/// Everything that can go wrong in enact, as the command line shows it. Module errors (typed,
/// per module) convert into it at the boundary with their message unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: one or more problems, each located.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The filesystem refused something.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb: `read`, `write`, `create`, …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the command before it changed anything.
    #[error("interrupted; nothing was changed")]
    Interrupted,
}

/// A result whose error is enact's [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The conversion of an I/O error while doing `action` to `path`, for `map_err`:
    /// `fs::read(p).map_err(Error::io("read", p))`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }

    /// Bad input described by a message alone (no location, no hint).
    pub fn msg(message: impl Into<String>) -> Error {
        Error::Invalid(Diagnostic::new(message).into())
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Invalid(d.into())
    }
}

impl From<Vec<Diagnostic>> for Error {
    fn from(d: Vec<Diagnostic>) -> Self {
        Error::Invalid(Diagnostics(d))
    }
}
