//! The ssh provider (the CHOReOS "fixed" cloud provider, done right): the account's hosts are
//! the nodes; packages are uploaded over SFTP (or fetched by the host for http(s) URIs) and
//! started detached by their package type's recipe; stop, health, status and logs go over SSH.
//!
//! - One SSH connection per host, made once per enact process and shared by every provider of
//!   the process (the sweep for untracked processes, the refresh and the apply reuse it); hosts
//!   are worked on concurrently.
//! - Commands do not pay for a session each: every host keeps a few `sh` processes open (one
//!   SSH channel each) and feeds them one command at a time; a command runs in a subshell of
//!   its own, so it sees nothing a previous one left. See [`Shell`].
//! - Host keys are checked against `knownHosts` (OpenSSH format): an unknown key is refused with
//!   its fingerprint and the way to trust it; a changed key is always refused.
//! - Every value that reaches the remote shell goes through [`quote`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use russh_sftp::client::SftpSession;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Package, Provider, ProviderError, ProviderResult, StartRequest, Started};
use crate::repo::settings::{SshAccount, SshHost};
use crate::state::observed::{DownReason, Health};
use crate::state::{InstanceState, NewNode, NodeState};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many shells are kept open on one host (OpenSSH allows 10 sessions per
/// connection by default; one more is the SFTP session).
const MAX_SHELLS: usize = 6;
/// How long a command waits for a busy shell of its host to come free before another is opened
/// (commands take milliseconds; opening a shell takes a session start on the host).
const SHELL_PATIENCE: Duration = Duration::from_millis(25);
/// At most this many queued commands go to a shell in one write.
const BATCH_MAX: usize = 32;
/// The first wait between two health polls of a new instance; it grows by half each time up to
/// [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(5);
/// The longest wait between two health polls, and between two exit checks of a stopping
/// instance.
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long after its start a new instance that does not answer yet is first checked to still
/// run, and how often after that (each check is a remote command).
const ALIVE_FIRST: Duration = Duration::from_millis(500);
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long a stop waits for the process to go after SIGKILL.
const KILL_WAIT_TENTHS: u32 = 20;

/// Quotes a value for a POSIX shell: `'…'`, with every `'` written as `'\''`. Nothing inside
/// single quotes is interpreted, so `;`, `$(…)`, backticks, quotes and newlines stay text.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Expands `~/` with `$HOME`; a relative path is taken from the config repository.
pub fn expand_path(path: &str, repo_root: &Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        return home.join(rest);
    }
    let p = PathBuf::from(path);
    if p.is_absolute() { p } else { repo_root.join(p) }
}

/// What was wrong with a host's key, found during the key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    Unknown { algorithm: String, fingerprint: String },
    Changed { fingerprint: String, line: usize },
    Unreadable(String),
}

/// Checks the server's key against known_hosts; records what it found.
struct Verifier {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    /// Record an unknown key instead of refusing it (`--accept-new-host-keys`, `hosts trust`).
    accept_new: bool,
    problem: Arc<Mutex<Option<KeyProblem>>>,
    learned: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = key.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let verdict = russh::keys::check_known_hosts_path(&self.host, self.port, &key, &self.known_hosts);
        let problem = match verdict {
            Ok(true) => return Ok(true),
            Ok(false) if self.accept_new => {
                return match russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    &key,
                    &self.known_hosts,
                ) {
                    Ok(()) => {
                        if let Ok(mut learned) = self.learned.lock() {
                            *learned = Some(format!("{} {fingerprint}", key.algorithm()));
                        }
                        Ok(true)
                    }
                    Err(e) => {
                        if let Ok(mut p) = self.problem.lock() {
                            *p = Some(KeyProblem::Unreadable(format!(
                                "cannot record the key in {}: {e}",
                                self.known_hosts.display()
                            )));
                        }
                        Ok(false)
                    }
                };
            }
            Ok(false) => KeyProblem::Unknown { algorithm: key.algorithm().to_string(), fingerprint },
            Err(russh::keys::Error::KeyChanged { line }) => KeyProblem::Changed { fingerprint, line },
            Err(e) => KeyProblem::Unreadable(format!("cannot read {}: {e}", self.known_hosts.display())),
        };
        if let Ok(mut p) = self.problem.lock() {
            *p = Some(problem);
        }
        Ok(false)
    }
}

/// The tokio runtime of every ssh provider of the process: connections outlive the provider
/// that made them (a sweep's provider, then the apply's), so their tasks must run on a runtime
/// that does too. `None` when it could not be started.
static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

fn runtime() -> ProviderResult<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().ok())
        .as_ref()
        .ok_or_else(|| ProviderError::new("cannot start the SSH runtime (no threads left?)"))
}

/// A host's connection by [`SshProvider::link_key`], made once per process.
type Links = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Connection>>>>>;
static LINKS: LazyLock<Links> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Why commands did not run to their end on a shell.
enum RunError {
    /// Nothing reached the shell (it was gone): the commands may be sent to another one.
    NotSent(String),
    /// The shell went away while the commands ran: whether the unfinished ones ran is unknown.
    Lost(String),
}

/// A `sh` kept open on a host (`exec sh` on an SSH session channel), fed commands: each as
/// `( eval 'COMMAND' ) </dev/null` followed by a line with an end marker and the exit status on
/// stdout, and the end marker on stderr. The subshell keeps commands apart (variables, `cd`,
/// `exit`, functions), `eval` of the [`quote`]d command means a command is parsed exactly as
/// `sh -c` would parse it (a syntax error fails that command, never the shell), and stdin from
/// /dev/null keeps commands from reading the next ones. The marker holds a random token, which
/// nothing a command prints can guess. Several commands may be sent in one write: they run one
/// after the other, and their outputs come back in order.
struct Shell {
    channel: russh::Channel<client::Msg>,
    token: String,
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
    async fn open(handle: &client::Handle<Verifier>) -> Result<Shell, String> {
        let mut channel = handle.channel_open_session().await.map_err(|e| e.to_string())?;
        channel.exec(true, "exec sh").await.map_err(|e| e.to_string())?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => return Err("the host refused to start a shell".into()),
                Some(ChannelMsg::Close | ChannelMsg::Eof | ChannelMsg::ExitStatus { .. }) | None => {
                    return Err("the shell ended as it started".into());
                }
                Some(_) => {}
            }
        }
        let token = crate::state::store::new_lineage().replace('-', "");
        Ok(Shell { channel, token, sequence: 0 })
    }

    /// Runs commands one after the other (sent in one write) and collects the output and exit
    /// status of each. On an error, the outputs of the commands that finished come with it.
    async fn run_many(&mut self, commands: &[&str]) -> Result<Vec<Output>, (Vec<Output>, RunError)> {
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
            return Err((Vec::new(), RunError::NotSent(e.to_string())));
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
                        return Err((outputs, RunError::Lost("the remote shell ended while a command ran".into())));
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

/// A command waiting for a shell of its host.
struct Pending {
    id: u64,
    command: String,
    /// How many times it was sent to a shell that turned out to be gone.
    unsent: u32,
    reply: tokio::sync::oneshot::Sender<Result<Output, String>>,
}

/// One authenticated SSH connection to a host, with its SFTP session, its home directory and
/// its open shells, each made when first needed.
///
/// Commands queue up; whoever finds a shell free sends it every queued command (up to
/// [`BATCH_MAX`]) in one write, so commands that arrive together (the starts of five services on
/// one host) cost one round trip, not five. When commands wait longer than [`SHELL_PATIENCE`],
/// one of them opens another shell (one at a time, up to [`MAX_SHELLS`]), which takes them all.
struct Connection {
    /// `user@host:port`, for timing lines.
    who: String,
    handle: client::Handle<Verifier>,
    sftp: tokio::sync::OnceCell<SftpSession>,
    home: tokio::sync::OnceCell<String>,
    /// Shells no command uses now.
    idle: Mutex<Vec<Shell>>,
    /// Shells open or being opened.
    shells: AtomicUsize,
    /// Shells being opened.
    opening: AtomicUsize,
    /// Commands no shell has taken yet, oldest first.
    queue: Mutex<std::collections::VecDeque<Pending>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Told when a shell comes free or goes away, or a command is queued again.
    changed: tokio::sync::Notify,
}

impl Connection {
    fn new(who: String, handle: client::Handle<Verifier>) -> Connection {
        Connection {
            who,
            handle,
            sftp: tokio::sync::OnceCell::new(),
            home: tokio::sync::OnceCell::new(),
            idle: Mutex::new(Vec::new()),
            shells: AtomicUsize::new(0),
            opening: AtomicUsize::new(0),
            queue: Mutex::new(std::collections::VecDeque::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_idle(&self) -> Option<Shell> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    /// Puts a shell back for the next commands.
    fn give_back(&self, shell: Shell) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(shell);
        self.changed.notify_waiters();
    }

    /// Forgets a shell that failed, and closes its channel.
    fn discard(&self, shell: Shell) {
        self.shells.fetch_sub(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = shell.channel.close().await;
        });
        // Whoever waits may now open another.
        self.changed.notify_waiters();
    }

    /// Claims the opening of one more shell: true when no other is being opened and there is
    /// room for it (then it is counted, and [`Connection::open_shell`] must follow).
    fn reserve_shell(&self) -> bool {
        if self.opening.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return false;
        }
        if self.shells.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_SHELLS).then_some(n + 1)).is_ok() {
            return true;
        }
        self.opening.store(0, Ordering::SeqCst);
        false
    }

    /// Opens a shell in the background (it joins `idle` when it runs, whoever then uses it);
    /// the receiver says whether it could be opened.
    fn open_shell(self: &Arc<Self>) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let connection = Arc::clone(self);
        tokio::spawn(async move {
            let begun = Instant::now();
            let opened = Shell::open(&connection.handle).await;
            connection.opening.fetch_sub(1, Ordering::SeqCst);
            let opened = match opened {
                Ok(shell) => {
                    connection.give_back(shell);
                    Ok(())
                }
                Err(e) => {
                    connection.shells.fetch_sub(1, Ordering::SeqCst);
                    connection.changed.notify_waiters();
                    Err(e)
                }
            };
            crate::timing::mark(Some(begun.elapsed()), || format!("ssh {}: a shell opened", connection.who));
            let _ = tx.send(opened);
        });
        rx
    }

    /// Sends the queued commands to `shell` in one write and answers each. Runs as a task of
    /// its own, so a caller that stops waiting never leaves a shell half used.
    async fn serve(self: Arc<Self>, mut shell: Shell) {
        let batch: Vec<Pending> = {
            let mut queue = self.queue();
            let n = queue.len().min(BATCH_MAX);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            self.give_back(shell);
            return;
        }
        let commands: Vec<&str> = batch.iter().map(|p| p.command.as_str()).collect();
        match shell.run_many(&commands).await {
            Ok(outputs) => {
                self.give_back(shell);
                for (pending, output) in batch.into_iter().zip(outputs) {
                    let _ = pending.reply.send(Ok(output));
                }
            }
            Err((_, RunError::NotSent(e))) => {
                self.discard(shell);
                // Nothing reached the shell: the commands go back to the front of the queue
                // for another shell (once; then they fail).
                let mut queue = self.queue();
                for mut pending in batch.into_iter().rev() {
                    pending.unsent += 1;
                    if pending.unsent > 1 {
                        let _ = pending.reply.send(Err(e.clone()));
                    } else {
                        queue.push_front(pending);
                    }
                }
                drop(queue);
                self.changed.notify_waiters();
            }
            Err((done, RunError::Lost(e))) => {
                self.discard(shell);
                let mut outputs = done.into_iter();
                for pending in batch {
                    let _ = pending.reply.send(outputs.next().ok_or_else(|| e.clone()));
                }
            }
        }
    }

    /// Runs one command on one of the connection's shells (see [`Connection`]).
    async fn run(self: &Arc<Self>, command: &str) -> Result<Output, String> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.queue().push_back(Pending { id, command: command.to_string(), unsent: 0, reply });
        let first_wait = if self.shells.load(Ordering::SeqCst) == 0 { Duration::ZERO } else { SHELL_PATIENCE };
        let mut patience = Box::pin(tokio::time::sleep(first_wait));
        let mut opening: Option<tokio::sync::oneshot::Receiver<Result<(), String>>> = None;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match answer.try_recv() {
                Ok(result) => return result,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err("the remote shell went away while the command ran".into());
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            if !self.queue().is_empty()
                && let Some(shell) = self.take_idle()
            {
                tokio::spawn(Arc::clone(self).serve(shell));
                continue;
            }
            // Another shell only for a command still waiting (not one a shell already runs), and
            // one at a time: the shell being opened takes every queued command.
            let waiting = self.queue().iter().any(|p| p.id == id);
            let room =
                waiting && self.shells.load(Ordering::SeqCst) < MAX_SHELLS && self.opening.load(Ordering::SeqCst) == 0;
            tokio::select! {
                result = &mut answer => {
                    return result.unwrap_or_else(|_| Err("the remote shell went away while the command ran".into()));
                }
                () = &mut changed => {}
                () = &mut patience, if opening.is_none() && room => {
                    if self.reserve_shell() {
                        opening = Some(self.open_shell());
                    } else {
                        patience = Box::pin(tokio::time::sleep(SHELL_PATIENCE));
                    }
                }
                opened = async { opening.as_mut().expect("guarded").await }, if opening.is_some() => {
                    opening = None;
                    patience = Box::pin(tokio::time::sleep(SHELL_PATIENCE));
                    let failed = match opened {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(_) => Some("the shell could not be opened".to_string()),
                    };
                    if let Some(e) = failed {
                        // No shell for it: the command fails, unless a shell took it meanwhile.
                        let mut queue = self.queue();
                        if let Some(at) = queue.iter().position(|p| p.id == id) {
                            queue.remove(at);
                            return Err(e);
                        }
                    }
                }
            }
        }
    }
}

/// The output of a remote command.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

/// (host, remote path).
type HostPath = (String, String);

#[derive(Debug, Clone)]
pub struct SshOptions {
    pub repo_root: PathBuf,
    pub accept_new_host_keys: bool,
}

pub struct SshProvider {
    account_name: String,
    account: SshAccount,
    known_hosts: PathBuf,
    options: SshOptions,
    runtime: &'static tokio::runtime::Runtime,
    uploaded: Mutex<HashSet<HostPath>>,
    upload_locks: Mutex<HashMap<HostPath, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for SshProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshProvider").field("account", &self.account_name).finish_non_exhaustive()
    }
}

/// The known_hosts file of an account: `knownHosts`, else `~/.ssh/known_hosts`.
pub fn known_hosts_of(known_hosts: Option<&str>, repo_root: &Path) -> PathBuf {
    expand_path(known_hosts.unwrap_or("~/.ssh/known_hosts"), repo_root)
}

impl SshProvider {
    pub fn new(account_name: &str, account: &SshAccount, options: SshOptions) -> ProviderResult<Self> {
        let runtime = runtime()?;
        Ok(SshProvider {
            account_name: account_name.to_string(),
            known_hosts: known_hosts_of(account.known_hosts.as_deref(), &options.repo_root),
            account: account.clone(),
            options,
            runtime,
            uploaded: Mutex::new(HashSet::new()),
            upload_locks: Mutex::new(HashMap::new()),
        })
    }

    fn host(&self, address: &str) -> ProviderResult<&SshHost> {
        self.account.hosts.iter().find(|h| h.address == address).ok_or_else(|| {
            ProviderError::new(format!(
                "host {address} is not listed in ssh account `{}` of enact.json any more",
                self.account_name
            ))
        })
    }

    fn describe(&self, host: &SshHost) -> String {
        format!("{}@{}:{}", host.user, host.address, host.port.unwrap_or(22))
    }

    /// Connects and authenticates, or explains exactly why not.
    async fn connect(&self, host: &SshHost, accept_new: bool) -> ProviderResult<(Connection, Option<String>)> {
        let port = u16::try_from(host.port.unwrap_or(22)).unwrap_or(22);
        let problem = Arc::new(Mutex::new(None));
        let learned = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            host: host.address.clone(),
            port,
            known_hosts: self.known_hosts.clone(),
            accept_new,
            problem: Arc::clone(&problem),
            learned: Arc::clone(&learned),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        let who = self.describe(host);
        let connecting = client::connect(config, (host.address.as_str(), port), verifier);
        let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(ProviderError::of_kind(
                    DownReason::HostUnreachable,
                    format!("cannot reach host {who}: no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ));
            }
            Ok(Err(e)) => {
                let problem = problem.lock().ok().and_then(|p| p.clone());
                let kind = match &problem {
                    Some(KeyProblem::Unknown { .. }) => DownReason::HostKeyUnknown,
                    Some(KeyProblem::Changed { .. }) => DownReason::HostKeyChanged,
                    Some(KeyProblem::Unreadable(_)) => DownReason::Unknown,
                    None => DownReason::HostUnreachable,
                };
                return Err(ProviderError::of_kind(
                    kind,
                    match problem {
                        Some(KeyProblem::Unknown { algorithm, fingerprint }) => format!(
                            "host {who} presented an unknown {algorithm} host key {fingerprint}; refusing to connect. \
                         If that is the host's key, trust it with `enact hosts trust` (records it in {}) or pass --accept-new-host-keys",
                            self.known_hosts.display()
                        ),
                        Some(KeyProblem::Changed { fingerprint, line }) => format!(
                            "host {who} presented a DIFFERENT host key ({fingerprint}) than the one recorded at {}:{line}; refusing to connect. \
                         Someone may be intercepting the connection; if the host was reinstalled, remove that line and trust the new key",
                            self.known_hosts.display()
                        ),
                        Some(KeyProblem::Unreadable(why)) => format!("host {who}: {why}"),
                        None => format!("cannot reach host {who}: {e}"),
                    },
                ));
            }
            Ok(Ok(handle)) => handle,
        };
        let key_path = expand_path(host.private_key.as_deref().unwrap_or("~/.ssh/id_ed25519"), &self.options.repo_root);
        let key = russh::keys::load_secret_key(&key_path, None).map_err(|e| {
            ProviderError::new(format!("host {who}: cannot load private key {}: {e}", key_path.display()))
        })?;
        let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
        let auth = handle
            .authenticate_publickey(host.user.clone(), PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| {
                ProviderError::of_kind(DownReason::AuthRefused, format!("host {who}: authentication failed: {e}"))
            })?;
        if !auth.success() {
            return Err(ProviderError::of_kind(
                DownReason::AuthRefused,
                format!(
                    "host {who} refused the key {} for user `{}`; add its public key to that user's authorized_keys",
                    key_path.display(),
                    host.user
                ),
            ));
        }
        let learned = learned.lock().ok().and_then(|l| l.clone());
        Ok((Connection::new(who, handle), learned))
    }

    /// What tells one connection from another in [`LINKS`]: the same host, user and port reached
    /// with another key or checked against another known_hosts file is another connection.
    fn link_key(&self, host: &SshHost) -> String {
        format!(
            "{} key={} known_hosts={} accept_new={}",
            self.describe(host),
            host.private_key.as_deref().unwrap_or("~/.ssh/id_ed25519"),
            self.known_hosts.display(),
            self.options.accept_new_host_keys
        )
    }

    /// The connection to a host, made once per process and shared by every step and provider.
    async fn connection(&self, host: &SshHost) -> ProviderResult<Arc<Connection>> {
        let key = self.link_key(host);
        let cell = {
            let mut links = LINKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(links.entry(key.clone()).or_default())
        };
        let result = cell
            .get_or_try_init(|| async {
                let begun = Instant::now();
                let made = self.connect(host, self.options.accept_new_host_keys).await.map(|(c, _)| Arc::new(c));
                crate::timing::mark(Some(begun.elapsed()), || format!("ssh {}: connect + auth", self.describe(host)));
                made
            })
            .await
            .cloned();
        if result.is_err() {
            // Forget the failed attempt so a later step tries again.
            self.forget(host, &cell);
        }
        result
    }

    /// Forgets the connection in `cell` (broken, or never made), unless another took its place.
    fn forget(&self, host: &SshHost, cell: &Arc<tokio::sync::OnceCell<Arc<Connection>>>) {
        let mut links = LINKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = self.link_key(host);
        if links.get(&key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            links.remove(&key);
        }
    }

    /// Runs `command` on one of the host's shells; `what` names it in timing lines.
    async fn run_async(&self, host: &SshHost, what: &str, command: &str) -> ProviderResult<Output> {
        let who = self.describe(host);
        let begun = Instant::now();
        let connection = self.connection(host).await?;
        let result = tokio::time::timeout(EXEC_TIMEOUT, connection.run(command)).await;
        crate::timing::mark(Some(begun.elapsed()), || format!("ssh {who}: {what}"));
        match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => {
                if connection.handle.is_closed() {
                    // A broken connection: the next command makes a new one.
                    let cell = LINKS
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&self.link_key(host))
                        .cloned();
                    if let Some(cell) = cell
                        && cell.get().is_some_and(|c| Arc::ptr_eq(c, &connection))
                    {
                        self.forget(host, &cell);
                    }
                }
                Err(ProviderError::new(format!("host {who}: {e}")))
            }
            Err(_) => Err(ProviderError::new(format!(
                "host {who}: a command did not finish within {} s",
                EXEC_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Runs a command on a host and waits for it (in a subshell of one of the host's shells, as
    /// `sh -c` would run it).
    ///
    /// # Errors
    /// The host cannot be reached or trusted, or its shell went away.
    pub fn exec(&self, host: &SshHost, command: &str) -> ProviderResult<Output> {
        self.runtime.block_on(self.run_async(host, "command", command))
    }

    /// Runs a command, `what` naming it in timing lines.
    fn run(&self, host: &SshHost, what: &str, command: &str) -> ProviderResult<Output> {
        self.runtime.block_on(self.run_async(host, what, command))
    }

    fn exec_ok(&self, host: &SshHost, command: &str, what: &str) -> ProviderResult<String> {
        let output = self.run(host, what, command)?;
        if output.status == Some(0) {
            Ok(output.stdout)
        } else {
            Err(ProviderError::new(format!(
                "host {}: {what} failed (exit {}): {}",
                self.describe(host),
                output.status.map_or("?".to_string(), |s| s.to_string()),
                output.stderr.trim()
            )))
        }
    }

    /// The directory enact keeps packages and logs in on a host: `$HOME/.enact/<env>`,
    /// absolute, so commands need no shell expansion.
    fn base(&self, host: &SshHost, env: &str) -> ProviderResult<String> {
        let who = self.describe(host);
        let home = self.runtime.block_on(async {
            let connection = self.connection(host).await?;
            connection
                .home
                .get_or_try_init(|| async {
                    let output = self.run_async(host, "finding the home directory", "printf %s \"$HOME\"").await?;
                    let home = output.stdout.trim_end_matches('/').to_string();
                    if output.status != Some(0) || !home.starts_with('/') {
                        return Err(ProviderError::new(format!(
                            "host {who}: the home directory `{home}` is not absolute{}",
                            if output.stderr.trim().is_empty() {
                                String::new()
                            } else {
                                format!(": {}", output.stderr.trim())
                            }
                        )));
                    }
                    Ok(home)
                })
                .await
                .cloned()
        })?;
        Ok(format!("{home}/.enact/{env}"))
    }

    /// The host's SFTP session, opened once.
    async fn sftp<'c>(&self, host: &SshHost, connection: &'c Connection) -> ProviderResult<&'c SftpSession> {
        let who = self.describe(host);
        let begun = Instant::now();
        let session = connection
            .sftp
            .get_or_try_init(|| async {
                let channel = connection.handle.channel_open_session().await?;
                channel.request_subsystem(true, "sftp").await?;
                let session = SftpSession::new(channel.into_stream())
                    .await
                    .map_err(|e| russh::Error::from(std::io::Error::other(e.to_string())));
                crate::timing::mark(Some(begun.elapsed()), || format!("ssh {who}: SFTP session opened"));
                session
            })
            .await
            .map_err(|e| ProviderError::new(format!("host {who}: cannot open SFTP: {e}")))?;
        Ok(session)
    }

    /// Uploads a file over SFTP to `relative` (a path under the home directory) once per content
    /// and host; returns its absolute path. The command that looks for the file also says where
    /// home is, so a first upload costs no extra round trip for it.
    fn upload(&self, host: &SshHost, local: &Path, relative: &str) -> ProviderResult<String> {
        let key = (self.describe(host), relative.to_string());
        // One upload of a file to a host at a time; the others wait and then find it there.
        let lock = {
            let mut locks = self.upload_locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let _held = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.uploaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&key) {
            let home = self.runtime.block_on(async { self.connection(host).await.map(|c| c.home.get().cloned()) })?;
            if let Some(home) = home {
                return Ok(format!("{home}/{relative}"));
            }
        }
        let bytes = std::fs::read(local)
            .map_err(|e| ProviderError::new(format!("cannot read package {}: {e}", local.display())))?;
        let dir = relative.rsplit_once('/').map_or(".", |(d, _)| d);
        let who = self.describe(host);
        let remote = self.runtime.block_on(async {
            let connection = self.connection(host).await?;
            let begun = Instant::now();
            // The SFTP session opens while the host looks for the package.
            let prepare = format!(
                "printf '%s\\n' \"$HOME\"; cd && mkdir -p {} && if test -f {}; then echo present; fi",
                quote(dir),
                quote(relative)
            );
            let (present, sftp) = tokio::join!(
                self.run_async(host, "preparing the package directory", &prepare),
                self.sftp(host, &connection)
            );
            let present = present?;
            let mut lines = present.stdout.lines();
            let home = lines.next().unwrap_or_default().trim_end_matches('/').to_string();
            if present.status != Some(0) {
                return Err(ProviderError::new(format!(
                    "host {who}: preparing the package directory failed (exit {}): {}",
                    present.status.map_or("?".to_string(), |s| s.to_string()),
                    present.stderr.trim()
                )));
            }
            if !home.starts_with('/') {
                return Err(ProviderError::new(format!("host {who}: the home directory `{home}` is not absolute")));
            }
            let _ = connection.home.set(home.clone());
            let remote = format!("{home}/{relative}");
            if lines.next() == Some("present") {
                return Ok(remote);
            }
            // Hosts may share a home directory (NFS), and so may applies of several environments
            // or repositories: each writer uploads under a name of its own, and the rename that
            // installs the package is atomic, so the last one wins with the same bytes.
            let partial = format!("{remote}.{}.part", crate::state::store::new_lineage());
            let mut file = sftp?
                .create(&partial)
                .await
                .map_err(|e| ProviderError::new(format!("host {who}: cannot create {partial}: {e}")))?;
            file.write_all(&bytes)
                .await
                .map_err(|e| ProviderError::new(format!("host {who}: cannot upload {partial}: {e}")))?;
            file.shutdown()
                .await
                .map_err(|e| ProviderError::new(format!("host {who}: cannot upload {partial}: {e}")))?;
            crate::timing::mark(Some(begun.elapsed()), || {
                format!("ssh {who}: package uploaded ({} bytes)", bytes.len())
            });
            let install = format!("chmod 755 {p} && mv -f {p} {r}", p = quote(&partial), r = quote(&remote));
            let installed = self.run_async(host, "installing the package", &install).await?;
            if installed.status != Some(0) {
                return Err(ProviderError::new(format!(
                    "host {who}: installing the package failed (exit {}): {}",
                    installed.status.map_or("?".to_string(), |s| s.to_string()),
                    installed.stderr.trim()
                )));
            }
            Ok(remote)
        })?;
        self.uploaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key);
        Ok(remote)
    }

    /// Puts the package on the host and returns its remote path.
    fn stage(&self, host: &SshHost, env: &str, service: &str, package: &Package) -> ProviderResult<String> {
        match package {
            Package::Path(local) => {
                let bytes = std::fs::read(local)
                    .map_err(|e| ProviderError::new(format!("cannot read package {}: {e}", local.display())))?;
                let digest: String = Sha256::digest(&bytes).iter().take(6).map(|b| format!("{b:02x}")).collect();
                let name =
                    local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "package".into());
                // Named by content: one upload per host, whichever services share the package.
                let _ = service;
                self.upload(host, local, &format!(".enact/{env}/packages/{digest}/{name}"))
            }
            Package::None => Err(ProviderError::new("the ssh provider needs a package to run")),
            Package::Url(url) => {
                let digest: String =
                    Sha256::digest(url.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
                let name = crate::provider::package::file_name_of(url);
                let remote = format!("{}/packages/{service}-{digest}/{name}", self.base(host, env)?);
                let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
                let partial = format!("{remote}.{}.part", crate::state::store::new_lineage());
                let (r, u, p) = (quote(&remote), quote(url), quote(&partial));
                self.exec_ok(
                    host,
                    &format!(
                        "mkdir -p {d} && (test -f {r} || {{ (curl -fsSL --netrc-optional -o {p} {u} || wget -q -O {p} {u}) && chmod 755 {p} && mv -f {p} {r}; }})",
                        d = quote(dir)
                    ),
                    "fetching the package",
                )?;
                Ok(remote)
            }
        }
    }

    /// Connects to every host of the account and records unknown host keys (`enact hosts trust`).
    pub fn trust_hosts(&self) -> Vec<(String, Result<String, String>)> {
        self.account
            .hosts
            .iter()
            .map(|host| {
                let result = self.runtime.block_on(async {
                    match self.connect(host, true).await {
                        Ok((connection, learned)) => {
                            let _ = connection.handle.disconnect(Disconnect::ByApplication, "", "en").await;
                            Ok(match learned {
                                Some(key) => format!("trusted {key}"),
                                None => "already trusted".to_string(),
                            })
                        }
                        Err(e) => Err(e.to_string()),
                    }
                });
                (self.describe(host), result)
            })
            .collect()
    }
}

/// Seconds between two looks of an instance's log watcher at the size of its log.
pub const WATCH_EVERY_SECS: u32 = 5;

/// `rot FILE MAX KEEP`, a shell function: when FILE holds more than MAX bytes, FILE.1 … move up
/// one (the one past KEEP is dropped), FILE's newest MAX bytes become FILE.1 and FILE is emptied
/// in place (copy and truncate: the instance keeps appending to it). Output the instance writes
/// between the copy and the truncation is lost, and so is what it wrote beyond the newest MAX
/// bytes since the last look.
const ROTATE_FN: &str = r#"rot() { [ -f "$1" ] || return 0; rs=$(($(wc -c < "$1"))); [ "$rs" -gt "$2" ] || return 0; ri=$3; while [ "$ri" -gt 1 ]; do rj=$((ri-1)); [ -f "$1.$rj" ] && mv -f "$1.$rj" "$1.$ri"; ri=$rj; done; if [ "$3" -gt 0 ]; then tail -c "$2" "$1" > "$1.1.trim" && mv -f "$1.1.trim" "$1.1"; fi; : > "$1"; }"#;

/// A shell snippet that rotates the logs of `instances` (ids) on a host, in every environment,
/// each under the cap recorded beside it at start (`<log>.cap`: max bytes and rotated files
/// kept); logs without one (started by an older enact) are left alone. One `wc` sizes them all;
/// only a log over its cap costs more.
fn rotate_on_contact(instances: &[&str]) -> String {
    let mut script = format!("{ROTATE_FN}; set --; for f in");
    for id in instances {
        let _ = write!(script, " \"$HOME\"/.enact/*/logs/{}", quote(&format!("{id}.log")));
    }
    script.push_str(
        r#"; do [ -f "$f" ] && [ -f "$f.cap" ] && set -- "$@" "$f"; done; [ $# -eq 0 ] || wc -c "$@" 2>/dev/null | while read n f; do read m k < "$f.cap" 2>/dev/null || continue; case "$n$m$k" in ''|*[!0-9]*) continue;; esac; [ "$n" -gt "$m" ] && rot "$f" "$m" "$k"; done; true"#,
    );
    script
}

/// The log watcher, run with `enact-logs PID LOG MAX KEEP EVERY`: rotates LOG every EVERY
/// seconds while PID (the instance) runs. It is started from the instance's own process, so it
/// is in the instance's process group (a stop ends it) and has a clean environment (no token).
const WATCH: &str = r#"p=$1 f=$2 max=$3 keep=$4 every=$5; while :; do rot "$f" "$max" "$keep"; kill -0 "$p" 2>/dev/null || exit 0; sleep "$every"; done"#;

/// What runs as the instance, with `enact-instance WATCH LOG MAX KEEP EVERY ARGV…`: it starts the
/// log watcher and then becomes the instance (exec), so the instance keeps its pid.
const WRAP: &str = r#"w=$1 f=$2 max=$3 keep=$4 every=$5; shift 5; env -i PATH="$PATH" sh -c "$w" enact-logs "$$" "$f" "$max" "$keep" "$every" < /dev/null > /dev/null 2>&1 & exec "$@""#;

/// A shell snippet that is true while `pid` is the process that started at `start`.
/// Shell builtins only (no process is started): it is run often, on hosts that may be busy.
fn alive_check(pid: u32, start: Option<u64>) -> String {
    let start = start.map_or_else(String::new, |s| s.to_string());
    format!(
        "p={pid}; s={q}; alive() {{ [ -r /proc/$p/stat ] || return 1; {STAT} || return 1; \
         [ \"$1\" != Z ] || return 1; [ -z \"$s\" ] || [ \"${{20}}\" = \"$s\" ]; }}",
        q = quote(&start)
    )
}

/// Sets `$1 $2 …` to the fields of `/proc/$p/stat` after the command name (`$1` the state,
/// `$4` the session, `$20` the start time), with shell builtins; false when `$p` is gone.
const STAT: &str = "{ read -r t 2>/dev/null </proc/$p/stat && t=${t##*') '} && set -- $t; }";

/// The port of an instance's `http://host:port/…` URI.
fn port_of_uri(uri: &str) -> Option<u16> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || host.ends_with(':') {
        return None;
    }
    port.parse().ok()
}

impl Provider for SshProvider {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn create_nodes(
        &self,
        nodes: &[NewNode],
        _taken: &std::collections::BTreeSet<String>,
    ) -> ProviderResult<Vec<NodeState>> {
        Err(ProviderError::new(format!(
            "ssh account `{}` has a fixed list of hosts; it cannot create {} node(s)",
            self.account_name,
            nodes.len()
        )))
    }

    fn destroy_node(&self, _id: &str, _node: &NodeState) -> ProviderResult<()> {
        Ok(())
    }

    fn start(&self, request: &StartRequest<'_>) -> ProviderResult<Started> {
        let host = self.host(&request.node.address)?;
        let remote_package = self.stage(host, request.env, &request.spec.name, &request.package)?;
        if request.spec.package_type() == "TOMCAT" {
            let webapps = self.account.tomcat_webapps.as_deref().ok_or_else(|| {
                ProviderError::new(format!(
                    "TOMCAT packages need `tomcatWebapps` (the webapps directory) in ssh account `{}`",
                    self.account_name
                ))
            })?;
            let target = format!("{}/{}.war", webapps.trim_end_matches('/'), request.spec.endpoint_name());
            self.exec_ok(host, &format!("cp {} {}", quote(&remote_package), quote(&target)), "deploying the WAR")?;
            return Ok(Started::default());
        }
        let command = super::command_for(
            request.settings,
            request.spec,
            &remote_package,
            &request.node.address,
            request.instance_id,
        )?;
        let argv: Vec<String> = command.iter().map(|a| quote(a)).collect();
        let env: Vec<String> = request.environment().iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        let base = self.base(host, request.env)?;
        let log = format!("{base}/logs/{}.log", request.instance_id);
        let dir = remote_package.rsplit_once('/').map_or(".", |(d, _)| d);
        let (max, keep) = (request.log_cap.max_bytes.to_string(), request.log_cap.keep.to_string());
        // The instance appends to its log itself (it is never held up by a reader); its watcher
        // keeps the log under the cap while enact is away, and every contact (status, plan,
        // apply, logs) rotates it too, under the cap recorded beside it. Builtins where they do
        // (the log directory is made once; the variables are assignments the shell exports to
        // `setsid`): a start forks as little as it can.
        let script = format!(
            "{{ [ -d {logdir} ] || mkdir -p {logdir}; }} && printf '%s %s\\n' {max} {keep} > {cap} && cd {dir} && \
             {{ {env} setsid sh -c {wrap} enact-instance {watch} {log} {max} {keep} {every} {argv} >> {log} 2>&1 < /dev/null & }}; \
             p=$!; {STAT}; echo \"$p ${{20}}\"",
            logdir = quote(&format!("{base}/logs")),
            cap = quote(&format!("{log}.cap")),
            dir = quote(dir),
            env = env.join(" "),
            wrap = quote(WRAP),
            watch = quote(&format!("{ROTATE_FN}; {WATCH}")),
            max = quote(&max),
            keep = quote(&keep),
            every = quote(&WATCH_EVERY_SECS.to_string()),
            argv = argv.join(" "),
            log = quote(&log),
        );
        let out = self.exec_ok(host, &script, &format!("starting instance {}", request.instance_id))?;
        let mut fields = out.split_whitespace();
        let pid = fields.next().and_then(|p| p.parse().ok());
        let start_time = fields.next().and_then(|s| s.parse().ok());
        if pid.is_none() {
            return Err(ProviderError::new(format!(
                "host {}: the start of {} reported no pid: {out}",
                self.describe(host),
                request.instance_id
            )));
        }
        Ok(Started { pid, start_time })
    }

    fn wait_healthy(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        port: u16,
        timeout: Duration,
    ) -> ProviderResult<()> {
        let begun = Instant::now();
        let deadline = begun + timeout;
        let mut next_alive_check = begun + ALIVE_FIRST;
        // Polls often at first (an instance that starts fast is seen at once), then every
        // POLL_MAX: a poll is a connection attempt from here, which costs the host nothing.
        let mut pause = POLL_FIRST;
        loop {
            if super::port_answers(&node.address, port) {
                // Answering is not enough: it must be this instance that answers.
                if instance.pid.is_some() && !self.alive(instance, node) {
                    return Err(ProviderError::new(format!(
                        "instance {} exited on host {} although something answers on port {port}; is another process using that port?",
                        instance.id, node.address
                    )));
                }
                crate::timing::mark(Some(begun.elapsed()), || {
                    format!("{} answers on {}:{port}", instance.id, node.address)
                });
                return Ok(());
            }
            if Instant::now() >= next_alive_check {
                if instance.pid.is_some() && !self.alive(instance, node) {
                    return Err(ProviderError::new(format!(
                        "instance {} exited on host {} before it answered on port {port}",
                        instance.id, node.address
                    )));
                }
                next_alive_check = Instant::now() + ALIVE_EVERY;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ProviderError::new(format!(
                    "instance {} did not answer on {}:{port} within {} s",
                    instance.id,
                    node.address,
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 3 / 2).min(POLL_MAX);
        }
    }

    fn stop(&self, instance: &InstanceState, node: &NodeState, grace: Duration) -> ProviderResult<()> {
        let host = self.host(&node.address)?;
        let Some(pid) = instance.pid else {
            return Ok(());
        };
        let begun = Instant::now();
        let check = alive_check(pid, instance.start_time);
        // SIGTERM to its session's process group (it leads one), else to it alone.
        let term = format!(
            "{check}; alive || {{ echo gone; exit 0; }}; kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; echo sent"
        );
        let sent = self.exec_ok(host, &term, &format!("stopping instance {}", instance.id))?;
        if sent.trim() == "gone" {
            return Ok(());
        }
        // Then it is checked quickly, and less and less often, until it is gone or the grace
        // is over. Its port is tried too, as a port check would: a server that looks for a
        // shutdown request only between connections (Python's socketserver polls every 0.5 s)
        // sees it at once.
        let port = port_of_uri(&instance.native_uri);
        let deadline = begun + grace;
        let mut pause = POLL_FIRST;
        loop {
            if let Some(port) = port {
                let _ = super::port_answers(&node.address, port);
            }
            let now = Instant::now();
            std::thread::sleep(pause.min(deadline.saturating_duration_since(now)));
            pause = (pause * 3 / 2).min(POLL_MAX);
            let output = self.run(host, "checking that a stopped instance is gone", &format!("{check}; alive"))?;
            if output.status == Some(1) {
                crate::timing::mark(Some(begun.elapsed()), || format!("{} stopped", instance.id));
                return Ok(());
            }
            if output.status != Some(0) {
                return Err(ProviderError::new(format!(
                    "host {}: stopping instance {} failed: {}",
                    self.describe(host),
                    instance.id,
                    output.stderr.trim()
                )));
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let kill = format!(
            "{check}; alive || exit 0; kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null; i=0; \
             while alive && [ $i -lt {KILL_WAIT_TENTHS} ]; do sleep 0.1; i=$((i+1)); done; alive && exit 1; exit 0"
        );
        self.exec_ok(host, &kill, &format!("stopping instance {}", instance.id)).map(drop)
    }

    fn alive(&self, instance: &InstanceState, node: &NodeState) -> bool {
        let (Ok(host), Some(pid)) = (self.host(&node.address), instance.pid) else {
            return false;
        };
        let script = format!("{}; alive", alive_check(pid, instance.start_time));
        self.run(host, "checking that an instance runs", &script).is_ok_and(|o| o.status == Some(0))
    }

    fn observe(&self, node: &NodeState, instances: &[(&InstanceState, u16)]) -> Vec<Health> {
        let host = match self.host(&node.address) {
            Ok(h) => h,
            Err(e) => return instances.iter().map(|_| Health::down(DownReason::Unknown, e.message.clone())).collect(),
        };
        // One command for every instance of the host: `<index> ok` or `<index> gone` each. Every
        // capped log on the host is rotated first (a contact with the host).
        let ids: Vec<&str> = instances.iter().map(|(i, _)| i.id.as_str()).collect();
        let mut script = format!("{{ {}; }} 2>/dev/null; true", rotate_on_contact(&ids));
        for (index, (instance, _)) in instances.iter().enumerate() {
            if let Some(pid) = instance.pid {
                let _ = write!(
                    script,
                    "; {}; if alive; then echo '{index} ok'; else echo '{index} gone'; fi",
                    alive_check(pid, instance.start_time)
                );
            } else {
                let _ = write!(script, "; echo '{index} ok'");
            }
        }
        let output = match self.run(host, "looking at the instances", &script) {
            Ok(o) if o.status == Some(0) => o.stdout,
            Ok(o) => {
                let why = format!("the health check failed on host {}: {}", self.describe(host), o.stderr.trim());
                return instances.iter().map(|_| Health::down(DownReason::Unknown, why.clone())).collect();
            }
            Err(e) => {
                let reason = e.kind.unwrap_or(DownReason::HostUnreachable);
                return instances.iter().map(|_| Health::down(reason, e.message.clone())).collect();
            }
        };
        let gone: HashSet<usize> =
            output.lines().filter_map(|l| l.strip_suffix(" gone").and_then(|i| i.trim().parse().ok())).collect();
        instances
            .iter()
            .enumerate()
            .map(|(index, (_, port))| {
                if gone.contains(&index) {
                    Health::down(DownReason::ProcessGone, "")
                } else if !super::port_answers(&node.address, *port) {
                    Health::down(DownReason::PortClosed, format!("{}:{port} accepts no connection", node.address))
                } else {
                    Health::Healthy
                }
            })
            .collect()
    }

    fn logs(&self, instance: &InstanceState, node: &NodeState, _log: &Path, lines: usize) -> ProviderResult<String> {
        let host = self.host(&node.address)?;
        if lines == 0 {
            return Ok(String::new());
        }
        // The log rotated first (a contact), then as many of LOG, LOG.1, … as hold `lines` lines,
        // oldest first, through one `tail`.
        let script = format!(
            "{{ {rotate}; }} 2>/dev/null; for f in \"$HOME\"/.enact/*/logs/{name}; do [ -f \"$f\" ] || continue; \
             set --; g=$f; i=0; need={lines}; \
             while [ -f \"$g\" ] && [ \"$need\" -gt 0 ]; do set -- \"$g\" \"$@\"; need=$((need - $(wc -l < \"$g\"))); i=$((i+1)); g=\"$f.$i\"; done; \
             [ $# -gt 0 ] && cat \"$@\" | tail -n {lines}; done; true",
            name = quote(&format!("{}.log", instance.id)),
            rotate = rotate_on_contact(&[instance.id.as_str()]),
        );
        self.exec_ok(host, &script, "reading the log")
    }

    fn tagged(&self, node: &NodeState, lineage: &str) -> ProviderResult<Vec<super::Tagged>> {
        let host = self.host(&node.address)?;
        // `P <pid> <start time>` per session leader carrying the lineage, then
        // `/proc/<pid>/environ:NAME=value` for the variables that say what it is. GNU grep reads
        // the NUL-separated environ files itself (three processes in all, however many match);
        // others go through `tr`.
        let script = format!(
            "n={n}; r='^(INSTANCE_ID|SERVICE_NAME|HOST|ENACT_ACCOUNT)='; \
             if printf 'a\\0' | grep -qzxF a 2>/dev/null; then z=1; l=$(grep -lzxF \"$n\" /proc/[0-9]*/environ 2>/dev/null); \
             else z=; l=$(for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qxF \"$n\" && echo \"$f\"; done); fi; \
             k=; for f in $l; do p=${{f#/proc/}}; p=${{p%/environ}}; {STAT} || continue; \
             [ \"$1\" != Z ] && [ \"$4\" = \"$p\" ] || continue; echo \"P $p ${{20}}\"; k=\"$k $f\"; done; \
             [ -n \"$k\" ] || exit 0; \
             if [ -n \"$z\" ]; then grep -HazE \"$r\" $k 2>/dev/null | tr '\\0' '\\n'; \
             else for f in $k; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -E \"$r\" | sed \"s|^|$f:|\"; done; fi; true",
            n = quote(&format!("ENACT_LINEAGE={lineage}"))
        );
        let out = self.exec_ok(host, &script, "looking for this environment's processes")?;
        Ok(parse_tagged(&out))
    }

    fn remove_logs(&self, env: &str, instance: &InstanceState, node: &NodeState, _log: &Path) -> ProviderResult<()> {
        let host = self.host(&node.address)?;
        let log = format!("{}/logs/{}.log", self.base(host, env)?, instance.id);
        // The log, and what starts with `LOG.`: rotated files, the recorded cap, a cut left behind.
        self.exec_ok(host, &format!("rm -f -- {q} {q}.*", q = quote(&log)), "removing the log").map(drop)
    }

    fn find(&self, node: &NodeState, token: &str) -> Option<Started> {
        let host = self.host(&node.address).ok()?;
        let needle = format!("ENACT_TOKEN={token}");
        let script = format!(
            "n={n}; if printf 'a\\0' | grep -qzxF a 2>/dev/null; then l=$(grep -lzxF \"$n\" /proc/[0-9]*/environ 2>/dev/null); \
             else l=$(for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qxF \"$n\" && echo \"$f\"; done); fi; \
             for f in $l; do p=${{f#/proc/}}; p=${{p%/environ}}; {STAT} || continue; echo \"$p ${{20}}\"; break; done",
            n = quote(&needle)
        );
        let out = self.run(host, "looking for an instance by its start token", &script).ok()?;
        let mut fields = out.stdout.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let start_time = fields.next().and_then(|s| s.parse().ok());
        Some(Started { pid: Some(pid), start_time })
    }
}

/// Reads what the `tagged` script prints: `P <pid> <start time>` per process, in order, and
/// `/proc/<pid>/environ:NAME=value` lines (the first of each name counts).
fn parse_tagged(out: &str) -> Vec<super::Tagged> {
    let mut found: Vec<super::Tagged> = Vec::new();
    let mut seen: HashMap<u32, HashSet<String>> = HashMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("P ") {
            let mut fields = rest.split_whitespace();
            let Some(pid) = fields.next().and_then(|p| p.parse().ok()) else { continue };
            let start_time = fields.next().and_then(|s| s.parse().ok());
            found.push(super::Tagged {
                pid,
                start_time,
                instance: String::new(),
                service: String::new(),
                host: String::new(),
                account: String::new(),
            });
        } else if let Some(rest) = line.strip_prefix("/proc/")
            && let Some((pid, rest)) = rest.split_once("/environ:")
            && let Ok(pid) = pid.parse::<u32>()
            && let Some((name, value)) = rest.split_once('=')
            && seen.entry(pid).or_default().insert(name.to_string())
            && let Some(process) = found.iter_mut().find(|t| t.pid == pid)
        {
            let field = match name {
                "INSTANCE_ID" => &mut process.instance,
                "SERVICE_NAME" => &mut process.service,
                "HOST" => &mut process.host,
                "ENACT_ACCOUNT" => &mut process.account,
                _ => continue,
            };
            *field = value.to_string();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any text without NUL (which no argument can hold), hostile shell syntax most of all,
        /// comes back from `sh -c 'printf %s QUOTED'` unchanged: it was never run.
        #[test]
        fn any_value_quoted_reaches_a_shell_as_text(
            value in proptest::string::string_regex("([^\\x00]|[;&|$`'\"\\\\(){}<>*?!#~\\n])*").expect("regex")
        ) {
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {}", quote(&value))).output().expect("sh");
            proptest::prop_assert_eq!(String::from_utf8_lossy(&out.stdout), value.as_str());
            proptest::prop_assert!(out.status.success());
        }
    }

    #[test]
    fn quoting_keeps_hostile_values_as_text() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        for hostile in ["a; rm -rf /", "$(touch /tmp/x)", "`id`", "\"q\"", "line\nbreak", "'; echo pwned; '"] {
            let quoted = quote(hostile);
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {quoted}")).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), hostile, "{quoted}");
        }
    }

    #[test]
    fn the_alive_check_knows_a_process_by_pid_and_start_time_with_builtins_only() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let start: u64 = stat.rsplit_once(") ").unwrap().1.split(' ').nth(19).unwrap().parse().unwrap();
        // POSIX sh, and bash where it is there: the account's shell may be either.
        for shell in
            ["sh", "bash"].into_iter().filter(|s| std::process::Command::new(s).arg("-c").arg("true").status().is_ok())
        {
            let run = |script: String| {
                let out = std::process::Command::new(shell).arg("-c").arg(script).output().unwrap();
                (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
            };
            assert_eq!(run(format!("{}; alive", alive_check(pid, Some(start)))), (Some(0), String::new()), "{shell}");
            assert_eq!(run(format!("{}; alive", alive_check(pid, None))), (Some(0), String::new()), "{shell}");
            // Another process with that pid (another start time) is not it.
            assert_eq!(run(format!("{}; alive", alive_check(pid, Some(start + 1)))).0, Some(1), "{shell}");
            // The fields after the command name, as the start and tagged scripts read them.
            let fields = run(format!("p={pid}; {STAT} && echo \"$1 $4 ${{20}}\" >&2"));
            assert_eq!(fields.1.split(' ').nth(2).map(str::trim), Some(start.to_string().as_str()), "{shell}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let (code, err) = {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{}; alive", alive_check(pid, Some(start))))
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        assert_eq!((code, err.as_str()), (Some(1), ""), "a process that is gone is not alive, quietly");
    }

    #[test]
    fn the_port_is_read_from_an_instance_uri() {
        assert_eq!(port_of_uri("http://127.0.0.2:8080/air/"), Some(8080));
        assert_eq!(port_of_uri("http://[::1]:81/x"), Some(81));
        assert_eq!(port_of_uri("http://host/x"), None);
        assert_eq!(port_of_uri(""), None);
        assert_eq!(port_of_uri("http://::1/x"), None);
    }

    #[test]
    fn tagged_processes_are_read_with_their_variables() {
        let out = "P 42 1000\nP 43 1001\n/proc/42/environ:INSTANCE_ID=web-1\n/proc/42/environ:SERVICE_NAME=web\n\
                   /proc/42/environ:HOST=10.0.0.5\n/proc/42/environ:HOST=spoofed\n/proc/43/environ:ENACT_ACCOUNT=lab\n\
                   /proc/44/environ:HOST=not-a-leader\nnoise\n";
        let found = parse_tagged(out);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (
                found[0].pid,
                found[0].start_time,
                found[0].instance.as_str(),
                found[0].service.as_str(),
                found[0].host.as_str()
            ),
            (42, Some(1000), "web-1", "web", "10.0.0.5")
        );
        assert_eq!((found[1].pid, found[1].account.as_str(), found[1].instance.as_str()), (43, "lab", ""));
    }

    #[test]
    fn paths_expand_home_and_the_repository() {
        let root = Path::new("/repo");
        assert_eq!(expand_path("keys/id", root), PathBuf::from("/repo/keys/id"));
        assert_eq!(expand_path("/abs/id", root), PathBuf::from("/abs/id"));
        assert!(expand_path("~/.ssh/id", root).ends_with(".ssh/id"));
    }
}
