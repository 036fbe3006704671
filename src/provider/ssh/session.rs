//! The SSH connection of a host: made and authenticated once per enact process, shared by every
//! ssh provider of the process, with its SFTP session and the shells it keeps open; commands
//! queue for those shells (see [`Connection`]). Connection failures are [`ConnectError`]s,
//! which say what to do and which kind of failure a refresh reports.
//!
//! Depends on `shell` (the shells), `trust` (the host key check) and the state's
//! [`DownReason`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::PrivateKeyWithHashAlg;
use russh_sftp::client::SftpSession;

use super::SshProvider;
use super::shell::{Output, RunError, Shell, ShellError};
use super::trust::{KeyProblem, Verifier, expand_path};
use crate::provider::{ProviderError, ProviderResult};
use crate::repo::settings::SshHost;
use crate::state::observed::DownReason;

/// How long a host has to answer a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one remote command may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many shells are kept open on one host (OpenSSH allows 10 sessions per
/// connection by default; one more is the SFTP session).
const MAX_SHELLS: usize = 6;
/// How long a command waits for a busy shell of its host to come free before another is opened
/// (commands take milliseconds; opening a shell takes a session start on the host).
const SHELL_PATIENCE: Duration = Duration::from_millis(25);
/// At most this many queued commands go to a shell in one write.
const BATCH_MAX: usize = 32;

/// Why a host could not be connected to or authenticated with: the host (`user@address:port`)
/// and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The host did not answer within the connect timeout (10 s).
    #[error("cannot reach host {host}: no answer within {secs} s")]
    Timeout {
        /// `user@address:port`.
        host: String,
        /// The timeout, in seconds.
        secs: u64,
    },
    /// The host presented a key known_hosts does not hold: trust it with `enact hosts trust`
    /// or `--accept-new-host-keys`.
    #[error(
        "host {host} presented an unknown {algorithm} host key {fingerprint}; refusing to connect. \
         If that is the host's key, trust it with `enact hosts trust` (records it in {}) or pass --accept-new-host-keys",
        known_hosts.display()
    )]
    KeyUnknown {
        /// `user@address:port`.
        host: String,
        /// The key's algorithm, e.g. `ssh-ed25519`.
        algorithm: String,
        /// Its SHA-256 fingerprint.
        fingerprint: String,
        /// The account's known_hosts file.
        known_hosts: PathBuf,
    },
    /// The host presented another key than the one recorded: never accepted; remove the line
    /// if the host was reinstalled.
    #[error(
        "host {host} presented a DIFFERENT host key ({fingerprint}) than the one recorded at {}:{line}; refusing to connect. \
         Someone may be intercepting the connection; if the host was reinstalled, remove that line and trust the new key",
        known_hosts.display()
    )]
    KeyChanged {
        /// `user@address:port`.
        host: String,
        /// The SHA-256 fingerprint of the key presented.
        fingerprint: String,
        /// The account's known_hosts file.
        known_hosts: PathBuf,
        /// The line of known_hosts (from 1) holding the recorded key.
        line: usize,
    },
    /// known_hosts could not be read, or a new key not recorded in it.
    #[error("host {host}: {reason}")]
    KnownHosts {
        /// `user@address:port`.
        host: String,
        /// Which file, and why.
        reason: String,
    },
    /// The connection failed before any key was checked (refused, no route, reset).
    #[error("cannot reach host {host}: {reason}")]
    Unreachable {
        /// `user@address:port`.
        host: String,
        /// What the SSH library said.
        reason: String,
    },
    /// The account's private key cannot be loaded (no such file, encrypted, not a key).
    #[error("host {host}: cannot load private key {}: {reason}", key.display())]
    PrivateKey {
        /// `user@address:port`.
        host: String,
        /// The private key file.
        key: PathBuf,
        /// Why it cannot be loaded.
        reason: String,
    },
    /// The authentication exchange failed.
    #[error("host {host}: authentication failed: {reason}")]
    AuthFailed {
        /// `user@address:port`.
        host: String,
        /// What the SSH library said.
        reason: String,
    },
    /// The host refused the key: add its public key to the user's `authorized_keys`.
    #[error(
        "host {host} refused the key {} for user `{user}`; add its public key to that user's authorized_keys",
        key.display()
    )]
    KeyRefused {
        /// `user@address:port`.
        host: String,
        /// The private key file offered.
        key: PathBuf,
        /// The user it was offered for.
        user: String,
    },
}

impl ConnectError {
    /// The kind of failure a refresh reports for the host's instances; `None` for a local
    /// problem (the private key) that says nothing of the host.
    pub fn kind(&self) -> Option<DownReason> {
        match self {
            ConnectError::Timeout { .. } | ConnectError::Unreachable { .. } => Some(DownReason::HostUnreachable),
            ConnectError::KeyUnknown { .. } => Some(DownReason::HostKeyUnknown),
            ConnectError::KeyChanged { .. } => Some(DownReason::HostKeyChanged),
            ConnectError::KnownHosts { .. } => Some(DownReason::Unknown),
            ConnectError::AuthFailed { .. } | ConnectError::KeyRefused { .. } => Some(DownReason::AuthRefused),
            ConnectError::PrivateKey { .. } => None,
        }
    }
}

impl From<ConnectError> for ProviderError {
    fn from(e: ConnectError) -> Self {
        ProviderError { message: e.to_string(), kind: e.kind() }
    }
}

/// The tokio runtime of every ssh provider of the process: connections outlive the provider
/// that made them (a sweep's provider, then the apply's), so their tasks must run on a runtime
/// that does too. `None` when it could not be started.
static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// The runtime of every ssh provider of the process, started by the first.
///
/// # Errors
/// It cannot be started (no threads left).
pub(super) fn runtime() -> ProviderResult<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().ok())
        .as_ref()
        .ok_or_else(|| ProviderError::new("cannot start the SSH runtime (no threads left?)"))
}

/// A host's connection by [`SshProvider::link_key`], made once per process.
type Links = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Connection>>>>>;
/// Every connection of the process, by [`SshProvider::link_key`].
static LINKS: LazyLock<Links> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// A command waiting for a shell of its host.
struct Pending {
    /// Its number on the connection, to find it in the queue again.
    id: u64,
    /// The command, run as `sh -c` would run it.
    command: String,
    /// How many times it was sent to a shell that turned out to be gone.
    unsent: u32,
    /// Where its output, or why it did not run, goes.
    reply: tokio::sync::oneshot::Sender<Result<Output, ShellError>>,
}

/// One authenticated SSH connection to a host, with its SFTP session, its home directory and
/// its open shells, each made when first needed.
///
/// Commands queue up; whoever finds a shell free sends it every queued command (up to
/// [`BATCH_MAX`]) in one write, so commands that arrive together (the starts of five services on
/// one host) cost one round trip, not five. When commands wait longer than [`SHELL_PATIENCE`],
/// one of them opens another shell (one at a time, up to [`MAX_SHELLS`]), which takes them all.
pub(super) struct Connection {
    /// `user@host:port`, for timing lines.
    who: String,
    /// The authenticated SSH connection.
    pub(super) handle: client::Handle<Verifier>,
    /// The host's SFTP session, opened with the first upload.
    pub(super) sftp: tokio::sync::OnceCell<SftpSession>,
    /// The home directory of the account's user on the host (absolute, no trailing `/`).
    pub(super) home: tokio::sync::OnceCell<String>,
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
    /// A connection with no shell open yet.
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
    fn open_shell(self: &Arc<Self>) -> tokio::sync::oneshot::Receiver<Result<(), ShellError>> {
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
    ///
    /// # Errors
    /// No shell could be opened or written to, or the shell went away while the command ran.
    async fn run(self: &Arc<Self>, command: &str) -> Result<Output, ShellError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.queue().push_back(Pending { id, command: command.to_string(), unsent: 0, reply });
        let first_wait = if self.shells.load(Ordering::SeqCst) == 0 { Duration::ZERO } else { SHELL_PATIENCE };
        let mut patience = Box::pin(tokio::time::sleep(first_wait));
        let mut opening: Option<tokio::sync::oneshot::Receiver<Result<(), ShellError>>> = None;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match answer.try_recv() {
                Ok(result) => return result,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(ShellError::WentAway);
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
                    return result.unwrap_or(Err(ShellError::WentAway));
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
                        Err(_) => Some(ShellError::NotOpened),
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

impl SshProvider {
    /// Connects and authenticates, or explains exactly why not: the connection, and the key
    /// recorded in known_hosts when `accept_new` let an unknown one in.
    ///
    /// # Errors
    /// The host does not answer, its key is unknown (and not accepted) or changed, the private
    /// key cannot be loaded, or the host refuses it.
    pub(super) async fn connect(
        &self,
        host: &SshHost,
        accept_new: bool,
    ) -> Result<(Connection, Option<String>), ConnectError> {
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
        // Nagle off and quick ACKs (see `tcp`): commands and answers are small packets.
        let connecting = async {
            let stream = super::tcp::QuickAck::connect(&host.address, port).await.map_err(russh::Error::IO)?;
            client::connect_stream(config, stream, verifier).await
        };
        let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => return Err(ConnectError::Timeout { host: who, secs: CONNECT_TIMEOUT.as_secs() }),
            Ok(Err(e)) => {
                let problem = problem.lock().ok().and_then(|p| p.clone());
                return Err(self.refused(who, problem, &e));
            }
            Ok(Ok(handle)) => handle,
        };
        let key_path = expand_path(host.private_key.as_deref().unwrap_or("~/.ssh/id_ed25519"), &self.options.repo_root);
        let key = russh::keys::load_secret_key(&key_path, None).map_err(|e| ConnectError::PrivateKey {
            host: who.clone(),
            key: key_path.clone(),
            reason: e.to_string(),
        })?;
        let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
        let auth = handle
            .authenticate_publickey(host.user.clone(), PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| ConnectError::AuthFailed { host: who.clone(), reason: e.to_string() })?;
        if !auth.success() {
            return Err(ConnectError::KeyRefused { host: who, key: key_path, user: host.user.clone() });
        }
        let learned = learned.lock().ok().and_then(|l| l.clone());
        Ok((Connection::new(who, handle), learned))
    }

    /// Why the connection to `who` failed during the key exchange: the key `problem` the
    /// [`Verifier`] found, else what the SSH library said (`error`).
    fn refused(&self, who: String, problem: Option<KeyProblem>, error: &russh::Error) -> ConnectError {
        let known_hosts = self.known_hosts.clone();
        match problem {
            Some(KeyProblem::Unknown { algorithm, fingerprint }) => {
                ConnectError::KeyUnknown { host: who, algorithm, fingerprint, known_hosts }
            }
            Some(KeyProblem::Changed { fingerprint, line }) => {
                ConnectError::KeyChanged { host: who, fingerprint, known_hosts, line }
            }
            Some(KeyProblem::Unreadable(reason)) => ConnectError::KnownHosts { host: who, reason },
            None => ConnectError::Unreachable { host: who, reason: error.to_string() },
        }
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
    pub(super) async fn connection(&self, host: &SshHost) -> ProviderResult<Arc<Connection>> {
        let key = self.link_key(host);
        let cell = {
            let mut links = LINKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(links.entry(key.clone()).or_default())
        };
        let result = cell
            .get_or_try_init(|| async {
                let begun = Instant::now();
                let made = self
                    .connect(host, self.options.accept_new_host_keys)
                    .await
                    .map(|(c, _)| Arc::new(c))
                    .map_err(ProviderError::from);
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
    ///
    /// # Errors
    /// The host cannot be reached or trusted, its shell went away, or the command did not
    /// finish within [`EXEC_TIMEOUT`].
    pub(super) async fn run_async(&self, host: &SshHost, what: &str, command: &str) -> ProviderResult<Output> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_failure_keeps_its_kind_and_its_words_at_the_provider_boundary() {
        let unknown = ConnectError::KeyUnknown {
            host: "root@10.0.0.5:22".into(),
            algorithm: "ssh-ed25519".into(),
            fingerprint: "SHA256:abc".into(),
            known_hosts: PathBuf::from("/repo/known_hosts"),
        };
        let e = ProviderError::from(unknown);
        assert_eq!(e.kind, Some(DownReason::HostKeyUnknown));
        assert_eq!(
            e.message,
            "host root@10.0.0.5:22 presented an unknown ssh-ed25519 host key SHA256:abc; refusing to connect. \
             If that is the host's key, trust it with `enact hosts trust` (records it in /repo/known_hosts) or pass --accept-new-host-keys"
        );
        let key = ConnectError::PrivateKey {
            host: "u@h:22".into(),
            key: PathBuf::from("/k"),
            reason: "No such file or directory".into(),
        };
        assert!(
            matches!(ProviderError::from(key), ProviderError { kind: None, .. }),
            "a local problem says nothing of the host"
        );
        let refused = ConnectError::KeyRefused { host: "u@h:22".into(), key: PathBuf::from("/k"), user: "u".into() };
        assert_eq!(refused.kind(), Some(DownReason::AuthRefused));
        assert!(refused.to_string().ends_with("add its public key to that user's authorized_keys"));
        let timeout = ConnectError::Timeout { host: "u@h:2416".into(), secs: 10 };
        assert_eq!(timeout.to_string(), "cannot reach host u@h:2416: no answer within 10 s");
        assert_eq!(timeout.kind(), Some(DownReason::HostUnreachable));
    }
}
