//! The journal, `state/<env>.journal`: one JSON record per line, appended before every side
//! effect (intent, made durable first) and after it (outcome). The state file is written once,
//! at the end of an apply; a journal left behind by a killed apply is replayed into the state by
//! the next command, so nothing that was being created is ever untracked.
//!
//! - [`Record`] is one line, [`apply_record`] what it does to a state (the same code keeps the
//!   live state of an apply and replays a journal), [`read`] and [`parse`] read a journal back;
//! - [`Sink`] is where an apply appends its records: the file [`Journal`] (durability is grouped:
//!   concurrent steps that append at once share one `fdatasync`), or [`MemoryJournal`] in tests;
//! - [`Journals`] is where the journals of a repository's environments are kept: the state
//!   directory ([`JournalDir`]), or [`MemoryJournals`] in tests.
//!
//! Depends on `state` (the records carry node and instance states) and the leaf `error`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::{InstanceState, InstanceStatus, NodeState, ServiceState, State};

mod file;
mod memory;

pub use file::{Journal, JournalDir};
pub use memory::{MemoryJournal, MemoryJournals};

/// The journal file of `env` under `state_dir`: `<state_dir>/<env>.journal`.
pub fn path(state_dir: &Path, env: &str) -> PathBuf {
    state_dir.join(format!("{env}.journal"))
}

/// What went wrong with a journal: each variant names the file, and says the same as the
/// filesystem error it comes from.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The journal could not be created (its directory is missing or read-only).
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The journal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A journal left behind could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The journal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A journal whose records are in the state could not be removed.
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        /// The journal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Records could not be written or synced (a full disk): the apply must not go on, since a
    /// side effect without its intent on disk could be lost. Every later append fails the same.
    #[error("cannot write the journal {}: {reason}", path.display())]
    Write {
        /// The journal file.
        path: PathBuf,
        /// The filesystem's error.
        reason: String,
    },
    /// A record could not be encoded as JSON (a bug: every record can be).
    #[error("{reason}")]
    Encode {
        /// The encoder's error.
        reason: String,
    },
}

impl JournalError {
    /// [`JournalError::Create`] of `path`, from the filesystem's error.
    pub(crate) fn create(path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |e| JournalError::Create { path, source: Arc::new(e) }
    }

    /// [`JournalError::Read`] of `path`, from the filesystem's error.
    pub(crate) fn read(path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |e| JournalError::Read { path, source: Arc::new(e) }
    }

    /// [`JournalError::Remove`] of `path`, from the filesystem's error.
    pub(crate) fn remove(path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |e| JournalError::Remove { path, source: Arc::new(e) }
    }
}

impl From<JournalError> for crate::Error {
    /// A filesystem error of the journal file is the crate's [`crate::Error::Io`] (with the same
    /// text); any other is a diagnostic.
    fn from(e: JournalError) -> Self {
        let io = |action: &'static str, path: PathBuf, source: Arc<std::io::Error>| crate::Error::Io {
            action,
            path,
            source: Arc::try_unwrap(source)
                .unwrap_or_else(|shared| std::io::Error::new(shared.kind(), shared.to_string())),
        };
        match e {
            JournalError::Create { path, source } => io("create", path, source),
            JournalError::Read { path, source } => io("read", path, source),
            JournalError::Remove { path, source } => io("remove", path, source),
            other @ (JournalError::Write { .. } | JournalError::Encode { .. }) => crate::Error::msg(other.to_string()),
        }
    }
}

/// Where an apply appends its records, in order: the journal file ([`Journal`]), or memory
/// ([`MemoryJournal`], in tests).
pub trait Sink: Send + Sync {
    /// Appends records in order; when any is an intent ([`Record::is_intent`]), returns only
    /// once all are durable (one sync for the lot).
    ///
    /// # Errors
    /// A record cannot be encoded, or the journal cannot be written or synced.
    fn append_all(&self, records: &[Record]) -> Result<(), JournalError>;

    /// Appends one record (see [`Sink::append_all`]).
    ///
    /// # Errors
    /// As [`Sink::append_all`].
    fn append(&self, record: &Record) -> Result<(), JournalError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Makes everything appended so far durable.
    ///
    /// # Errors
    /// The journal cannot be written or synced.
    fn flush(&self) -> Result<(), JournalError>;
}

/// Where the journals of a repository's environments are kept, one per environment at most:
/// `<state dir>/<env>.journal` files ([`JournalDir`]), or memory ([`MemoryJournals`], in tests).
pub trait Journals: Send + Sync {
    /// Creates the journal of `env` for a new apply, empty (a left-over one was replayed first).
    /// When `durable` is false (only simulated nodes: nothing real is made) intents are not
    /// waited for on disk.
    ///
    /// # Errors
    /// The journal cannot be created.
    fn create(&self, env: &str, durable: bool) -> Result<Box<dyn Sink>, JournalError>;

    /// The journal of `env` left behind by an apply that did not finish, if there is one.
    ///
    /// # Errors
    /// It exists but cannot be read.
    fn read(&self, env: &str) -> Result<Option<Replay>, JournalError>;

    /// Removes the journal of `env` (its records are in the recorded state).
    ///
    /// # Errors
    /// It cannot be removed (or is not there).
    fn remove(&self, env: &str) -> Result<(), JournalError>;

    /// The journal of `env` as messages name it (`state/dev.journal`).
    fn path(&self, env: &str) -> PathBuf;
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Record {
    /// The state the apply started from; a journal is replayed only onto that state.
    Begin {
        /// The lineage of that state (fixed before anything starts, even on a first apply).
        lineage: String,
        /// Its serial.
        serial: u64,
        /// The command that wrote the journal (`apply -e dev`, `enact pause`).
        command: String,
    },
    /// Nodes are about to be made by their provider (one batch): their ids.
    NodeCreateIntent {
        /// The node ids, as the plan's placement names them.
        nodes: Vec<String>,
        /// The account that makes them (empty in a journal written before it was recorded).
        #[serde(default)]
        account: String,
        /// The request's id ([`crate::provider::NodeRequest::id`]): the ec2 provider tags what
        /// it makes with it and derives its `ClientToken`s from it (empty in a journal written
        /// before it was recorded).
        #[serde(default)]
        request: String,
    },
    /// A node was made (or a fixed host taken into use).
    NodeCreated {
        /// Its id.
        node: String,
        /// What the state records of it.
        state: NodeState,
    },
    /// A node is about to be freed.
    NodeDestroyIntent {
        /// Its id.
        node: String,
    },
    /// A node was freed: it leaves the state.
    NodeDestroyed {
        /// Its id.
        node: String,
    },
    /// A step on a service began: it is incomplete until `ServiceApplied` or `ServiceRemoved`.
    StepBegun {
        /// The service.
        service: String,
        /// Its desired entry, without instances (`None` when the step destroys it).
        entry: Option<ServiceState>,
    },
    /// `instance` as it will be recorded, less what only the start tells (pid).
    StartIntent {
        /// The service.
        service: String,
        /// The instance to be.
        instance: InstanceState,
        /// The random token put in its environment (`ENACT_TOKEN`), by which it is found
        /// again if the apply is killed before its outcome is written.
        token: String,
    },
    /// An instance started (not yet known to be healthy): it is recorded.
    Started {
        /// The service.
        service: String,
        /// The instance, with its pid and start time.
        instance: InstanceState,
    },
    /// An instance is about to be stopped.
    StopIntent {
        /// The service.
        service: String,
        /// The instance id.
        instance: String,
    },
    /// An instance stopped: it leaves the state.
    Stopped {
        /// The service.
        service: String,
        /// The instance id.
        instance: String,
    },
    /// A service's step finished: its entry is the desired one, with the instances it has.
    ServiceApplied {
        /// The service.
        service: String,
        /// Its entry (its instances are those recorded, whatever this one holds).
        entry: ServiceState,
    },
    /// A destroyed service's step finished: it leaves the state.
    ServiceRemoved {
        /// The service.
        service: String,
    },
    /// `enact pause` or `enact resume` of a service finished.
    Paused {
        /// The service.
        service: String,
        /// Whether it is now paused.
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
            state.nodes.insert(node.clone(), Box::new(node_state.clone()));
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
            // A spare node of the reservoir that takes an instance is an ordinary node from now on.
            if let Some(node) = state.nodes.get_mut(&instance.node) {
                node.spare = false;
            }
            if let Some(s) = state.services.get_mut(service) {
                s.instances.retain(|i| i.id != instance.id);
                // In id order, whichever of a step's instances started first: the state file
                // is the same for the same apply.
                let number = |id: &str| crate::plan::placement::id_number(id);
                let new = number(&instance.id);
                // Mostly the next in order: no search.
                if s.instances.last().is_none_or(|last| number(&last.id) <= new) {
                    s.instances.push(instance.clone());
                } else {
                    let at = s.instances.partition_point(|i| number(&i.id) <= new);
                    s.instances.insert(at, instance.clone());
                }
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
    /// An instance was being started ([`Record::StartIntent`] without [`Record::Started`]): it
    /// may run, unrecorded.
    Start {
        /// The service.
        service: String,
        /// The instance as it would have been recorded (no pid).
        instance: InstanceState,
        /// Its start token, to find it by.
        token: String,
    },
    /// An instance was being stopped ([`Record::StopIntent`] without [`Record::Stopped`]): it
    /// may be gone.
    Stop {
        /// The service.
        service: String,
        /// The instance id.
        instance: String,
    },
    /// Nodes were being made ([`Record::NodeCreateIntent`] without a [`Record::NodeCreated`]
    /// for each): the provider may have made them, unrecorded.
    Nodes {
        /// The account asked.
        account: String,
        /// The request's id (what the ec2 provider tagged them with).
        request: String,
        /// The node ids whose outcome is missing.
        nodes: Vec<String>,
    },
}

/// The records of a journal file and the intents left open.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The lineage and serial of the state the apply started from ([`Record::Begin`]), unless
    /// that line is unreadable.
    pub begin: Option<(String, u64)>,
    /// Every readable record, in order.
    pub records: Vec<Record>,
    /// The intents without an outcome, in order.
    pub open: Vec<OpenIntent>,
    /// The numbers (from 1) of the lines that could not be read: a torn last write, or damage.
    pub torn: Vec<usize>,
}

/// Reads a journal file; a line that cannot be read (a torn last write, or bytes that are not a
/// record) is skipped and its number kept in [`Replay::torn`], for the caller to report.
/// `None` when there is no such file.
///
/// # Errors
/// The file exists but cannot be read.
pub fn read(path: &Path) -> Result<Option<Replay>, JournalError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::read(path)(e)),
    };
    let mut replay = Replay::default();
    // Bytes, not text: a damaged line is not even UTF-8, and must not hide the others.
    for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(JournalError::read(path))?;
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
    /// The replay of records already decoded (a journal kept in memory): nothing is torn.
    pub fn of_records(records: impl IntoIterator<Item = Record>) -> Replay {
        let mut replay = Replay::default();
        for record in records {
            replay.push(record);
        }
        replay
    }

    /// Takes in line `number` (from 1) of a journal: a record, a blank line, or damage.
    fn push_line(&mut self, number: usize, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(record) = serde_json::from_slice::<Record>(line) else {
            self.torn.push(number);
            return;
        };
        self.push(record);
    }

    /// Takes in a record read back: the state it started from, and which intents it opens or
    /// closes.
    fn push(&mut self, record: Record) {
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
            Record::NodeCreateIntent { nodes, account, request } => self.open.push(OpenIntent::Nodes {
                account: account.clone(),
                request: request.clone(),
                nodes: nodes.clone(),
            }),
            Record::NodeCreated { node, .. } => {
                for open in &mut self.open {
                    if let OpenIntent::Nodes { nodes, .. } = open {
                        nodes.retain(|n| n != node);
                    }
                }
                self.open.retain(|o| !matches!(o, OpenIntent::Nodes { nodes, .. } if nodes.is_empty()));
            }
            _ => {}
        }
        self.records.push(record);
    }
}
