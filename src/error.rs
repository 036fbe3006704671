//! The crate's error type. Every error a user can cause is a [`Diagnostic`]: what, where, and
//! what to do. Exit codes are decided in [`crate::cli`].

use std::path::PathBuf;

use crate::diagnostic::{Diagnostic, Diagnostics};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: one or more problems, each located.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The filesystem refused something.
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the command before it changed anything.
    #[error("interrupted; nothing was changed")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }

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
