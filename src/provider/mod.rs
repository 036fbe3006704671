//! Providers: where nodes come from and how instances run on them. One trait, one file per
//! implementation:
//!
//! - [`local`]: nodes are loopback addresses 127.0.0.2, 127.0.0.3, …; an instance is a detached
//!   process on this machine (the default), its output capped by a log relay ([`logfile`]);
//! - [`ssh`]: the hosts of an ssh account;
//! - [`simulated`]: nothing runs; every operation takes the account's `latencyMs` (rehearsals
//!   and benchmarks);
//! - [`recording`]: a fake for tests: nothing runs, every call is recorded in order.
//!
//! Beside them, what every provider shares: [`package`] finds and fetches a service's package,
//! [`wire`] makes the `setInvocationAddress` call over HTTP (the default [`Provider::wire`]).
//!
//! Placement (which node an instance goes to) is decided once for every provider, at plan time,
//! in `plan::placement`; providers only carry it out, from the [`NewNode`] requests it hands
//! them. This module depends on the repository settings, the state, the spec and the leaves;
//! never on the plan or on apply.

pub mod ec2;
pub mod local;
pub mod logfile;
pub mod package;
pub mod recording;
pub mod simulated;
pub mod ssh;
pub mod wire;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::repo::settings::{Account, Settings};
use crate::spec::DeployableServiceSpec;
use crate::spec::endpoint::port_of;
use crate::state::observed::{DownReason, Health};
use crate::state::{InstanceState, NewNode, NodeState};
use wire::{WireCall, WireError};

/// A provider operation that failed, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// What failed, naming the node, host or instance, and what to do (shown as is).
    pub message: String,
    /// What kind of failure, when the provider can tell (a node it cannot reach or trust).
    pub kind: Option<DownReason>,
}

impl ProviderError {
    /// A failure of no particular kind.
    pub fn new(message: impl Into<String>) -> Self {
        ProviderError { message: message.into(), kind: None }
    }

    /// A failure of a known kind.
    pub fn of_kind(kind: DownReason, message: impl Into<String>) -> Self {
        ProviderError { message: message.into(), kind: Some(kind) }
    }
}

/// The result of a provider operation.
pub type ProviderResult<T> = Result<T, ProviderError>;

/// Where a package comes from, as the executor found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Package {
    /// A file on this machine (a path of the config repository or a `file://` URI).
    Path(PathBuf),
    /// An `http(s)://` URL: the node fetches it itself.
    Url(String),
    /// Nothing to run (the simulated provider).
    None,
}

/// Where an instance's output is kept, for [`Provider::logs`] and [`Provider::remove_logs`]:
/// the file on this machine (the local provider's, `state/.logs/<env>/<instance>.log`), and the
/// environment and its state's lineage, by which a provider that keeps the output on another
/// machine (ssh, ec2) finds it there, apart from every other environment and repository that
/// shares the machine.
#[derive(Debug, Clone, Copy)]
pub struct LogPlace<'a> {
    /// The environment's name.
    pub env: &'a str,
    /// The lineage of the environment's state (a UUID).
    pub lineage: &'a str,
    /// The log's path on this machine.
    pub local: &'a std::path::Path,
}

/// How far `enact logs --follow` has read an instance's log ([`Provider::log_since`]): which
/// file (its inode, on the machine that keeps it) and how many bytes of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMark {
    /// The inode of the log file read.
    pub file: u64,
    /// The bytes of it read.
    pub offset: u64,
    /// A hash of its first bytes (at most 64, and at most `offset`), in the provider's own
    /// way: with `file`, which file it is, as an inode number can be reused by the next file.
    pub head: u64,
}

/// Everything needed to start one instance.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    /// The environment the instance belongs to (`ENACT_ENV`).
    pub env: &'a str,
    /// The service's spec: port, package type, endpoint name.
    pub spec: &'a DeployableServiceSpec,
    /// The instance's id in the state (`<service>-<n>`).
    pub instance_id: &'a str,
    /// The node it runs on, as recorded.
    pub node: &'a NodeState,
    /// Where its package is (see [`package::locate`]).
    pub package: Package,
    /// For package type recipes.
    pub settings: &'a Settings,
    /// Where downloads are cached on this machine (`state/.cache`).
    pub cache_dir: PathBuf,
    /// A random token put in the instance's environment (`ENACT_TOKEN`), by which an instance
    /// whose start was interrupted can be found again.
    pub token: &'a str,
    /// Where the instance's output goes (on this machine; the ssh provider keeps it on the
    /// host).
    pub log: PathBuf,
    /// The lineage of the environment's state (`ENACT_LINEAGE`): every process the environment
    /// starts carries it, so one that no record names can still be found and stopped.
    pub lineage: &'a str,
    /// How large that log may grow, and how many rotated files are kept.
    pub log_cap: crate::repo::settings::LogCap,
}

impl StartRequest<'_> {
    /// The environment variables every instance gets (name, value): `HOST`, `PORT`,
    /// `SERVICE_NAME`, `INSTANCE_ID`, `ENDPOINT_NAME`, `ENACT_ENV`, `ENACT_TOKEN`,
    /// `ENACT_LINEAGE`, `ENACT_ACCOUNT`.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOST", self.node.address.clone()),
            ("PORT", port_of(self.spec).to_string()),
            ("SERVICE_NAME", self.spec.name.clone()),
            ("INSTANCE_ID", self.instance_id.to_string()),
            ("ENDPOINT_NAME", self.spec.endpoint_name().to_string()),
            ("ENACT_ENV", self.env.to_string()),
            ("ENACT_TOKEN", self.token.to_string()),
            ("ENACT_LINEAGE", self.lineage.to_string()),
            ("ENACT_ACCOUNT", self.node.account.clone()),
        ]
    }
}

/// A process found on a node carrying an environment's lineage (`ENACT_LINEAGE`), with what its
/// environment says it was started as. Only session leaders count (an instance is started in a
/// session of its own; its children carry the same variables and go with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// The process id on the node.
    pub pid: u32,
    /// Its start time, in clock ticks since the node booted (`/proc/<pid>/stat`, field 22).
    pub start_time: Option<u64>,
    /// `INSTANCE_ID` of its environment.
    pub instance: String,
    /// `SERVICE_NAME` of its environment.
    pub service: String,
    /// `HOST` of its environment: the address of the node it was started on.
    pub host: String,
    /// `ENACT_ACCOUNT` of its environment: the account of that node.
    pub account: String,
}

/// One request for nodes, as the journal's intent records it before the provider is asked.
#[derive(Debug, Clone, Copy)]
pub struct NodeRequest<'a> {
    /// The request's id (a UUID v4, fresh for each request). The ec2 provider tags every
    /// instance it makes with it (`enact:request`) and derives the `ClientToken` of each of its
    /// calls from it and the call's nodes, so the journal names what a call was, and a retry
    /// of the call is the same call.
    pub id: &'a str,
    /// Addresses already in use by other nodes (the local provider picks loopback addresses
    /// outside them).
    pub taken: &'a BTreeSet<String>,
}

/// A machine a provider made for an environment (an EC2 instance tagged with its lineage),
/// whether or not the state records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedNode {
    /// The provider's id of it (an EC2 instance id).
    pub provider_id: String,
    /// The node id it was made for (from its tags), when it says.
    pub node: Option<String>,
    /// The account it was made in.
    pub account: String,
    /// The address enact would reach it on.
    pub address: String,
    /// Its size (an EC2 instance type).
    pub size: String,
    /// The id of the request that made it ([`NodeRequest::id`]), when it says.
    pub request: Option<String>,
}

/// What a provider knows about an instance it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Started {
    /// Its process id on the node, when it has one (not for a simulated or deployed WAR).
    pub pid: Option<u32>,
    /// Its start time, in clock ticks since the node booted (`/proc/<pid>/stat`, field 22):
    /// with the pid, what tells it from a later process that reused the id.
    pub start_time: Option<u64>,
}

/// Nodes and instances of one kind of infrastructure.
pub trait Provider: Send + Sync {
    /// `local`, `ssh`, `ec2`, `simulated`.
    fn kind(&self) -> &'static str;

    /// Makes the nodes placement asked for, one batch, in order, for `request` (journaled before
    /// the call).
    ///
    /// # Errors
    /// The provider cannot make them (a fixed set of hosts, no address left).
    fn create_nodes(&self, nodes: &[NewNode], request: &NodeRequest<'_>) -> ProviderResult<Vec<NodeState>>;

    /// Frees the node `id` (recorded as `node`) once no instance runs on it.
    ///
    /// # Errors
    /// The provider cannot free it.
    fn destroy_node(&self, id: &str, node: &NodeState) -> ProviderResult<()>;

    /// Frees several nodes at once (each as [`Provider::destroy_node`]), one outcome per node
    /// in order. The default frees them one by one; a provider with a batch call (ec2's
    /// `TerminateInstances`) makes one.
    fn destroy_nodes(&self, nodes: &[(&str, &NodeState)]) -> Vec<ProviderResult<()>> {
        nodes.iter().map(|(id, node)| self.destroy_node(id, node)).collect()
    }

    /// Starts an instance, detached; does not wait for it to be healthy.
    ///
    /// # Errors
    /// The package cannot be run or carried to the node, the node cannot be reached, or the
    /// port is held by another process.
    fn start(&self, request: &StartRequest<'_>) -> ProviderResult<Started>;

    /// Waits until the instance accepts connections on its port, for `timeout` at most.
    ///
    /// # Errors
    /// The instance exited, or did not answer within `timeout`.
    fn wait_healthy(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        port: u16,
        timeout: Duration,
    ) -> ProviderResult<()>;

    /// Stops an instance: SIGTERM, then SIGKILL after `grace`; never a process whose identity
    /// changed (a reused pid).
    ///
    /// # Errors
    /// The node cannot be reached, or the process outlived SIGKILL.
    fn stop(&self, instance: &InstanceState, node: &NodeState, grace: Duration) -> ProviderResult<()>;

    /// Whether the instance's process still runs.
    fn alive(&self, instance: &InstanceState, node: &NodeState) -> bool;

    /// The last `lines` lines of the instance's output, read on into the rotated files when
    /// the current one has fewer.
    ///
    /// # Errors
    /// The log cannot be read, or its host cannot be reached.
    fn logs(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        log: LogPlace<'_>,
        lines: usize,
    ) -> ProviderResult<String>;

    /// Whether [`Provider::log_since`] follows a log (the instances' output is kept where the
    /// provider can read it as it grows); `false`, the default, for a provider whose instances
    /// write nothing (simulated ones), whose `logs` only says so.
    fn follows_logs(&self) -> bool {
        false
    }

    /// What the instance's output gained since `since` (`None`: its last `lines` lines, as
    /// [`Provider::logs`] gives them), and the mark to read on from: `enact logs --follow`
    /// calls it again and again. A log rotated since the mark is read on from the mark in its
    /// first rotated file (`LOG.1`), then from the start of the new one. The text may end in
    /// the middle of a line, which the next call goes on with. The default, for a provider that
    /// keeps no log to follow, gives [`Provider::logs`] once and nothing after.
    ///
    /// # Errors
    /// The log cannot be read, or its host cannot be reached.
    fn log_since(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        log: LogPlace<'_>,
        since: Option<LogMark>,
        lines: usize,
    ) -> ProviderResult<(String, LogMark)> {
        match since {
            None => Ok((self.logs(instance, node, log, lines)?, LogMark::default())),
            Some(mark) => Ok((String::new(), mark)),
        }
    }

    /// Looks at instances of one node: whether each process runs and answers on its port
    /// (`port`, one per instance), in the order given. The default asks [`Provider::alive`] and
    /// connects to the port; a provider with a cheaper way (one remote command per host)
    /// overrides it.
    fn observe(&self, node: &NodeState, instances: &[(&InstanceState, u16)]) -> Vec<Health> {
        instances
            .iter()
            .map(|(instance, port)| {
                if !self.alive(instance, node) {
                    Health::down(DownReason::ProcessGone, "")
                } else if !port_answers(&node.address, *port) {
                    Health::down(DownReason::PortClosed, format!("{}:{port} accepts no connection", node.address))
                } else {
                    Health::Healthy
                }
            })
            .collect()
    }

    /// Removes the output of an instance that is gone for good (stopped and forgotten): its log
    /// and the rotated files, where `log` says. The default has nothing to remove.
    ///
    /// # Errors
    /// A file cannot be removed, or its host cannot be reached.
    fn remove_logs(&self, instance: &InstanceState, node: &NodeState, log: LogPlace<'_>) -> ProviderResult<()> {
        let _ = (instance, node, log);
        Ok(())
    }

    /// Finds an instance by its start token after an interrupted apply.
    fn find(&self, node: &NodeState, token: &str) -> Option<Started>;

    /// The processes on `node`'s machine that carry `ENACT_LINEAGE=lineage`, recorded or not
    /// (see [`Tagged`]). A provider whose nodes share one machine (local) answers for all of
    /// them from any one. The default (no processes: the simulated provider) finds none.
    ///
    /// # Errors
    /// The node cannot be reached.
    fn tagged(&self, node: &NodeState, lineage: &str) -> ProviderResult<Vec<Tagged>> {
        let _ = (node, lineage);
        Ok(Vec::new())
    }

    /// The machines this provider made for the environment of `lineage` that may still cost
    /// something (EC2 instances tagged with it, not terminated), recorded or not. The default
    /// (providers whose nodes are addresses: local, ssh, simulated) finds none.
    ///
    /// # Errors
    /// The provider's API cannot be asked.
    fn tagged_nodes(&self, lineage: &str) -> ProviderResult<Vec<TaggedNode>> {
        let _ = lineage;
        Ok(Vec::new())
    }

    /// Frees machines found by [`Provider::tagged_nodes`] that no record names (one call
    /// for all of them where the provider can). The default has none to free.
    ///
    /// # Errors
    /// The provider's API refused.
    fn destroy_untracked(&self, nodes: &[TaggedNode]) -> ProviderResult<()> {
        let _ = nodes;
        Ok(())
    }

    /// Whether this provider's operations return at once (a simulation at 0 ms, a fake): then
    /// the executor does not spread them over threads.
    fn is_instant(&self) -> bool {
        false
    }

    /// Whether instances of this provider are processes that can outlive their record (local,
    /// ssh): only then is a node worth asking for [`Provider::tagged`] processes. Nothing runs
    /// for the simulated provider and the fakes.
    fn starts_processes(&self) -> bool {
        true
    }

    /// Tells one consumer instance the endpoints of a provider (`setInvocationAddress`, see
    /// [`wire`]); real providers go over HTTP, fakes record or skip it.
    ///
    /// # Errors
    /// Every try of the call failed ([`WireError`]).
    fn wire(&self, call: &WireCall<'_>) -> Result<(), WireError> {
        wire::send(call)
    }
}

/// What providers need besides their account.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// Relative key and known_hosts paths are taken from here.
    pub repo_root: PathBuf,
    /// Record unknown SSH host keys instead of refusing them.
    pub accept_new_host_keys: bool,
    /// The environment the nodes are for: with the repository, it picks the local provider's
    /// block of loopback addresses.
    pub env: String,
    /// The environment's lineage, which the ec2 provider tags its nodes with; empty where no
    /// node is made (plan, status).
    pub lineage: String,
    /// Where a provider says what the user waits for that is no step's (an EC2 request
    /// retried after throttling): one line each, on the progress output. `None`: said nowhere.
    pub notify: Option<fn(&str)>,
}

/// The provider of the account `name` of `enact.json`.
///
/// # Errors
/// The account's provider is not available in this build (`ec2`), or the ssh provider cannot
/// start its runtime.
pub fn for_account(
    name: &str,
    account: &Account,
    options: &ProviderOptions,
) -> Result<Box<dyn Provider>, ProviderError> {
    match account {
        Account::Local(_) => Ok(Box::new(local::LocalProvider::for_environment(&options.repo_root, &options.env))),
        Account::Simulated(s) => Ok(Box::new(simulated::SimulatedProvider::new(Duration::from_millis(s.latency_ms)))),
        Account::Ssh(ssh) => Ok(Box::new(ssh::SshProvider::new(
            name,
            ssh,
            ssh::SshOptions {
                repo_root: options.repo_root.clone(),
                accept_new_host_keys: options.accept_new_host_keys,
            },
        )?)),
        Account::Ec2(ec2) => Ok(Box::new(ec2::Ec2Provider::new(
            name,
            ec2,
            ec2::Ec2Options {
                repo_root: options.repo_root.clone(),
                env: options.env.clone(),
                lineage: options.lineage.clone(),
                notify: options.notify.map(|say| -> ec2::api::Notify {
                    std::sync::Arc::new(move |call: &str, error: &ec2::api::Ec2Error, wait: Duration| {
                        say(&format!("EC2 {call}: {error}; trying again in {:.1} s", wait.as_secs_f64()));
                    })
                }),
                say: options.notify,
            },
        )?)),
    }
}

/// Whether `address:port` accepts a TCP connection now.
pub fn port_answers(address: &str, port: u16) -> bool {
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    let host = if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") };
    let Some(addr): Option<SocketAddr> = host.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
}

/// The command (argv) that runs `package` (its path on the node) for an instance of `spec` on
/// `host`, without a shell: the recipe of the spec's package type (`packageTypes` of
/// `enact.json`) is split into words and each placeholder (`{package}`, `{port}`, `{host}`,
/// `{name}`, `{endpoint}`, `{instance}`) filled in, so no value is ever interpreted by a shell.
/// Without a recipe, a `COMMAND_LINE` package runs itself (`java -jar` for a `.jar`).
///
/// # Errors
/// The package type has no recipe and is not `COMMAND_LINE`.
pub fn command_for(
    settings: &Settings,
    spec: &DeployableServiceSpec,
    package: &str,
    host: &str,
    instance_id: &str,
) -> Result<Vec<String>, ProviderError> {
    let package_type = spec.package_type();
    if let Some(recipe) = settings.package_types.get(package_type) {
        let port = port_of(spec).to_string();
        return Ok(recipe
            .start
            .split_whitespace()
            .map(|word| {
                word.replace("{package}", package)
                    .replace("{port}", &port)
                    .replace("{host}", host)
                    .replace("{name}", &spec.name)
                    .replace("{endpoint}", spec.endpoint_name())
                    .replace("{instance}", instance_id)
            })
            .collect());
    }
    match package_type {
        "COMMAND_LINE" if package.ends_with(".jar") => Ok(vec!["java".into(), "-jar".into(), package.into()]),
        "COMMAND_LINE" => Ok(vec![package.into()]),
        other => Err(ProviderError::new(format!(
            "package type `{other}` needs a container this provider does not run; define a recipe for it under `packageTypes` in enact.json"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::settings::PackageType;

    #[test]
    fn recipes_fill_placeholders_word_by_word_without_a_shell() {
        let mut settings = Settings::default();
        settings
            .package_types
            .insert("PYTHON".into(), PackageType { start: "python3 {package} --port {port}".into(), readiness: None });
        let spec = DeployableServiceSpec {
            name: "a".into(),
            package_type: Some("PYTHON".into()),
            port: Some(8080),
            ..Default::default()
        };
        let hostile = "/tmp/x; rm -rf / $(id)";
        let argv = command_for(&settings, &spec, hostile, "127.0.0.2", "a-1").unwrap();
        assert_eq!(argv, vec!["python3", hostile, "--port", "8080"]);
        let jar = DeployableServiceSpec::default();
        assert_eq!(command_for(&settings, &jar, "/p/a.jar", "h", "i").unwrap(), vec!["java", "-jar", "/p/a.jar"]);
        assert_eq!(command_for(&settings, &jar, "/p/a.py", "h", "i").unwrap(), vec!["/p/a.py"]);
    }
}
