//! Journals kept in memory, for tests of the executor and the session without files:
//! [`MemoryJournal`] records what an apply appends (and can be told to fail, like a full disk),
//! [`MemoryJournals`] holds one per environment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{JournalError, Journals, Record, Replay, Sink};

#[derive(Debug, Default)]
struct Held {
    records: Vec<Record>,
    /// Appends fail once this many records are held.
    room: Option<usize>,
}

/// A journal in memory: clones share its records.
#[derive(Debug, Clone, Default)]
pub struct MemoryJournal {
    held: Arc<Mutex<Held>>,
    /// How messages name it.
    path: PathBuf,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        MemoryJournal::default()
    }

    /// An empty journal named after `env` in messages.
    fn of(env: &str) -> Self {
        MemoryJournal { held: Arc::default(), path: memory_path(env) }
    }

    /// Every record appended so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// From now on, an append that would hold more than `records` records fails (as a full
    /// disk does: [`JournalError::Write`]), and so does every one after it.
    pub fn fill_at(&self, records: usize) {
        self.lock().room = Some(records);
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a journal in memory is named in messages.
fn memory_path(env: &str) -> PathBuf {
    PathBuf::from(format!("memory/{env}.journal"))
}

impl Sink for MemoryJournal {
    fn append_all(&self, records: &[Record]) -> Result<(), JournalError> {
        let mut held = self.lock();
        if held.room.is_some_and(|room| held.records.len() + records.len() > room) {
            return Err(JournalError::Write { path: self.path.clone(), reason: "No space left on device".into() });
        }
        held.records.extend_from_slice(records);
        Ok(())
    }

    fn flush(&self) -> Result<(), JournalError> {
        Ok(())
    }
}

/// The journals of every environment, in memory: clones share them.
#[derive(Debug, Clone, Default)]
pub struct MemoryJournals {
    journals: Arc<Mutex<HashMap<String, MemoryJournal>>>,
}

impl MemoryJournals {
    /// No journals.
    pub fn new() -> Self {
        MemoryJournals::default()
    }

    /// The journal of `env`, if there is one (a handle on it: what is appended later shows).
    pub fn get(&self, env: &str) -> Option<MemoryJournal> {
        self.lock().get(env).cloned()
    }

    /// Puts a journal of `records` for `env`, as an apply killed after writing them leaves it.
    pub fn leave(&self, env: &str, records: Vec<Record>) -> MemoryJournal {
        let journal = MemoryJournal::of(env);
        journal.lock().records = records;
        self.lock().insert(env.to_string(), journal.clone());
        journal
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, MemoryJournal>> {
        self.journals.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Journals for MemoryJournals {
    fn create(&self, env: &str, _durable: bool) -> Result<Box<dyn Sink>, JournalError> {
        Ok(Box::new(self.leave(env, Vec::new())))
    }

    fn read(&self, env: &str) -> Result<Option<Replay>, JournalError> {
        Ok(self.get(env).map(|journal| Replay::of_records(journal.records())))
    }

    fn remove(&self, env: &str) -> Result<(), JournalError> {
        match self.lock().remove(env) {
            Some(_) => Ok(()),
            None => Err(JournalError::remove(&self.path(env))(std::io::ErrorKind::NotFound.into())),
        }
    }

    fn path(&self, env: &str) -> PathBuf {
        memory_path(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_journal_refuses_every_later_append_and_keeps_what_it_held() {
        let journals = MemoryJournals::new();
        let journal = journals.create("dev", true).unwrap();
        journal.append(&Record::ServiceRemoved { service: "a".into() }).unwrap();
        journals.get("dev").unwrap().fill_at(1);
        let full = journal.append(&Record::ServiceRemoved { service: "b".into() }).unwrap_err();
        assert!(matches!(full, JournalError::Write { .. }), "{full:?}");
        assert_eq!(journals.read("dev").unwrap().unwrap().records.len(), 1);
        journals.remove("dev").unwrap();
        assert!(journals.read("dev").unwrap().is_none());
        assert!(matches!(journals.remove("dev"), Err(JournalError::Remove { .. })));
    }
}
