//! Reading backups back: a full backup on its own, a delta with the full backup it was
//! compressed against (kept in memory while a run of deltas needs it).

use std::fs;
use std::path::PathBuf;

use super::{Backup, FileStore, parse_state};
use crate::diagnostic::Diagnostic;
use crate::error::{Error, Result};
use crate::state::backup::{self, Reference};
use crate::state::model::State;

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
    pub(super) fn text(&mut self, backup: &Backup) -> Result<String> {
        let display = self.store.display_backup(self.env, &backup.path);
        if !backup.is_compressed() {
            return fs::read_to_string(&backup.path).map_err(Error::io("read", display));
        }
        let bytes = fs::read(&backup.path).map_err(Error::io("read", &display))?;
        let damaged = |why: String| -> Error {
            Diagnostic::new(format!("the backup is damaged: {why}"))
                .in_file(&display)
                .hint("`enact history` lists the backups that can be read; `enact state restore SERIAL` makes one current")
                .into()
        };
        let (header, frame) = backup::split_header(&bytes).map_err(damaged)?;
        if header.serial != backup.serial {
            return Err(damaged(format!("it holds serial {}, not the {} of its name", header.serial, backup.serial)));
        }
        let text = match &header.reference {
            None => backup::decode(frame, None).map_err(damaged)?,
            Some(reference) => {
                let prefix = self.reference(reference).map_err(|why| -> Error {
                    Diagnostic::new(format!(
                        "the backup cannot be read: it was compressed against the backup of serial {}, which {why}",
                        reference.serial
                    ))
                    .in_file(&display)
                    .hint("`enact history` lists the backups that can be read; `enact state restore SERIAL` makes one current")
                    .into()
                })?;
                backup::decode(frame, Some(prefix)).map_err(damaged)?
            }
        };
        String::from_utf8(text).map_err(|_| damaged("it decodes to text that is not UTF-8".to_string()))
    }

    /// The text of the full backup `reference` names.
    fn reference(&mut self, reference: &Reference) -> std::result::Result<&[u8], String> {
        let hit = self.cached.as_ref().is_some_and(|(s, id, _)| *s == reference.serial && *id == reference.id);
        if !hit {
            self.cached = None;
            let path = self.dir.join(backup::file_name(reference.serial));
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("is missing".to_string()),
                Err(e) => return Err(format!("cannot be read ({e})")),
            };
            let (header, frame) = backup::split_header(&bytes).map_err(|e| format!("is damaged: {e}"))?;
            if header.id != reference.id || header.reference.is_some() {
                return Err("was replaced since by another of the same serial".to_string());
            }
            let text = backup::decode(frame, None).map_err(|e| format!("is damaged: {e}"))?;
            self.cached = Some((reference.serial, reference.id.clone(), text));
        }
        Ok(self.cached.as_ref().map(|(_, _, text)| text.as_slice()).unwrap_or_default())
    }
}
