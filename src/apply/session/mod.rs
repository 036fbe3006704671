//! One locked session on an environment: recover a journal left by a killed apply, carry out a
//! plan, record the new state atomically, remove the journal.
//!
//! A session rests on a [`Backing`]: the store of recorded states ([`SessionStore`]), the
//! journals ([`crate::apply::journal::Journals`]), the lock ([`Locks`]) and the clock
//! ([`crate::time::Clock`]). The command line's are files under `state/` and the system clock
//! ([`Backing::files`]); tests use memory and a fixed clock ([`Backing::memory`]).
//!
//! Files: this one (opening, applying, recording), `recover` (replaying a left-over journal),
//! `backing` (the traits and their file and memory forms), `error` ([`SessionError`]).
//!
//! Depends on `plan`, `provider`, `repo`, `state`, `spec` and leaves.

use crate::apply::events::Subscriber;
use crate::apply::executor::{Executor, Options, Report, StepError};
use crate::apply::journal::Journals;
use crate::plan::Planned;
use crate::provider;
use crate::repo::ConfigRepo;
use crate::spec::Choreography;
use crate::state::{FileStore, State};
use crate::time::Clock;

mod backing;
mod error;
mod recover;

#[cfg(test)]
mod tests;

pub use backing::{Backing, Held, LockFiles, Locks, MemoryLocks, ProvenanceOf, SessionStore};
pub use error::SessionError;
pub use recover::{Leftover, Recovery, preview, preview_in, recover, recover_in};

/// An environment held under its lock, with its state recovered.
pub struct Session<'a, S: SessionStore = FileStore> {
    /// The config repository (its root, settings and state directory).
    pub repo: &'a ConfigRepo,
    /// The environment.
    pub env: String,
    /// Where its state is recorded.
    pub store: S,
    /// The state the session starts from (recovered, when a journal was left behind).
    pub state: State,
    /// What recovery found, for the user.
    pub notes: Vec<String>,
    journals: Box<dyn Journals>,
    clock: Box<dyn Clock>,
    provenance: ProvenanceOf,
    _lock: Held,
}

impl<S: SessionStore> std::fmt::Debug for Session<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("env", &self.env).field("serial", &self.state.serial).finish_non_exhaustive()
    }
}

impl<'a> Session<'a> {
    /// Takes the lock of `env` (for `command`, which names the holder to anyone who finds it
    /// taken) and replays a left-over journal, on the files of `repo`'s state directory.
    ///
    /// # Errors
    /// As [`Session::open_with`].
    pub fn open(
        repo: &'a ConfigRepo,
        env: &str,
        command: &str,
        options: &provider::ProviderOptions,
    ) -> Result<Session<'a>, SessionError> {
        Session::open_with(repo, env, command, options, Backing::files(repo))
    }
}

impl<'a, S: SessionStore> Session<'a, S> {
    /// [`Session::open`] on `backing`.
    ///
    /// # Errors
    /// The lock is held by another session ([`SessionError::Locked`]), the state cannot be read
    /// or the recovered one written ([`SessionError::State`]), or a left-over journal cannot be
    /// read or removed ([`SessionError::Journal`]).
    pub fn open_with(
        repo: &'a ConfigRepo,
        env: &str,
        command: &str,
        options: &provider::ProviderOptions,
        backing: Backing<S>,
    ) -> Result<Self, SessionError> {
        let Backing { store, journals, locks, clock, provenance } = backing;
        let state_error = |source| SessionError::State { env: env.to_string(), source };
        let lock =
            locks.acquire(env, command).map_err(|source| SessionError::Locked { env: env.to_string(), source })?;
        let mut notes = Vec::new();
        if let Some(previous) = &lock.took_over {
            notes.push(format!(
                "took over the lock of pid {} ({}), which is no longer running",
                previous.pid, previous.command
            ));
        }
        let mut state = store.read_or_empty(env).map_err(state_error)?;
        if let Some((next, recovery_notes)) = recover_in(journals.as_ref(), env, &state, repo, options)? {
            notes.extend(recovery_notes);
            // Written before anything else changes: the journal's records are then in the state.
            state = store.write(&next).map_err(state_error)?;
            journals.remove(env)?;
        }
        // The state this session starts from is what its write will back up: compressed on a
        // second thread while the plan is made and carried out.
        store.prepare_backup(env, &state);
        Ok(Session { repo, env: env.to_string(), store, state, notes, journals, clock, provenance, _lock: lock })
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
    ) -> Result<Report, SessionError> {
        self.run(spec, planned, events, options, |executor| Ok(executor.run()))
    }

    /// Runs something with an executor, then records the state. The recorded state moves into
    /// the executor and the state it ends with is written as is: an apply that changes k
    /// services copies nothing of the other ones.
    ///
    /// # Errors
    /// As [`Session::apply`], and the error of `work`.
    pub fn run(
        mut self,
        spec: &Choreography,
        planned: &Planned,
        events: &dyn Subscriber,
        options: Options,
        work: impl FnOnce(Executor<'_>) -> Result<Report, StepError>,
    ) -> Result<Report, SessionError> {
        let state_dir = self.repo.state_dir();
        let durable = !only_simulated(self.repo, &self.state, planned);
        // The lineage is fixed before anything starts: every instance carries it, so even the
        // processes of a first apply whose journal is lost can be found.
        if self.state.lineage.is_empty() {
            self.state.lineage = crate::state::store::new_lineage();
        }
        let (lineage, serial) = (self.state.lineage.clone(), self.state.serial);
        let journal = self.journals.create(&self.env, durable)?;
        let mut executor = Executor::new(
            &self.repo.root,
            &state_dir,
            &self.env,
            &self.repo.settings,
            spec,
            planned,
            std::mem::replace(&mut self.state, State::empty(&self.env)),
            journal.as_ref(),
            events,
            options,
        )?;
        executor.use_clock(self.clock.as_ref());
        // Where the repository's commit is (git subprocesses) is asked meanwhile.
        let (report, provenance) = std::thread::scope(|scope| {
            let provenance = scope.spawn(|| (self.provenance)(&self.repo.root, &state_dir));
            let report = crate::timing::phase("steps", || work(executor));
            (report, provenance.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        });
        let mut report = report?;
        let next = &mut report.state;
        next.serial = serial;
        next.lineage = lineage;
        next.applied_at = Some(self.clock.now_rfc3339());
        next.provenance = provenance;
        // The journal stays if this fails: it holds every side effect, and the next command
        // replays it.
        if let Err(e) = crate::timing::phase("state write", || self.store.write_in_place(next)) {
            return Err(unrecorded(&self.env, e, planned, &report, self.journals.path(&self.env)));
        }
        drop(journal);
        self.journals.remove(&self.env)?;
        // The backup compressed on the second thread is put in place when the store goes.
        crate::timing::phase("backup finished", || drop(self.store));
        Ok(report)
    }
}

/// The error of an apply whose side effects happened but whose state could not be written (a
/// full disk): what was done, which instances run, what is pending, and the way back.
fn unrecorded(
    env: &str,
    cause: crate::Error,
    planned: &Planned,
    report: &Report,
    journal: std::path::PathBuf,
) -> SessionError {
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
    let mut pending = report.skipped.clone();
    pending.extend(report.node_errors.iter().map(ToString::to_string));
    SessionError::Unrecorded {
        env: env.to_string(),
        cause: Box::new(cause),
        done: report.done.clone(),
        started,
        failed: report.failed.iter().map(|(s, e)| format!("{s} ({e})")).collect(),
        pending,
        journal,
    }
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
