//! The shapes of `enact.json` (`docs/formats.md` §4): accounts of every provider kind, node
//! selection, reservoir, package types, per-environment and per-service settings, and their
//! defaults. Plain data with serde and JSON Schema derives; the doc comments of the fields are
//! the descriptions `enact schema enact.json` prints.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::model::Memory;

/// A named place to get nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Account {
    /// `"provider": "local"`: nodes are loopback addresses of this machine, instances its
    /// processes.
    Local(LocalAccount),
    /// `"provider": "ssh"`: a fixed set of hosts reached over SSH.
    Ssh(SshAccount),
    /// `"provider": "ec2"`: Amazon EC2 instances (not run by this build).
    Ec2(Box<Ec2Account>),
    /// `"provider": "simulated"`: nodes and instances that exist only in the state, for
    /// rehearsing large applies.
    Simulated(SimulatedAccount),
}

impl Account {
    /// The account's `provider` as written in enact.json: `local`, `ssh`, `ec2` or `simulated`.
    pub fn provider(&self) -> &'static str {
        match self {
            Account::Local(_) => "local",
            Account::Ssh(_) => "ssh",
            Account::Ec2(_) => "ec2",
            Account::Simulated(_) => "simulated",
        }
    }

    /// The account's own `timeouts`, if it sets any.
    pub fn timeouts(&self) -> Option<Timeouts> {
        match self {
            Account::Local(a) => a.timeouts,
            Account::Ssh(a) => a.timeouts,
            Account::Ec2(a) => a.timeouts,
            Account::Simulated(a) => a.timeouts,
        }
    }

    /// The account's own `logs`, if it sets any.
    pub fn logs(&self) -> Option<LogSettings> {
        match self {
            Account::Local(a) => a.logs,
            Account::Ssh(a) => a.logs,
            Account::Ec2(a) => a.logs,
            Account::Simulated(a) => a.logs,
        }
    }

    /// Whether nodes are made on demand (local, ec2, simulated) or fixed (ssh hosts).
    pub fn creates_nodes(&self) -> bool {
        !matches!(self, Account::Ssh(_))
    }

    /// The size label of a node of `memory`: the EC2 instance type, else the memory size.
    pub fn node_size(&self, memory: Memory) -> String {
        match self {
            Account::Ec2(ec2) => {
                ec2.instance_types.get(&memory).cloned().unwrap_or_else(|| default_instance_type(memory).to_string())
            }
            _ => memory.to_string(),
        }
    }
}

/// The EC2 instance type of a node of `memory` when `instanceTypes` does not say: `t3.small`,
/// `t3.medium` or `t3.large`.
pub fn default_instance_type(memory: Memory) -> &'static str {
    match memory {
        Memory::Small => "t3.small",
        Memory::Medium => "t3.medium",
        Memory::Large => "t3.large",
    }
}

/// The fields of a `local` account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalAccount {
    /// Timeouts of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The log cap of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
}

/// The fields of an `ssh` account: fixed hosts, each a node `<account>-<address>` once used,
/// never created or destroyed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshAccount {
    /// An OpenSSH known_hosts file the hosts' keys are checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// The hosts, at least one.
    pub hosts: Vec<SshHost>,
    /// Tomcat's webapps directory on the hosts, for `TOMCAT` packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tomcat_webapps: Option<String>,
    /// Timeouts of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The log cap of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
}

/// One host of an `ssh` account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshHost {
    /// A host name or IP address.
    pub address: String,
    /// The SSH port, 1–65535; 22 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// The user enact logs in as.
    pub user: String,
    /// A path to the private key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The largest instance this host takes; any when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// The fields of an `ec2` account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ec2Account {
    /// The AWS region, e.g. `us-east-1`.
    pub region: String,
    /// The AMI nodes boot from (`ami-…`).
    pub image_id: String,
    /// The EC2 key pair given to new nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// The user enact logs in as on a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A path to the private key of the key pair (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The instance type of each memory size (SMALL, MEDIUM, LARGE).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_types: BTreeMap<Memory, String>,
    /// Another EC2 API endpoint (an emulator in tests); AWS's when null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// An OpenSSH known_hosts file the nodes' keys are learnt into and checked against
    /// (`state/.known_hosts-<account>` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// The subnet new nodes are made in (the region's default subnet when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// The security groups of new nodes (the subnet's default group when left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<String>,
    /// Which address of a node enact reaches it on: `private` (the default: enact runs in the
    /// same network) or `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ec2Address>,
    /// The client-side rate limit: at most this many EC2 API requests per second (a fraction:
    /// one request every `1 / requestsPerSecond` seconds); 5 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// The most nodes one `RunInstances` call asks for (all the nodes of one instance type in a
    /// step when left out; 1 makes one call per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_per_call: Option<u32>,
    /// How long a new node may take to run and answer on SSH port 22, in milliseconds
    /// (300,000: five minutes, when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_timeout_ms: Option<u64>,
    /// Timeouts of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The log cap of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
}

/// Which address of an EC2 instance enact reaches it on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ec2Address {
    /// Its private IPv4 address.
    #[default]
    Private,
    /// Its public IPv4 address.
    Public,
}

/// The most EC2 API requests per second an account may ask for.
pub const MAX_REQUESTS_PER_SECOND: f64 = 1000.0;

/// The longest `runningTimeoutMs` of an ec2 account, in milliseconds (an hour).
pub const MAX_RUNNING_TIMEOUT_MS: u64 = 3_600_000;

/// The longest `latencyMs` of a simulated account, in milliseconds (an hour).
pub const MAX_LATENCY_MS: u64 = 3_600_000;

/// The fields of a `simulated` account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimulatedAccount {
    /// Timeouts of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The log cap of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
    /// Milliseconds every provider operation sleeps (0–3,600,000; default 0).
    #[serde(default)]
    pub latency_ms: u64,
}

/// How instances are spread over nodes (`nodeSelector.policy`, the CHOReOS node selectors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Policy {
    /// `ALWAYS_CREATE`: a new node per instance.
    #[default]
    AlwaysCreate,
    /// `ROUND_ROBIN`: the least-loaded node that fits, else a new one.
    RoundRobin,
    /// `LIMITED_ROUND_ROBIN`: new nodes up to `vmLimit` per account, then round robin.
    LimitedRoundRobin,
}

/// `nodeSelector`: how instances are spread over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelector {
    /// The placement policy.
    pub policy: Policy,
    /// The most nodes per account under `LIMITED_ROUND_ROBIN` (a count, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_limit: Option<u32>,
}

/// `reservoir`: the CHOReOS pool of idle nodes, kept per account of the `ec2` and `simulated`
/// providers that the environment places services in (a `local` node costs nothing to make, and
/// `ssh` hosts are fixed). Spare nodes are of the SMALL size; the first apply makes
/// `initialSize` of them besides what placement needs, placement hands them to new instances of
/// SMALL memory before it asks for new nodes, and an apply that leaves `threshold` spares or
/// fewer makes new ones, back up to `initialSize`, at its end. Under `LIMITED_ROUND_ROBIN` the
/// spares count against `vmLimit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reservoir {
    /// Spare nodes to keep ready per account (a count, 0–1000; 0 keeps none).
    pub initial_size: u32,
    /// The refill mark (a count, 0 to `initialSize`; default 0): once an apply leaves this many
    /// spares or fewer, it makes new ones back up to `initialSize`.
    #[serde(default)]
    pub threshold: i64,
}

/// The largest `reservoir.initialSize`.
pub const MAX_RESERVOIR_SIZE: u32 = 1000;

/// The memory size of every spare node of a reservoir: the smallest, so a spare is handed only
/// to a SMALL instance.
pub const SPARE_MEMORY: Memory = Memory::Small;

impl Reservoir {
    /// The refill mark as a count (a negative `threshold`, which validation refuses, as 0).
    pub fn threshold(&self) -> u32 {
        u32::try_from(self.threshold.max(0)).unwrap_or(u32::MAX)
    }
}

/// Whether an account of this kind keeps a reservoir of spare nodes: `ec2` and `simulated`.
pub fn keeps_reservoir(account: &Account) -> bool {
    matches!(account, Account::Ec2(_) | Account::Simulated(_))
}

/// A start recipe: the command that runs a package, with `{package}` and friends filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageType {
    /// The command line, split on whitespace into words and run without a shell, each word's
    /// placeholders (`RECIPE_PLACEHOLDERS`) filled in.
    pub start: String,
    /// When an instance of this package type may be told to consumers; its port accepting
    /// connections when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
}

/// The placeholders a package type's recipe may use.
pub const RECIPE_PLACEHOLDERS: [&str; 6] = ["package", "port", "host", "name", "endpoint", "instance"];

/// Overrides of one environment (`envs.<env>`): each given key replaces the top-level value
/// whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvSettings {
    /// Where this environment's services without `cloudAccount` are placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_account: Option<String>,
    /// How this environment's instances are spread over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
    /// This environment's pool of spare nodes; replaces the top-level `reservoir` whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservoir: Option<Reservoir>,
    /// Overrides the top-level `rollout` in this environment, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSettings>,
}

/// How a rolling replacement (a redeploy, a resize, a move to another account) may run:
/// `rollout` at the top of enact.json, in `envs.<env>`, or in `services.<name>`. A service's
/// setting wins over its environment's, which wins over the top level; a field left out is
/// inherited from the next level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSettings {
    /// How many instances of a service may be out of service at once because an old instance
    /// stops before its replacement is ready (a count of instances; default
    /// [`DEFAULT_MAX_UNAVAILABLE`]). With 0 a plan that needs such a stop is refused; 1 or more
    /// allows apply's one-at-a-time replacement, which never stops more than one at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
}

/// `rollout.maxUnavailable` when no level of enact.json sets it: one instance at a time may be
/// out of service, which is how apply replaces instances when there is no spare slot.
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 1;

/// Settings of one service (`services.<name>` in enact.json).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSettings {
    /// Overrides the environment's `rollout` for this service, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSettings>,
    /// When a new instance of this service may be told to consumers; overrides its package
    /// type's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// How this service, as a consumer, is told its lists; overrides the top-level `wiring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiring: Option<WiringSettings>,
    /// Its instances' timeouts; override the account's and the top-level ones, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Its instances' log cap; overrides the account's and the top-level one, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
}

/// When a new instance may be told to consumers (`readiness` of a package type or a service):
/// once its port accepts connections (always checked) and, with `path`, once `GET
/// http://<address>:<port><path>` answers 2xx; then it must stay so for `minReadyMs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Readiness {
    /// An HTTP path on the instance, starting with `/`; `{endpoint}` is the endpoint name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long, in milliseconds, the instance must pass its check without a break before it is
    /// told to consumers (0: at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_ready_ms: u64,
}

/// How long an instance may take (`timeouts`, at the top level, in an account or under
/// `services.<name>`; the most specific wins, field by field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// Milliseconds a new instance has to answer on its port and pass its readiness check
    /// (1–86,400,000; default 30,000). `apply --health-timeout` overrides every level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_ms: Option<u64>,
    /// Milliseconds between SIGTERM and SIGKILL when an instance stops (0–3,600,000; default
    /// 5,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_ms: Option<u64>,
}

/// The health timeout when nothing sets one, in milliseconds.
pub const DEFAULT_HEALTH_MS: u64 = 30_000;
/// The stop grace when nothing sets one, in milliseconds.
pub const DEFAULT_STOP_GRACE_MS: u64 = 5_000;

/// How large an instance's log may grow (`logs`, at the top level, in an account or under
/// `services.<name>`; the most specific wins, field by field). The log is rotated when the
/// next write would take it past `maxBytes`: `<instance>.log` becomes `<instance>.log.1`, which
/// becomes `.log.2`, … up to `keep` files, the oldest dropped. An instance never has more than
/// (`keep` + 1) × `maxBytes` bytes of log on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogSettings {
    /// Bytes one log file may hold (4,096–1,099,511,627,776; default 10,485,760, 10 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Rotated files kept besides the current one (0–100; default 3). With 0 the log is
    /// emptied when it reaches `maxBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
}

/// A resolved log cap (see [`Settings::logs_of`](super::Settings::logs_of)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCap {
    /// Bytes one log file may hold.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u32,
}

/// The cap when nothing sets one: [`DEFAULT_LOG_MAX_BYTES`] and [`DEFAULT_LOG_KEEP`].
impl Default for LogCap {
    fn default() -> Self {
        LogCap { max_bytes: DEFAULT_LOG_MAX_BYTES, keep: DEFAULT_LOG_KEEP }
    }
}

/// `logs.maxBytes` when nothing sets it: 10 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// `logs.keep` when nothing sets it.
pub const DEFAULT_LOG_KEEP: u32 = 3;
/// The allowed `logs.maxBytes`, in bytes: 4 KiB to 1 TiB.
pub const LOG_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 4096..=(1 << 40);
/// The largest `logs.keep`.
pub const MAX_LOG_KEEP: u32 = 100;

/// How a consumer is told its lists (`wiring`, top level or per service): each
/// `setInvocationAddress` call is tried `tries` times, `backoffMs` apart at first and twice as
/// long after each failure, each try given `timeoutMs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WiringSettings {
    /// Tries per call, at least 1 (default 5).
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// The wait after the first failed try, in milliseconds (default 100), doubled after each.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The time one try may take, in milliseconds (default 5000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// 5 tries, 100 ms of backoff, 5000 ms per try.
impl Default for WiringSettings {
    fn default() -> Self {
        WiringSettings { tries: default_tries(), backoff_ms: default_backoff_ms(), timeout_ms: default_timeout_ms() }
    }
}

/// `wiring.tries` when left out.
fn default_tries() -> u32 {
    5
}

/// `wiring.backoffMs` when left out, in milliseconds.
fn default_backoff_ms() -> u64 {
    100
}

/// `wiring.timeoutMs` when left out, in milliseconds.
fn default_timeout_ms() -> u64 {
    5000
}

/// Whether a count is 0 (serde's `skip_serializing_if` of `minReadyMs`).
#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero(n: &u64) -> bool {
    *n == 0
}
