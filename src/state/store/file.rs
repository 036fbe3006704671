//! [`FileStore`]: the states of a config repository as files under its `state/`, read and
//! written whole (a write checks lineage and serial first, keeps the state it replaces as a
//! backup, then renames the new one into place).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::backups::Prepared;
use super::read::BackupReader;
use super::write::{remove_stale_temporaries, write_atomic, write_atomic_with};
use super::{BACKUPS_DIR, BACKUPS_KEPT, Backup, Head, StateStore, Successor, parse_state, serial_in};
use crate::diagnostic::Diagnostic;
use crate::error::{Error, Result};
use crate::state::backup::{self, Reference};
use crate::state::model::{STATE_FORMAT_VERSION, State};

/// States as files under a config repository's `state/`.
#[derive(Debug, Clone)]
pub struct FileStore {
    pub(super) dir: PathBuf,
    /// How paths are shown in messages (relative to the config repository).
    pub(super) display_prefix: PathBuf,
    /// Backups as plain hard-linked copies (`<serial>.json`) instead of compressed.
    pub(super) plain_backups: bool,
    /// The backup [`FileStore::prepare_backup`] is compressing, shared by the clones.
    pub(super) prepared: Arc<Mutex<Option<Prepared>>>,
    /// Whether a read keeps the text it parsed ([`FileStore::keeping_text`]).
    keep_text: bool,
    /// The text of the state file last read, when kept, shared by the clones.
    pub(super) kept: Arc<Mutex<Option<Kept>>>,
}

/// The text of a state file as read, and which file it was.
pub(super) struct Kept {
    pub(super) env: String,
    pub(super) text: Arc<String>,
    id: FileId,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text may be 100 MB: its length only.
        f.debug_struct("Kept").field("env", &self.env).field("bytes", &self.text.len()).field("id", &self.id).finish()
    }
}

/// What tells a file from its replacement or an edit: its inode, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt as _;
        FileId { dev: meta.dev(), ino: meta.ino(), len: meta.len(), modified: meta.modified().ok() }
    }
}

impl FileStore {
    /// The states under `dir` (the `state/` directory of a config repository).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore {
            dir: dir.into(),
            display_prefix: PathBuf::from("state"),
            plain_backups: false,
            prepared: Arc::default(),
            keep_text: false,
            kept: Arc::default(),
        }
    }

    /// A read keeps the text it parsed, for the write that replaces the state to back up (and
    /// [`FileStore::prepare_backup`] to compress) without reading it again, as long as the file
    /// is still the one read (same inode, size, modification time and first bytes). For a
    /// session, which reads the state once and writes it once.
    pub fn keeping_text(mut self) -> Self {
        self.keep_text = true;
        self
    }

    /// Replaced states are kept as plain hard-linked copies (`<serial>.json`), as enact did before
    /// backups were compressed: for comparison (the backups benchmark's baseline). Both kinds are
    /// always read.
    pub fn with_plain_backups(mut self) -> Self {
        self.plain_backups = true;
        self
    }

    /// Paths in messages start with `display` (the state directory as the user knows it).
    pub fn with_display(mut self, display: impl Into<PathBuf>) -> Self {
        self.display_prefix = display.into();
        self
    }

    /// The state file of `env`: `<dir>/<env>.json`.
    pub fn path(&self, env: &str) -> PathBuf {
        self.dir.join(format!("{env}.json"))
    }

    /// The state a backup holds.
    ///
    /// # Errors
    /// The backup cannot be read, is damaged (located, like a damaged state), or is a delta whose
    /// reference is missing, damaged or replaced (named).
    pub fn read_backup(&self, env: &str, backup: &Backup) -> Result<State> {
        BackupReader::new(self, env).read(backup)
    }

    /// Every backup of `env`, oldest first, each with the state it holds or why it cannot be
    /// read. Faster than [`FileStore::read_backup`] one by one: a full backup that deltas were
    /// compressed against is decompressed once for all of them.
    ///
    /// # Errors
    /// The backup directory cannot be listed (a damaged backup is an `Err` in its row instead).
    pub fn read_backups(&self, env: &str) -> Result<Vec<(Backup, Result<State>)>> {
        let mut reader = BackupReader::new(self, env);
        Ok(self.backups(env)?.into_iter().map(|b| (b.clone(), reader.read(&b))).collect())
    }

    /// `enact state restore`: makes the backup of `serial` the current state of `env`, as a new
    /// serial (one past every serial known, so none is used twice) in the backup's lineage. A
    /// current state that cannot be read is kept beside the backups (`damaged-<serial>.json`)
    /// rather than lost; a readable one is backed up as at every write. Returns the state written
    /// and the serial it replaced, if it could be read.
    ///
    /// # Errors
    /// No backup of `serial`, a damaged backup, a serial at its limit, or the filesystem.
    pub fn restore(&self, env: &str, serial: u64) -> Result<(State, Option<u64>)> {
        let backups = self.backups(env)?;
        let backup = backups.iter().find(|b| b.serial == serial).ok_or_else(|| {
            Diagnostic::new(format!("env `{env}` has no backup of serial {serial}"))
                .hint("`enact history` lists the serials that are kept")
        })?;
        let restored = self.read_backup(env, backup)?;
        let current = self.read_text(env).and_then(|text| match text {
            Some(text) => parse_state(&self.display(env), &text, env).map(|s| Some((s, text))),
            None => Ok(None),
        });
        let newest = backups.iter().map(|b| b.serial).max().unwrap_or(0);
        let replaced = current.as_ref().ok().and_then(|c| c.as_ref().map(|(c, _)| c.serial));
        // The newest serial is the current state's, never in the backups: a damaged current
        // state had at least the serial after the newest backup (or the one its text still shows).
        let last = match &current {
            Ok(_) => newest.max(replaced.unwrap_or(0)),
            Err(_) => {
                let text = fs::read(self.path(env)).map(|b| String::from_utf8_lossy(&b).into_owned());
                let shown = text.ok().and_then(|t| serial_in(&t)).unwrap_or(0);
                newest.saturating_add(1).max(shown)
            }
        };
        let path = self.path(env);
        let dir = self.backup_dir(env);
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        match &current {
            Ok(Some((current, text))) => self.back_up(env, &Head::of(current), text)?,
            Ok(None) => {}
            Err(_) => {
                // Unreadable: kept as it is, never overwritten.
                let keep = dir.join(format!("damaged-{:010}.json", last + 1));
                fs::copy(&path, &keep).map_err(Error::io("keep the damaged state as", &keep))?;
            }
        }
        let mut written = restored;
        written.serial = last.checked_add(1).ok_or_else(|| {
            Diagnostic::new(format!("env `{env}`: serial {last} is the largest there is; nothing can follow it"))
                .hint("start a new history: move the state file away and import or apply it again")
        })?;
        written.format_version = STATE_FORMAT_VERSION;
        write_atomic(&path, written.to_json().as_bytes())?;
        Ok((written, replaced))
    }

    pub(super) fn backup_dir(&self, env: &str) -> PathBuf {
        self.dir.join(BACKUPS_DIR).join(env)
    }

    pub(super) fn display(&self, env: &str) -> PathBuf {
        self.display_prefix.join(format!("{env}.json"))
    }

    /// How a backup's path is shown: under the state directory as the user knows it.
    pub(super) fn display_backup(&self, env: &str, path: &Path) -> PathBuf {
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        self.display_prefix.join(BACKUPS_DIR).join(env).join(name)
    }

    /// The text of the state file, if there is one.
    pub(super) fn read_text(&self, env: &str) -> Result<Option<String>> {
        let path = self.path(env);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { action: "read", path, source: e }),
        }
    }

    /// The state of `env` for a command that does not write it: a large file mapped into memory
    /// ([`super::mapped`]), a small one read.
    fn read_mapped(&self, env: &str) -> Result<Option<State>> {
        let path = self.path(env);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { action: "read", path, source: e }),
        };
        let large = file.metadata().is_ok_and(|meta| meta.is_file() && meta.len() >= crate::mapped::MAP_FROM_BYTES);
        if !large {
            return match self.read_text(env)? {
                Some(text) => parse_state(&self.display(env), &text, env).map(Some),
                None => Ok(None),
            };
        }
        let mapped = crate::mapped::Mapped::map(&file).map_err(|e| Error::Io {
            action: "read",
            path: path.clone(),
            source: e,
        })?;
        // As `read_to_string` would refuse it.
        let text = std::str::from_utf8(mapped.bytes()).map_err(|e| Error::Io {
            action: "read",
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        parse_state(&self.display(env), text, env).map(Some)
    }

    /// The text of the state file with which file it is, if there is one.
    fn read_text_with_id(&self, env: &str) -> Result<Option<(String, FileId)>> {
        use std::io::Read as _;
        let path = self.path(env);
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { action: "read", path, source: e }),
        };
        let read = file.metadata().and_then(|meta| {
            let mut text = String::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.read_to_string(&mut text).map(|_| (text, FileId::of(&meta)))
        });
        read.map(Some).map_err(|e| Error::Io { action: "read", path, source: e })
    }

    /// The text of the state file now: the kept one if the file is still the one it was read
    /// from, else read again.
    fn current_text(&self, env: &str) -> Result<Option<Arc<String>>> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner).take().filter(|k| k.env == env);
        if let Some(kept) = kept
            && self.still(env, &kept)
        {
            return Ok(Some(kept.text));
        }
        Ok(self.read_text(env)?.map(Arc::new))
    }

    /// Whether the state file is still the one `kept` was read from: the same inode, size and
    /// modification time, and the same first bytes (its head: lineage and serial).
    fn still(&self, env: &str, kept: &Kept) -> bool {
        use std::io::Read as _;
        let Ok(mut file) = fs::File::open(self.path(env)) else { return false };
        if !file.metadata().is_ok_and(|meta| FileId::of(&meta) == kept.id) {
            return false;
        }
        let mut head = vec![0; kept.text.len().min(4096)];
        file.read_exact(&mut head).is_ok() && kept.text.as_bytes().starts_with(&head)
    }

    /// Removes the backups beyond the newest [`BACKUPS_KEPT`] that no kept delta needs, and
    /// temporary files left by processes that are gone.
    fn prune(&self, env: &str) -> Result<()> {
        let dir = self.backup_dir(env);
        remove_stale_temporaries(&dir);
        let backups = self.backups(env)?;
        if backups.len() <= BACKUPS_KEPT {
            return Ok(());
        }
        let (old, kept) = backups.split_at(backups.len() - BACKUPS_KEPT);
        // Groups are runs of serials: only the deltas before the first full kept backup can
        // refer to an older one.
        let mut needed = BTreeSet::new();
        for backup in kept.iter().take(backup::GROUP_SERIALS as usize) {
            if !backup.is_compressed() {
                continue;
            }
            match backup::read_header(&backup.path) {
                Ok(header) => match header.reference {
                    Some(Reference { serial, .. }) => {
                        needed.insert(serial);
                    }
                    None => break,
                },
                Err(_) => continue,
            }
        }
        for old in old.iter().filter(|b| !needed.contains(&b.serial)) {
            for name in [backup::file_name(old.serial), backup::plain_file_name(old.serial)] {
                let path = dir.join(name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io("remove old backup", &path)(e));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl StateStore for FileStore {
    fn read(&self, env: &str) -> Result<Option<State>> {
        if !self.keep_text {
            return self.read_mapped(env);
        }
        let Some((text, id)) = self.read_text_with_id(env)? else { return Ok(None) };
        let state = parse_state(&self.display(env), &text, env)?;
        let kept = Kept { env: env.to_string(), text: Arc::new(text), id };
        *self.kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
        Ok(Some(state))
    }

    fn write(&self, state: &State) -> Result<State> {
        let mut written = state.clone();
        self.write_in_place(&mut written)?;
        Ok(written)
    }

    fn write_in_place(&self, state: &mut State) -> Result<()> {
        let text = crate::timing::phase("state write: the current state read", || self.current_text(&state.env))?;
        // What is replaced is checked by its lineage and serial; a file enact did not write
        // that way is read whole (and refused with its location if it is damaged).
        let current = match &text {
            Some(text) => match Head::of_written(text) {
                Some(head) => Some(head),
                None => Some(Head::of(&parse_state(&self.display(&state.env), text, &state.env)?)),
            },
            None => None,
        };
        let successor = Successor::of(current.as_ref(), state)?;
        if let (Some(current), Some(text)) = (&current, &text) {
            crate::timing::phase("state write: backup started", || self.back_up(&state.env, current, text))?;
        }
        drop(text);
        let undo = successor.fill(state);
        let written = crate::timing::phase("state write: the new state written", || {
            write_atomic_with(&self.path(&state.env), |out| state.write_json(out))
        });
        match written.and_then(|()| crate::timing::phase("state write: backups pruned", || self.prune(&state.env))) {
            Ok(()) => Ok(()),
            Err(e) => {
                undo.undo(state);
                Err(e)
            }
        }
    }

    fn backups(&self, env: &str) -> Result<Vec<Backup>> {
        let dir = self.backup_dir(env);
        let found = backup::list(&dir).map_err(Error::io("list", &dir))?;
        Ok(found.into_iter().map(|(serial, path)| Backup { serial, path }).collect())
    }

    fn read_serial(&self, env: &str, serial: u64) -> Result<State> {
        if let Some(current) = self.read(env)?
            && current.serial == serial
        {
            return Ok(current);
        }
        let backup = self.backups(env)?.into_iter().find(|b| b.serial == serial).ok_or_else(|| {
            Diagnostic::new(format!("env `{env}` has no recorded state with serial {serial}"))
                .hint("`enact history` lists the serials that are kept")
        })?;
        self.read_backup(env, &backup)
    }
}
