//! What a session rests on besides the providers: the store of recorded states, the journals,
//! the lock that keeps two sessions off one environment, the clock, and where the recorded
//! provenance comes from. [`Backing::files`] is the command line's (files under `state/`, the
//! system clock, git); [`Backing::memory`] holds everything in memory with a fixed clock, for
//! tests of the session without files or processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::apply::journal::{JournalDir, Journals, MemoryJournals};
use crate::diagnostic::Diagnostic;
use crate::error::Result;
use crate::repo::ConfigRepo;
use crate::state::lock::{self, LockInfo};
use crate::state::model::Provenance;
use crate::state::{FileStore, MemoryStore, State, StateStore};
use crate::time::{Clock, FixedClock, SystemClock};

/// The store a session records its state in: a [`StateStore`] that may start on the backup of
/// the state a session starts from before the session writes its successor.
pub trait SessionStore: StateStore {
    /// Starts preparing the backup of `current` (the state on record, as read), so that the
    /// write replacing it has less to do. The default does nothing.
    fn prepare_backup(&self, env: &str, current: &State) {
        let _ = (env, current);
    }
}

impl SessionStore for FileStore {
    fn prepare_backup(&self, env: &str, current: &State) {
        FileStore::prepare_backup(self, env, current);
    }
}

impl SessionStore for MemoryStore {}

/// What keeps two sessions off one environment: `<state dir>/<env>.lock` files ([`LockFiles`]),
/// or a set in memory ([`MemoryLocks`], in tests).
pub trait Locks: Send + Sync {
    /// Takes the lock of `env` for `command` (which names the holder to whoever finds it
    /// taken). It is released when the [`Held`] is dropped.
    ///
    /// # Errors
    /// Another session holds it (the error names the holder and what to do), or the lock cannot
    /// be written.
    fn acquire(&self, env: &str, command: &str) -> Result<Held>;
}

/// A lock held; dropping it releases the lock.
pub struct Held {
    /// Set when the lock of a holder that no longer runs was taken over, for the user to see.
    pub took_over: Option<LockInfo>,
    /// What releases the lock when dropped.
    _release: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("took_over", &self.took_over).finish_non_exhaustive()
    }
}

/// The locks of a repository's environments as files of its state directory
/// ([`crate::state::lock`]).
#[derive(Debug, Clone)]
pub struct LockFiles {
    dir: std::path::PathBuf,
}

impl LockFiles {
    /// The locks under `dir` (the state directory).
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        LockFiles { dir: dir.into() }
    }
}

impl Locks for LockFiles {
    fn acquire(&self, env: &str, command: &str) -> Result<Held> {
        let mut lock = lock::acquire(&self.dir, env, command)?;
        Ok(Held { took_over: lock.took_over.take(), _release: Box::new(lock) })
    }
}

/// Locks in memory, held by this process: clones share them.
#[derive(Debug, Clone, Default)]
pub struct MemoryLocks {
    held: Arc<Mutex<BTreeMap<String, LockInfo>>>,
}

impl MemoryLocks {
    /// No lock held.
    pub fn new() -> Self {
        MemoryLocks::default()
    }

    /// Whether the lock of `env` is held.
    pub fn is_held(&self, env: &str) -> bool {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).contains_key(env)
    }
}

/// Releases a lock of [`MemoryLocks`] when dropped.
struct Release {
    held: Arc<Mutex<BTreeMap<String, LockInfo>>>,
    env: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.env);
    }
}

impl Locks for MemoryLocks {
    fn acquire(&self, env: &str, command: &str) -> Result<Held> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(info) = held.get(env) {
            return Err(Diagnostic::new(format!(
                "env `{env}` is locked by pid {} of {} on {} since {}, running `{}`",
                info.pid, info.user, info.host, info.time, info.command
            ))
            .hint(format!("wait for it to finish; if that process is gone for good, run `enact -e {env} state unlock`"))
            .into());
        }
        let info = LockInfo {
            pid: std::process::id(),
            start_time: None,
            host: "memory".into(),
            user: "test".into(),
            time: "1970-01-01T00:00:00Z".into(),
            command: command.to_string(),
        };
        held.insert(env.to_string(), info);
        let release = Release { held: Arc::clone(&self.held), env: env.to_string() };
        Ok(Held { took_over: None, _release: Box::new(release) })
    }
}

/// Reads the provenance of the config repository at `root` (its state directory `state_dir`
/// left out): which commit was applied, and whether the tree differed from it.
pub type ProvenanceOf = fn(root: &Path, state_dir: &Path) -> Option<Provenance>;

/// What a session rests on besides the providers.
pub struct Backing<S: SessionStore> {
    /// Where the recorded states are.
    pub store: S,
    /// Where the journals are.
    pub journals: Box<dyn Journals>,
    /// What keeps two sessions off one environment.
    pub locks: Box<dyn Locks>,
    /// Where time is read: a state's `appliedAt`, and the executor's durations.
    pub clock: Box<dyn Clock>,
    /// Where the recorded provenance comes from (git, on the command line).
    pub provenance: ProvenanceOf,
}

impl<S: SessionStore + std::fmt::Debug> std::fmt::Debug for Backing<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backing").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Backing<FileStore> {
    /// The command line's: the files of `repo`'s state directory (its store, `<env>.journal`
    /// and `<env>.lock`), the system clock, and git for the provenance.
    pub fn files(repo: &ConfigRepo) -> Self {
        let state_dir = repo.state_dir();
        Backing {
            store: repo.store().keeping_text(),
            journals: Box::new(JournalDir::new(&state_dir)),
            locks: Box::new(LockFiles::new(state_dir)),
            clock: Box::new(SystemClock),
            provenance: Provenance::of,
        }
    }
}

impl Backing<MemoryStore> {
    /// Everything in memory: an empty store, no journal, no lock held, a clock fixed at
    /// `unix` (seconds since the Unix epoch), no provenance. For tests; keep a clone of
    /// `journals` or `locks` by building the fields by hand.
    pub fn memory(unix: u64) -> Self {
        Backing {
            store: MemoryStore::default(),
            journals: Box::new(MemoryJournals::new()),
            locks: Box::new(MemoryLocks::new()),
            clock: Box::new(FixedClock::at(unix)),
            provenance: |_, _| None,
        }
    }
}
