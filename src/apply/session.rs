//! One locked session on an environment: recover a journal left by a killed apply, carry out a
//! plan, record the new state atomically, remove the journal.

use std::path::{Path, PathBuf};

use super::events::Subscriber;
use super::executor::{Executor, Options, Report};
use super::journal::{self, Journal, OpenIntent, apply_record};
use crate::diagnostic::Diagnostic;
use crate::error::{Error, Result};
use crate::plan::Planned;
use crate::provider;
use crate::repo::ConfigRepo;
use crate::spec::Choreography;
use crate::state::lock::{self, Lock};
use crate::state::{FileStore, State, StateStore};

pub fn journal_path(state_dir: &Path, env: &str) -> PathBuf {
    state_dir.join(format!("{env}.journal"))
}

/// An environment held under its lock, with its state recovered.
#[derive(Debug)]
pub struct Session<'a> {
    pub repo: &'a ConfigRepo,
    pub env: String,
    pub store: FileStore,
    pub state: State,
    /// What recovery found, for the user.
    pub notes: Vec<String>,
    _lock: Lock,
}

impl<'a> Session<'a> {
    /// Takes the lock and replays a left-over journal.
    pub fn open(
        repo: &'a ConfigRepo,
        env: &str,
        command: &str,
        options: &provider::ProviderOptions,
    ) -> Result<Session<'a>> {
        let state_dir = repo.state_dir();
        let lock = lock::acquire(&state_dir, env, command)?;
        let mut notes = Vec::new();
        if let Some(previous) = &lock.took_over {
            notes.push(format!(
                "took over the lock of pid {} ({}), which is no longer running",
                previous.pid, previous.command
            ));
        }
        let store = repo.store();
        let mut state = store.read_or_empty(env)?;
        if let Some(recovered) = recover(&state_dir, env, &state, repo, options)? {
            let (next, recovery_notes) = recovered;
            notes.extend(recovery_notes);
            // Written before anything else changes: the journal's records are then in the state.
            state = store.write(&next)?;
            let path = journal_path(&state_dir, env);
            std::fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        }
        // The state this session starts from is what its write will back up: compressed on a
        // second thread while the plan is made and carried out.
        store.prepare_backup(env, &state);
        Ok(Session { repo, env: env.to_string(), store, state, notes, _lock: lock })
    }

    /// Carries out `planned` toward `spec`, then records the state. Returns the report with
    /// the state as written; the session (and its lock) ends with it.
    ///
    /// # Errors
    /// The journal cannot be made, a provider cannot be made, or the state cannot be written
    /// (the error then says what was done and what is pending; the journal is kept).
    pub fn apply(
        self,
        spec: &Choreography,
        planned: &Planned,
        events: &dyn Subscriber,
        options: Options,
    ) -> Result<Report> {
        self.run(spec, planned, events, options, |executor| Ok(executor.run()))
    }

    /// Runs something with an executor, then records the state. The recorded state moves into
    /// the executor and the state it ends with is written as is: an apply that changes k
    /// services copies nothing of the other ones.
    ///
    /// # Errors
    /// As [`Session::apply`].
    pub fn run(
        mut self,
        spec: &Choreography,
        planned: &Planned,
        events: &dyn Subscriber,
        options: Options,
        work: impl FnOnce(Executor<'_>) -> Result<Report, String>,
    ) -> Result<Report> {
        let state_dir = self.repo.state_dir();
        let path = journal_path(&state_dir, &self.env);
        let durable = !only_simulated(self.repo, &self.state, planned);
        // The lineage is fixed before anything starts: every instance carries it, so even the
        // processes of a first apply whose journal is lost can be found.
        if self.state.lineage.is_empty() {
            self.state.lineage = crate::state::store::new_lineage();
        }
        let (lineage, serial) = (self.state.lineage.clone(), self.state.serial);
        let journal = Journal::create(&path, durable)?;
        let executor = Executor::new(
            &self.repo.root,
            &state_dir,
            &self.env,
            &self.repo.settings,
            spec,
            planned,
            std::mem::replace(&mut self.state, State::empty(&self.env)),
            &journal,
            events,
            options,
        )
        .map_err(|e| Error::from(Diagnostic::new(e)))?;
        let mut report = work(executor).map_err(|e| Error::from(Diagnostic::new(e)))?;
        let mut next = std::mem::replace(&mut report.state, State::empty(&self.env));
        next.serial = serial;
        next.lineage = lineage;
        next.applied_at = Some(crate::time::now_rfc3339());
        next.provenance = crate::state::model::Provenance::of(&self.repo.root, &state_dir);
        report.state = match self.store.write(&next) {
            Ok(written) => written,
            // The journal stays: it holds every side effect, and the next command replays it.
            Err(e) => {
                report.state = next;
                return Err(unrecorded(&self.env, &e, planned, &report, &path));
            }
        };
        drop(journal);
        std::fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        Ok(report)
    }
}

/// The error of an apply whose side effects happened but whose state could not be written (a
/// full disk): what was done, which instances run, what is pending, and the way back.
fn unrecorded(env: &str, error: &Error, planned: &Planned, report: &Report, journal: &Path) -> Error {
    let started: Vec<String> = planned
        .placement
        .started
        .iter()
        .filter_map(|placed| {
            let service = report.state.services.get(&placed.service)?;
            let instance = service.instances.iter().find(|i| i.id == placed.id)?;
            Some(format!("{} on {}", instance.id, instance.native_uri))
        })
        .collect();
    let list = |items: &[String]| if items.is_empty() { "none".to_string() } else { items.join(", ") };
    let failed: Vec<String> = report.failed.iter().map(|(s, e)| format!("{s} ({e})")).collect();
    let mut pending = report.skipped.clone();
    pending.extend(report.node_errors.iter().cloned());
    Diagnostic::new(format!(
        "the apply on env `{env}` ran, but its state could not be recorded: {}\n  \
         done: {}\n  instances started: {}\n  failed: {}\n  pending (not started): {}\n  \
         nothing is lost: {} and the lineage every instance carries let the next apply recover it all",
        error,
        list(&report.done),
        list(&started),
        list(&failed),
        list(&pending),
        journal.display()
    ))
    .hint("free space on the disk (or fix the error above), then run `enact apply`: it replays the journal, records the state and finishes what is pending")
    .into()
}

/// Whether every node involved is simulated (then intents need not wait for the disk).
fn only_simulated(repo: &ConfigRepo, state: &State, planned: &Planned) -> bool {
    let mut accounts = state
        .nodes
        .values()
        .map(|n| n.account.as_str())
        .chain(planned.placement.new_nodes.iter().map(|n| n.account.as_str()));
    accounts.all(|a| matches!(repo.settings.account(a), Some(crate::repo::settings::Account::Simulated(_))))
}

/// What a journal left behind by an interrupted apply holds, read without changing anything.
#[derive(Debug, Clone)]
pub enum Leftover {
    /// No journal.
    None,
    /// A journal of an apply whose state was recorded after all: nothing is missing.
    Stale(PathBuf),
    /// An apply was interrupted: the state recovery leads to.
    Interrupted(Box<Recovery>),
}

/// What recovering an interrupted apply does.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The state with the journal replayed and the interrupted starts looked for.
    pub state: State,
    /// Instances whose start was interrupted and that were found running (adopted).
    pub found: Vec<String>,
    /// Instances the journal started (their outcome recorded).
    pub started: Vec<String>,
    /// Services that will be redeployed to converge.
    pub incomplete: Vec<String>,
    /// Numbers of the journal's lines that could not be read.
    pub unreadable: Vec<usize>,
    /// Processes carrying the environment's lineage that the recovered state does not record
    /// (the journal lost their records): recovery stops them.
    pub untracked: super::untracked::Untracked,
    /// The line that says so.
    pub note: String,
}

/// Replays the journal of `env` onto `state`, if one was left behind. Returns the recovered
/// state (to be written) and notes for the user; `None` when there is nothing to recover.
/// A journal that no longer belongs to the state is removed.
///
/// # Errors
/// The journal cannot be read or removed.
pub fn recover(
    state_dir: &Path,
    env: &str,
    state: &State,
    repo: &ConfigRepo,
    options: &provider::ProviderOptions,
) -> Result<Option<(State, Vec<String>)>> {
    match preview(state_dir, env, state, repo, options)? {
        Leftover::None => Ok(None),
        Leftover::Stale(path) => {
            std::fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            Ok(None)
        }
        Leftover::Interrupted(recovery) => {
            let Recovery { state, note, untracked, .. } = *recovery;
            let mut notes = vec![note];
            if !untracked.orphans.is_empty() {
                let errors = super::untracked::stop(&repo.settings, &untracked.orphans, options);
                let stopped = untracked.orphans.len() - errors.len();
                notes.push(format!(
                    "stopped {stopped} process(es) this environment started that no record names: {}",
                    super::untracked::summary(&untracked.orphans)
                ));
                for error in errors {
                    notes.push(format!("could not stop {error}"));
                }
            }
            for host in &untracked.unreachable {
                notes.push(format!("could not look for processes no record names on {host}"));
            }
            Ok(Some((state, notes)))
        }
    }
}

/// What recovering `env`'s journal would do, changing nothing (no lock needed): for `plan`,
/// `status` and `show`, which must not be blind to what an interrupted apply left running.
///
/// # Errors
/// The journal cannot be read.
pub fn preview(
    state_dir: &Path,
    env: &str,
    state: &State,
    repo: &ConfigRepo,
    options: &provider::ProviderOptions,
) -> Result<Leftover> {
    let path = journal_path(state_dir, env);
    let Some(replay) = journal::read(&path)? else {
        return Ok(Leftover::None);
    };
    // A first apply fixes its lineage before it starts anything; the state records it only
    // when the apply ends.
    let first = state.serial == 0 && state.lineage.is_empty();
    let belongs = match &replay.begin {
        Some((lineage, serial)) => *serial == state.serial && (*lineage == state.lineage || first),
        // Its first line is unreadable: it is taken to belong, and recovery looks for what runs.
        None => !replay.records.is_empty() || !replay.torn.is_empty(),
    };
    if !belongs {
        // The apply that wrote it got as far as recording its state: nothing is missing.
        return Ok(Leftover::Stale(path));
    }
    let mut next = state.clone();
    if let Some((lineage, _)) = replay.begin.as_ref().filter(|_| first) {
        next.lineage.clone_from(lineage);
    }
    for record in &replay.records {
        apply_record(&mut next, record);
    }
    let mut providers: std::collections::HashMap<String, Box<dyn provider::Provider>> =
        std::collections::HashMap::new();
    for account in next.nodes.values().map(|n| n.account.clone()).collect::<std::collections::BTreeSet<_>>() {
        if let Some(p) = repo.settings.account(&account).and_then(|a| provider::for_account(&account, a, options).ok())
        {
            providers.insert(account, p);
        }
    }
    let (mut found, mut lost) = (Vec::new(), 0);
    for open in &replay.open {
        match open {
            OpenIntent::Start { service, instance, token } => {
                let Some(node) = next.nodes.get(&instance.node).cloned() else {
                    continue;
                };
                let Some(provider) = providers.get(&node.account) else {
                    continue;
                };
                if let Some(started) = provider.find(&node, token) {
                    let mut instance = instance.clone();
                    instance.pid = started.pid;
                    instance.start_time = started.start_time;
                    if let Some(s) = next.services.get_mut(service) {
                        s.instances.retain(|i| i.id != instance.id);
                        found.push(instance.id.clone());
                        s.instances.push(instance);
                        s.incomplete = true;
                    }
                }
            }
            OpenIntent::Stop { service, instance } => {
                let Some(i) =
                    next.services.get(service).and_then(|s| s.instances.iter().find(|i| i.id == *instance)).cloned()
                else {
                    continue;
                };
                let Some(node) = next.nodes.get(&i.node).cloned() else {
                    continue;
                };
                let alive = providers.get(&node.account).is_some_and(|p| p.alive(&i, &node));
                if !alive && let Some(s) = next.services.get_mut(service) {
                    s.instances.retain(|x| x.id != *instance);
                    lost += 1;
                }
            }
        }
    }
    let incomplete: Vec<String> = next.services.iter().filter(|(_, s)| s.incomplete).map(|(n, _)| n.clone()).collect();
    let started: Vec<String> = replay
        .records
        .iter()
        .filter_map(|r| match r {
            journal::Record::Started { instance, .. } => Some(instance.id.clone()),
            _ => None,
        })
        .collect();
    let unreadable = if replay.torn.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = replay.torn.iter().map(ToString::to_string).collect();
        format!(
            ", {} unreadable record(s) skipped (line {}: check `enact status` for instances it does not name)",
            replay.torn.len(),
            lines.join(", ")
        )
    };
    let note = format!(
        "recovered an interrupted apply from {}: {} record(s){unreadable}{}{}{}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        replay.records.len(),
        if found.is_empty() { String::new() } else { format!(", {} instance(s) found running", found.len()) },
        if lost > 0 { format!(", {lost} instance(s) found stopped") } else { String::new() },
        if incomplete.is_empty() {
            String::new()
        } else {
            format!("; {} service(s) will be redeployed to converge: {}", incomplete.len(), incomplete.join(", "))
        }
    );
    let untracked = super::untracked::find(&repo.settings, &next, options);
    let unreadable = replay.torn;
    Ok(Leftover::Interrupted(Box::new(Recovery {
        state: next,
        found,
        started,
        incomplete,
        unreadable,
        untracked,
        note,
    })))
}
