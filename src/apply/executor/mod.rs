//! The executor: carries a plan out. Nodes are created first (batched per account), then the
//! plan's steps are walked concurrently ([`crate::graph::walk`]): a step starts as soon as the
//! steps it waits for are done. Within a step the ordering rules of `docs/wiring.md` hold:
//!
//! - an instance is started and health-checked before anyone is told about it;
//! - a leaving instance is removed from every consumer's endpoint list before it is stopped;
//! - a redeploy or resize rolls one instance at a time, new before old.
//!
//! Every side effect is preceded by an intent in the journal and followed by its outcome, and
//! the live state is kept by the same function that replays a journal after a crash.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::events::{Event, Subscriber};
use super::journal::{Journal, Record, apply_record};
use crate::graph::walk::{Outcome, walk};
use crate::plan::placement::PlacedInstance;
use crate::plan::{Action, Change, Planned};
use crate::provider::{self, Package, Provider, StartRequest};
use crate::repo::settings::Settings;
use crate::spec::endpoint::{native_uri, port_of};
use crate::spec::{Choreography, DeployableServiceSpec, Service};
use crate::state::{AppliedSpec, InstanceState, InstanceStatus, NodeState, ServiceState, State};

mod wire;

/// How an apply runs: what the command line says (the settings say the rest).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Steps at once (at least 1).
    pub parallelism: usize,
    /// `--health-timeout`: when given, every instance's health timeout, whatever `timeouts` in
    /// enact.json say.
    pub health_timeout: Option<Duration>,
    /// Record unknown SSH host keys instead of refusing them.
    pub accept_new_host_keys: bool,
    /// Once set, no new step starts (the steps already running finish): a clean stop on Ctrl-C.
    pub cancel: Option<&'static std::sync::atomic::AtomicBool>,
    /// `--keep-logs`: the logs of instances the plan stops for good (replaced, scaled in,
    /// destroyed) stay; by default they are removed with the instance.
    pub keep_logs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { parallelism: 10, health_timeout: None, accept_new_host_keys: false, cancel: None, keep_logs: false }
    }
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct Report {
    pub done: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<String>,
    /// Node problems that are not one service's (a node that could not be created or freed).
    pub node_errors: Vec<String>,
    /// Steps that never started because the apply was asked to stop (a subset of `skipped`).
    pub interrupted: Vec<String>,
    /// Problems that do not make the apply fail (a log that could not be removed).
    pub warnings: Vec<String>,
    pub state: State,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.node_errors.is_empty() && self.interrupted.is_empty()
    }
}

/// Where an apply runs and with what.
pub struct Executor<'a> {
    pub repo_root: &'a Path,
    pub state_dir: &'a Path,
    pub env: &'a str,
    pub settings: &'a Settings,
    /// The desired choreography (normalized).
    pub spec: &'a Choreography,
    pub planned: &'a Planned,
    pub journal: &'a Journal,
    pub events: &'a dyn Subscriber,
    pub options: Options,
    live: Mutex<State>,
    providers: HashMap<String, Box<dyn Provider>>,
    /// Who tells legacy consumers their lists (HTTP when `None`; a fake in tests).
    legacy_wiring: Option<Box<dyn Provider>>,
    /// The new instances of each service.
    started: HashMap<String, Vec<&'a PlacedInstance>>,
    packages: Mutex<HashMap<String, Package>>,
    desired: HashMap<&'a str, Service<'a>>,
    wiring: wire::Wiring,
    /// The state's lineage, which every started instance carries (`ENACT_LINEAGE`).
    lineage: String,
    /// See [`Report::warnings`].
    warnings: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("env", &self.env).finish_non_exhaustive()
    }
}

type StepResult<T = ()> = Result<T, String>;

/// What a step that never started because of a stop request returns to the walk.
const INTERRUPTED: &str = "\0interrupted";

impl<'a> Executor<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo_root: &'a Path,
        state_dir: &'a Path,
        env: &'a str,
        settings: &'a Settings,
        spec: &'a Choreography,
        planned: &'a Planned,
        prior: State,
        journal: &'a Journal,
        events: &'a dyn Subscriber,
        options: Options,
    ) -> Result<Self, String> {
        let provider_options = provider::ProviderOptions {
            repo_root: repo_root.to_path_buf(),
            accept_new_host_keys: options.accept_new_host_keys,
            env: env.to_string(),
        };
        let providers = providers_for(settings, &prior, planned, &provider_options)?;
        let retiring: BTreeSet<String> =
            planned.plan.changes.iter().filter(|c| c.action == Action::Destroy).map(|c| c.service.clone()).collect();
        let changed = planned.plan.changes.iter().map(|c| c.service.as_str());
        let wiring = wire::Wiring::new(&prior, spec.services(), changed, retiring);
        let lineage = prior.lineage.clone();
        Ok(Executor {
            repo_root,
            state_dir,
            env,
            settings,
            spec,
            planned,
            journal,
            events,
            options,
            live: Mutex::new(prior),
            providers,
            legacy_wiring: None,
            started: {
                let mut by_service: HashMap<String, Vec<&PlacedInstance>> = HashMap::new();
                for placed in &planned.placement.started {
                    by_service.entry(placed.service.clone()).or_default().push(placed);
                }
                by_service
            },
            packages: Mutex::new(HashMap::new()),
            desired: spec.services().map(|s| (s.name(), s)).collect(),
            wiring,
            lineage,
            warnings: Mutex::new(Vec::new()),
        })
    }

    /// Carries out the work of `account` with `provider` instead of the one its settings name
    /// (a fake, in tests of the ordering rules).
    pub fn use_provider(&mut self, account: &str, provider: Box<dyn Provider>) {
        self.providers.insert(account.to_string(), provider);
    }

    /// Tells legacy consumers their lists through `provider` instead of over HTTP (a fake, in
    /// tests).
    pub fn use_legacy_wiring(&mut self, provider: Box<dyn Provider>) {
        self.legacy_wiring = Some(provider);
    }

    /// The ids of the recorded instances of `service`.
    fn instance_ids(&self, service: &str) -> Vec<String> {
        self.live()
            .services
            .get(service)
            .map(|s| s.instances.iter().map(|i| i.id.clone()).collect())
            .unwrap_or_default()
    }

    fn live(&self) -> MutexGuard<'_, State> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Journals a record and applies it to the live state.
    fn record(&self, record: Record) -> StepResult {
        self.journal.append(&record)?;
        apply_record(&mut self.live(), &record);
        Ok(())
    }

    /// Journals records with one sync (intents for a batch of side effects) and applies them.
    fn record_all(&self, records: &[Record]) -> StepResult {
        if records.is_empty() {
            return Ok(());
        }
        self.journal.append_all(records)?;
        let mut live = self.live();
        for record in records {
            apply_record(&mut live, record);
        }
        Ok(())
    }

    fn provider_of_node(&self, node: &NodeState) -> Result<&dyn Provider, String> {
        self.providers
            .get(&node.account)
            .map(Box::as_ref)
            .ok_or_else(|| format!("no provider for account `{}`", node.account))
    }

    fn progress(&self, service: &str, message: String) {
        self.events.on(&Event::Progress { service, message });
    }

    /// Runs the whole plan; the caller writes the resulting state.
    pub fn run(self) -> Report {
        let plan = &self.planned.plan;
        let (lineage, serial) = {
            let live = self.live();
            (live.lineage.clone(), live.serial)
        };
        // The state is taken out of the executor at the end, not copied.
        let mut report = Report {
            done: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            node_errors: Vec::new(),
            interrupted: Vec::new(),
            warnings: Vec::new(),
            state: State::empty(self.env),
        };
        if let Err(e) = self.record(Record::Begin { lineage, serial, command: format!("apply -e {}", self.env) }) {
            report.node_errors.push(e);
            report.state = self.take_state();
            return report;
        }
        self.events.on(&Event::Begin { steps: plan.steps.len() });
        report.node_errors.extend(self.create_nodes());

        let index: HashMap<&str, usize> = plan.steps.iter().enumerate().map(|(i, s)| (s.service.as_str(), i)).collect();
        let deps: Vec<Vec<usize>> = plan
            .steps
            .iter()
            .map(|s| s.after.iter().filter_map(|a| index.get(a.as_str()).copied()).collect())
            .collect();
        let changes: HashMap<&str, &Change> = plan.changes.iter().map(|c| (c.service.as_str(), c)).collect();
        let cancelled = || self.options.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst));
        let outcomes = walk(&deps, self.options.parallelism, |i| {
            let step = &plan.steps[i];
            if cancelled() {
                // Asked to stop: this step never starts; what depends on it is skipped.
                return Err(INTERRUPTED.to_string());
            }
            let started = Instant::now();
            self.events.on(&Event::StepStarted { service: &step.service, action: step.action });
            let result = match changes.get(step.service.as_str()) {
                Some(change) => self.run_step(change),
                None => Ok(()),
            };
            match &result {
                Ok(()) => self.events.on(&Event::StepDone {
                    service: &step.service,
                    action: step.action,
                    elapsed: started.elapsed(),
                }),
                Err(e) => self.events.on(&Event::StepFailed { service: &step.service, error: e }),
            }
            result
        });
        for (step, outcome) in plan.steps.iter().zip(outcomes) {
            match outcome {
                Outcome::Done => report.done.push(step.service.clone()),
                Outcome::Failed(e) if e == INTERRUPTED => {
                    report.skipped.push(step.service.clone());
                    report.interrupted.push(step.service.clone());
                }
                Outcome::Failed(e) => report.failed.push((step.service.clone(), e)),
                Outcome::Panicked(message) => report.failed.push((
                    step.service.clone(),
                    format!(
                        "enact hit a bug in this step ({message}); the journal holds what it did: run `enact apply` again, and please report it"
                    ),
                )),
                Outcome::Skipped => {
                    self.events.on(&Event::StepSkipped { service: &step.service });
                    report.skipped.push(step.service.clone());
                }
            }
        }
        report.node_errors.extend(self.free_nodes());
        if let Err(e) = self.journal.flush() {
            report.node_errors.push(e);
        }
        report.warnings = self.take_warnings();
        report.state = self.take_state();
        report
    }

    /// The warnings so far, taken out.
    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The live state, taken out (the executor is done with it).
    fn take_state(&self) -> State {
        std::mem::replace(&mut *self.live(), State::empty(self.env))
    }

    /// Creates every node the placement needs, one batch per account.
    fn create_nodes(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut by_account: HashMap<&str, Vec<&crate::state::NewNode>> = HashMap::new();
        for node in &self.planned.placement.new_nodes {
            by_account.entry(&node.account).or_default().push(node);
        }
        let mut accounts: Vec<&str> = by_account.keys().copied().collect();
        accounts.sort_unstable();
        for account in accounts {
            let nodes = &by_account[account];
            let Some(provider) = self.providers.get(account) else {
                errors.push(format!("no provider for account `{account}`"));
                continue;
            };
            let (fixed, made): (Vec<&crate::state::NewNode>, Vec<&crate::state::NewNode>) =
                nodes.iter().copied().partition(|n| n.address.is_some());
            for node in fixed {
                let state = NodeState {
                    account: node.account.clone(),
                    provider: node.provider.to_string(),
                    address: node.address.clone().unwrap_or_default(),
                    memory: Some(node.memory),
                    size: Some(node.size.clone()),
                    provider_id: None,
                };
                if let Err(e) = self.record(Record::NodeCreated { node: node.id.clone(), state }) {
                    errors.push(e);
                }
            }
            if made.is_empty() {
                continue;
            }
            let ids: Vec<String> = made.iter().map(|n| n.id.clone()).collect();
            if let Err(e) = self.record(Record::NodeCreateIntent { nodes: ids.clone() }) {
                errors.push(e);
                continue;
            }
            let taken: BTreeSet<String> = self.taken_addresses();
            let batch: Vec<_> = made.iter().map(|n| (*n).clone()).collect();
            match provider.create_nodes(&batch, &taken) {
                Ok(states) => {
                    for (id, state) in ids.into_iter().zip(states) {
                        if let Err(e) = self.record(Record::NodeCreated { node: id, state }) {
                            errors.push(e);
                        }
                    }
                }
                Err(e) => errors.push(format!("account `{account}`: cannot create {} node(s): {e}", batch.len())),
            }
        }
        errors
    }

    /// Addresses of nodes of every environment of this repository, so two environments applied
    /// on one machine never share a loopback address.
    fn taken_addresses(&self) -> BTreeSet<String> {
        let mut taken: BTreeSet<String> = self.live().nodes.values().map(|n| n.address.clone()).collect();
        if let Ok(entries) = std::fs::read_dir(self.state_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(env) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                if env == self.env {
                    continue;
                }
                if let Ok(text) = std::fs::read_to_string(entry.path())
                    && let Ok(state) = serde_json::from_str::<State>(&text)
                {
                    taken.extend(state.nodes.into_values().map(|n| n.address));
                }
            }
        }
        taken
    }

    /// Frees the nodes the plan leaves empty.
    fn free_nodes(&self) -> Vec<String> {
        let mut errors = Vec::new();
        // Nodes made for this apply that a failed or skipped step left empty go too: they
        // would otherwise stay in the state, empty, and never be freed.
        let made = self.planned.placement.new_nodes.iter().filter(|n| n.address.is_none()).map(|n| &n.id);
        // And nodes an interrupted apply made but never used (fixed ssh hosts are never freed).
        let orphans: Vec<String> = {
            let live = self.live();
            let used: HashSet<&str> =
                live.services.values().flat_map(|s| s.instances.iter().map(|i| i.node.as_str())).collect();
            live.nodes
                .iter()
                .filter(|(id, n)| n.provider != "ssh" && !used.contains(id.as_str()))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let made = made.chain(orphans.iter());
        let in_use: HashSet<String> =
            self.live().services.values().flat_map(|s| s.instances.iter().map(|i| i.node.clone())).collect();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut doomed: Vec<(String, NodeState, &dyn Provider)> = Vec::new();
        for id in self.planned.placement.freed_nodes.iter().chain(made) {
            if in_use.contains(id) || !seen.insert(id.as_str()) {
                continue;
            }
            let Some(node) = self.live().nodes.get(id).cloned() else { continue };
            match self.provider_of_node(&node) {
                Ok(provider) => doomed.push((id.clone(), node, provider)),
                Err(e) => errors.push(format!("node `{id}`: cannot free it: {e}")),
            }
        }
        // Every intent on disk with one sync, then the nodes go one by one.
        let intents: Vec<Record> =
            doomed.iter().map(|(id, _, _)| Record::NodeDestroyIntent { node: id.clone() }).collect();
        if let Err(e) = self.record_all(&intents) {
            errors.push(format!("cannot free {} node(s): {e}", doomed.len()));
            return errors;
        }
        for (id, node, provider) in doomed {
            let result = provider
                .destroy_node(&id, &node)
                .map_err(|e| e.to_string())
                .and_then(|()| self.record(Record::NodeDestroyed { node: id.clone() }));
            if let Err(e) = result {
                errors.push(format!("node `{id}`: cannot free it: {e}"));
            }
        }
        errors
    }

    /// One service's change.
    fn run_step(&self, change: &Change) -> StepResult {
        let name = change.service.as_str();
        let desired = self.desired.get(name).copied();
        let paused = self.live().services.get(name).is_some_and(|s| s.paused);
        if paused && change.action != Action::Destroy {
            // Apply leaves a paused service alone (the plan may still rewire it when a provider
            // changes): its instances are stopped, `resume` wires them afresh, and recording the
            // desired spec would claim a change that was never carried out.
            return Ok(());
        }
        let entry = desired.map(|s| ServiceState {
            spec: AppliedSpec::from_service(s),
            instances: Vec::new(),
            paused,
            incomplete: false,
        });
        self.record(Record::StepBegun { service: name.to_string(), entry: entry.clone() })?;
        let started: Vec<&PlacedInstance> = self.started.get(name).cloned().unwrap_or_default();
        let stopped: Vec<String> = self.planned.placement.stopped.get(name).cloned().unwrap_or_default();
        match change.action {
            Action::Destroy => {
                self.roll(name, None, &[], &stopped)?;
                self.record(Record::ServiceRemoved { service: name.to_string() })?;
                return Ok(());
            }
            Action::Create | Action::Replace => {
                let spec = match desired {
                    Some(Service::Deployable(s)) => Some(s),
                    _ => None,
                };
                self.roll(name, spec, &started, &stopped)?;
                if started.is_empty() && stopped.is_empty() {
                    // A legacy service, or one with no instances: wire it and tell its consumers.
                    self.wire_service(name, None)?;
                    self.push(name)?;
                }
            }
            Action::Update => {
                let spec = match desired {
                    Some(Service::Deployable(s)) => Some(s),
                    _ => None,
                };
                // Dead instances are replaced like a rolling replacement: each leaves every list and
                // stops before its replacement starts (placement says so).
                let rolling = change.memory.is_some()
                    || !change.restart.is_empty()
                    || change.fields.iter().any(|f| f.path == "/cloudAccount");
                if rolling {
                    self.roll(name, spec, &started, &stopped)?;
                } else {
                    // Scale out: new instances up and wired; scale in: leaving instances out of
                    // every list. Consumers learn both in one call, then the leaving ones stop.
                    if let Some(spec) = spec
                        && !started.is_empty()
                    {
                        let fresh = self.start_all(name, spec, &started)?;
                        self.wire_instances(name, &fresh)?;
                    }
                    self.leave(&stopped);
                    let moved = change.fields.iter().any(|f| f.path == "/nativeURIs");
                    if moved {
                        // A legacy service at new URIs: those hold nothing yet.
                        self.wire_service(name, None)?;
                    }
                    if !started.is_empty() || !stopped.is_empty() || moved {
                        self.push(name)?;
                    }
                    self.stop_all(name, &stopped)?;
                }
                if !change.rewire.is_empty() {
                    self.wire_service(name, Some(&change.rewire))?;
                }
            }
        }
        if let Some(entry) = entry {
            self.record(Record::ServiceApplied { service: name.to_string(), entry })?;
        }
        Ok(())
    }

    /// Replaces `stopped` by `started` one at a time, new before old: start, health-check and
    /// wire the new one; take the old one out of every consumer's list; stop it.
    fn roll(
        &self,
        name: &str,
        spec: Option<&DeployableServiceSpec>,
        started: &[&PlacedInstance],
        stopped: &[String],
    ) -> StepResult {
        if stopped.is_empty() && !started.is_empty() {
            // Nothing old keeps serving: start every new instance at once, then announce them.
            let Some(spec) = spec else { return Ok(()) };
            let fresh = self.start_all(name, spec, started)?;
            self.wire_instances(name, &fresh)?;
            return self.push(name);
        }
        if started.is_empty() && !stopped.is_empty() {
            // Everything goes: out of every consumer's list at once, then stopped together.
            self.leave(stopped);
            self.push(name)?;
            return self.stop_all(name, stopped);
        }
        let mut remaining: std::collections::VecDeque<&String> = stopped.iter().collect();
        // Takes an old instance out of every consumer's list, then stops it.
        let retire = |old: &String| -> StepResult {
            self.leave(std::slice::from_ref(old));
            self.push(name)?;
            self.retire_instance(name, old)
        };
        for placed in started {
            if let Some(old) = &placed.after_stopping {
                // No spare slot: this one takes the old one's place, so the old one goes first.
                remaining.retain(|r| *r != old);
                retire(old)?;
            }
            if let Some(spec) = spec {
                let instance = self.start_instance(name, spec, placed)?;
                self.wire_instances(name, std::slice::from_ref(&instance.id))?;
            }
            match remaining.pop_front() {
                Some(old) => retire(old)?,
                None => self.push(name)?,
            }
        }
        while let Some(old) = remaining.pop_front() {
            retire(old)?;
        }
        Ok(())
    }

    /// Starts new instances together: every one is started (at most [`INSTANCES_AT_ONCE`] starts
    /// in flight), then every one is waited for until healthy and ready (as many waits); their
    /// ids once every one is.
    fn start_all(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        started: &[&PlacedInstance],
    ) -> StepResult<Vec<String>> {
        let mut errors = Vec::new();
        let mut launched = Vec::with_capacity(started.len());
        for result in at_once(started, |placed| self.launch(name, spec, placed)) {
            match result {
                Ok(instance) => launched.push(instance),
                Err(e) => errors.push(e),
            }
        }
        let mut fresh = Vec::with_capacity(launched.len());
        for result in at_once(&launched, |instance| self.await_ready(name, spec, instance)) {
            match result {
                Ok(instance) => fresh.push(instance.id),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(fresh) } else { Err(errors.join("; ")) }
    }

    /// Stops instances the plan takes away for good, together: every stop intent on disk with
    /// one sync, then at most [`INSTANCES_AT_ONCE`] stops at a time, each log removed after its
    /// stop (unless logs are kept).
    fn stop_all(&self, name: &str, ids: &[String]) -> StepResult {
        if ids.len() <= 1 {
            return ids.iter().try_for_each(|id| self.retire_instance(name, id));
        }
        let found: Vec<(InstanceState, NodeState)> = {
            let live = self.live();
            let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let instances = live.services.get(name).map(|s| s.instances.as_slice()).unwrap_or_default();
            instances
                .iter()
                .filter(|i| wanted.contains(i.id.as_str()))
                .filter_map(|i| Some((i.clone(), live.nodes.get(&i.node)?.clone())))
                .collect()
        };
        let intents: Vec<Record> = found
            .iter()
            .map(|(i, _)| Record::StopIntent { service: name.to_string(), instance: i.id.clone() })
            .collect();
        self.record_all(&intents)?;
        let stop = |(instance, node): &(InstanceState, NodeState)| -> StepResult {
            let provider = self.provider_of_node(node)?;
            provider.stop(instance, node, self.stop_grace(name, node)).map_err(|e| e.to_string())?;
            self.record(Record::Stopped { service: name.to_string(), instance: instance.id.clone() })?;
            self.progress(name, format!("{} stopped", instance.id));
            self.remove_log(name, instance, node);
            Ok(())
        };
        let errors: Vec<String> = at_once(&found, stop).into_iter().filter_map(Result::err).collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// The readiness check of a service: its own, else its package type's.
    fn readiness_of(&self, spec: &DeployableServiceSpec) -> Option<&'a crate::repo::settings::Readiness> {
        self.settings.readiness_of(&spec.name, spec.package_type())
    }

    /// The package of a service as a path on this machine.
    fn package(&self, spec: &DeployableServiceSpec) -> Result<Package, String> {
        let mut packages = self.packages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = packages.get(&spec.name) {
            return Ok(p.clone());
        }
        let uri = spec.package_uri.as_deref().unwrap_or_default();
        let package = provider::package::locate(uri, self.repo_root).map_err(|e| e.to_string())?;
        packages.insert(spec.name.clone(), package.clone());
        Ok(package)
    }

    fn start_instance(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        placed: &PlacedInstance,
    ) -> Result<InstanceState, String> {
        self.start_instance_with(name, spec, placed)
    }

    fn start_instance_with(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        placed: &PlacedInstance,
    ) -> Result<InstanceState, String> {
        let launched = self.launch(name, spec, placed)?;
        self.await_ready(name, spec, &launched)
    }

    /// Starts an instance (journalled: intent, then outcome) without waiting for it.
    fn launch(&self, name: &str, spec: &DeployableServiceSpec, placed: &PlacedInstance) -> Result<Launched, String> {
        let node = self
            .live()
            .nodes
            .get(&placed.node)
            .cloned()
            .ok_or_else(|| format!("node `{}` for instance {} was not created", placed.node, placed.id))?;
        let provider = self.provider_of_node(&node)?;
        let package = if provider.kind() == "simulated" { Package::None } else { self.package(spec)? };
        let token = crate::state::store::new_lineage();
        let mut instance = InstanceState {
            id: placed.id.clone(),
            node: placed.node.clone(),
            status: InstanceStatus::Running,
            native_uri: native_uri(&node.address, spec),
            pid: None,
            start_time: None,
            memory: Some(spec.memory()),
        };
        self.wiring.starting(name, &placed.id);
        self.record(Record::StartIntent {
            service: name.to_string(),
            instance: instance.clone(),
            token: token.clone(),
        })?;
        let log = log_path(self.state_dir, self.env, &placed.id);
        let request = StartRequest {
            env: self.env,
            spec,
            instance_id: &placed.id,
            node: &node,
            package,
            settings: self.settings,
            cache_dir: self.state_dir.join(".cache"),
            token: &token,
            log: log.clone(),
            lineage: &self.lineage,
            log_cap: self.settings.logs_of(name, &node.account),
        };
        let started = provider.start(&request).map_err(|e| format!("instance {}: {e}", placed.id))?;
        instance.pid = started.pid;
        instance.start_time = started.start_time;
        self.record(Record::Started { service: name.to_string(), instance: instance.clone() })?;
        self.progress(name, format!("{} started on {} ({})", placed.id, placed.node, node.address));
        Ok(Launched { instance, node, log })
    }

    /// Waits until a started instance is healthy and ready; stops it if it never is.
    fn await_ready(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        launched: &Launched,
    ) -> Result<InstanceState, String> {
        let Launched { instance, node, log } = launched;
        let provider = self.provider_of_node(node)?;
        // The timeout runs from the start of the wait: an instance waited for after others of
        // its step has, if anything, longer since its start.
        let checked = Instant::now();
        let health_timeout = self
            .options
            .health_timeout
            .unwrap_or_else(|| Duration::from_millis(self.settings.timeouts_of(name, &node.account).0));
        let healthy =
            provider.wait_healthy(instance, node, port_of(spec), health_timeout).map_err(|e| e.to_string()).and_then(
                |()| {
                    let Some(readiness) = self.readiness_of(spec) else { return Ok(()) };
                    let url = readiness.path.as_deref().map(|p| {
                        super::readiness::readiness_url(&node.address, port_of(spec), p, spec.endpoint_name())
                    });
                    let still_up = || {
                        if provider.alive(instance, node) {
                            Ok(())
                        } else {
                            Err(format!("{} exited before it was ready", instance.id))
                        }
                    };
                    let left = health_timeout.saturating_sub(checked.elapsed());
                    super::readiness::wait_ready(url.as_deref(), readiness, left, &still_up)
                        .map_err(|e| format!("instance {}: {e}", instance.id))
                },
            );
        if let Err(e) = healthy {
            // Stopped first: once it is, its last lines are in its log (which stays).
            let _ = self.stop_instance(name, &instance.id);
            let tail = provider.logs(instance, node, log, 5).unwrap_or_default();
            let tail = if tail.trim().is_empty() {
                String::new()
            } else {
                format!("\n  last output:\n    {}", tail.replace('\n', "\n    "))
            };
            return Err(format!("{e}{tail}"));
        }
        Ok(instance.clone())
    }

    /// A recorded instance of a service and the node it runs on.
    fn instance_on_node(&self, name: &str, id: &str) -> Option<(InstanceState, NodeState)> {
        let live = self.live();
        let instance = live.services.get(name)?.instances.iter().find(|i| i.id == id)?.clone();
        let node = live.nodes.get(&instance.node)?.clone();
        Some((instance, node))
    }

    /// Stops an instance the plan takes away for good (replaced, scaled in, destroyed) and,
    /// unless `--keep-logs`, removes its log: it goes with the instance. A log that cannot be
    /// removed is a warning.
    fn retire_instance(&self, name: &str, id: &str) -> StepResult {
        let target = self.instance_on_node(name, id);
        self.stop_instance(name, id)?;
        if let Some((instance, node)) = target {
            self.remove_log(name, &instance, &node);
        }
        Ok(())
    }

    /// Removes the log of a stopped instance (unless logs are kept); a failure is a warning.
    fn remove_log(&self, name: &str, instance: &InstanceState, node: &NodeState) {
        if self.options.keep_logs {
            return;
        }
        let log = log_path(self.state_dir, self.env, &instance.id);
        let removed = self
            .provider_of_node(node)
            .and_then(|p| p.remove_logs(self.env, instance, node, &log).map_err(|e| e.to_string()));
        if let Err(e) = removed {
            self.warnings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("service `{name}`: the log of {} stays: {e}", instance.id));
        }
    }

    fn stop_instance(&self, name: &str, id: &str) -> StepResult {
        let Some((instance, node)) = self.instance_on_node(name, id) else {
            return Ok(());
        };
        let provider = self.provider_of_node(&node)?;
        self.record(Record::StopIntent { service: name.to_string(), instance: id.to_string() })?;
        provider.stop(&instance, &node, self.stop_grace(name, &node)).map_err(|e| e.to_string())?;
        self.record(Record::Stopped { service: name.to_string(), instance: id.to_string() })?;
        self.progress(name, format!("{id} stopped"));
        Ok(())
    }
}

impl Executor<'_> {
    /// Ends a session of operations outside a plan: the journal flushed, the live state.
    pub fn finish(self, failed: Vec<(String, String)>) -> Report {
        let mut node_errors = Vec::new();
        if let Err(e) = self.journal.flush() {
            node_errors.push(e);
        }
        Report {
            done: Vec::new(),
            failed,
            skipped: Vec::new(),
            node_errors,
            interrupted: Vec::new(),
            warnings: self.take_warnings(),
            state: self.take_state(),
        }
    }

    /// Records the start of an operation outside a plan.
    pub fn begin(&self, command: &str) -> StepResult {
        let state = self.live().clone();
        self.record(Record::Begin { lineage: state.lineage, serial: state.serial, command: command.to_string() })
    }

    /// `enact pause`: takes the service's instances out of every consumer's list, then stops
    /// them; they stay in the state, paused.
    pub fn pause(&self, service: &str) -> StepResult {
        self.wiring.capture(&self.live(), service);
        let ids = self.instance_ids(service);
        self.leave(&ids);
        self.push(service)?;
        for id in &ids {
            self.stop_instance_keeping(service, id)?;
        }
        self.record(Record::Paused { service: service.to_string(), paused: true })
    }

    /// `enact resume`: starts the paused instances again where they were, wires them and
    /// announces them.
    pub fn resume(&self, service: &str) -> StepResult {
        self.wiring.capture(&self.live(), service);
        let (spec, instances) = {
            let live = self.live();
            match live.services.get(service) {
                Some(ServiceState { spec: AppliedSpec::Deployable(spec), instances, .. }) => {
                    (spec.clone(), instances.clone())
                }
                _ => return Ok(()),
            }
        };
        let mut fresh = Vec::new();
        for instance in &instances {
            let placed = PlacedInstance {
                service: service.to_string(),
                id: instance.id.clone(),
                node: instance.node.clone(),
                after_stopping: None,
            };
            fresh.push(self.start_instance_with(service, &spec, &placed)?.id);
        }
        self.record(Record::Paused { service: service.to_string(), paused: false })?;
        self.wire_instances(service, &fresh)?;
        self.push(service)
    }

    /// Stops an instance but keeps it in the state (paused).
    fn stop_instance_keeping(&self, name: &str, id: &str) -> StepResult {
        let Some((instance, node)) = self.instance_on_node(name, id) else {
            return Ok(());
        };
        let provider = self.provider_of_node(&node)?;
        provider.stop(&instance, &node, self.stop_grace(name, &node)).map_err(|e| e.to_string())
    }

    /// How long an instance of `service` on `node` has between SIGTERM and SIGKILL.
    fn stop_grace(&self, service: &str, node: &NodeState) -> Duration {
        Duration::from_millis(self.settings.timeouts_of(service, &node.account).1)
    }
}

/// Instances one step starts, waits for or stops at once, at most: each is a thread that mostly
/// waits, so a service of 2,000 instances gets this many threads, not 2,000.
pub const INSTANCES_AT_ONCE: usize = 32;

/// An instance started by [`Executor::launch`], not yet known to be healthy.
#[derive(Debug)]
struct Launched {
    instance: InstanceState,
    node: NodeState,
    log: PathBuf,
}

/// Runs `work` on every item, on at most [`INSTANCES_AT_ONCE`] threads (none for one item); the
/// results in the items' order.
fn at_once<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> Result<R, String> + Sync) -> Vec<Result<R, String>> {
    if items.len() <= 1 {
        return items.iter().map(work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<R, String>>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..items.len().min(INSTANCES_AT_ONCE))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { return done };
                        done.push((i, work(item)));
                    }
                })
            })
            .collect();
        for worker in workers {
            for (i, result) in worker.join().unwrap_or_default() {
                results[i] = Some(result);
            }
        }
    });
    results.into_iter().map(|r| r.unwrap_or_else(|| Err("an instance's thread panicked".to_string()))).collect()
}

/// Where an instance's output goes: `state/.logs/<env>/<instance>.log`.
pub fn log_path(state_dir: &Path, env: &str, instance: &str) -> PathBuf {
    state_dir.join(".logs").join(env).join(format!("{instance}.log"))
}

/// A provider for every account the plan or the state touches.
fn providers_for(
    settings: &Settings,
    prior: &State,
    planned: &Planned,
    options: &provider::ProviderOptions,
) -> Result<HashMap<String, Box<dyn Provider>>, String> {
    let mut accounts: BTreeSet<String> = prior.nodes.values().map(|n| n.account.clone()).collect();
    accounts.extend(planned.placement.new_nodes.iter().map(|n| n.account.clone()));
    let mut providers = HashMap::new();
    for account in accounts {
        let Some(settings_account) = settings.account(&account) else {
            return Err(format!(
                "the state has nodes in account `{account}`, which enact.json no longer defines; restore the account to apply"
            ));
        };
        let provider = provider::for_account(&account, settings_account, options)
            .map_err(|e| format!("account `{account}`: {e}"))?;
        providers.insert(account, provider);
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn at_once_keeps_order_bounds_its_threads_and_turns_a_panic_into_an_error() {
        let (in_flight, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<usize> = (0..500).collect();
        let results = at_once(&items, |&i| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            in_flight.fetch_sub(1, Ordering::SeqCst);
            if i == 7 { Err("seven".to_string()) } else { Ok(i * 2) }
        });
        assert_eq!(results.len(), 500);
        for (i, result) in results.iter().enumerate() {
            if i == 7 {
                assert_eq!(result, &Err("seven".to_string()));
            } else {
                assert_eq!(result, &Ok(i * 2), "item {i} in its place");
            }
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=INSTANCES_AT_ONCE).contains(&most), "{most} items at once");

        let one = at_once(&[1], |_| -> Result<(), String> { Ok(()) });
        assert_eq!(one, vec![Ok(())]);
        let panicked = at_once(&[1, 2, 3], |&i| if i == 2 { panic!("boom") } else { Ok(i) });
        assert!(panicked.iter().any(Result::is_err), "{panicked:?}");
    }
}
