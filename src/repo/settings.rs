//! `enact.json`: accounts of every provider kind, node selection, reservoir, package types and
//! per-environment overrides. Parsed and validated in full before anything else runs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Segment, SourceFile, from_value_located};
use crate::spec::model::Memory;
use crate::spec::validate::{Catalog, is_valid_name};

/// The JSON Schema of `enact.json`.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Settings)).unwrap_or_default()
}

/// The built-in account every service goes to when nothing else is said.
pub const LOCAL_ACCOUNT: &str = "local";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_env: Option<String>,
    /// Where states, locks and journals live, relative to the config repository (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_account: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, Account>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservoir: Option<Reservoir>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub package_types: BTreeMap<String, PackageType>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, EnvSettings>,
    /// How rolling replacements run, unless an environment or a service says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSettings>,
    /// Settings of single services, by service name. A name the spec does not hold is not an
    /// error here (settings are read before the spec); `enact validate` reports it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceSettings>,
    /// How consumers are told their lists, unless a service says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiring: Option<WiringSettings>,
    /// How long an instance may take to become healthy and to stop, unless an account or a
    /// service says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// How large an instance's log may grow and how many rotated files are kept, unless an
    /// account or a service says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
}

/// A named place to get nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Account {
    Local(LocalAccount),
    Ssh(SshAccount),
    Ec2(Ec2Account),
    Simulated(SimulatedAccount),
}

impl Account {
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

pub fn default_instance_type(memory: Memory) -> &'static str {
    match memory {
        Memory::Small => "t3.small",
        Memory::Medium => "t3.medium",
        Memory::Large => "t3.large",
    }
}

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshAccount {
    /// An OpenSSH known_hosts file the hosts' keys are checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshHost {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    pub user: String,
    /// A path to the private key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The largest instance this host takes; any when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ec2Account {
    pub region: String,
    pub image_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_types: BTreeMap<Memory, String>,
    /// Another EC2 API endpoint (an emulator in tests); AWS's when null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// Timeouts of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The log cap of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
}

/// The longest `latencyMs` of a simulated account, in milliseconds (an hour).
pub const MAX_LATENCY_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimulatedAccount {
    /// Timeouts of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The log cap of the account's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
    #[serde(default)]
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Policy {
    #[default]
    AlwaysCreate,
    RoundRobin,
    LimitedRoundRobin,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelector {
    pub policy: Policy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reservoir {
    pub initial_size: u32,
    #[serde(default)]
    pub threshold: i64,
}

/// A start recipe: the command that runs a package, with `{package}` and friends filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageType {
    pub start: String,
    /// When an instance of this package type may be told to consumers; its port accepting
    /// connections when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
}

/// The placeholders a package type's recipe may use.
pub const RECIPE_PLACEHOLDERS: [&str; 6] = ["package", "port", "host", "name", "endpoint", "instance"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
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

/// A resolved `rollout.maxUnavailable`: the value and where enact.json sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxUnavailable {
    /// A count of instances.
    pub value: u32,
    /// The path of the `rollout` object that sets it (`services.airline.rollout`,
    /// `envs.prod.rollout`, `rollout`); `None` for the default.
    pub set_at: Option<String>,
}

/// The settings that apply to one environment, overrides resolved.
#[derive(Debug, Clone)]
pub struct EnvView<'a> {
    pub settings: &'a Settings,
    pub default_account: String,
    pub node_selector: NodeSelector,
    /// `rollout.maxUnavailable` of the environment (before per-service settings).
    pub max_unavailable: MaxUnavailable,
}

impl EnvView<'_> {
    /// `rollout.maxUnavailable` for `service`: its own setting, else the environment's.
    pub fn max_unavailable(&self, service: &str) -> MaxUnavailable {
        match self.settings.services.get(service).and_then(|s| s.rollout).and_then(|r| r.max_unavailable) {
            Some(value) => MaxUnavailable { value, set_at: Some(format!("services.{service}.rollout")) },
            None => self.max_unavailable.clone(),
        }
    }
}

/// Whether a `privateKey` value holds a key itself (PEM or OpenSSH armour, several lines, or
/// far longer than any path) instead of the path to a key file.
fn holds_key_material(value: &str) -> bool {
    value.contains("-----BEGIN") || value.contains("PRIVATE KEY") || value.contains('\n') || value.len() > 1024
}

/// The error for a `privateKey` of `whose` that holds key material. It never repeats the value.
fn key_material_error(whose: &str) -> Diagnostic {
    Diagnostic::new(format!(
        "`privateKey` of {whose} holds a private key itself, not the path to a key file (the value is not shown)"
    ))
    .hint(
        "save the key in a file outside the config repository (`chmod 600`), e.g. `~/.ssh/enact_deploy`, and give that path; \
         if enact.json was committed with the key, remove it from the history and replace the key",
    )
}

const BUILTIN_LOCAL: Account = Account::Local(LocalAccount { timeouts: None, logs: None });

impl Settings {
    /// A setting `key` given at the top level (`top`), per account and per service, each with the
    /// path it was given at (`["accounts", "lab", "logs"]`), for the checks that name it.
    fn at_every_level<'s, T: Copy>(
        &'s self,
        key: &'s str,
        top: Option<T>,
        of_account: impl Fn(&Account) -> Option<T>,
        of_service: impl Fn(&ServiceSettings) -> Option<T>,
    ) -> Vec<(Vec<&'s str>, T)> {
        let accounts =
            self.accounts.iter().filter_map(|(n, a)| of_account(a).map(|v| (vec!["accounts", n.as_str(), key], v)));
        let services =
            self.services.iter().filter_map(|(n, s)| of_service(s).map(|v| (vec!["services", n.as_str(), key], v)));
        top.map(|v| (vec![key], v)).into_iter().chain(accounts).chain(services).collect()
    }

    /// Every account by name, the built-in `local` one included unless `accounts` redefines it.
    pub fn accounts(&self) -> impl Iterator<Item = (&str, &Account)> {
        let builtin = (!self.accounts.contains_key(LOCAL_ACCOUNT)).then_some((LOCAL_ACCOUNT, &BUILTIN_LOCAL));
        self.accounts.iter().map(|(n, a)| (n.as_str(), a)).chain(builtin)
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        match self.accounts.get(name) {
            Some(a) => Some(a),
            None if name == LOCAL_ACCOUNT => Some(&BUILTIN_LOCAL),
            None => None,
        }
    }

    pub fn env_view(&self, env: &str) -> EnvView<'_> {
        let overrides = self.envs.get(env);
        let default_account = overrides
            .and_then(|o| o.default_account.clone())
            .or_else(|| self.default_account.clone())
            .unwrap_or_else(|| LOCAL_ACCOUNT.to_string());
        let node_selector = overrides.and_then(|o| o.node_selector).or(self.node_selector).unwrap_or_default();
        let max_unavailable = match (
            overrides.and_then(|o| o.rollout).and_then(|r| r.max_unavailable),
            self.rollout.and_then(|r| r.max_unavailable),
        ) {
            (Some(value), _) => MaxUnavailable { value, set_at: Some(format!("envs.{env}.rollout")) },
            (None, Some(value)) => MaxUnavailable { value, set_at: Some("rollout".to_string()) },
            (None, None) => MaxUnavailable { value: DEFAULT_MAX_UNAVAILABLE, set_at: None },
        };
        EnvView { settings: self, default_account, node_selector, max_unavailable }
    }

    /// The timeouts of an instance of `service` in `account`: the service's, else the account's,
    /// else the top level's, else the defaults, field by field. Milliseconds: (health, stop grace).
    pub fn timeouts_of(&self, service: &str, account: &str) -> (u64, u64) {
        let levels = [
            self.services.get(service).and_then(|s| s.timeouts),
            self.account(account).and_then(Account::timeouts),
            self.timeouts,
        ];
        let health = levels.iter().flatten().find_map(|t| t.health_ms).unwrap_or(DEFAULT_HEALTH_MS);
        let grace = levels.iter().flatten().find_map(|t| t.stop_grace_ms).unwrap_or(DEFAULT_STOP_GRACE_MS);
        (health, grace)
    }

    /// The log cap of an instance of `service` in `account`: the service's `logs`, else the
    /// account's, else the top level's, else the defaults ([`DEFAULT_LOG_MAX_BYTES`],
    /// [`DEFAULT_LOG_KEEP`]), field by field.
    pub fn logs_of(&self, service: &str, account: &str) -> LogCap {
        let levels =
            [self.services.get(service).and_then(|s| s.logs), self.account(account).and_then(Account::logs), self.logs];
        LogCap {
            max_bytes: levels.iter().flatten().find_map(|l| l.max_bytes).unwrap_or(DEFAULT_LOG_MAX_BYTES),
            keep: levels.iter().flatten().find_map(|l| l.keep).unwrap_or(DEFAULT_LOG_KEEP),
        }
    }

    /// How `consumer` is told its lists: its own `wiring`, else the top-level one, else the
    /// defaults.
    pub fn wiring_of(&self, consumer: &str) -> WiringSettings {
        self.services.get(consumer).and_then(|s| s.wiring).or(self.wiring).unwrap_or_default()
    }

    /// The readiness check of an instance of `service` of `package_type`: the service's own,
    /// else its package type's; `None` when only the port is checked.
    pub fn readiness_of(&self, service: &str, package_type: &str) -> Option<&Readiness> {
        self.services
            .get(service)
            .and_then(|s| s.readiness.as_ref())
            .or_else(|| self.package_types.get(package_type).and_then(|t| t.readiness.as_ref()))
    }

    pub fn knows_package_type(&self, name: &str) -> bool {
        crate::spec::model::BUILTIN_PACKAGE_TYPES.contains(&name) || self.package_types.contains_key(name)
    }

    /// Parses and validates `enact.json`, collecting every problem.
    pub fn parse(source: &SourceFile) -> Result<Settings, Vec<Diagnostic>> {
        let value: Value = serde_json::from_str(&source.text).map_err(|e| vec![source.syntax_error(&e)])?;
        let mut errors: Vec<Diagnostic> = source
            .duplicate_keys()
            .into_iter()
            .map(|(path, location)| {
                let what = match path.as_slice() {
                    [Segment::Key(a), Segment::Key(name)] if a == "accounts" => {
                        format!("duplicate account `{name}`")
                    }
                    [.., Segment::Key(key)] => format!("duplicate field `{key}`"),
                    _ => "duplicate field".to_string(),
                };
                Diagnostic::new(what)
                    .at(Some(location))
                    .hint("JSON keeps only the last of the two; rename or remove one")
            })
            .collect();
        let Value::Object(top) = &value else {
            return Err(vec![
                Diagnostic::new("enact.json must hold a JSON object").at(Some(source.locate(&[], false))),
            ]);
        };
        // Accounts one by one so each bad account is reported, then the rest as a whole.
        let mut accounts = BTreeMap::new();
        if let Some(Value::Object(raw)) = top.get("accounts") {
            for (name, raw_account) in raw {
                let at = [Segment::Key("accounts".into()), Segment::Key(name.clone())];
                match parse_account(raw_account, source, &at) {
                    Ok(account) => {
                        accounts.insert(name.clone(), account);
                    }
                    Err(d) => {
                        let hint = d.hint.clone().unwrap_or_else(|| {
                            "an account needs `provider` (local, ssh, ec2 or simulated) and that provider's fields"
                                .to_string()
                        });
                        errors.push(Diagnostic { message: format!("account `{name}`: {}", d.message), ..d }.hint(hint));
                    }
                }
            }
        }
        let mut rest = top.clone();
        rest.remove("accounts");
        let mut settings = match from_value_located::<Settings>(&Value::Object(rest), source, &[]) {
            Ok(s) => s,
            Err(d) => {
                errors.push(d);
                return Err(errors);
            }
        };
        settings.accounts = accounts;
        errors.extend(settings.validate(source));
        if errors.is_empty() { Ok(settings) } else { Err(errors) }
    }

    fn validate(&self, source: &SourceFile) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        let loc = |segments: &[&str]| {
            let segs: Vec<Segment> = segments.iter().map(|s| Segment::Key((*s).to_string())).collect();
            Some(source.locate(&segs, false))
        };
        let account_hint = |name: &str| {
            let mut known: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
            if !known.contains(&LOCAL_ACCOUNT) {
                known.push(LOCAL_ACCOUNT);
            }
            known.sort_unstable();
            crate::suggest::hint(
                name,
                known.iter().copied(),
                &format!("define account `{name}` under `accounts`, or use one of: {}", known.join(", ")),
            )
        };
        if let Some(name) = &self.default_account
            && self.account(name).is_none()
        {
            errors.push(
                Diagnostic::new(format!("`defaultAccount` names account `{name}`, which is not defined"))
                    .at(loc(&["defaultAccount"]))
                    .hint(account_hint(name)),
            );
        }
        if let Some(env) = &self.default_env
            && !is_valid_name(env)
        {
            errors.push(
                Diagnostic::new(format!("`defaultEnv` `{env}` is not a valid environment name"))
                    .at(loc(&["defaultEnv"])),
            );
        }
        if let Some(dir) = &self.state_dir
            && (dir.trim().is_empty() || dir.chars().any(char::is_control))
        {
            errors.push(
                Diagnostic::new("`stateDir` must be a directory path")
                    .at(loc(&["stateDir"]))
                    .hint("leave it out to use `state/` in the config repository"),
            );
        }
        for (name, account) in &self.accounts {
            if !is_valid_name(name) {
                errors.push(
                    Diagnostic::new(format!("account name `{name}` is not valid"))
                        .at(loc(&["accounts", name]))
                        .hint("names are letters, digits, `.`, `_` and `-`, starting with a letter or digit"),
                );
            }
            match account {
                Account::Ssh(ssh) => {
                    if ssh.hosts.is_empty() {
                        errors.push(
                            Diagnostic::new(format!("ssh account `{name}` lists no hosts"))
                                .at(loc(&["accounts", name, "hosts"]))
                                .hint("add at least one host with `address` and `user`"),
                        );
                    }
                    for (i, host) in ssh.hosts.iter().enumerate() {
                        let at = Some(source.locate(
                            &[
                                Segment::Key("accounts".into()),
                                Segment::Key(name.clone()),
                                Segment::Key("hosts".into()),
                                Segment::Index(i),
                            ],
                            false,
                        ));
                        if !is_valid_host(&host.address) {
                            errors.push(
                                Diagnostic::new(format!(
                                    "host address `{}` is not a host name or IP address",
                                    host.address
                                ))
                                .at(at.clone()),
                            );
                        }
                        if !is_valid_name(&host.user) {
                            errors.push(
                                Diagnostic::new(format!("host user `{}` is not a valid user name", host.user))
                                    .at(at.clone()),
                            );
                        }
                        if let Some(port) = host.port
                            && !(1..=65535).contains(&port)
                        {
                            errors.push(Diagnostic::new(format!("host port {port} is outside 1–65535")).at(at.clone()));
                        }
                        if host.private_key.as_deref().is_some_and(holds_key_material) {
                            errors.push(
                                key_material_error(&format!("host {} of ssh account `{name}`", host.address))
                                    .at(at.clone()),
                            );
                        }
                    }
                }
                Account::Ec2(ec2) => {
                    if ec2.private_key.as_deref().is_some_and(holds_key_material) {
                        errors.push(key_material_error(&format!("ec2 account `{name}`")).at(loc(&[
                            "accounts",
                            name,
                            "privateKey",
                        ])));
                    }
                    if ec2.region.is_empty() || !is_valid_name(&ec2.region) {
                        errors.push(
                            Diagnostic::new(format!("ec2 account `{name}` has no valid `region`"))
                                .at(loc(&["accounts", name, "region"])),
                        );
                    }
                    if !ec2.image_id.starts_with("ami-") {
                        errors.push(
                            Diagnostic::new(format!(
                                "ec2 account `{name}`: `imageId` `{}` is not an AMI id",
                                ec2.image_id
                            ))
                            .at(loc(&["accounts", name, "imageId"]))
                            .hint("AMI ids look like `ami-0abc1234`"),
                        );
                    }
                    if let Some(endpoint) = &ec2.endpoint
                        && crate::spec::validate::check_http_uri(endpoint).is_err()
                    {
                        errors.push(
                            Diagnostic::new(format!(
                                "ec2 account `{name}`: `endpoint` `{endpoint}` is not an http(s) URL"
                            ))
                            .at(loc(&["accounts", name, "endpoint"])),
                        );
                    }
                }
                Account::Simulated(simulated) => {
                    if simulated.latency_ms > MAX_LATENCY_MS {
                        errors.push(
                            Diagnostic::new(format!(
                                "simulated account `{name}`: `latencyMs` is {}, outside 0–{MAX_LATENCY_MS} (an hour)",
                                simulated.latency_ms
                            ))
                            .at(loc(&["accounts", name, "latencyMs"]))
                            .hint("a rehearsal's operations take milliseconds to seconds, e.g. 200"),
                        );
                    }
                }
                Account::Local(_) => {}
            }
        }
        let check_selector = |selector: &NodeSelector, at: &[&str], errors: &mut Vec<Diagnostic>| {
            if selector.policy == Policy::LimitedRoundRobin && selector.vm_limit.unwrap_or(0) == 0 {
                errors.push(
                    Diagnostic::new("`LIMITED_ROUND_ROBIN` needs a `vmLimit` of at least 1")
                        .at(loc(at))
                        .hint("add `\"vmLimit\": 10`, or choose `ROUND_ROBIN`"),
                );
            }
        };
        if let Some(selector) = &self.node_selector {
            check_selector(selector, &["nodeSelector"], &mut errors);
        }
        for (name, recipe) in &self.package_types {
            if !is_valid_name(name) {
                errors.push(
                    Diagnostic::new(format!("package type name `{name}` is not valid"))
                        .at(loc(&["packageTypes", name])),
                );
            }
            if let Err(message) = check_recipe(&recipe.start) {
                errors.push(
                    Diagnostic::new(format!("package type `{name}`: {message}"))
                        .at(loc(&["packageTypes", name, "start"]))
                        .hint(format!(
                            "placeholders are {}",
                            RECIPE_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                        )),
                );
            }
        }
        for name in self.services.keys() {
            if !is_valid_name(name) {
                errors.push(
                    Diagnostic::new(format!(
                        "`services` names `{}`, which is not a valid service name",
                        name.escape_debug()
                    ))
                    .at(loc(&["services", name]))
                    .hint("service names are letters, digits, `.`, `_` and `-`, starting with a letter or digit"),
                );
            }
        }
        for (env, overrides) in &self.envs {
            if !is_valid_name(env) {
                errors.push(Diagnostic::new(format!("environment name `{env}` is not valid")).at(loc(&["envs", env])));
            }
            if let Some(name) = &overrides.default_account
                && self.account(name).is_none()
            {
                errors.push(
                    Diagnostic::new(format!(
                        "env `{env}`: `defaultAccount` names account `{name}`, which is not defined"
                    ))
                    .at(loc(&["envs", env, "defaultAccount"]))
                    .hint(account_hint(name)),
                );
            }
            if let Some(selector) = &overrides.node_selector {
                check_selector(selector, &["envs", env, "nodeSelector"], &mut errors);
            }
        }
        let mut check_wiring = |wiring: &WiringSettings, at: &[&str]| {
            for (field, value, range) in [
                ("tries", u64::from(wiring.tries), 1..=100),
                ("backoffMs", wiring.backoff_ms, 0..=60_000),
                ("timeoutMs", wiring.timeout_ms, 1..=600_000),
            ] {
                if !range.contains(&value) {
                    let mut path = at.to_vec();
                    path.push(field);
                    errors.push(
                        Diagnostic::new(format!(
                            "`{}` is {value}, outside {}–{}",
                            path.join("."),
                            range.start(),
                            range.end()
                        ))
                        .at(loc(&path))
                        .hint("the defaults are 5 tries, 100 ms of backoff and a 5000 ms timeout"),
                    );
                }
            }
        };
        if let Some(wiring) = &self.wiring {
            check_wiring(wiring, &["wiring"]);
        }
        for (name, service) in &self.services {
            if let Some(wiring) = &service.wiring {
                check_wiring(wiring, &["services", name, "wiring"]);
            }
        }
        let timeouts = self.at_every_level("timeouts", self.timeouts, Account::timeouts, |s| s.timeouts);
        for (at, t) in timeouts {
            for (field, value, range) in
                [("healthMs", t.health_ms, 1..=86_400_000u64), ("stopGraceMs", t.stop_grace_ms, 0..=3_600_000)]
            {
                if let Some(value) = value.filter(|v| !range.contains(v)) {
                    let mut path = at.clone();
                    path.push(field);
                    errors.push(
                        Diagnostic::new(format!(
                            "`{}` is {value} ms, outside {}–{} ms",
                            path.join("."),
                            range.start(),
                            range.end()
                        ))
                        .at(loc(&path))
                        .hint("the defaults are 30000 ms to become healthy and 5000 ms to stop"),
                    );
                }
            }
        }
        let logs = self.at_every_level("logs", self.logs, Account::logs, |s| s.logs);
        for (at, l) in logs {
            for (field, value, range, unit) in [
                ("maxBytes", l.max_bytes, LOG_MAX_BYTES_RANGE, " bytes"),
                ("keep", l.keep.map(u64::from), 0..=u64::from(MAX_LOG_KEEP), " rotated files"),
            ] {
                if let Some(value) = value.filter(|v| !range.contains(v)) {
                    let mut path = at.clone();
                    path.push(field);
                    errors.push(
                        Diagnostic::new(format!(
                            "`{}` is {value}, outside {}–{}{unit}",
                            path.join("."),
                            range.start(),
                            range.end()
                        ))
                        .at(loc(&path))
                        .hint(format!(
                            "the defaults are {DEFAULT_LOG_MAX_BYTES} bytes (10 MiB) per file and {DEFAULT_LOG_KEEP} rotated files; a cap of at least 4096 bytes (4 KiB) and at most 1 TiB"
                        )),
                    );
                }
            }
        }
        let readiness =
            self.services
                .iter()
                .filter_map(|(n, s)| s.readiness.as_ref().map(|r| (vec!["services", n.as_str(), "readiness"], r)))
                .chain(self.package_types.iter().filter_map(|(n, t)| {
                    t.readiness.as_ref().map(|r| (vec!["packageTypes", n.as_str(), "readiness"], r))
                }));
        for (at, readiness) in readiness {
            if let Some(path) = &readiness.path
                && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                let mut here = at.clone();
                here.push("path");
                errors.push(
                    Diagnostic::new(format!("`{}` must be a URL path starting with `/`, got {path:?}", here.join(".")))
                        .at(loc(&here))
                        .hint("for example \"/health\" or \"/{endpoint}/ready\""),
                );
            }
            if readiness.min_ready_ms > 3_600_000 {
                let mut here = at.clone();
                here.push("minReadyMs");
                errors.push(
                    Diagnostic::new(format!(
                        "`{}` is {} ms, more than an hour",
                        here.join("."),
                        readiness.min_ready_ms
                    ))
                    .at(loc(&here))
                    .hint("it must also fit in the health timeout (`--health-timeout`, 30 s by default)"),
                );
            }
        }
        errors
    }
}

/// The accounts and package types a spec may name, for [`crate::spec::validate::validate`].
impl Catalog for Settings {
    fn has_account(&self, name: &str) -> bool {
        self.account(name).is_some()
    }

    fn account_names(&self) -> Vec<&str> {
        let mut known: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
        if !known.contains(&LOCAL_ACCOUNT) {
            known.push(LOCAL_ACCOUNT);
        }
        known
    }

    fn has_package_type(&self, name: &str) -> bool {
        self.knows_package_type(name)
    }

    fn defined_package_types(&self) -> Vec<&str> {
        self.package_types.keys().map(String::as_str).collect()
    }
}

impl Settings {
    /// Errors for the names under `services` that name no service: `known` says whether a name
    /// is a service of some environment's spec, `names` lists them all (for a "did you mean").
    /// Located in `source`, the text of enact.json these settings were parsed from.
    pub fn unknown_services<'n>(
        &self,
        source: &SourceFile,
        known: impl Fn(&str) -> bool,
        names: impl Iterator<Item = &'n str> + Clone,
    ) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        for name in self.services.keys().filter(|n| !known(n)) {
            let at = [Segment::Key("services".into()), Segment::Key(name.clone())];
            let hint = crate::suggest::hint(
                name,
                names.clone(),
                "name a service of chor.json or of an overlay, or remove the entry",
            );
            errors.push(
                Diagnostic::new(format!("`services` names `{}`, which is no service of the spec", name.escape_debug()))
                    .at(Some(source.locate(&at, true)))
                    .hint(hint),
            );
        }
        errors
    }
}

/// One account: the `provider` tag picks the shape, so errors keep their exact place.
fn parse_account(raw: &Value, source: &SourceFile, at: &[Segment]) -> Result<Account, Diagnostic> {
    let mut fields = raw.clone();
    let provider = match fields.as_object_mut().map(|o| o.remove("provider")) {
        Some(Some(Value::String(p))) => p,
        Some(Some(_)) => {
            let mut here = at.to_vec();
            here.push(Segment::Key("provider".into()));
            return Err(Diagnostic::new("`provider` must be a string").at(Some(source.locate(&here, false))));
        }
        Some(None) => {
            return Err(Diagnostic::new("missing field `provider`").at(Some(source.locate(at, false))));
        }
        None => {
            return Err(Diagnostic::new("an account must be a JSON object").at(Some(source.locate(at, false))));
        }
    };
    match provider.as_str() {
        "local" => from_value_located(&fields, source, at).map(Account::Local),
        "ssh" => from_value_located(&fields, source, at).map(Account::Ssh),
        "ec2" => from_value_located(&fields, source, at).map(Account::Ec2),
        "simulated" => from_value_located(&fields, source, at).map(Account::Simulated),
        other => {
            let mut here = at.to_vec();
            here.push(Segment::Key("provider".into()));
            let providers = ["local", "ssh", "ec2", "simulated"];
            Err(Diagnostic::new(format!("unknown provider `{}`", other.escape_debug()))
                .at(Some(source.locate(&here, false)))
                .hint(crate::suggest::hint(other, providers, "`provider` is one of local, ssh, ec2, simulated")))
        }
    }
}

/// A recipe is non-empty and uses only known `{placeholders}`.
fn check_recipe(start: &str) -> Result<(), String> {
    if start.trim().is_empty() {
        return Err("`start` is empty".into());
    }
    let mut rest = start;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("`{` without a closing `}`".into());
        };
        let name = &after[..close];
        if !RECIPE_PLACEHOLDERS.contains(&name) {
            return Err(format!("unknown placeholder `{{{name}}}`"));
        }
        rest = &after[close + 1..];
    }
    Ok(())
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

/// A resolved log cap (see [`Settings::logs_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCap {
    /// Bytes one log file may hold.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u32,
}

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

impl Default for WiringSettings {
    fn default() -> Self {
        WiringSettings { tries: default_tries(), backoff_ms: default_backoff_ms(), timeout_ms: default_timeout_ms() }
    }
}

fn default_tries() -> u32 {
    5
}

fn default_backoff_ms() -> u64 {
    100
}

fn default_timeout_ms() -> u64 {
    5000
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Host names and IP addresses: letters, digits, `.`, `-`, and `:` for IPv6.
pub fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        && !host.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, Vec<Diagnostic>> {
        Settings::parse(&SourceFile::new("enact.json", text.to_string()))
    }

    #[test]
    fn the_design_example_parses() {
        let s = parse(
            r#"{ "defaultEnv": "dev", "defaultAccount": "local",
  "accounts": {
    "local": { "provider": "local" },
    "lab": { "provider": "ssh", "knownHosts": "~/.ssh/known_hosts",
             "hosts": [ { "address": "10.0.0.11", "port": 22, "user": "deploy",
                          "privateKey": "~/.ssh/id_ed25519", "memory": "MEDIUM" } ] },
    "aws": { "provider": "ec2", "region": "us-east-1", "imageId": "ami-0abc", "keyName": "deploy",
             "user": "ubuntu", "privateKey": "~/.ssh/deploy.pem",
             "instanceTypes": { "SMALL": "t3.small", "MEDIUM": "t3.medium", "LARGE": "t3.large" },
             "endpoint": null },
    "rehearsal": { "provider": "simulated", "latencyMs": 200 } },
  "nodeSelector": { "policy": "LIMITED_ROUND_ROBIN", "vmLimit": 10 },
  "reservoir": { "initialSize": 2, "threshold": 1 },
  "packageTypes": { "PYTHON": { "start": "python3 {package}" } },
  "envs": { "prod": { "defaultAccount": "aws" } } }"#,
        )
        .unwrap();
        assert_eq!(s.accounts.len(), 4);
        assert_eq!(s.env_view("prod").default_account, "aws");
        assert_eq!(s.env_view("dev").node_selector.vm_limit, Some(10));
        assert_eq!(s.account("aws").map(|a| a.node_size(Memory::Large)), Some("t3.large".to_string()));
    }

    #[test]
    fn every_bad_account_is_reported_with_its_place() {
        let errs = parse(
            "{\"accounts\": {\n \"a\": {\"provider\": \"gcp\"},\n \"b\": {\"provider\": \"ssh\", \"hosts\": [], \"x\": 1}}}",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].message.contains("gcp"));
        assert_eq!(errs[0].location.as_ref().map(|l| l.line), Some(2));
        assert!(errs[1].message.contains("unknown field `x`"));
    }

    #[test]
    fn timeouts_come_from_the_service_then_the_account_then_the_top_level() {
        let s = parse(
            r#"{"timeouts": {"healthMs": 1000, "stopGraceMs": 2000},
                "accounts": {"lab": {"provider": "local", "timeouts": {"healthMs": 3000}}},
                "services": {"airline": {"timeouts": {"stopGraceMs": 4000}}}}"#,
        )
        .unwrap();
        assert_eq!(s.timeouts_of("airline", "lab"), (3000, 4000));
        assert_eq!(s.timeouts_of("other", "lab"), (3000, 2000));
        assert_eq!(s.timeouts_of("other", "local"), (1000, 2000));
        assert_eq!(Settings::default().timeouts_of("x", "local"), (DEFAULT_HEALTH_MS, DEFAULT_STOP_GRACE_MS));
        let errs = parse(r#"{"services": {"a": {"timeouts": {"healthMs": 0, "stopGraceMs": 99999999}}}}"#).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 2, "{text:?}");
        assert!(text[0].contains("`services.a.timeouts.healthMs` is 0 ms"), "{text:?}");
    }

    #[test]
    fn the_log_cap_comes_from_the_service_then_the_account_then_the_top_level() {
        let s = parse(
            r#"{"logs": {"maxBytes": 65536, "keep": 5},
                "accounts": {"lab": {"provider": "ssh", "hosts": [{"address": "10.0.0.1", "user": "u"}],
                                     "logs": {"maxBytes": 1048576}}},
                "services": {"airline": {"logs": {"keep": 0}}}}"#,
        )
        .unwrap();
        assert_eq!(s.logs_of("airline", "lab"), LogCap { max_bytes: 1_048_576, keep: 0 });
        assert_eq!(s.logs_of("other", "lab"), LogCap { max_bytes: 1_048_576, keep: 5 });
        assert_eq!(s.logs_of("other", "local"), LogCap { max_bytes: 65_536, keep: 5 });
        assert_eq!(
            Settings::default().logs_of("x", "local"),
            LogCap { max_bytes: DEFAULT_LOG_MAX_BYTES, keep: DEFAULT_LOG_KEEP }
        );
    }

    #[test]
    fn a_log_cap_out_of_range_is_refused_with_its_file_line_and_field() {
        let text = "{\"logs\": {\"maxBytes\": 100},\n \"accounts\": {\"l\": {\"provider\": \"local\",\n  \"logs\": {\"keep\": 101}}},\n \"services\": {\"a\": {\"logs\": {\"maxBytes\": 2199023255552, \"keep\": 100}}}}";
        let errs = parse(text).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{text:?}");
        assert!(text[0].starts_with("enact.json:1:"), "{text:?}");
        assert!(text[0].contains("`logs.maxBytes` is 100, outside 4096–1099511627776 bytes"), "{text:?}");
        assert!(text[0].contains("10 MiB"), "the hint gives the defaults: {text:?}");
        assert!(text[1].starts_with("enact.json:3:"), "{text:?}");
        assert!(text[1].contains("`accounts.l.logs.keep` is 101, outside 0–100 rotated files"), "{text:?}");
        assert!(text[2].contains("`services.a.logs.maxBytes` is 2199023255552"), "{text:?}");
        let errs = parse(r#"{"logs": {"maxBytes": -1}}"#).unwrap_err();
        assert!(errs[0].to_string().contains("/logs/maxBytes"), "{}", errs[0]);
        let errs = parse(r#"{"logs": {"max": 1}}"#).unwrap_err();
        assert!(errs[0].to_string().contains("unknown field `max`"), "{}", errs[0]);
        assert!(parse(r#"{"logs": {"maxBytes": 4096, "keep": 0}}"#).is_ok());
    }

    #[test]
    fn references_and_recipes_are_checked() {
        let errs = parse(
            r#"{"defaultAccount": "nope", "envs": {"prod": {"defaultAccount": "gone"}},
                "packageTypes": {"PY": {"start": "python3 {pkg}"}},
                "nodeSelector": {"policy": "LIMITED_ROUND_ROBIN"}}"#,
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 4, "{text:?}");
        assert!(text.iter().any(|t| t.contains("unknown placeholder `{pkg}`")));
        assert!(text.iter().any(|t| t.contains("vmLimit")));
    }

    #[test]
    fn max_unavailable_is_the_services_else_the_envs_else_the_top_levels_else_1() {
        let s = parse(
            r#"{ "rollout": { "maxUnavailable": 2 },
  "envs": { "prod": { "rollout": { "maxUnavailable": 0 } }, "test": { "rollout": {} } },
  "services": { "airline": { "rollout": { "maxUnavailable": 3 } }, "hotel": {} } }"#,
        )
        .unwrap();
        let at = |env: &str, service: &str| {
            let m = s.env_view(env).max_unavailable(service);
            (m.value, m.set_at)
        };
        assert_eq!(at("prod", "airline"), (3, Some("services.airline.rollout".to_string())));
        assert_eq!(at("prod", "hotel"), (0, Some("envs.prod.rollout".to_string())));
        assert_eq!(at("dev", "hotel"), (2, Some("rollout".to_string())));
        assert_eq!(at("test", "hotel"), (2, Some("rollout".to_string())), "an empty `rollout` inherits");
        let none = parse("{}").unwrap();
        assert_eq!(none.env_view("dev").max_unavailable("airline"), MaxUnavailable { value: 1, set_at: None });
    }

    #[test]
    fn service_settings_refuse_unknown_fields_and_bad_names_with_their_place() {
        let errs = parse("{\"services\": {\n \"airline\": {\"rollout\": {\"maxUnavailable\": -1}}}}").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].location.as_ref().map(|l| l.line), Some(2), "{errs:?}");
        let errs = parse("{\"services\": {\"airline\": {\"rolout\": {}}}}").unwrap_err();
        assert!(errs[0].message.contains("unknown field `rolout`"), "{errs:?}");
        let errs = parse("{\"services\": {\"air line\": {}}}").unwrap_err();
        assert!(errs[0].message.contains("not a valid service name"), "{errs:?}");
        // A name the spec may not hold is fine here: settings are read before the spec.
        assert!(parse("{\"services\": {\"nowhere\": {\"rollout\": {\"maxUnavailable\": 0}}}}").is_ok());
    }

    #[test]
    fn a_service_setting_for_no_service_is_located_with_the_closest_name() {
        let text = "{\"services\": {\n  \"airlin\": {},\n  \"airline\": {},\n  \"zzz\": {}}}";
        let source = SourceFile::new("enact.json", text.to_string());
        let s = Settings::parse(&source).unwrap();
        let names = ["airline", "hotel"];
        let errs = s.unknown_services(&source, |n| names.contains(&n), names.iter().copied());
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].location.as_ref().map(|l| (l.line, l.column)), Some((2, 3)));
        assert!(errs[0].to_string().contains("did you mean `airline`?"), "{}", errs[0]);
        assert!(errs[1].message.contains("`zzz`") && !errs[1].to_string().contains("did you mean"), "{}", errs[1]);
    }

    #[test]
    fn the_schema_of_enact_json_has_the_rollout_settings() {
        let schema = schema();
        let text = schema.to_string();
        for field in ["rollout", "services", "maxUnavailable"] {
            assert!(text.contains(&format!("\"{field}\"")), "{field} missing: {text}");
        }
        assert!(schema["properties"]["services"].is_object(), "{schema}");
    }

    #[test]
    fn rollout_settings_survive_a_round_trip() {
        let text = r#"{"rollout":{"maxUnavailable":1},"services":{"airline":{"rollout":{"maxUnavailable":0}}}}"#;
        let s = parse(text).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), text);
    }
}
