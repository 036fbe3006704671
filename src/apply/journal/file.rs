//! The journal as a file, `state/<env>.journal` ([`Journal`]), appended to by many steps at
//! once with grouped durability, and the state directory that holds the journals of every
//! environment ([`JournalDir`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::{JournalError, Journals, Record, Replay, Sink};

/// Pending bytes past which an append writes them out even without an intent (1 MiB).
const PENDING_LIMIT: usize = 1 << 20;

struct Inner {
    file: File,
    /// Lines appended but not yet written.
    pending: Vec<u8>,
    /// The sequence number the next append gets.
    next_seq: u64,
    /// Every append up to this one is on disk.
    durable_seq: u64,
    /// Whether an append is writing and syncing (the leader of a group commit).
    flushing: bool,
    /// The reason of the first write that failed: every later append fails with it.
    failed: Option<String>,
}

/// An open journal file, appended to by many steps at once. Intents are made durable with a
/// group commit: whoever finds no sync running writes everything pending with one
/// `fdatasync`, the others wait for it.
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
    flushed: Condvar,
    /// When false (the simulated provider, where nothing real is made), intents are not
    /// waited for on disk.
    durable: bool,
    /// How many times the file was synced.
    syncs: AtomicUsize,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Journal {
    /// Creates the journal file at `path`, empty (a left-over one is replayed first). When
    /// `durable` is false (only simulated nodes) intents are not waited for on disk.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path, durable: bool) -> Result<Journal, JournalError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
            .map_err(JournalError::create(path))?;
        Ok(Journal {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                pending: Vec::new(),
                next_seq: 1,
                durable_seq: 0,
                flushing: false,
                failed: None,
            }),
            flushed: Condvar::new(),
            durable,
            syncs: AtomicUsize::new(0),
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times the journal was synced to disk so far (`fdatasync`): the cost that grows
    /// with the side effects of an apply, counted by tests.
    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Appends a record; an intent returns only once it is on disk.
    ///
    /// # Errors
    /// The record cannot be encoded, or the journal cannot be written or synced.
    pub fn append(&self, record: &Record) -> Result<(), JournalError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends records in order; when any is an intent, returns only once all are on disk, with
    /// one sync for the lot (N intents written before N side effects cost one `fdatasync`, not N).
    ///
    /// # Errors
    /// A record cannot be encoded, or the journal cannot be written or synced.
    pub fn append_all(&self, records: &[Record]) -> Result<(), JournalError> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record).map_err(|e| JournalError::Encode { reason: e.to_string() })?;
            lines.push(b'\n');
        }
        let intent = records.iter().any(Record::is_intent);
        let mut inner = self.lock();
        if let Some(reason) = &inner.failed {
            return Err(self.write_error(reason.clone()));
        }
        inner.pending.extend_from_slice(&lines);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if !(intent && self.durable) && inner.pending.len() < PENDING_LIMIT {
            return Ok(());
        }
        // Leader/follower group commit: whoever finds no flush running writes everything
        // pending with one fdatasync; the others wait for it.
        loop {
            if inner.durable_seq >= seq {
                return Ok(());
            }
            if let Some(reason) = &inner.failed {
                return Err(self.write_error(reason.clone()));
            }
            if inner.flushing {
                inner = self.flushed.wait(inner).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            inner.flushing = true;
            let batch = std::mem::take(&mut inner.pending);
            let upto = inner.next_seq - 1;
            let mut file = match inner.file.try_clone() {
                Ok(file) => file,
                Err(e) => {
                    inner.flushing = false;
                    self.flushed.notify_all();
                    return Err(self.write_error(e.to_string()));
                }
            };
            drop(inner);
            let result = file.write_all(&batch).and_then(|()| file.sync_data());
            self.syncs.fetch_add(1, Ordering::Relaxed);
            inner = self.lock();
            inner.flushing = false;
            match result {
                Ok(()) => inner.durable_seq = inner.durable_seq.max(upto),
                Err(e) => inner.failed = Some(e.to_string()),
            }
            self.flushed.notify_all();
        }
    }

    /// Writes and syncs everything pending.
    ///
    /// # Errors
    /// The journal cannot be written or synced.
    pub fn flush(&self) -> Result<(), JournalError> {
        let mut inner = self.lock();
        while inner.flushing {
            inner = self.flushed.wait(inner).unwrap_or_else(PoisonError::into_inner);
        }
        let batch = std::mem::take(&mut inner.pending);
        let result = inner.file.write_all(&batch).and_then(|()| inner.file.sync_data());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        result.map_err(|e| self.write_error(e.to_string()))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_error(&self, reason: String) -> JournalError {
        JournalError::Write { path: self.path.clone(), reason }
    }
}

impl Sink for Journal {
    fn append_all(&self, records: &[Record]) -> Result<(), JournalError> {
        Journal::append_all(self, records)
    }

    fn flush(&self) -> Result<(), JournalError> {
        Journal::flush(self)
    }
}

/// The journals of a repository's environments as files of its state directory:
/// `<dir>/<env>.journal`.
#[derive(Debug, Clone)]
pub struct JournalDir {
    dir: PathBuf,
}

impl JournalDir {
    /// The journals under `dir` (the state directory).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalDir { dir: dir.into() }
    }
}

impl Journals for JournalDir {
    fn create(&self, env: &str, durable: bool) -> Result<Box<dyn Sink>, JournalError> {
        Ok(Box::new(Journal::create(&self.path(env), durable)?))
    }

    fn read(&self, env: &str) -> Result<Option<Replay>, JournalError> {
        super::read(&self.path(env))
    }

    fn remove(&self, env: &str) -> Result<(), JournalError> {
        let path = self.path(env);
        std::fs::remove_file(&path).map_err(JournalError::remove(&path))
    }

    fn path(&self, env: &str) -> PathBuf {
        super::path(&self.dir, env)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::super::read;
    use super::*;
    use crate::apply::journal::{OpenIntent, Replay};
    use crate::state::{InstanceState, InstanceStatus, NodeState};

    fn instance(id: &str) -> InstanceState {
        InstanceState {
            id: id.into(),
            node: "local-1".into(),
            status: InstanceStatus::Running,
            native_uri: "http://127.0.0.2:1/a".into(),
            pid: Some(1),
            start_time: Some(2),
            memory: None,
        }
    }

    #[test]
    fn instances_are_recorded_in_id_order_whichever_started_first() {
        let spec = crate::spec::DeployableServiceSpec { name: "a".into(), ..Default::default() };
        let mut state = crate::state::State::empty("dev");
        state.services.insert(
            "a".into(),
            crate::state::ServiceState {
                spec: Box::new(crate::state::AppliedSpec::Deployable(spec)),
                instances: Vec::new(),
                paused: false,
                incomplete: false,
            },
        );
        // Side by side, a step's instances finish in any order; 10 after 9, not after 1.
        for id in ["a-2", "a-10", "a-1", "a-9", "a-3"] {
            super::super::apply_record(&mut state, &Record::Started { service: "a".into(), instance: instance(id) });
        }
        let ids: Vec<&str> = state.services["a"].instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a-1", "a-2", "a-3", "a-9", "a-10"]);
    }

    #[test]
    fn records_round_trip_and_open_intents_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.journal");
        let journal = Journal::create(&path, true).unwrap();
        let records = vec![
            Record::Begin { lineage: "l".into(), serial: 3, command: "apply".into() },
            Record::StartIntent { service: "a".into(), instance: instance("a-1"), token: "t1".into() },
            Record::Started { service: "a".into(), instance: instance("a-1") },
            Record::StartIntent { service: "a".into(), instance: instance("a-2"), token: "t2".into() },
            Record::StopIntent { service: "b".into(), instance: "b-1".into() },
        ];
        for r in &records {
            journal.append(r).unwrap();
        }
        journal.flush().unwrap();
        // A torn last line is ignored.
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"op\":\"sta").unwrap();
        let replay = read(&path).unwrap().unwrap();
        assert_eq!(replay.records, records);
        assert_eq!(replay.begin, Some(("l".into(), 3)));
        assert_eq!(replay.torn, vec![records.len() + 1]);
        assert_eq!(
            replay.open,
            vec![
                OpenIntent::Start { service: "a".into(), instance: instance("a-2"), token: "t2".into() },
                OpenIntent::Stop { service: "b".into(), instance: "b-1".into() },
            ]
        );
    }

    #[test]
    fn a_request_for_nodes_stays_open_until_every_node_it_asked_for_is_recorded() {
        let node = |address: &str| NodeState {
            account: "aws".into(),
            provider: "ec2".into(),
            address: address.into(),
            memory: None,
            size: Some("t3.micro".into()),
            provider_id: Some(format!("i-{address}")),
            spare: false,
        };
        let intent = |nodes: &[&str], request: &str| Record::NodeCreateIntent {
            nodes: nodes.iter().map(|n| (*n).to_string()).collect(),
            account: "aws".into(),
            request: request.into(),
        };
        let mut replay = Replay::default();
        replay.push(intent(&["aws-1", "aws-2"], "r1"));
        replay.push(intent(&["aws-3"], "r2"));
        replay.push(Record::NodeCreated { node: "aws-1".into(), state: node("10.0.0.1") });
        replay.push(Record::NodeCreated { node: "aws-3".into(), state: node("10.0.0.3") });
        assert_eq!(
            replay.open,
            vec![OpenIntent::Nodes { account: "aws".into(), request: "r1".into(), nodes: vec!["aws-2".into()] }],
            "r2 was answered in full; r1 lacks aws-2"
        );
        replay.push(Record::NodeCreated { node: "aws-2".into(), state: node("10.0.0.2") });
        assert!(replay.open.is_empty());
        // A journal written before the request was recorded still reads.
        let old: Record = serde_json::from_str(r#"{"op":"nodeCreateIntent","nodes":["aws-1"]}"#).unwrap();
        assert_eq!(
            old,
            Record::NodeCreateIntent { nodes: vec!["aws-1".into()], account: String::new(), request: String::new() }
        );
    }

    #[test]
    fn a_batch_of_intents_lands_in_order_with_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.journal");
        let journal = Journal::create(&path, true).unwrap();
        let intents: Vec<Record> =
            (0..500).map(|i| Record::StopIntent { service: "a".into(), instance: format!("a-{i}") }).collect();
        journal.append_all(&intents).unwrap();
        assert_eq!(journal.syncs(), 1, "one sync for 500 intents");
        journal.append(&Record::Stopped { service: "a".into(), instance: "a-0".into() }).unwrap();
        assert_eq!(journal.syncs(), 1, "an outcome waits for no sync");
        journal.flush().unwrap();
        let replay = read(&path).unwrap().unwrap();
        assert_eq!(&replay.records[..500], &intents[..]);
        assert_eq!(replay.open.len(), 499, "every intent but the one with its outcome is open");
    }

    #[test]
    fn concurrent_intents_share_syncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.journal");
        let journal = Journal::create(&path, true).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let journal = &journal;
                s.spawn(move || {
                    for i in 0..50 {
                        journal
                            .append(&Record::StopIntent { service: format!("s{t}"), instance: format!("i{i}") })
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(read(&path).unwrap().unwrap().records.len(), 400);
    }
}
