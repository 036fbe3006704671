//! The journal, `state/<env>.journal`: one JSON record per line, appended before every side
//! effect (intent, made durable first) and after it (outcome). The state file is written once,
//! at the end of an apply; a journal left behind by a killed apply is replayed into the state by
//! the next command, so nothing that was being created is ever untracked.
//!
//! Durability is grouped: concurrent steps that append at once share one `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::{InstanceState, InstanceStatus, NodeState, ServiceState, State};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Record {
    /// The state the apply started from; a journal is replayed only onto that state.
    Begin {
        lineage: String,
        serial: u64,
        command: String,
    },
    NodeCreateIntent {
        nodes: Vec<String>,
    },
    NodeCreated {
        node: String,
        state: NodeState,
    },
    NodeDestroyIntent {
        node: String,
    },
    NodeDestroyed {
        node: String,
    },
    /// A step on a service began: it is incomplete until `ServiceApplied` or `ServiceRemoved`.
    StepBegun {
        service: String,
        entry: Option<ServiceState>,
    },
    /// `instance` as it will be recorded, less what only the start tells (pid).
    StartIntent {
        service: String,
        instance: InstanceState,
        token: String,
    },
    Started {
        service: String,
        instance: InstanceState,
    },
    StopIntent {
        service: String,
        instance: String,
    },
    Stopped {
        service: String,
        instance: String,
    },
    ServiceApplied {
        service: String,
        entry: ServiceState,
    },
    ServiceRemoved {
        service: String,
    },
    Paused {
        service: String,
        paused: bool,
    },
}

impl Record {
    /// Whether the record must be on disk before the apply goes on (an intent).
    pub fn is_intent(&self) -> bool {
        matches!(
            self,
            Record::Begin { .. }
                | Record::NodeCreateIntent { .. }
                | Record::NodeDestroyIntent { .. }
                | Record::StartIntent { .. }
                | Record::StopIntent { .. }
        )
    }
}

/// Applies an outcome to a state: the same code keeps the live state of a running apply and
/// replays a journal after a crash.
pub fn apply_record(state: &mut State, record: &Record) {
    match record {
        Record::Begin { .. }
        | Record::NodeCreateIntent { .. }
        | Record::NodeDestroyIntent { .. }
        | Record::StartIntent { .. }
        | Record::StopIntent { .. } => {}
        Record::NodeCreated { node, state: node_state } => {
            state.nodes.insert(node.clone(), node_state.clone());
        }
        Record::NodeDestroyed { node } => {
            state.nodes.remove(node);
        }
        Record::StepBegun { service, entry } => {
            if let Some(existing) = state.services.get_mut(service) {
                existing.incomplete = true;
            } else if let Some(entry) = entry {
                let mut entry = entry.clone();
                entry.incomplete = true;
                state.services.insert(service.clone(), entry);
            }
        }
        Record::Started { service, instance } => {
            if let Some(s) = state.services.get_mut(service) {
                s.instances.retain(|i| i.id != instance.id);
                s.instances.push(instance.clone());
            }
        }
        Record::Stopped { service, instance } => {
            if let Some(s) = state.services.get_mut(service) {
                s.instances.retain(|i| i.id != *instance);
            }
        }
        Record::ServiceApplied { service, entry } => {
            let instances = state.services.get(service).map(|s| s.instances.clone()).unwrap_or_default();
            let mut entry = entry.clone();
            entry.instances = instances;
            entry.incomplete = false;
            state.services.insert(service.clone(), entry);
        }
        Record::ServiceRemoved { service } => {
            state.services.remove(service);
        }
        Record::Paused { service, paused } => {
            if let Some(s) = state.services.get_mut(service) {
                s.paused = *paused;
                let status = if *paused { InstanceStatus::Paused } else { InstanceStatus::Running };
                for i in &mut s.instances {
                    i.status = status;
                }
            }
        }
    }
}

/// An intent without its outcome, left by a killed apply.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenIntent {
    Start { service: String, instance: InstanceState, token: String },
    Stop { service: String, instance: String },
}

/// The records of a journal file and the intents left open.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub begin: Option<(String, u64)>,
    pub records: Vec<Record>,
    pub open: Vec<OpenIntent>,
    /// The numbers (from 1) of the lines that could not be read: a torn last write, or damage.
    pub torn: Vec<usize>,
}

/// Reads a journal; a line that cannot be read (a torn last write, or bytes that are not a
/// record) is skipped and its number kept in [`Replay::torn`], for the caller to report.
///
/// # Errors
/// The file exists but cannot be read.
pub fn read(path: &Path) -> Result<Option<Replay>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io { action: "read", path: path.to_path_buf(), source: e });
        }
    };
    let mut replay = Replay::default();
    // Bytes, not text: a damaged line is not even UTF-8, and must not hide the others.
    for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(Error::io("read", path))?;
        replay.push_line(number + 1, &line);
    }
    Ok(Some(replay))
}

/// [`read`] on the bytes of a journal already in memory: the records, the intents left open
/// and the numbers of the lines that could not be read. Never fails: any byte string is a
/// journal, possibly of damaged lines only.
pub fn parse(bytes: &[u8]) -> Replay {
    let mut replay = Replay::default();
    for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
        replay.push_line(number + 1, line);
    }
    replay
}

impl Replay {
    /// Takes in line `number` (from 1) of a journal: a record, a blank line, or damage.
    fn push_line(&mut self, number: usize, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(record) = serde_json::from_slice::<Record>(line) else {
            self.torn.push(number);
            return;
        };
        match &record {
            Record::Begin { lineage, serial, .. } => self.begin = Some((lineage.clone(), *serial)),
            Record::StartIntent { service, instance, token } => self.open.push(OpenIntent::Start {
                service: service.clone(),
                instance: instance.clone(),
                token: token.clone(),
            }),
            Record::Started { instance, .. } => {
                self.open.retain(|o| !matches!(o, OpenIntent::Start { instance: i, .. } if i.id == instance.id));
            }
            Record::StopIntent { service, instance } => {
                self.open.push(OpenIntent::Stop { service: service.clone(), instance: instance.clone() });
            }
            Record::Stopped { instance, .. } => {
                self.open.retain(|o| !matches!(o, OpenIntent::Stop { instance: i, .. } if i == instance));
            }
            _ => {}
        }
        self.records.push(record);
    }
}

struct Inner {
    file: File,
    pending: Vec<u8>,
    next_seq: u64,
    durable_seq: u64,
    flushing: bool,
    failed: Option<String>,
}

/// An open journal, appended to by many steps at once.
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
    flushed: Condvar,
    /// When false (the simulated provider, where nothing real is made), intents are not
    /// waited for on disk.
    durable: bool,
    /// How many times the file was synced.
    syncs: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Journal {
    /// Creates the journal (it must not exist: a left-over one is replayed first).
    pub fn create(path: &Path, durable: bool) -> Result<Journal> {
        let file =
            OpenOptions::new().create(true).truncate(true).write(true).open(path).map_err(Error::io("create", path))?;
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
            syncs: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times the journal was synced to disk so far (`fdatasync`): the cost that grows
    /// with the side effects of an apply, counted by tests.
    pub fn syncs(&self) -> usize {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends a record; an intent returns only once it is on disk.
    ///
    /// # Errors
    /// The record cannot be serialized, or the journal cannot be written or synced.
    pub fn append(&self, record: &Record) -> Result<(), String> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends records in order; when any is an intent, returns only once all are on disk, with
    /// one sync for the lot (N intents written before N side effects cost one `fdatasync`, not N).
    ///
    /// # Errors
    /// A record cannot be serialized, or the journal cannot be written or synced.
    pub fn append_all(&self, records: &[Record]) -> Result<(), String> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record).map_err(|e| e.to_string())?;
            lines.push(b'\n');
        }
        let intent = records.iter().any(Record::is_intent);
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = &inner.failed {
            return Err(e.clone());
        }
        inner.pending.extend_from_slice(&lines);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if !(intent && self.durable) && inner.pending.len() < 1 << 20 {
            return Ok(());
        }
        // Leader/follower group commit: whoever finds no flush running writes everything
        // pending with one fdatasync; the others wait for it.
        loop {
            if inner.durable_seq >= seq {
                return Ok(());
            }
            if let Some(e) = &inner.failed {
                return Err(e.clone());
            }
            if inner.flushing {
                inner = self.flushed.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            inner.flushing = true;
            let batch = std::mem::take(&mut inner.pending);
            let upto = inner.next_seq - 1;
            let mut file = inner.file.try_clone().map_err(|e| e.to_string())?;
            drop(inner);
            let result = file.write_all(&batch).and_then(|()| file.sync_data());
            self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.flushing = false;
            match result {
                Ok(()) => inner.durable_seq = inner.durable_seq.max(upto),
                Err(e) => inner.failed = Some(format!("cannot write the journal {}: {e}", self.path.display())),
            }
            self.flushed.notify_all();
        }
    }

    /// Writes and syncs everything pending.
    pub fn flush(&self) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while inner.flushing {
            inner = self.flushed.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let batch = std::mem::take(&mut inner.pending);
        let result = inner.file.write_all(&batch).and_then(|()| inner.file.sync_data());
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result.map_err(|e| format!("cannot write the journal {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
