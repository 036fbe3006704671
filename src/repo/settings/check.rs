//! The checks of `enact.json`'s values once its shape is read (`docs/formats.md` §4): names,
//! references between sections (`defaultAccount`), ssh hosts, ec2 fields, recipes and their
//! placeholders, ranges of timeouts, log caps, wiring and readiness. Every problem is collected,
//! located at the key it is about.

use super::{
    Account, DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, Ec2Account, LOCAL_ACCOUNT, LOG_MAX_BYTES_RANGE, MAX_LATENCY_MS,
    MAX_LOG_KEEP, MAX_REQUESTS_PER_SECOND, MAX_RESERVOIR_SIZE, MAX_RUNNING_TIMEOUT_MS, NodeSelector, Policy,
    RECIPE_PLACEHOLDERS, Readiness, Reservoir, Settings, SimulatedAccount, SshAccount, WiringSettings,
};
use crate::diagnostic::{Diagnostic, Location, Segment, SourceFile};
use crate::spec::validate::is_valid_name;

/// Why a package type's `start` recipe is refused. The message follows "package type `NAME`: "
/// in the diagnostic, which is located at the recipe and lists the placeholders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// Nothing to run: write the command line.
    #[error("`start` is empty")]
    Empty,
    /// A `{` with no `}` after it: close the placeholder.
    #[error("`{{` without a closing `}}`")]
    Unclosed,
    /// A `{placeholder}` that is not one of [`RECIPE_PLACEHOLDERS`].
    #[error("unknown placeholder `{{{name}}}`")]
    UnknownPlaceholder {
        /// The name between the braces.
        name: String,
    },
}

/// Checks a recipe: non-empty, and only known `{placeholders}`.
///
/// # Errors
/// The [`RecipeError`] that says what is wrong.
pub fn check_recipe(start: &str) -> Result<(), RecipeError> {
    if start.trim().is_empty() {
        return Err(RecipeError::Empty);
    }
    let mut rest = start;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(RecipeError::Unclosed);
        };
        let name = &after[..close];
        if !RECIPE_PLACEHOLDERS.contains(&name) {
            return Err(RecipeError::UnknownPlaceholder { name: name.to_string() });
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Host names and IP addresses: letters, digits, `.`, `-`, and `:` for IPv6 (at most 253
/// characters, not starting with `-`).
pub fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        && !host.starts_with('-')
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

/// The checks of one parse: the settings, the text they came from and the problems so far.
struct Checks<'s> {
    settings: &'s Settings,
    source: &'s SourceFile,
    errors: Vec<Diagnostic>,
}

impl Settings {
    /// Every problem of these settings' values, located in `source` (the text of enact.json
    /// they were parsed from), in the order of `docs/formats.md`'s table.
    pub(super) fn validate(&self, source: &SourceFile) -> Vec<Diagnostic> {
        let mut checks = Checks { settings: self, source, errors: Vec::new() };
        checks.top_level();
        checks.accounts();
        if let Some(selector) = &self.node_selector {
            checks.selector(selector, &["nodeSelector"]);
        }
        if let Some(reservoir) = &self.reservoir {
            checks.reservoir(reservoir, &["reservoir"]);
        }
        checks.package_types();
        checks.service_names();
        checks.envs();
        checks.wiring();
        checks.timeouts();
        checks.logs();
        checks.readiness();
        checks.errors
    }

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

impl Checks<'_> {
    /// Where the value at a path of keys is.
    fn loc(&self, segments: &[&str]) -> Option<Location> {
        let segs: Vec<Segment> = segments.iter().map(|s| Segment::Key((*s).to_string())).collect();
        Some(self.source.locate(&segs, false))
    }

    /// "did you mean" an account, else the list of the defined ones.
    fn account_hint(&self, name: &str) -> String {
        let mut known: Vec<&str> = self.settings.accounts.keys().map(String::as_str).collect();
        if !known.contains(&LOCAL_ACCOUNT) {
            known.push(LOCAL_ACCOUNT);
        }
        known.sort_unstable();
        crate::suggest::hint(
            name,
            known.iter().copied(),
            &format!("define account `{name}` under `accounts`, or use one of: {}", known.join(", ")),
        )
    }

    /// `defaultAccount` names an account, `defaultEnv` is a name, `stateDir` a path.
    fn top_level(&mut self) {
        let s = self.settings;
        if let Some(name) = &s.default_account
            && s.account(name).is_none()
        {
            let d = Diagnostic::new(format!("`defaultAccount` names account `{name}`, which is not defined"))
                .at(self.loc(&["defaultAccount"]))
                .hint(self.account_hint(name));
            self.errors.push(d);
        }
        if let Some(env) = &s.default_env
            && !is_valid_name(env)
        {
            let d = Diagnostic::new(format!("`defaultEnv` `{env}` is not a valid environment name"))
                .at(self.loc(&["defaultEnv"]));
            self.errors.push(d);
        }
        if let Some(dir) = &s.state_dir
            && (dir.trim().is_empty() || dir.chars().any(char::is_control))
        {
            let d = Diagnostic::new("`stateDir` must be a directory path")
                .at(self.loc(&["stateDir"]))
                .hint("leave it out to use `state/` in the config repository");
            self.errors.push(d);
        }
    }

    /// Every account: a valid name, then the fields of its provider.
    fn accounts(&mut self) {
        for (name, account) in &self.settings.accounts {
            if !is_valid_name(name) {
                let d = Diagnostic::new(format!("account name `{name}` is not valid"))
                    .at(self.loc(&["accounts", name]))
                    .hint("names are letters, digits, `.`, `_` and `-`, starting with a letter or digit");
                self.errors.push(d);
            }
            match account {
                Account::Ssh(ssh) => self.ssh(name, ssh),
                Account::Ec2(ec2) => self.ec2(name, ec2),
                Account::Simulated(simulated) => self.simulated(name, simulated),
                Account::Local(_) => {}
            }
        }
    }

    /// An ssh account lists hosts, each with a host address, a user name, a port in range and a
    /// key path (never a key).
    fn ssh(&mut self, name: &str, ssh: &SshAccount) {
        if ssh.hosts.is_empty() {
            let d = Diagnostic::new(format!("ssh account `{name}` lists no hosts"))
                .at(self.loc(&["accounts", name, "hosts"]))
                .hint("add at least one host with `address` and `user`");
            self.errors.push(d);
        }
        for (i, host) in ssh.hosts.iter().enumerate() {
            let path = [
                Segment::Key("accounts".into()),
                Segment::Key(name.to_string()),
                Segment::Key("hosts".into()),
                Segment::Index(i),
            ];
            let at = Some(self.source.locate(&path, false));
            if !is_valid_host(&host.address) {
                self.errors.push(
                    Diagnostic::new(format!("host address `{}` is not a host name or IP address", host.address))
                        .at(at.clone()),
                );
            }
            if !is_valid_name(&host.user) {
                self.errors.push(
                    Diagnostic::new(format!("host user `{}` is not a valid user name", host.user)).at(at.clone()),
                );
            }
            if let Some(port) = host.port
                && !(1..=65535).contains(&port)
            {
                self.errors.push(Diagnostic::new(format!("host port {port} is outside 1–65535")).at(at.clone()));
            }
            if host.private_key.as_deref().is_some_and(holds_key_material) {
                self.errors
                    .push(key_material_error(&format!("host {} of ssh account `{name}`", host.address)).at(at.clone()));
            }
        }
    }

    /// An ec2 account: a key path (never a key), a region, an AMI id, an http(s) endpoint.
    fn ec2(&mut self, name: &str, ec2: &Ec2Account) {
        if ec2.private_key.as_deref().is_some_and(holds_key_material) {
            let d =
                key_material_error(&format!("ec2 account `{name}`")).at(self.loc(&["accounts", name, "privateKey"]));
            self.errors.push(d);
        }
        if ec2.region.is_empty() || !is_valid_name(&ec2.region) {
            let d = Diagnostic::new(format!("ec2 account `{name}` has no valid `region`"))
                .at(self.loc(&["accounts", name, "region"]));
            self.errors.push(d);
        }
        if !ec2.image_id.starts_with("ami-") {
            let d = Diagnostic::new(format!("ec2 account `{name}`: `imageId` `{}` is not an AMI id", ec2.image_id))
                .at(self.loc(&["accounts", name, "imageId"]))
                .hint("AMI ids look like `ami-0abc1234`");
            self.errors.push(d);
        }
        if let Some(endpoint) = &ec2.endpoint
            && crate::spec::validate::check_http_uri(endpoint).is_err()
        {
            let d = Diagnostic::new(format!("ec2 account `{name}`: `endpoint` `{endpoint}` is not an http(s) URL"))
                .at(self.loc(&["accounts", name, "endpoint"]));
            self.errors.push(d);
        }
        if let Some(rate) = ec2.requests_per_second
            && !(rate > 0.0 && rate <= MAX_REQUESTS_PER_SECOND)
        {
            let d = Diagnostic::new(format!(
                "ec2 account `{name}`: `requestsPerSecond` is {rate}, outside (0, {MAX_REQUESTS_PER_SECOND}]"
            ))
            .at(self.loc(&["accounts", name, "requestsPerSecond"]))
            .hint("EC2's own limits are a few requests per second; 0.5 is one request every 2 s");
            self.errors.push(d);
        }
        if let Some(ms) = ec2.running_timeout_ms
            && !(1_000..=MAX_RUNNING_TIMEOUT_MS).contains(&ms)
        {
            let d = Diagnostic::new(format!(
                "ec2 account `{name}`: `runningTimeoutMs` is {ms}, outside 1000–{MAX_RUNNING_TIMEOUT_MS} (an hour)"
            ))
            .at(self.loc(&["accounts", name, "runningTimeoutMs"]))
            .hint("a node usually runs and answers on SSH within a few minutes, e.g. 300000");
            self.errors.push(d);
        }
        if ec2.nodes_per_call == Some(0) {
            let d = Diagnostic::new(format!("ec2 account `{name}`: `nodesPerCall` must be at least 1"))
                .at(self.loc(&["accounts", name, "nodesPerCall"]))
                .hint("leave it out to make all the nodes of one instance type in one call");
            self.errors.push(d);
        }
        for (i, value) in ec2.subnet_id.iter().chain(&ec2.security_group_ids).enumerate() {
            if !is_valid_name(value) {
                let field = if i == 0 && ec2.subnet_id.is_some() { "subnetId" } else { "securityGroupIds" };
                let d = Diagnostic::new(format!("ec2 account `{name}`: `{field}` value `{value}` is not an EC2 id"))
                    .at(self.loc(&["accounts", name, field]));
                self.errors.push(d);
            }
        }
    }

    /// A simulated account's latency is at most an hour.
    fn simulated(&mut self, name: &str, simulated: &SimulatedAccount) {
        if simulated.latency_ms > MAX_LATENCY_MS {
            let d = Diagnostic::new(format!(
                "simulated account `{name}`: `latencyMs` is {}, outside 0–{MAX_LATENCY_MS} (an hour)",
                simulated.latency_ms
            ))
            .at(self.loc(&["accounts", name, "latencyMs"]))
            .hint("a rehearsal's operations take milliseconds to seconds, e.g. 200");
            self.errors.push(d);
        }
    }

    /// `LIMITED_ROUND_ROBIN` needs a `vmLimit` of at least 1.
    fn selector(&mut self, selector: &NodeSelector, at: &[&str]) {
        if selector.policy == Policy::LimitedRoundRobin && selector.vm_limit.unwrap_or(0) == 0 {
            let d = Diagnostic::new("`LIMITED_ROUND_ROBIN` needs a `vmLimit` of at least 1")
                .at(self.loc(at))
                .hint("add `\"vmLimit\": 10`, or choose `ROUND_ROBIN`");
            self.errors.push(d);
        }
    }

    /// `initialSize` at most [`MAX_RESERVOIR_SIZE`], `threshold` between 0 and `initialSize`.
    fn reservoir(&mut self, reservoir: &Reservoir, at: &[&str]) {
        let size = reservoir.initial_size;
        if size > MAX_RESERVOIR_SIZE {
            let mut path = at.to_vec();
            path.push("initialSize");
            let d = Diagnostic::new(format!("`{}` is {size}, outside 0–{MAX_RESERVOIR_SIZE}", path.join(".")))
                .at(self.loc(&path))
                .hint("it counts the spare nodes kept ready per account, e.g. 2");
            self.errors.push(d);
        }
        if !(0..=i64::from(size)).contains(&reservoir.threshold) {
            let mut path = at.to_vec();
            path.push("threshold");
            let d = Diagnostic::new(format!(
                "`{}` is {}, outside 0–{size} (`initialSize`)",
                path.join("."),
                reservoir.threshold
            ))
            .at(self.loc(&path))
            .hint("an apply that leaves `threshold` spares or fewer refills the reservoir up to `initialSize`; 0 refills it once it is empty");
            self.errors.push(d);
        }
    }

    /// Package type names are names and their recipes pass [`check_recipe`].
    fn package_types(&mut self) {
        for (name, recipe) in &self.settings.package_types {
            if !is_valid_name(name) {
                let d = Diagnostic::new(format!("package type name `{name}` is not valid"))
                    .at(self.loc(&["packageTypes", name]));
                self.errors.push(d);
            }
            if let Err(why) = check_recipe(&recipe.start) {
                let d = Diagnostic::new(format!("package type `{name}`: {why}"))
                    .at(self.loc(&["packageTypes", name, "start"]))
                    .hint(format!("placeholders are {}", RECIPE_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")));
                self.errors.push(d);
            }
        }
    }

    /// The names under `services` are service names (whether the spec has them is checked with
    /// the spec, [`Settings::unknown_services`]).
    fn service_names(&mut self) {
        for name in self.settings.services.keys() {
            if !is_valid_name(name) {
                let d = Diagnostic::new(format!(
                    "`services` names `{}`, which is not a valid service name",
                    name.escape_debug()
                ))
                .at(self.loc(&["services", name]))
                .hint("service names are letters, digits, `.`, `_` and `-`, starting with a letter or digit");
                self.errors.push(d);
            }
        }
    }

    /// Environment names, and each environment's `defaultAccount`, `nodeSelector` and `reservoir`.
    fn envs(&mut self) {
        for (env, overrides) in &self.settings.envs {
            if !is_valid_name(env) {
                let d = Diagnostic::new(format!("environment name `{env}` is not valid")).at(self.loc(&["envs", env]));
                self.errors.push(d);
            }
            if let Some(name) = &overrides.default_account
                && self.settings.account(name).is_none()
            {
                let d = Diagnostic::new(format!(
                    "env `{env}`: `defaultAccount` names account `{name}`, which is not defined"
                ))
                .at(self.loc(&["envs", env, "defaultAccount"]))
                .hint(self.account_hint(name));
                self.errors.push(d);
            }
            if let Some(selector) = &overrides.node_selector {
                self.selector(selector, &["envs", env, "nodeSelector"]);
            }
            if let Some(reservoir) = &overrides.reservoir {
                self.reservoir(reservoir, &["envs", env, "reservoir"]);
            }
        }
    }

    /// `wiring` at the top level and per service: tries, backoff and timeout in range.
    fn wiring(&mut self) {
        if let Some(wiring) = &self.settings.wiring {
            self.wiring_at(wiring, &["wiring"]);
        }
        for (name, service) in &self.settings.services {
            if let Some(wiring) = &service.wiring {
                self.wiring_at(wiring, &["services", name, "wiring"]);
            }
        }
    }

    /// One `wiring` object, at the path `at`.
    fn wiring_at(&mut self, wiring: &WiringSettings, at: &[&str]) {
        for (field, value, range) in [
            ("tries", u64::from(wiring.tries), 1..=100),
            ("backoffMs", wiring.backoff_ms, 0..=60_000),
            ("timeoutMs", wiring.timeout_ms, 1..=600_000),
        ] {
            if !range.contains(&value) {
                let mut path = at.to_vec();
                path.push(field);
                let d = Diagnostic::new(format!(
                    "`{}` is {value}, outside {}–{}",
                    path.join("."),
                    range.start(),
                    range.end()
                ))
                .at(self.loc(&path))
                .hint("the defaults are 5 tries, 100 ms of backoff and a 5000 ms timeout");
                self.errors.push(d);
            }
        }
    }

    /// `timeouts` at every level: the health timeout and the stop grace in range.
    fn timeouts(&mut self) {
        let s = self.settings;
        for (at, t) in s.at_every_level("timeouts", s.timeouts, Account::timeouts, |s| s.timeouts) {
            for (field, value, range) in
                [("healthMs", t.health_ms, 1..=86_400_000u64), ("stopGraceMs", t.stop_grace_ms, 0..=3_600_000)]
            {
                if let Some(value) = value.filter(|v| !range.contains(v)) {
                    let mut path = at.clone();
                    path.push(field);
                    let d = Diagnostic::new(format!(
                        "`{}` is {value} ms, outside {}–{} ms",
                        path.join("."),
                        range.start(),
                        range.end()
                    ))
                    .at(self.loc(&path))
                    .hint("the defaults are 30000 ms to become healthy and 5000 ms to stop");
                    self.errors.push(d);
                }
            }
        }
    }

    /// `logs` at every level: the size of a file and the rotated files kept in range.
    fn logs(&mut self) {
        let s = self.settings;
        for (at, l) in s.at_every_level("logs", s.logs, Account::logs, |s| s.logs) {
            for (field, value, range, unit) in [
                ("maxBytes", l.max_bytes, LOG_MAX_BYTES_RANGE, " bytes"),
                ("keep", l.keep.map(u64::from), 0..=u64::from(MAX_LOG_KEEP), " rotated files"),
            ] {
                if let Some(value) = value.filter(|v| !range.contains(v)) {
                    let mut path = at.clone();
                    path.push(field);
                    let d = Diagnostic::new(format!(
                        "`{}` is {value}, outside {}–{}{unit}",
                        path.join("."),
                        range.start(),
                        range.end()
                    ))
                    .at(self.loc(&path))
                    .hint(format!(
                        "the defaults are {DEFAULT_LOG_MAX_BYTES} bytes (10 MiB) per file and {DEFAULT_LOG_KEEP} rotated files; a cap of at least 4096 bytes (4 KiB) and at most 1 TiB"
                    ));
                    self.errors.push(d);
                }
            }
        }
    }

    /// `readiness` of services and package types: a URL path, a minimum of at most an hour.
    fn readiness(&mut self) {
        let s = self.settings;
        let services = s
            .services
            .iter()
            .filter_map(|(n, s)| s.readiness.as_ref().map(|r| (vec!["services", n.as_str(), "readiness"], r)));
        let package_types = s
            .package_types
            .iter()
            .filter_map(|(n, t)| t.readiness.as_ref().map(|r| (vec!["packageTypes", n.as_str(), "readiness"], r)));
        for (at, readiness) in services.chain(package_types) {
            self.readiness_at(readiness, &at);
        }
    }

    /// One `readiness` object, at the path `at`.
    fn readiness_at(&mut self, readiness: &Readiness, at: &[&str]) {
        if let Some(path) = &readiness.path
            && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            let mut here = at.to_vec();
            here.push("path");
            let d = Diagnostic::new(format!("`{}` must be a URL path starting with `/`, got {path:?}", here.join(".")))
                .at(self.loc(&here))
                .hint("for example \"/health\" or \"/{endpoint}/ready\"");
            self.errors.push(d);
        }
        if readiness.min_ready_ms > 3_600_000 {
            let mut here = at.to_vec();
            here.push("minReadyMs");
            let d =
                Diagnostic::new(format!("`{}` is {} ms, more than an hour", here.join("."), readiness.min_ready_ms))
                    .at(self.loc(&here))
                    .hint("it must also fit in the health timeout (`--health-timeout`, 30 s by default)");
            self.errors.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_errors_say_what_is_wrong() {
        assert!(check_recipe("python3 {package} --port {port}").is_ok());
        assert!(matches!(check_recipe("  "), Err(RecipeError::Empty)));
        assert!(matches!(check_recipe("run {package"), Err(RecipeError::Unclosed)));
        assert!(matches!(check_recipe("run {pkg}"), Err(RecipeError::UnknownPlaceholder { name }) if name == "pkg"));
        assert_eq!(RecipeError::Unclosed.to_string(), "`{` without a closing `}`");
        assert_eq!(RecipeError::UnknownPlaceholder { name: "pkg".into() }.to_string(), "unknown placeholder `{pkg}`");
        assert_eq!(RecipeError::Empty.to_string(), "`start` is empty");
    }
}
