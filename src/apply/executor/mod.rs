//! The executor: carries a plan out. Spares the reservoirs give up are freed and nodes created
//! first (batched per account), then the plan's steps are walked concurrently
//! ([`crate::graph::walk`]): a step starts as soon as the steps it waits for are done; emptied
//! nodes are freed and the reservoirs refilled last. Within a step the ordering rules of
//! `docs/wiring.md` hold:
//!
//! - an instance is started and health-checked before anyone is told about it;
//! - a leaving instance is removed from every consumer's endpoint list before it is stopped;
//! - a redeploy or resize rolls one instance at a time, new before old.
//!
//! Every side effect is preceded by an intent in the journal and followed by its outcome, and
//! the live state is kept by the same function that replays a journal after a crash.
//!
//! The executor's side effects go through traits, so it is tested without files or processes:
//! the providers ([`Provider`], a fake with [`Executor::use_provider`]), the journal
//! ([`Sink`]), and the clock ([`Clock`], with [`Executor::use_clock`]).
//!
//! Files: this one (set-up and the walk), [`error`] (why a step failed), `nodes` (creating and
//! freeing nodes, the reservoirs' spares included), `step` (one service's change), `instance` (starting, checking and stopping
//! one instance), `operations` (pause and resume, outside a plan), `at_once` (bounded threads
//! for a step's instances), `wire` (telling consumers their lists).
//!
//! Depends on `plan`, `provider`, `repo`, `graph`, `state`, `spec` and leaves.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::events::{Event, Subscriber};
use super::journal::{Record, Sink, apply_record};
use crate::graph::walk::{Outcome, walk};
use crate::plan::placement::PlacedInstance;
use crate::plan::{Action, Change, Planned};
use crate::provider::{self, Package, Provider};
use crate::repo::settings::Settings;
use crate::spec::{Choreography, Service};
use crate::state::{NodeState, State};
use crate::time::Clock;

mod at_once;
pub mod error;
mod instance;
mod nodes;
mod operations;
mod step;
mod wire;

#[cfg(test)]
mod tests;

pub use at_once::INSTANCES_AT_ONCE;
pub use error::{Check, StepError, StepResult};
pub use instance::log_path;

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
    /// Where providers say what the user waits for that is no step's (see
    /// [`provider::ProviderOptions::notify`]).
    pub notify: Option<fn(&str)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: 10,
            health_timeout: None,
            accept_new_host_keys: false,
            cancel: None,
            keep_logs: false,
            notify: None,
        }
    }
}

/// What an apply did: the services by outcome, the problems that are no one service's, and the
/// state it ended with.
#[derive(Debug, Clone)]
pub struct Report {
    /// Services whose step finished, in the plan's order.
    pub done: Vec<String>,
    /// Services whose step failed, each with why.
    pub failed: Vec<(String, StepError)>,
    /// Services whose step never ran: one it depends on failed or was skipped, or the apply
    /// was asked to stop.
    pub skipped: Vec<String>,
    /// Node problems that are not one service's (a node that could not be created or freed),
    /// and a journal that could not be written at the end.
    pub node_errors: Vec<StepError>,
    /// Steps that never started because the apply was asked to stop (a subset of `skipped`).
    pub interrupted: Vec<String>,
    /// Problems that do not make the apply fail (a log that could not be removed).
    pub warnings: Vec<String>,
    /// The live state as the apply left it (serial and lineage as it started; the session
    /// records it).
    pub state: State,
}

impl Report {
    /// An empty report over `state`.
    fn of(state: State) -> Report {
        Report {
            done: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            node_errors: Vec::new(),
            interrupted: Vec::new(),
            warnings: Vec::new(),
            state,
        }
    }

    /// Whether every step was done, with no node problem and no interruption.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.node_errors.is_empty() && self.interrupted.is_empty()
    }
}

/// An apply in progress: where it runs, with what, and the live state it keeps.
pub struct Executor<'a> {
    /// The config repository's root (package paths are relative to it).
    pub repo_root: &'a Path,
    /// The state directory (`state/`): logs and the download cache live under it.
    pub state_dir: &'a Path,
    /// The environment applied.
    pub env: &'a str,
    /// The repository's settings (enact.json).
    pub settings: &'a Settings,
    /// The desired choreography (normalized).
    pub spec: &'a Choreography,
    /// The plan carried out, with its placement.
    pub planned: &'a Planned,
    /// Where every intent and outcome is appended.
    pub journal: &'a dyn Sink,
    /// Who is told of progress.
    pub events: &'a dyn Subscriber,
    /// How the apply runs.
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
    /// Where durations are read (step times, what is left of a health timeout).
    clock: &'a dyn Clock,
}

impl std::fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("env", &self.env).finish_non_exhaustive()
    }
}

impl<'a> Executor<'a> {
    /// An executor of `planned` toward `spec` from the state `prior` (which it takes: the
    /// report gives it back as the apply left it), with a provider for every account the state
    /// or the plan has nodes in.
    ///
    /// # Errors
    /// An account with nodes is no longer defined ([`StepError::AccountGone`]), or its provider
    /// cannot be made ([`StepError::Account`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo_root: &'a Path,
        state_dir: &'a Path,
        env: &'a str,
        settings: &'a Settings,
        spec: &'a Choreography,
        planned: &'a Planned,
        prior: State,
        journal: &'a dyn Sink,
        events: &'a dyn Subscriber,
        options: Options,
    ) -> StepResult<Self> {
        let provider_options = provider::ProviderOptions {
            repo_root: repo_root.to_path_buf(),
            accept_new_host_keys: options.accept_new_host_keys,
            env: env.to_string(),
            lineage: prior.lineage.clone(),
            notify: options.notify,
        };
        let providers = providers_for(settings, &prior, planned, &provider_options)?;
        let retiring: BTreeSet<String> =
            planned.plan.changes.iter().filter(|c| c.action == Action::Destroy).map(|c| c.service.clone()).collect();
        let changed = planned.plan.changes.iter().map(|c| c.service.as_str());
        let wiring = wire::Wiring::new(&prior, spec.services(), changed, retiring);
        let lineage = prior.lineage.clone();
        let mut started: HashMap<String, Vec<&PlacedInstance>> = HashMap::new();
        for placed in &planned.placement.started {
            started.entry(placed.service.clone()).or_default().push(placed);
        }
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
            started,
            packages: Mutex::new(HashMap::new()),
            desired: spec.services().map(|s| (s.name(), s)).collect(),
            wiring,
            lineage,
            warnings: Mutex::new(Vec::new()),
            clock: &crate::time::SystemClock,
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

    /// Reads durations from `clock` instead of the system's (a fixed one, in tests).
    pub fn use_clock(&mut self, clock: &'a dyn Clock) {
        self.clock = clock;
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
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Journals a record and applies it to the live state.
    fn record(&self, record: Record) -> StepResult {
        self.journal.append(&record)?;
        apply_record(&mut self.live(), &record);
        Ok(())
    }

    /// Journals records with one sync (intents for a batch of side effects) and applies them.
    fn record_all(&self, records: &[Record]) -> Result<(), super::journal::JournalError> {
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

    /// Whether every provider's operations return at once (simulations at 0 ms): then a step's
    /// instances are started, waited for and stopped one after another on the step's own
    /// thread, since threads of their own would only cost their creation (two per instance at
    /// 10,000 services: a third of an apply's time).
    fn instant(&self) -> bool {
        self.providers.values().all(|p| p.is_instant())
    }

    fn provider_of_node(&self, node: &NodeState) -> StepResult<&dyn Provider> {
        self.providers
            .get(&node.account)
            .map(Box::as_ref)
            .ok_or_else(|| StepError::NoProvider { account: node.account.clone() })
    }

    fn progress(&self, service: &str, message: String) {
        self.events.on(&Event::Progress { service, message });
    }

    /// Runs the whole plan; the caller writes the resulting state.
    pub fn run(self) -> Report {
        let (lineage, serial) = {
            let live = self.live();
            (live.lineage.clone(), live.serial)
        };
        // The state is taken out of the executor at the end, not copied.
        let mut report = Report::of(State::empty(self.env));
        if let Err(e) = self.record(Record::Begin { lineage, serial, command: format!("apply -e {}", self.env) }) {
            report.node_errors.push(e);
            report.state = self.take_state();
            return report;
        }
        self.events.on(&Event::Begin { steps: self.planned.plan.steps.len() });
        report.node_errors.extend(self.free_spares());
        report.node_errors.extend(self.create_nodes());
        // The reservoirs refill while the steps run, unless `vmLimit` needs the nodes this
        // apply frees gone first: then after them.
        if self.refill_fits_now() {
            let refilled = std::thread::scope(|scope| {
                let refill = scope.spawn(|| self.refill_reservoirs());
                self.walk_steps(&mut report);
                refill.join().unwrap_or_else(|_| vec![StepError::Panicked { what: "refilling the reservoirs" }])
            });
            report.node_errors.extend(self.free_nodes());
            report.node_errors.extend(refilled);
        } else {
            self.walk_steps(&mut report);
            report.node_errors.extend(self.free_nodes());
            report.node_errors.extend(self.refill_reservoirs());
        }
        if let Err(e) = self.journal.flush() {
            report.node_errors.push(e.into());
        }
        report.warnings = self.take_warnings();
        report.state = self.take_state();
        report
    }

    /// Walks the plan's steps, as many at once as `parallelism` allows, each once the steps
    /// it waits for are done; files each service under its outcome.
    fn walk_steps(&self, report: &mut Report) {
        let plan = &self.planned.plan;
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
                return Err(StepError::Interrupted);
            }
            let started = self.clock.instant();
            self.events.on(&Event::StepStarted { service: &step.service, action: step.action });
            let result = match changes.get(step.service.as_str()) {
                Some(change) => self.run_step(change),
                None => Ok(()),
            };
            match &result {
                Ok(()) => self.events.on(&Event::StepDone {
                    service: &step.service,
                    action: step.action,
                    elapsed: self.clock.since(started),
                }),
                Err(e) => self.events.on(&Event::StepFailed { service: &step.service, error: &e.to_string() }),
            }
            result
        });
        for (step, outcome) in plan.steps.iter().zip(outcomes) {
            let service = step.service.clone();
            match outcome {
                Outcome::Done => report.done.push(service),
                Outcome::Failed(StepError::Interrupted) => {
                    report.skipped.push(service.clone());
                    report.interrupted.push(service);
                }
                Outcome::Failed(e) => report.failed.push((service, e)),
                Outcome::Panicked(message) => report.failed.push((service, StepError::Bug { message })),
                Outcome::Skipped => {
                    self.events.on(&Event::StepSkipped { service: &step.service });
                    report.skipped.push(service);
                }
            }
        }
    }

    /// The warnings so far, taken out.
    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The live state, taken out (the executor is done with it).
    fn take_state(&self) -> State {
        std::mem::replace(&mut *self.live(), State::empty(self.env))
    }
}

/// A provider for every account the plan or the state touches.
fn providers_for(
    settings: &Settings,
    prior: &State,
    planned: &Planned,
    options: &provider::ProviderOptions,
) -> StepResult<HashMap<String, Box<dyn Provider>>> {
    let mut accounts: BTreeSet<String> = prior.nodes.values().map(|n| n.account.clone()).collect();
    accounts.extend(planned.placement.new_nodes.iter().chain(&planned.placement.new_spares).map(|n| n.account.clone()));
    let mut providers = HashMap::new();
    for account in accounts {
        let Some(settings_account) = settings.account(&account) else {
            return Err(StepError::AccountGone { account });
        };
        let provider = provider::for_account(&account, settings_account, options)
            .map_err(|source| StepError::Account { account: account.clone(), source })?;
        providers.insert(account, provider);
    }
    Ok(providers)
}
