//! Reading backups back: a full backup on its own, a delta with the full backup it was
//! compressed against (kept in memory while a run of deltas needs it).

use std::fs;
use std::io;
use std::path::PathBuf;

use super::{Backup, FileStore, parse_state};
use crate::diagnostic::Diagnostic;
use crate::error::{Error, Result};
use crate::state::backup::{self, Damage, Reference};
use crate::state::model::State;

/// What to do about a backup that cannot be read.
const HINT: &str = "`enact history` lists the backups that can be read; `enact state restore SERIAL` makes one current";

/// Why a backup cannot be read back. Each names the file as the user knows it (under the state
/// directory); [`BackupError::hint`] says what to do.
#[derive(Debug, thiserror::Error)]
pub(super) enum BackupError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The backup file.
        file: PathBuf,
        /// What the filesystem said.
        source: io::Error,
    },
    /// The file is not a whole compressed backup.
    #[error("the backup is damaged: {damage}")]
    Damaged {
        /// The backup file.
        file: PathBuf,
        /// What is wrong.
        damage: Damage,
    },
    /// A delta whose reference (the full backup it was compressed against) cannot serve.
    #[error("the backup cannot be read: it was compressed against {reference}")]
    Reference {
        /// The delta's file.
        file: PathBuf,
        /// Why its reference cannot serve.
        reference: ReferenceError,
    },
}

impl BackupError {
    /// What to do about it: look for the backups that can be read, restore one.
    pub(super) fn hint(&self) -> Option<&'static str> {
        match self {
            BackupError::Read { .. } => None,
            BackupError::Damaged { .. } | BackupError::Reference { .. } => Some(HINT),
        }
    }
}

impl From<BackupError> for Error {
    fn from(e: BackupError) -> Error {
        let file = match e {
            BackupError::Read { file, source } => return Error::Io { action: "read", path: file, source },
            BackupError::Damaged { ref file, .. } | BackupError::Reference { ref file, .. } => file.clone(),
        };
        let mut diagnostic = Diagnostic::new(e.to_string()).in_file(file);
        if let Some(hint) = e.hint() {
            diagnostic = diagnostic.hint(hint);
        }
        diagnostic.into()
    }
}

/// Why the full backup a delta was compressed against cannot serve; it reads as the end of
/// "it was compressed against …".
#[derive(Debug, thiserror::Error)]
pub(super) enum ReferenceError {
    /// No file of its serial.
    #[error("the backup of serial {serial}, which is missing")]
    Missing {
        /// Its serial.
        serial: u64,
        /// Where it should be.
        path: PathBuf,
    },
    /// Its file cannot be read.
    #[error("the backup of serial {serial}, which cannot be read ({source})")]
    Unreadable {
        /// Its serial.
        serial: u64,
        /// Its file.
        path: PathBuf,
        /// What the filesystem said.
        source: io::Error,
    },
    /// Its file is damaged.
    #[error("the backup of serial {serial}, which is damaged: {damage}")]
    Damaged {
        /// Its serial.
        serial: u64,
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        damage: Damage,
    },
    /// The file of its serial is another one (another id, or a delta): written since by
    /// another history.
    #[error("the backup of serial {serial}, which was replaced since by another of the same serial")]
    Replaced {
        /// Its serial.
        serial: u64,
        /// Its file.
        path: PathBuf,
    },
}

/// Reads backups, keeping the last full backup a delta needed (a delta's reference).
pub(super) struct BackupReader<'s> {
    store: &'s FileStore,
    env: &'s str,
    dir: PathBuf,
    /// The last reference read: its serial, id and text.
    cached: Option<(u64, String, Vec<u8>)>,
}

impl<'s> BackupReader<'s> {
    pub(super) fn new(store: &'s FileStore, env: &'s str) -> Self {
        BackupReader { store, env, dir: store.backup_dir(env), cached: None }
    }

    pub(super) fn read(&mut self, backup: &Backup) -> Result<State> {
        let text = self.text(backup)?;
        parse_state(&self.store.display_backup(self.env, &backup.path), &text, self.env)
    }

    /// The state text a backup holds.
    ///
    /// # Errors
    /// The file cannot be read, is damaged, or is a delta whose reference cannot serve.
    pub(super) fn text(&mut self, backup: &Backup) -> Result<String, BackupError> {
        let file = self.store.display_backup(self.env, &backup.path);
        let read = |source| BackupError::Read { file: file.clone(), source };
        if !backup.is_compressed() {
            return fs::read_to_string(&backup.path).map_err(read);
        }
        let bytes = fs::read(&backup.path).map_err(read)?;
        let damaged = |damage| BackupError::Damaged { file: file.clone(), damage };
        let (header, frame) = backup::split_header(&bytes).map_err(damaged)?;
        if header.serial != backup.serial {
            return Err(damaged(Damage::WrongSerial { held: header.serial, named: backup.serial }));
        }
        let text = match &header.reference {
            None => backup::decode(frame, None).map_err(damaged)?,
            Some(reference) => {
                let prefix = match self.reference(reference) {
                    Ok(prefix) => prefix,
                    Err(reference) => return Err(BackupError::Reference { file, reference }),
                };
                backup::decode(frame, Some(prefix)).map_err(damaged)?
            }
        };
        String::from_utf8(text).map_err(|_| damaged(Damage::NotText))
    }

    /// The text of the full backup `reference` names.
    fn reference(&mut self, reference: &Reference) -> Result<&[u8], ReferenceError> {
        let hit = self.cached.as_ref().is_some_and(|(s, id, _)| *s == reference.serial && *id == reference.id);
        if !hit {
            self.cached = None;
            let serial = reference.serial;
            let path = self.dir.join(backup::file_name(serial));
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReferenceError::Missing { serial, path }),
                Err(source) => return Err(ReferenceError::Unreadable { serial, path, source }),
            };
            let (header, frame) = match backup::split_header(&bytes) {
                Ok(split) => split,
                Err(damage) => return Err(ReferenceError::Damaged { serial, path, damage }),
            };
            if header.id != reference.id || header.reference.is_some() {
                return Err(ReferenceError::Replaced { serial, path });
            }
            let text = match backup::decode(frame, None) {
                Ok(text) => text,
                Err(damage) => return Err(ReferenceError::Damaged { serial, path, damage }),
            };
            self.cached = Some((serial, reference.id.clone(), text));
        }
        Ok(self.cached.as_ref().map(|(_, _, text)| text.as_slice()).unwrap_or_default())
    }
}
