//! The shells kept open on a host: one `sh` per SSH session channel, fed commands one after the
//! other, each in a subshell of its own (see [`Shell`]), and what a command gives back
//! ([`Output`]) or why it could not run ([`ShellError`]).
//!
//! Used by the connection of a host (`session`); depends on russh and the quoting of
//! `remote_script`.

use std::fmt::Write as _;

use russh::ChannelMsg;
use russh::client;

use super::remote_script::quote;
use super::trust::Verifier;

/// Why a shell of a host could not run a command. The provider adds the host
/// (`host user@address:port: …`) when it reports one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// The session channel for the shell could not be opened, or `sh` not started on it (what
    /// the SSH library said).
    #[error("{reason}")]
    Channel {
        /// What the SSH library said.
        reason: String,
    },
    /// The host refused to start `sh` on the channel.
    #[error("the host refused to start a shell")]
    Refused,
    /// The shell ended as soon as it started (the account's shell, or a forced command, ends
    /// every session at once).
    #[error("the shell ended as it started")]
    EndedAtStart,
    /// The commands could not be written to the shell (it was gone); nothing ran.
    #[error("{reason}")]
    Unwritable {
        /// What the SSH library said.
        reason: String,
    },
    /// The shell ended while a command ran: whether it ran to its end is unknown.
    #[error("the remote shell ended while a command ran")]
    Ended,
    /// The task that ran the command on a shell went away before it answered.
    #[error("the remote shell went away while the command ran")]
    WentAway,
    /// No shell could be opened for the command.
    #[error("the shell could not be opened")]
    NotOpened,
}

/// Why commands did not run to their end on a shell.
pub(super) enum RunError {
    /// Nothing reached the shell (it was gone): the commands may be sent to another one.
    NotSent(ShellError),
    /// The shell went away while the commands ran: whether the unfinished ones ran is unknown.
    Lost(ShellError),
}

/// A `sh` kept open on a host (`exec sh` on an SSH session channel), fed commands: each as
/// `( eval 'COMMAND' ) </dev/null` followed by a line with an end marker and the exit status on
/// stdout, and the end marker on stderr. The subshell keeps commands apart (variables, `cd`,
/// `exit`, functions), `eval` of the [`quote`]d command means a command is parsed exactly as
/// `sh -c` would parse it (a syntax error fails that command, never the shell), and stdin from
/// /dev/null keeps commands from reading the next ones. The marker holds a random token, which
/// nothing a command prints can guess. Several commands may be sent in one write: they run one
/// after the other, and their outputs come back in order.
pub(super) struct Shell {
    /// The SSH session channel `sh` runs on.
    pub(super) channel: russh::Channel<client::Msg>,
    /// A random token in every end marker of this shell.
    token: String,
    /// How many commands this shell was sent: the marker of each is its own.
    sequence: u64,
}

/// Bytes received on one stream of a shell, and how far they were searched for a marker.
#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    searched: usize,
}

impl Received {
    /// The bytes before `mark`, and those up to the end of the line after it (the exit status on
    /// stdout; nothing on stderr), once both have arrived; both are taken out.
    fn take_until(&mut self, mark: &[u8], rest_of_line: bool) -> Option<(Vec<u8>, Vec<u8>)> {
        let from = self.searched.saturating_sub(mark.len());
        let Some(at) = find(&self.bytes[from..], mark).map(|i| i + from) else {
            self.searched = self.bytes.len();
            return None;
        };
        let after = at + mark.len();
        let end = if rest_of_line { after + self.bytes[after..].iter().position(|b| *b == b'\n')? + 1 } else { after };
        let line = self.bytes[after..end].to_vec();
        let before: Vec<u8> = self.bytes.drain(..end).take(at).collect();
        self.searched = 0;
        Some((before, line))
    }
}

impl Shell {
    /// Opens a session channel and starts `sh` on it; returns once the host says it runs.
    ///
    /// # Errors
    /// The session channel cannot be opened, or the host refused or ended the shell.
    pub(super) async fn open(handle: &client::Handle<Verifier>) -> Result<Shell, ShellError> {
        let unopened = |e: russh::Error| ShellError::Channel { reason: e.to_string() };
        let mut channel = handle.channel_open_session().await.map_err(unopened)?;
        channel.exec(true, "exec sh").await.map_err(unopened)?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => return Err(ShellError::Refused),
                Some(ChannelMsg::Close | ChannelMsg::Eof | ChannelMsg::ExitStatus { .. }) | None => {
                    return Err(ShellError::EndedAtStart);
                }
                Some(_) => {}
            }
        }
        let token = crate::state::store::new_lineage().replace('-', "");
        Ok(Shell { channel, token, sequence: 0 })
    }

    /// Runs commands one after the other (sent in one write) and collects the output and exit
    /// status of each. On an error, the outputs of the commands that finished come with it.
    ///
    /// # Errors
    /// [`RunError::NotSent`] when nothing reached the shell, [`RunError::Lost`] when it went away
    /// while the commands ran.
    pub(super) async fn run_many(&mut self, commands: &[&str]) -> Result<Vec<Output>, (Vec<Output>, RunError)> {
        let mut script = String::new();
        let mut marks = Vec::with_capacity(commands.len());
        for command in commands {
            self.sequence += 1;
            let mark = format!("__enact_end_{}_{}__", self.token, self.sequence);
            let _ = writeln!(
                script,
                "( eval {} ) </dev/null; printf '\\n%s %s\\n' {mark} \"$?\"; printf '\\n%s\\n' {mark} >&2",
                quote(command)
            );
            marks.push(mark);
        }
        if let Err(e) = self.channel.data_bytes(script.into_bytes()).await {
            return Err((Vec::new(), RunError::NotSent(ShellError::Unwritable { reason: e.to_string() })));
        }
        let mut outputs = Vec::with_capacity(commands.len());
        let (mut out, mut err) = (Received::default(), Received::default());
        for mark in &marks {
            let (out_end, err_end) = (format!("\n{mark} "), format!("\n{mark}\n"));
            let (mut stdout, mut stderr) = (None, None);
            loop {
                if stdout.is_none() {
                    stdout = out.take_until(out_end.as_bytes(), true);
                }
                if stderr.is_none() {
                    stderr = err.take_until(err_end.as_bytes(), false);
                }
                if let (Some((stdout, status)), Some((stderr, _))) = (&stdout, &stderr) {
                    outputs.push(Output {
                        status: Some(String::from_utf8_lossy(status).trim().parse().unwrap_or(u32::MAX)),
                        stdout: String::from_utf8_lossy(stdout).into_owned(),
                        stderr: String::from_utf8_lossy(stderr).into_owned(),
                    });
                    break;
                }
                match self.channel.wait().await {
                    Some(ChannelMsg::Data { data }) => out.bytes.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => err.bytes.extend_from_slice(&data),
                    Some(ChannelMsg::Close | ChannelMsg::Eof | ChannelMsg::ExitStatus { .. }) | None => {
                        return Err((outputs, RunError::Lost(ShellError::Ended)));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(outputs)
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The output of a remote command.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Its exit status: always there for a command a shell ran (`u32::MAX` when the shell's
    /// report of it could not be read).
    pub status: Option<u32>,
    /// What it wrote on stdout, whole (a final newline included when it wrote one).
    pub stdout: String,
    /// What it wrote on stderr.
    pub stderr: String,
}
