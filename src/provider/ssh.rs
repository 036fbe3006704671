//! The ssh provider (the CHOReOS "fixed" cloud provider, done right): the account's hosts are
//! the nodes; packages are uploaded over SFTP (or fetched by the host for http(s) URIs) and
//! started detached by their package type's recipe; stop, health, status and logs go over SSH.
//!
//! - One SSH connection per host, reused for many channels; hosts are worked on concurrently.
//! - Host keys are checked against `knownHosts` (OpenSSH format): an unknown key is refused with
//!   its fingerprint and the way to trust it; a changed key is always refused.
//! - Every value that reaches the remote shell goes through [`quote`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use russh_sftp::client::SftpSession;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Package, Provider, ProviderError, ProviderResult, StartRequest, Started};
use crate::plan::placement::NewNode;
use crate::repo::settings::{SshAccount, SshHost};
use crate::state::observed::{DownReason, Health};
use crate::state::{InstanceState, NodeState};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);

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

struct Connection {
    handle: client::Handle<Verifier>,
    sftp: tokio::sync::OnceCell<SftpSession>,
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
    runtime: tokio::runtime::Runtime,
    connections: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Connection>>>>>,
    uploaded: Mutex<HashSet<HostPath>>,
    homes: Mutex<HashMap<String, String>>,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ProviderError::new(format!("cannot start the SSH runtime: {e}")))?;
        Ok(SshProvider {
            account_name: account_name.to_string(),
            known_hosts: known_hosts_of(account.known_hosts.as_deref(), &options.repo_root),
            account: account.clone(),
            options,
            runtime,
            connections: Mutex::new(HashMap::new()),
            uploaded: Mutex::new(HashSet::new()),
            homes: Mutex::new(HashMap::new()),
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
        Ok((Connection { handle, sftp: tokio::sync::OnceCell::new() }, learned))
    }

    /// The connection to a host, made once and shared by every step.
    async fn connection(&self, host: &SshHost) -> ProviderResult<Arc<Connection>> {
        let key = self.describe(host);
        let cell = {
            let mut connections = self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(connections.entry(key.clone()).or_default())
        };
        let result = cell
            .get_or_try_init(|| async {
                self.connect(host, self.options.accept_new_host_keys).await.map(|(c, _)| Arc::new(c))
            })
            .await
            .cloned();
        if result.is_err() {
            // Forget the failed attempt so a later step tries again.
            self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
        }
        result
    }

    async fn exec_async(&self, host: &SshHost, command: &str) -> ProviderResult<Output> {
        let connection = self.connection(host).await?;
        let who = self.describe(host);
        let run = async {
            let mut channel = connection.handle.channel_open_session().await?;
            channel.exec(true, command).await?;
            let mut output = Output::default();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
                    _ => {}
                }
            }
            output.stdout = String::from_utf8_lossy(&out).into_owned();
            output.stderr = String::from_utf8_lossy(&err).into_owned();
            Ok::<_, russh::Error>(output)
        };
        match tokio::time::timeout(EXEC_TIMEOUT, run).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => {
                self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&who);
                Err(ProviderError::new(format!("host {who}: {e}")))
            }
            Err(_) => Err(ProviderError::new(format!(
                "host {who}: a command did not finish within {} s",
                EXEC_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Runs a command on a host and waits for it.
    pub fn exec(&self, host: &SshHost, command: &str) -> ProviderResult<Output> {
        self.runtime.block_on(self.exec_async(host, command))
    }

    fn exec_ok(&self, host: &SshHost, command: &str, what: &str) -> ProviderResult<String> {
        let output = self.exec(host, command)?;
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
        if let Some(home) = self.homes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&who) {
            return Ok(format!("{home}/.enact/{env}"));
        }
        let home = self.exec_ok(host, "printf %s \"$HOME\"", "finding the home directory")?;
        let home = home.trim_end_matches('/').to_string();
        if !home.starts_with('/') {
            return Err(ProviderError::new(format!("host {who}: the home directory `{home}` is not absolute")));
        }
        self.homes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(who, home.clone());
        Ok(format!("{home}/.enact/{env}"))
    }

    /// Uploads a file over SFTP (once per content and host).
    fn upload(&self, host: &SshHost, local: &Path, remote: &str) -> ProviderResult<()> {
        let key = (self.describe(host), remote.to_string());
        // One upload of a file to a host at a time; the others wait and then find it there.
        let lock = {
            let mut locks = self.upload_locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let _held = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.uploaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&key) {
            return Ok(());
        }
        let bytes = std::fs::read(local)
            .map_err(|e| ProviderError::new(format!("cannot read package {}: {e}", local.display())))?;
        let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
        let present = self.exec_ok(
            host,
            &format!("mkdir -p {} && if test -f {}; then echo present; fi", quote(dir), quote(remote)),
            "preparing the package directory",
        )?;
        if present.trim() != "present" {
            let who = self.describe(host);
            // Hosts may share a home directory (NFS), and so may applies of several environments
            // or repositories: each writer uploads under a name of its own, and the rename that
            // installs the package is atomic, so the last one wins with the same bytes.
            let partial = format!("{remote}.{}.part", crate::state::store::new_lineage());
            self.runtime.block_on(async {
                let connection = self.connection(host).await?;
                let sftp = connection
                    .sftp
                    .get_or_try_init(|| async {
                        let channel = connection.handle.channel_open_session().await?;
                        channel.request_subsystem(true, "sftp").await?;
                        SftpSession::new(channel.into_stream())
                            .await
                            .map_err(|e| russh::Error::from(std::io::Error::other(e.to_string())))
                    })
                    .await
                    .map_err(|e| ProviderError::new(format!("host {who}: cannot open SFTP: {e}")))?;
                let mut file = sftp
                    .create(&partial)
                    .await
                    .map_err(|e| ProviderError::new(format!("host {who}: cannot create {partial}: {e}")))?;
                file.write_all(&bytes)
                    .await
                    .map_err(|e| ProviderError::new(format!("host {who}: cannot upload {partial}: {e}")))?;
                file.shutdown()
                    .await
                    .map_err(|e| ProviderError::new(format!("host {who}: cannot upload {partial}: {e}")))?;
                Ok::<(), ProviderError>(())
            })?;
            self.exec_ok(
                host,
                &format!("chmod 755 {p} && mv -f {p} {r}", p = quote(&partial), r = quote(remote)),
                "installing the package",
            )?;
        }
        self.uploaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key);
        Ok(())
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
                let remote = format!("{}/packages/{digest}/{name}", self.base(host, env)?);
                self.upload(host, local, &remote)?;
                Ok(remote)
            }
            Package::None => Err(ProviderError::new("the ssh provider needs a package to run")),
            Package::Url(url) => {
                let digest: String =
                    Sha256::digest(url.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
                let name = crate::apply::package::file_name_of(url);
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
fn alive_check(pid: u32, start: Option<u64>) -> String {
    let start = start.map_or_else(String::new, |s| s.to_string());
    format!(
        "p={pid}; s={q}; alive() {{ [ -r /proc/$p/stat ] || return 1; f=$(sed 's/.*) //' /proc/$p/stat); \
         [ \"$(echo \"$f\" | cut -d' ' -f1)\" != Z ] || return 1; [ -z \"$s\" ] || [ \"$(echo \"$f\" | cut -d' ' -f20)\" = \"$s\" ]; }}",
        q = quote(&start)
    )
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
        // apply, logs) rotates it too, under the cap recorded beside it.
        let script = format!(
            "mkdir -p {logdir} && printf '%s %s\\n' {max} {keep} > {cap} && cd {dir} && \
             {{ setsid env {env} sh -c {wrap} enact-instance {watch} {log} {max} {keep} {every} {argv} >> {log} 2>&1 < /dev/null & }}; \
             p=$!; echo \"$p $(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f20)\"",
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
        let deadline = Instant::now() + timeout;
        let mut next_alive_check = Instant::now() + Duration::from_millis(500);
        loop {
            if super::port_answers(&node.address, port) {
                // Answering is not enough: it must be this instance that answers.
                if instance.pid.is_some() && !self.alive(instance, node) {
                    return Err(ProviderError::new(format!(
                        "instance {} exited on host {} although something answers on port {port}; is another process using that port?",
                        instance.id, node.address
                    )));
                }
                return Ok(());
            }
            if Instant::now() >= next_alive_check {
                if instance.pid.is_some() && !self.alive(instance, node) {
                    return Err(ProviderError::new(format!(
                        "instance {} exited on host {} before it answered on port {port}",
                        instance.id, node.address
                    )));
                }
                next_alive_check = Instant::now() + Duration::from_secs(1);
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::new(format!(
                    "instance {} did not answer on {}:{port} within {} s",
                    instance.id,
                    node.address,
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self, instance: &InstanceState, node: &NodeState, grace: Duration) -> ProviderResult<()> {
        let host = self.host(&node.address)?;
        let Some(pid) = instance.pid else {
            return Ok(());
        };
        let tenths = grace.as_millis() / 100;
        let script = format!(
            "{check}; alive || exit 0; kill -TERM -- -$p 2>/dev/null || kill -TERM $p 2>/dev/null; i=0; \
             while alive && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done; \
             if alive; then kill -KILL -- -$p 2>/dev/null || kill -KILL $p 2>/dev/null; sleep 0.2; fi; alive && exit 1; exit 0",
            check = alive_check(pid, instance.start_time)
        );
        self.exec_ok(host, &script, &format!("stopping instance {}", instance.id)).map(drop)
    }

    fn alive(&self, instance: &InstanceState, node: &NodeState) -> bool {
        let (Ok(host), Some(pid)) = (self.host(&node.address), instance.pid) else {
            return false;
        };
        let script = format!("{}; alive", alive_check(pid, instance.start_time));
        self.exec(host, &script).is_ok_and(|o| o.status == Some(0))
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
        let output = match self.exec(host, &script) {
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
        // One line per session leader carrying the lineage: pid, start time, instance, service.
        // GNU grep reads the NUL-separated environ files itself; others go through `tr`.
        let script = format!(
            "n={n}; if printf 'a\\0' | grep -qzxF a 2>/dev/null; then l=$(grep -lzxF \"$n\" /proc/[0-9]*/environ 2>/dev/null); \
             else l=$(for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qxF \"$n\" && echo \"$f\"; done); fi; \
             for f in $l; do p=${{f#/proc/}}; p=${{p%/environ}}; \
             st=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null) || continue; set -- $st; \
             [ \"$1\" != Z ] && [ \"$4\" = \"$p\" ] || continue; \
             e=$(tr '\\0' '\\n' < \"$f\" 2>/dev/null); \
             v() {{ printf '%s\\n' \"$e\" | sed -n \"s/^$1=//p\" | head -n 1; }}; \
             echo \"$p ${{20}} $(v INSTANCE_ID) $(v SERVICE_NAME) $(v HOST) $(v ENACT_ACCOUNT)\"; done; true",
            n = quote(&format!("ENACT_LINEAGE={lineage}"))
        );
        let out = self.exec_ok(host, &script, "looking for this environment's processes")?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let pid = fields.next()?.parse().ok()?;
                let start_time = fields.next().and_then(|s| s.parse().ok());
                Some(super::Tagged {
                    pid,
                    start_time,
                    instance: fields.next().unwrap_or_default().to_string(),
                    service: fields.next().unwrap_or_default().to_string(),
                    host: fields.next().unwrap_or_default().to_string(),
                    account: fields.next().unwrap_or_default().to_string(),
                })
            })
            .collect())
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
            "for f in /proc/[0-9]*/environ; do if tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qxF {n}; then \
             p=${{f#/proc/}}; p=${{p%/environ}}; echo \"$p $(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f20)\"; break; fi; done",
            n = quote(&needle)
        );
        let out = self.exec(host, &script).ok()?;
        let mut fields = out.stdout.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let start_time = fields.next().and_then(|s| s.parse().ok());
        Some(Started { pid: Some(pid), start_time })
    }
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
    fn paths_expand_home_and_the_repository() {
        let root = Path::new("/repo");
        assert_eq!(expand_path("keys/id", root), PathBuf::from("/repo/keys/id"));
        assert_eq!(expand_path("/abs/id", root), PathBuf::from("/abs/id"));
        assert!(expand_path("~/.ssh/id", root).ends_with(".ssh/id"));
    }
}
