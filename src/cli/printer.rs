//! The one printer of the command line: every line of output (stdout), every status line,
//! warning and error (stderr), the confirmation prompt, and the progress display of an apply
//! ([`Progress`]) go through a [`Printer`]. Nothing else in enact writes to the terminal.

use std::io::{IsTerminal, Write};

use super::interrupt;
use super::progress::Progress;
use crate::diagnostic::Diagnostic;
use crate::error::{Error, Result};
use crate::paint::Painter;

/// Where every line of output goes, and how it looks.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// Colours and bold for stdout (none unless it is a terminal and colour is not turned off
    /// by `--no-color` or `NO_COLOR`).
    pub paint: Painter,
    /// `--quiet`: only errors on stderr (no status lines, no progress).
    pub quiet: bool,
    /// `--verbose`: every step's progress messages too.
    pub verbose: bool,
}

/// A question asked before a change; only the answer `yes` goes ahead.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// Before changing an environment (apply, destroy, rollback, pause, resume, state restore):
    /// `question` is shown (it starts its own lines), the answer is asked for on the next line;
    /// `flag` (`--auto-approve`, `--yes`) confirms in advance.
    Change {
        /// What would change, as a question.
        question: &'a str,
        /// The flag that confirms in advance.
        flag: &'a str,
    },
    /// Before writing a file (an overlay, by `merge` or `promote`); `--yes` confirms in advance.
    Write {
        /// The file as the user knows it (`envs/prod.json`).
        file: &'a str,
    },
}

impl Printer {
    /// Writes to stdout; a closed pipe is not an error worth a message.
    pub fn out(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    /// Streams the command's output to stdout.
    pub fn out_with(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
        let mut stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        // As with `out`: a closed pipe (`| head`) is not an error of the command.
        let _ = write(&mut stdout);
        let _ = stdout.flush();
    }

    /// A status line on stderr, unless `--quiet`.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    /// A warning on stderr (`warning: …`), even with `--quiet`.
    pub fn warn(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{} {text}", self.paint.yellow("warning:"));
    }

    /// An error on stderr (`error: …`).
    pub fn error(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{} {text}", self.paint.red("error:"));
    }

    /// Asks `ask` on the terminal (stderr, the answer from stdin) unless `confirmed` (the flag
    /// was given); without a terminal, refuses.
    ///
    /// # Errors
    /// No terminal to ask on (naming the flag), an answer other than `yes` (nothing was changed
    /// or written), or [`Error::Interrupted`] when a signal came while asking.
    pub fn confirm(&self, ask: Ask<'_>, confirmed: bool) -> Result<()> {
        if confirmed {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            let refusal = match ask {
                Ask::Change { flag, .. } => Diagnostic::new(
                    "refusing to change the environment without confirmation, and there is no terminal to ask on",
                )
                .hint(format!("pass `{flag}` to confirm in advance")),
                Ask::Write { file } => Diagnostic::new(format!(
                    "not writing {file} without confirmation, and there is no terminal to ask on"
                ))
                .hint("pass `--yes` to write it"),
            };
            return Err(refusal.into());
        }
        {
            let mut stderr = std::io::stderr().lock();
            let _ = match ask {
                Ask::Change { question, .. } => write!(stderr, "{question}\n  Only 'yes' will be accepted: "),
                Ask::Write { file } => write!(stderr, "Write {file}? Only 'yes' will be accepted: "),
            };
            let _ = stderr.flush();
        }
        match interrupt::read_line() {
            Some(answer) if answer.trim() == "yes" => Ok(()),
            _ if interrupt::interrupted() => Err(Error::Interrupted),
            _ => Err(Diagnostic::new(match ask {
                Ask::Change { .. } => "cancelled; nothing was changed",
                Ask::Write { .. } => "cancelled; nothing was written",
            })
            .into()),
        }
    }

    /// The progress display of an apply, on stderr: a bar on a terminal, lines otherwise.
    pub fn progress(&self) -> Progress {
        Progress::new(self, std::io::stderr().is_terminal())
    }
}
