//! `enact.json` (`docs/formats.md` §4): accounts of every provider kind, node selection,
//! reservoir, package types and per-environment and per-service overrides. Parsed and
//! validated in full before anything else runs.
//!
//! One file per job: `model.rs` holds the shapes and defaults, `parse.rs` reads the file with
//! every problem located, `check.rs` checks the values; this file holds [`Settings`] and how a
//! setting given at several levels (top, environment, account, service) resolves. Everything
//! of `model.rs` is re-exported here, so `repo::settings::SshAccount` names it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::validate::Catalog;

mod check;
mod model;
mod parse;

pub use check::{RecipeError, is_valid_host};
pub use model::*;

/// The JSON Schema of `enact.json`.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Settings)).unwrap_or_default()
}

/// The built-in account every service goes to when nothing else is said.
pub const LOCAL_ACCOUNT: &str = "local";

/// The whole of `enact.json`, parsed and validated ([`Settings::parse`]); `Default` is the
/// file left out (every default, the built-in `local` account only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// The environment when `-e` is not given (`dev` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_env: Option<String>,
    /// Where states, locks and journals live, relative to the config repository (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Where services without `cloudAccount` are placed (`local` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_account: Option<String>,
    /// Places to get nodes, by account name; `local` exists even when not listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, Account>,
    /// How instances are spread over nodes (`ALWAYS_CREATE` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
    /// The pool of spare nodes kept ready per ec2 and simulated account (none when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservoir: Option<Reservoir>,
    /// How packages of a type are started, by package type name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub package_types: BTreeMap<String, PackageType>,
    /// Per-environment overrides, by environment name.
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

/// The `local` account every repository has, unless `accounts` redefines it.
const BUILTIN_LOCAL: Account = Account::Local(LocalAccount { timeouts: None, logs: None });

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
    /// The whole of enact.json.
    pub settings: &'a Settings,
    /// The environment's `defaultAccount`, else the top-level one, else `local`.
    pub default_account: String,
    /// The environment's `nodeSelector`, else the top-level one, else `ALWAYS_CREATE`.
    pub node_selector: NodeSelector,
    /// `rollout.maxUnavailable` of the environment (before per-service settings).
    pub max_unavailable: MaxUnavailable,
    /// The environment's `reservoir`, else the top-level one; `None` (no spares) when neither
    /// is set.
    pub reservoir: Option<Reservoir>,
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

    /// The account named `name`, the built-in `local` one included; `None` when there is none.
    pub fn account(&self, name: &str) -> Option<&Account> {
        match self.accounts.get(name) {
            Some(a) => Some(a),
            None if name == LOCAL_ACCOUNT => Some(&BUILTIN_LOCAL),
            None => None,
        }
    }

    /// The settings of environment `env`, its overrides (`envs.<env>`) resolved.
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
        let reservoir = overrides.and_then(|o| o.reservoir).or(self.reservoir);
        EnvView { settings: self, default_account, node_selector, max_unavailable, reservoir }
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

    /// Whether `name` is a package type: a built-in one or one under `packageTypes`.
    pub fn knows_package_type(&self, name: &str) -> bool {
        crate::spec::model::BUILTIN_PACKAGE_TYPES.contains(&name) || self.package_types.contains_key(name)
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

#[cfg(test)]
mod tests;
