//! The ssh provider (the CHOReOS "fixed" cloud provider, done right): the account's hosts are
//! the nodes; packages are uploaded (inside a command when small, else over SFTP; fetched by the
//! host for http(s) URIs) and started detached by their package type's recipe; stop, health,
//! status and logs go over SSH.
//!
//! - One SSH connection per host, made once per enact process and shared by every provider of
//!   the process (the sweep for untracked processes, the refresh and the apply reuse it); hosts
//!   are worked on concurrently (`session`).
//! - Commands do not pay for a session each: every host keeps a few `sh` processes open (one
//!   SSH channel each) and feeds them one command at a time; a command runs in a subshell of
//!   its own, so it sees nothing a previous one left (`shell`).
//! - Host keys are checked against `knownHosts` (OpenSSH format): an unknown key is refused with
//!   its fingerprint and the way to trust it; a changed key is always refused (`trust`).
//! - Packages reach a host once per content (`stage`).
//! - Every value that reaches the remote shell goes through [`quote`]; every script is in
//!   `remote_script`.
//!
//! Depends on the provider trait, the repository settings (the account) and the state.

mod remote_script;
mod session;
mod shell;
mod stage;
mod tcp;
mod trust;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use remote_script::{WATCH_EVERY_SECS, quote};
pub use session::ConnectError;
pub use shell::{Output, ShellError};
pub use trust::{KeyProblem, Trusted, expand_path, forget_hosts, known_hosts_of};

use super::{
    LogMark, LogPlace, NodeRequest, Provider, ProviderError, ProviderResult, StartRequest, Started, Tagged,
    port_answers,
};
use crate::repo::settings::{SshAccount, SshHost};
use crate::state::observed::{DownReason, Health};
use crate::state::{InstanceState, NewNode, NodeState};
use remote_script::{
    alive_check, find_script, follow_script, kill_script, log_files, logs_script, observe_script, parse_follow,
    parse_tagged, port_of_uri, remote_log, start_script, tagged_script, term_script,
};
use session::runtime;

/// The first wait between two health polls of a new instance, and between two exit checks of a
/// stopping one; it grows by half each time up to [`HEALTH_POLL_MAX`] or [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(5);
/// The longest wait between two health polls of a new instance: a poll is a connection attempt
/// from here (about 30 µs of CPU), and the last instance to answer is seen this much later at
/// most.
const HEALTH_POLL_MAX: Duration = Duration::from_millis(20);
/// The longest wait between two exit checks of a stopping instance (each is a remote command).
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long after its start a new instance that does not answer yet is first checked to still
/// run, and how often after that (each check is a remote command, which a host busy starting
/// many instances pays for: an instance that exits at once is reported a second later).
const ALIVE_FIRST: Duration = Duration::from_secs(1);
/// How often, after [`ALIVE_FIRST`], a new instance that does not answer yet is checked to run.
const ALIVE_EVERY: Duration = Duration::from_secs(1);

/// (host, remote path).
type HostPath = (String, String);

/// What an ssh provider needs besides its account.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The config repository: relative key and known_hosts paths are taken from here.
    pub repo_root: PathBuf,
    /// Record unknown host keys instead of refusing them (`--accept-new-host-keys`).
    pub accept_new_host_keys: bool,
}

/// The provider of one ssh account of `enact.json`: its hosts are the nodes.
pub struct SshProvider {
    /// The account's name in `enact.json`.
    account_name: String,
    account: SshAccount,
    /// The account's known_hosts file.
    known_hosts: PathBuf,
    options: SshOptions,
    /// The runtime every SSH connection of the process runs on.
    runtime: &'static tokio::runtime::Runtime,
    /// The packages this provider put on a host (host, remote path).
    uploaded: Mutex<HashSet<HostPath>>,
    /// One upload of a file to a host at a time.
    upload_locks: Mutex<HashMap<HostPath, Arc<Mutex<()>>>>,
    /// How to reach a node whose address the account does not list (the ec2 provider's nodes):
    /// this host with the node's address; `None` for an ssh account, which knows every host.
    any_host: Option<SshHost>,
}

impl std::fmt::Debug for SshProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshProvider").field("account", &self.account_name).finish_non_exhaustive()
    }
}

impl SshProvider {
    /// The provider of ssh account `account_name`; connects to nothing yet.
    ///
    /// # Errors
    /// The runtime SSH connections run on cannot be started.
    pub fn new(account_name: &str, account: &SshAccount, options: SshOptions) -> ProviderResult<Self> {
        let runtime = runtime()?;
        // From here enact mostly waits on hosts, on threads that each touch a little memory:
        // clearing a 2 MiB page for each costs more than it saves (see `crate::pages`).
        crate::pages::small_pages_from_now();
        Ok(SshProvider {
            account_name: account_name.to_string(),
            known_hosts: known_hosts_of(account.known_hosts.as_deref(), &options.repo_root),
            account: account.clone(),
            options,
            runtime,
            uploaded: Mutex::new(HashSet::new()),
            upload_locks: Mutex::new(HashMap::new()),
            any_host: None,
        })
    }

    /// A provider that reaches any address as `template` says (user, port, key): the ec2
    /// provider's way to its nodes, which it made and whose addresses no account lists.
    ///
    /// # Errors
    /// As [`SshProvider::new`].
    pub fn for_any_host(
        account_name: &str,
        template: SshHost,
        known_hosts: Option<String>,
        options: SshOptions,
    ) -> ProviderResult<Self> {
        let account = SshAccount { known_hosts, ..SshAccount::default() };
        let mut provider = SshProvider::new(account_name, &account, options)?;
        provider.any_host = Some(template);
        Ok(provider)
    }

    /// Forgets the host keys of `addresses` (machines that are gone), in the account's
    /// known_hosts file. Returns how many entries went.
    ///
    /// # Errors
    /// As [`forget_hosts`].
    pub fn forget_hosts(&self, addresses: &[&str]) -> crate::Result<usize> {
        let port = self.any_host.as_ref().and_then(|h| h.port).and_then(|p| u16::try_from(p).ok()).unwrap_or(22);
        forget_hosts(&self.known_hosts, addresses, port)
    }

    /// The host of the account at `address`.
    ///
    /// # Errors
    /// No host of the account has that address any more.
    fn host(&self, address: &str) -> ProviderResult<Cow<'_, SshHost>> {
        if let Some(host) = self.account.hosts.iter().find(|h| h.address == address) {
            return Ok(Cow::Borrowed(host));
        }
        if let Some(any) = &self.any_host {
            return Ok(Cow::Owned(SshHost { address: address.to_string(), ..any.clone() }));
        }
        Err(ProviderError::new(format!(
            "host {address} is not listed in ssh account `{}` of enact.json any more",
            self.account_name
        )))
    }

    /// `user@address:port`, as messages name a host.
    fn describe(&self, host: &SshHost) -> String {
        format!("{}@{}:{}", host.user, host.address, host.port.unwrap_or(22))
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

    /// Runs a command, `what` naming it in timing lines and errors; its stdout when it exits 0.
    ///
    /// # Errors
    /// The host cannot be reached, or the command exits with another status.
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
}

impl Provider for SshProvider {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn create_nodes(&self, nodes: &[NewNode], _request: &NodeRequest<'_>) -> ProviderResult<Vec<NodeState>> {
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
        let remote_package = self.stage(&host, request.env, &request.spec.name, &request.package)?;
        if request.spec.package_type() == "TOMCAT" {
            let webapps = self.account.tomcat_webapps.as_deref().ok_or_else(|| {
                ProviderError::new(format!(
                    "TOMCAT packages need `tomcatWebapps` (the webapps directory) in ssh account `{}`",
                    self.account_name
                ))
            })?;
            let target = format!("{}/{}.war", webapps.trim_end_matches('/'), request.spec.endpoint_name());
            self.exec_ok(&host, &format!("cp {} {}", quote(&remote_package), quote(&target)), "deploying the WAR")?;
            return Ok(Started::default());
        }
        let command = crate::provider::command_for(
            request.settings,
            request.spec,
            &remote_package,
            &request.node.address,
            request.instance_id,
        )?;
        let argv: Vec<String> = command.iter().map(|a| quote(a)).collect();
        let env: Vec<String> = request.environment().iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        let base = self.base(&host, request.env)?;
        let log = remote_log(&base, request.lineage, request.instance_id);
        let dir = remote_package.rsplit_once('/').map_or(".", |(d, _)| d);
        let script = start_script(&log, dir, &env, &argv, request.log_cap);
        let out = self.exec_ok(&host, &script, &format!("starting instance {}", request.instance_id))?;
        let mut fields = out.split_whitespace();
        let pid = fields.next().and_then(|p| p.parse().ok());
        let start_time = fields.next().and_then(|s| s.parse().ok());
        if pid.is_none() {
            return Err(ProviderError::new(format!(
                "host {}: the start of {} reported no pid: {out}",
                self.describe(&host),
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
        // HEALTH_POLL_MAX: a poll is a connection attempt from here, which costs the host nothing.
        let mut pause = POLL_FIRST;
        loop {
            if port_answers(&node.address, port) {
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
            pause = (pause * 3 / 2).min(HEALTH_POLL_MAX);
        }
    }

    fn stop(&self, instance: &InstanceState, node: &NodeState, grace: Duration) -> ProviderResult<()> {
        let host = self.host(&node.address)?;
        let Some(pid) = instance.pid else {
            return Ok(());
        };
        let begun = Instant::now();
        let check = alive_check(pid, instance.start_time);
        let sent = self.exec_ok(&host, &term_script(&check), &format!("stopping instance {}", instance.id))?;
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
                let _ = port_answers(&node.address, port);
            }
            let now = Instant::now();
            std::thread::sleep(pause.min(deadline.saturating_duration_since(now)));
            pause = (pause * 3 / 2).min(POLL_MAX);
            let output = self.run(&host, "checking that a stopped instance is gone", &format!("{check}; alive"))?;
            if output.status == Some(1) {
                crate::timing::mark(Some(begun.elapsed()), || format!("{} stopped", instance.id));
                return Ok(());
            }
            if output.status != Some(0) {
                return Err(ProviderError::new(format!(
                    "host {}: stopping instance {} failed: {}",
                    self.describe(&host),
                    instance.id,
                    output.stderr.trim()
                )));
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.exec_ok(&host, &kill_script(&check), &format!("stopping instance {}", instance.id)).map(drop)
    }

    fn alive(&self, instance: &InstanceState, node: &NodeState) -> bool {
        let (Ok(host), Some(pid)) = (self.host(&node.address), instance.pid) else {
            return false;
        };
        let script = format!("{}; alive", alive_check(pid, instance.start_time));
        self.run(&host, "checking that an instance runs", &script).is_ok_and(|o| o.status == Some(0))
    }

    fn observe(&self, node: &NodeState, instances: &[(&InstanceState, u16)]) -> Vec<Health> {
        let host = match self.host(&node.address) {
            Ok(h) => h,
            Err(e) => return instances.iter().map(|_| Health::down(DownReason::Unknown, e.message.clone())).collect(),
        };
        // One command for every instance of the host (see `observe_script`).
        let looked: Vec<(&str, Option<u32>, Option<u64>)> =
            instances.iter().map(|(i, _)| (i.id.as_str(), i.pid, i.start_time)).collect();
        let script = observe_script(&looked);
        let output = match self.run(&host, "looking at the instances", &script) {
            Ok(o) if o.status == Some(0) => o.stdout,
            Ok(o) => {
                let why = format!("the health check failed on host {}: {}", self.describe(&host), o.stderr.trim());
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
                } else if !port_answers(&node.address, *port) {
                    Health::down(DownReason::PortClosed, format!("{}:{port} accepts no connection", node.address))
                } else {
                    Health::Healthy
                }
            })
            .collect()
    }

    fn logs(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        log: LogPlace<'_>,
        lines: usize,
    ) -> ProviderResult<String> {
        let host = self.host(&node.address)?;
        if lines == 0 {
            return Ok(String::new());
        }
        let base = self.base(&host, log.env)?;
        let script = logs_script(&log_files(&base, log.lineage, &instance.id), &instance.id, lines);
        self.exec_ok(&host, &script, "reading the log")
    }

    fn follows_logs(&self) -> bool {
        true
    }

    fn log_since(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        log: LogPlace<'_>,
        since: Option<LogMark>,
        lines: usize,
    ) -> ProviderResult<(String, LogMark)> {
        let host = self.host(&node.address)?;
        let base = self.base(&host, log.env)?;
        let script = follow_script(&log_files(&base, log.lineage, &instance.id), since, lines);
        let output = self.run(&host, "following the log", &script)?;
        match (output.status, parse_follow(&output.stdout)) {
            (Some(0), Some((mark, text))) => Ok((text.to_string(), mark)),
            (Some(3), _) => Err(ProviderError::new(format!(
                "host {}: no log of {} (looked in {})",
                self.describe(&host),
                instance.id,
                log_files(&base, log.lineage, &instance.id).join(", ")
            ))),
            (status, _) => Err(ProviderError::new(format!(
                "host {}: following the log failed (exit {}): {}",
                self.describe(&host),
                status.map_or("?".to_string(), |s| s.to_string()),
                output.stderr.trim()
            ))),
        }
    }

    fn tagged(&self, node: &NodeState, lineage: &str) -> ProviderResult<Vec<Tagged>> {
        let host = self.host(&node.address)?;
        let script = tagged_script(lineage);
        let out = self.exec_ok(&host, &script, "looking for this environment's processes")?;
        Ok(parse_tagged(&out))
    }

    fn remove_logs(&self, instance: &InstanceState, node: &NodeState, log: LogPlace<'_>) -> ProviderResult<()> {
        let host = self.host(&node.address)?;
        let base = self.base(&host, log.env)?;
        // The log, and what starts with `LOG.`: rotated files, the recorded cap, the rotation
        // note, a cut left behind.
        let files: Vec<String> =
            log_files(&base, log.lineage, &instance.id).iter().map(|f| format!("{q} {q}.*", q = quote(f))).collect();
        self.exec_ok(&host, &format!("rm -f -- {}", files.join(" ")), "removing the log").map(drop)
    }

    fn find(&self, node: &NodeState, token: &str) -> Option<Started> {
        let host = self.host(&node.address).ok()?;
        let script = find_script(token);
        let out = self.run(&host, "looking for an instance by its start token", &script).ok()?;
        let mut fields = out.stdout.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let start_time = fields.next().and_then(|s| s.parse().ok());
        Some(Started { pid: Some(pid), start_time })
    }
}
