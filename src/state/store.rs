//! Where states live. [`FileStore`] writes `state/<env>.json` atomically (temp, fsync, rename,
//! fsync of the directory) and keeps the states it replaces in `state/.backups/<env>/` (the last
//! [`BACKUPS_KEPT`]), compressed (see [`super::backup`]); [`MemoryStore`] is its fake for unit
//! tests.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::hash::BuildHasher as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::backup::{self, Reference};
use super::model::{STATE_FORMAT_VERSION, State};
use crate::diagnostic::{Diagnostic, SourceFile, strip_position};
use crate::error::{Error, Result};

/// How many backups of an environment are kept at least: the newest by serial (and the full
/// backups the oldest of them were compressed against, which may be older).
pub const BACKUPS_KEPT: usize = 100;
/// The directory of the backups under the state directory: `.backups/<env>/`.
pub const BACKUPS_DIR: &str = ".backups";

/// One recorded state kept as a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The serial of the state it holds.
    pub serial: u64,
    /// `<serial>.json.zst` (compressed, see [`super::backup`]) or `<serial>.json` (plain: written
    /// by enact before backups were compressed, or by [`FileStore::with_plain_backups`]).
    pub path: PathBuf,
}

impl Backup {
    /// Whether the file is compressed (`.json.zst`).
    pub fn is_compressed(&self) -> bool {
        self.path.extension().is_some_and(|e| e == "zst")
    }
}

/// Reads and writes the states of environments.
pub trait StateStore {
    /// The recorded state of `env`, or `None` if it was never applied.
    fn read(&self, env: &str) -> Result<Option<State>>;

    /// Records `state` as the successor of the state it was derived from: `state.serial` must be
    /// the serial on record (and the lineage the same); the written state has `serial + 1`, and a
    /// lineage is made for an environment applied the first time. Returns what was written.
    fn write(&self, state: &State) -> Result<State>;

    /// Backups of `env`, oldest first.
    fn backups(&self, env: &str) -> Result<Vec<Backup>>;

    /// The state recorded at `serial`: the current one or a backup.
    fn read_serial(&self, env: &str, serial: u64) -> Result<State>;

    /// The state of `env`, or an empty one.
    fn read_or_empty(&self, env: &str) -> Result<State> {
        Ok(self.read(env)?.unwrap_or_else(|| State::empty(env)))
    }
}

/// What a write checks of the state it replaces: its lineage and serial.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct Head {
    lineage: String,
    serial: u64,
}

impl Head {
    /// The head of a state's text as enact writes it (`formatVersion`, `lineage`, `serial`, then
    /// `env`, each on a line of its own at the top level), read from its first lines alone, so a
    /// write of a 100 MB state does not parse it again; `None` for any other layout.
    fn of_written(text: &str) -> Option<Head> {
        let window = &text[..text.len().min(1024)];
        let end = window.find(",\n  \"env\":")?;
        let head = &window[..end];
        // Top-level keys only: nothing nested before `env`.
        if head.matches('{').count() != 1 || head.contains('[') {
            return None;
        }
        serde_json::from_str(&format!("{head}}}")).ok()
    }

    fn of(state: &State) -> Head {
        Head { lineage: state.lineage.clone(), serial: state.serial }
    }
}

/// Checks that `next` may replace `current`, and fills in serial and lineage.
fn successor(current: Option<&Head>, next: &State) -> Result<State> {
    let mut written = next.clone();
    match current {
        Some(current) => {
            if current.lineage != next.lineage {
                return Err(Diagnostic::new(format!(
                    "refusing to write state of env `{}`: its lineage {} differs from the recorded {}",
                    next.env, next.lineage, current.lineage
                ))
                .hint("the state was replaced by another history; plan again against the recorded state")
                .into());
            }
            if current.serial != next.serial {
                return Err(Diagnostic::new(format!(
                    "refusing to write state of env `{}`: it was derived from serial {} but serial {} is recorded",
                    next.env, next.serial, current.serial
                ))
                .hint("another apply changed the environment meanwhile; plan again")
                .into());
            }
        }
        None => {
            if written.lineage.is_empty() {
                written.lineage = new_lineage();
            }
        }
    }
    written.serial = next.serial.checked_add(1).ok_or_else(|| {
        Diagnostic::new(format!(
            "refusing to write state of env `{}`: its serial is {}, the largest there is, and the next write \
             would wrap it to 0",
            next.env, next.serial
        ))
        .hint("start a new history: move the state file away (its services keep running) and import or apply it again")
    })?;
    written.format_version = STATE_FORMAT_VERSION;
    Ok(written)
}

/// The `"serial": N` a (possibly damaged) state's text still shows, if any.
fn serial_in(text: &str) -> Option<u64> {
    let at = text.find("\"serial\"")?;
    let rest = text[at + "\"serial\"".len()..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The hash that tells whether the state file still holds what a prepared backup compressed
/// (in one process only: it is never stored).
fn content_hash(bytes: &[u8]) -> u64 {
    foldhash::quality::FixedState::with_seed(0x656e_6163_7462_6b70).hash_one(bytes)
}

/// A random 128-bit id in UUID form, set once per environment.
pub fn new_lineage() -> String {
    let mut bytes = [0u8; 16];
    let filled = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // No urandom: fall back on time and pid, still unique enough for a lineage.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Parses a state file's text, with errors located in `display`.
pub fn parse_state(display: &Path, text: &str, env: &str) -> Result<State> {
    let source = SourceFile::new(display, String::new());
    let text = crate::diagnostic::without_bom(text);
    // A large state as enact writes it is parsed in pieces on every core; anything else (and
    // anything wrong) as one text, which locates the error.
    let fast = (text.len() >= super::split::MIN_SPLIT_BYTES).then(|| super::split::parse(text, parse_threads()));
    let state: State = match fast.flatten() {
        Some(state) => state,
        None => serde_json::from_str(text).map_err(|e| {
            Diagnostic::new(format!("the state file is damaged: {}", strip_position(&e.to_string())))
                .at(Some(source.location_at(e.line(), e.column())))
                .hint(format!(
                    "restore it from git or from state/{BACKUPS_DIR}/{env}/ (`enact history` lists the backups)"
                ))
        })?,
    };
    if state.format_version > STATE_FORMAT_VERSION {
        return Err(Diagnostic::new(format!(
            "the state has formatVersion {}, newer than this enact understands ({STATE_FORMAT_VERSION})",
            state.format_version
        ))
        .in_file(display)
        .hint("upgrade enact")
        .into());
    }
    if state.env != env {
        return Err(Diagnostic::new(format!("the state file records env `{}`, not `{env}`", state.env))
            .in_file(display)
            .hint("was the file copied from another environment? restore the right one from git")
            .into());
    }
    Ok(state)
}

/// How many threads parse a large state: the cores there are, at most 8.
fn parse_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8)
}

/// States as files under a config repository's `state/`.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    /// How paths are shown in messages (relative to the config repository).
    display_prefix: PathBuf,
    /// Backups as plain hard-linked copies (`<serial>.json`) instead of compressed.
    plain_backups: bool,
    /// The backup [`FileStore::prepare_backup`] is compressing, shared by the clones.
    prepared: Arc<Mutex<Option<Prepared>>>,
}

impl FileStore {
    /// The states under `dir` (the `state/` directory of a config repository).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore {
            dir: dir.into(),
            display_prefix: PathBuf::from("state"),
            plain_backups: false,
            prepared: Arc::default(),
        }
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

    /// Starts compressing the backup of `current` (the state on record, as read) on a background
    /// thread, so that the [`StateStore::write`] replacing it only has to rename a finished file.
    /// A command that holds the lock calls it once it knows the state it starts from; the write
    /// takes the prepared file only if the state file still holds the very bytes it compressed.
    /// Dropping the store (the last clone) cancels an unused one and removes its temporary file.
    /// Nothing to do for a state never written, or with [`FileStore::with_plain_backups`].
    pub fn prepare_backup(&self, env: &str, current: &State) {
        if self.plain_backups || current.lineage.is_empty() {
            return;
        }
        // One that a write left to finish goes into place first: the new one may build on it.
        self.finish_backup();
        let cancel = Arc::new(AtomicBool::new(false));
        let (path, dir, serial, lineage) =
            (self.path(env), self.backup_dir(env), current.serial, current.lineage.clone());
        let stop = Arc::clone(&cancel);
        let spawned = std::thread::Builder::new().name("backup".to_string()).spawn(move || {
            let text = fs::read(&path).ok()?;
            let bytes = backup::encode_backup(&dir, serial, &lineage, &text, &stop).ok()??;
            let tmp = dir.join(format!(".{}.prepared.tmp.{}", backup::file_name(serial), std::process::id()));
            write_synced(&tmp, &bytes).ok()?;
            Some(Ready { tmp, hash: content_hash(&text) })
        });
        let Ok(handle) = spawned else {
            return; // no thread: the write compresses on the spot
        };
        let prepared = Prepared {
            env: env.to_string(),
            serial,
            lineage: current.lineage.clone(),
            cancel,
            handle: Some(handle),
            commit: None,
        };
        *self.prepared.lock().unwrap_or_else(PoisonError::into_inner) = Some(prepared);
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

    fn backup_dir(&self, env: &str) -> PathBuf {
        self.dir.join(BACKUPS_DIR).join(env)
    }

    fn display(&self, env: &str) -> PathBuf {
        self.display_prefix.join(format!("{env}.json"))
    }

    /// How a backup's path is shown: under the state directory as the user knows it.
    fn display_backup(&self, env: &str, path: &Path) -> PathBuf {
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        self.display_prefix.join(BACKUPS_DIR).join(env).join(name)
    }

    /// The text of the state file, if there is one.
    fn read_text(&self, env: &str) -> Result<Option<String>> {
        let path = self.path(env);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { action: "read", path, source: e }),
        }
    }

    /// Keeps `text`, the state file holding `current`, as the backup of its serial: a hard link
    /// with [`FileStore::with_plain_backups`]; else the file [`FileStore::prepare_backup`]
    /// compressed, if it holds these very bytes: renamed into place when it is ready, or, while
    /// it is still being made, a plain hard link now that the compressed file replaces when it
    /// is ready (at the latest when the store is dropped: the command's exit waits for it);
    /// else compressed now. Whatever the moment of a crash, the backup of the serial is whole
    /// under its name: plain, compressed, or both.
    fn back_up(&self, env: &str, current: &Head, text: &str) -> Result<()> {
        let dir = self.backup_dir(env);
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let mut slot = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        // A prepared backup of another serial commits (or is cancelled) here.
        let prepared =
            slot.take().filter(|p| p.env == env && p.serial == current.serial && p.lineage == current.lineage);
        let plain = dir.join(backup::plain_file_name(current.serial));
        let link = || {
            let path = self.path(env);
            let _ = fs::remove_file(&plain);
            fs::hard_link(&path, &plain)
                .or_else(|_| fs::copy(&path, &plain).map(drop))
                .map_err(Error::io("back up", &path))
        };
        if self.plain_backups {
            return link();
        }
        let target = dir.join(backup::file_name(current.serial));
        // A state file put back at a serial that has a backup already (from git, say): the
        // backup stays if it holds the same text, so deltas made against it stay readable.
        let same = target.exists()
            && BackupReader::new(self, env)
                .text(&Backup { serial: current.serial, path: target.clone() })
                .is_ok_and(|kept| kept == text);
        if same {
            drop(prepared);
        } else {
            let hash = content_hash(text.as_bytes());
            match prepared {
                Some(mut p) if !p.is_finished() => {
                    link()?;
                    p.commit = Some(Commit { target, plain: plain.clone(), hash });
                    *slot = Some(p);
                    return Ok(());
                }
                Some(mut p) => match p.finish() {
                    // The directory is not synced here, to keep it off the write's path (as the
                    // hard link of plain backups never was): the file is whole once renamed.
                    Some(ready) if ready.hash == hash => commit(&ready.tmp, &target, false)?,
                    stale => {
                        if let Some(stale) = stale {
                            let _ = fs::remove_file(&stale.tmp);
                        }
                        self.compress_now(&dir, current, text, &target)?;
                    }
                },
                None => self.compress_now(&dir, current, text, &target)?,
            }
        }
        match fs::remove_file(&plain) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", &plain)(e)),
            _ => Ok(()),
        }
    }

    /// Compresses the backup of `current` on the spot and writes it atomically to `target`.
    fn compress_now(&self, dir: &Path, current: &Head, text: &str, target: &Path) -> Result<()> {
        let never = AtomicBool::new(false);
        let bytes = backup::encode_backup(dir, current.serial, &current.lineage, text.as_bytes(), &never)
            .map_err(Error::io("compress the backup", target))?
            .unwrap_or_default();
        write_atomic(target, &bytes)
    }

    /// Waits for the backup [`FileStore::prepare_backup`] started, and puts it in place if a
    /// write left it to finish (else removes it): what dropping the store does. For a caller
    /// that wants the wait at a moment of its choosing (the benchmark times it).
    pub fn finish_backup(&self) {
        drop(self.prepared.lock().unwrap_or_else(PoisonError::into_inner).take());
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

/// Removes the temporary files (`.<name>.tmp.<pid>`) in `dir` whose process is gone: what a
/// write killed half-way left behind. Never a backup: those have no leading dot.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp.")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !crate::process::process_alive(pid, None) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A backup compressed ahead of the write that needs it ([`FileStore::prepare_backup`]).
#[derive(Debug)]
struct Prepared {
    env: String,
    serial: u64,
    lineage: String,
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<Option<Ready>>>,
    /// Set by a write that came before it was ready: where to put it then.
    commit: Option<Commit>,
}

/// A prepared backup, whole and synced under a temporary name.
#[derive(Debug)]
struct Ready {
    tmp: PathBuf,
    /// [`content_hash`] of the state file's bytes it holds.
    hash: u64,
}

/// Where a write left a prepared backup to go once ready.
#[derive(Debug)]
struct Commit {
    /// `<serial>.json.zst`.
    target: PathBuf,
    /// The plain hard link the write made meanwhile, removed once the target is in place.
    plain: PathBuf,
    /// [`content_hash`] of the text the write backed up.
    hash: u64,
}

impl Prepared {
    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the thread; its file, if it made one.
    fn finish(&mut self) -> Option<Ready> {
        self.handle.take().and_then(|h| h.join().ok().flatten())
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let pending = self.commit.take();
        if pending.is_none() {
            self.cancel.store(true, Ordering::Relaxed);
        }
        let ready = self.finish();
        let Some(pending) = pending else {
            if let Some(ready) = ready {
                let _ = fs::remove_file(&ready.tmp);
            }
            return;
        };
        // The prepared file if it holds what the write backed up, else the plain link
        // compressed now. The plain link stays if anything fails: readable either way.
        let placed = match ready {
            Some(ready) if ready.hash == pending.hash => commit(&ready.tmp, &pending.target, true).is_ok(),
            stale => {
                if let Some(stale) = stale {
                    let _ = fs::remove_file(&stale.tmp);
                }
                let dir = pending.target.parent().unwrap_or(Path::new("."));
                let never = AtomicBool::new(false);
                fs::read(&pending.plain).ok().is_some_and(|text| {
                    matches!(backup::encode_backup(dir, self.serial, &self.lineage, &text, &never),
                        Ok(Some(bytes)) if write_atomic(&pending.target, &bytes).is_ok())
                })
            }
        };
        if placed {
            let _ = fs::remove_file(&pending.plain);
        }
    }
}

/// Renames a finished (synced) temporary file into place, and syncs the directory if `sync`.
fn commit(tmp: &Path, target: &Path, sync: bool) -> Result<()> {
    fs::rename(tmp, target).map_err(|e| {
        let _ = fs::remove_file(tmp);
        Error::Io { action: "rename into place", path: target.to_path_buf(), source: e }
    })?;
    if sync { sync_dir(target.parent().unwrap_or(Path::new("."))) } else { Ok(()) }
}

/// Reads backups, keeping the last full backup a delta needed (a delta's reference).
struct BackupReader<'s> {
    store: &'s FileStore,
    env: &'s str,
    dir: PathBuf,
    /// The last reference read: its serial, id and text.
    cached: Option<(u64, String, Vec<u8>)>,
}

impl<'s> BackupReader<'s> {
    fn new(store: &'s FileStore, env: &'s str) -> Self {
        BackupReader { store, env, dir: store.backup_dir(env), cached: None }
    }

    fn read(&mut self, backup: &Backup) -> Result<State> {
        let text = self.text(backup)?;
        parse_state(&self.store.display_backup(self.env, &backup.path), &text, self.env)
    }

    /// The state text a backup holds.
    fn text(&mut self, backup: &Backup) -> Result<String> {
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

/// Writes `bytes` to a new file at `path` and syncs it (no rename).
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let result = File::create(path).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Syncs a directory, so that a rename in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("sync directory", dir))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        file.write_all(bytes).map_err(Error::io("write", &tmp))?;
        file.sync_all().map_err(Error::io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl StateStore for FileStore {
    fn read(&self, env: &str) -> Result<Option<State>> {
        match self.read_text(env)? {
            Some(text) => parse_state(&self.display(env), &text, env).map(Some),
            None => Ok(None),
        }
    }

    fn write(&self, state: &State) -> Result<State> {
        let text = self.read_text(&state.env)?;
        // What is replaced is checked by its lineage and serial; a file enact did not write
        // that way is read whole (and refused with its location if it is damaged).
        let current = match &text {
            Some(text) => match Head::of_written(text) {
                Some(head) => Some(head),
                None => Some(Head::of(&parse_state(&self.display(&state.env), text, &state.env)?)),
            },
            None => None,
        };
        let written = successor(current.as_ref(), state)?;
        if let (Some(current), Some(text)) = (&current, &text) {
            self.back_up(&state.env, current, text)?;
        }
        write_atomic(&self.path(&state.env), written.to_json().as_bytes())?;
        self.prune(&state.env)?;
        Ok(written)
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

/// An in-memory [`StateStore`] for unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    current: RefCell<BTreeMap<String, State>>,
    history: RefCell<BTreeMap<String, Vec<State>>>,
}

impl StateStore for MemoryStore {
    fn read(&self, env: &str) -> Result<Option<State>> {
        Ok(self.current.borrow().get(env).cloned())
    }

    fn write(&self, state: &State) -> Result<State> {
        let current = self.read(&state.env)?;
        let written = successor(current.as_ref().map(Head::of).as_ref(), state)?;
        if let Some(current) = current {
            let mut history = self.history.borrow_mut();
            let kept = history.entry(state.env.clone()).or_default();
            kept.push(current);
            if kept.len() > BACKUPS_KEPT {
                kept.remove(0);
            }
        }
        self.current.borrow_mut().insert(state.env.clone(), written.clone());
        Ok(written)
    }

    fn backups(&self, env: &str) -> Result<Vec<Backup>> {
        Ok(self
            .history
            .borrow()
            .get(env)
            .map(|states| states.iter().map(|s| Backup { serial: s.serial, path: PathBuf::new() }).collect())
            .unwrap_or_default())
    }

    fn read_serial(&self, env: &str, serial: u64) -> Result<State> {
        self.read(env)?
            .into_iter()
            .chain(self.history.borrow().get(env).into_iter().flatten().cloned())
            .find(|s| s.serial == serial)
            .ok_or_else(|| Error::msg(format!("env `{env}` has no recorded state with serial {serial}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_of_a_damaged_state_is_read_from_what_is_left_of_it() {
        assert_eq!(serial_in("{\"formatVersion\": 1, \"lineage\": \"x\", \"serial\": 17, \"env\": "), Some(17));
        assert_eq!(serial_in("{ \"serial\" :3}"), Some(3));
        assert_eq!(serial_in("{ \"formatVersion\": 1"), None);
    }

    fn exercise(store: &dyn StateStore) {
        assert_eq!(store.read("dev").unwrap(), None);
        let first = store.write(&State::empty("dev")).unwrap();
        assert_eq!(first.serial, 1);
        assert_eq!(first.lineage.len(), 36);
        let second = store.write(&first).unwrap();
        assert_eq!((second.serial, &second.lineage), (2, &first.lineage));
        // Writing from a stale serial is refused and changes nothing.
        let err = store.write(&first).unwrap_err().to_string();
        assert!(err.contains("derived from serial 1 but serial 2"), "{err}");
        let mut foreign = second.clone();
        foreign.lineage = "other".into();
        assert!(store.write(&foreign).is_err());
        assert_eq!(store.read("dev").unwrap(), Some(second));
        assert_eq!(store.read_serial("dev", 1).unwrap(), first);
        assert_eq!(store.backups("dev").unwrap().iter().map(|b| b.serial).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn the_largest_serial_is_never_followed_by_a_wrapped_one() {
        let store = MemoryStore::default();
        let mut last = store.write(&State::empty("dev")).unwrap();
        last.serial = u64::MAX;
        store.current.borrow_mut().insert("dev".into(), last.clone());
        let err = store.write(&last).unwrap_err().to_string();
        assert!(err.contains("18446744073709551615") && err.contains("wrap"), "{err}");
        assert_eq!(store.read("dev").unwrap(), Some(last), "nothing written");
    }

    #[test]
    fn memory_store_keeps_serial_and_lineage() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn file_store_keeps_serial_and_lineage() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&FileStore::new(dir.path()));
    }

    #[test]
    fn a_written_state_shows_its_head_in_its_first_lines_and_other_layouts_are_read_whole() {
        let mut state = State::empty("dev");
        state.lineage = "l-1".into();
        state.serial = 41;
        let text = state.to_json();
        assert_eq!(Head::of_written(&text), Some(Head { lineage: "l-1".into(), serial: 41 }));
        // Keys in another order, on one line, or nested values first: not guessed at.
        assert_eq!(Head::of_written(r#"{"serial": 41, "lineage": "l-1", "env": "dev"}"#), None);
        assert_eq!(Head::of_written("{\n  \"x\": {\"serial\": 1},\n  \"env\": \"dev\"\n}"), None);
        // A write still refuses a state derived from another serial, read from the head alone.
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let first = store.write(&State::empty("dev")).unwrap();
        let mut stale = first.clone();
        stale.serial = 0;
        assert!(store.write(&stale).is_err());
        assert_eq!(store.write(&first).unwrap().serial, 2);
    }

    #[test]
    fn file_store_keeps_the_last_hundred_backups_and_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let mut state = State::empty("prod");
        for _ in 0..105 {
            state = store.write(&state).unwrap();
        }
        let backups = store.backups("prod").unwrap();
        // The newest hundred, and the full backup of serial 1 that deltas 5 to 10 need.
        let serials: Vec<u64> = backups.iter().map(|b| b.serial).collect();
        assert_eq!(serials, [1].into_iter().chain(5..=104).collect::<Vec<_>>());
        for (backup, read) in store.read_backups("prod").unwrap() {
            assert_eq!(read.unwrap().serial, backup.serial);
        }
        // Once no delta needs it, it goes too.
        for _ in 0..6 {
            state = store.write(&state).unwrap();
        }
        let serials: Vec<u64> = store.backups("prod").unwrap().iter().map(|b| b.serial).collect();
        assert_eq!(serials, (11..=110).collect::<Vec<_>>());
        assert!(temporaries(dir.path()).is_empty());
        assert!(temporaries(&dir.path().join(".backups/prod")).is_empty());
    }

    fn temporaries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".tmp."))
            .collect()
    }

    /// `n` writes of `env` with a changing `appliedAt`; the states written, in order.
    fn history(store: &FileStore, env: &str, n: usize) -> Vec<State> {
        let mut state = store.read_or_empty(env).unwrap();
        let mut written = Vec::new();
        for i in 0..n {
            state.applied_at = Some(format!("write {i} of a history"));
            state = store.write(&state).unwrap();
            written.push(state.clone());
        }
        written
    }

    fn header_of(store: &FileStore, env: &str, serial: u64) -> backup::Header {
        backup::read_header(&store.backup_dir(env).join(backup::file_name(serial))).unwrap()
    }

    #[test]
    fn every_backup_reads_back_as_it_was_written_full_ones_every_ten_serials() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let written = history(&store, "dev", 25);
        for state in &written[..24] {
            assert_eq!(&store.read_serial("dev", state.serial).unwrap(), state);
        }
        let rows = store.read_backups("dev").unwrap();
        assert_eq!(rows.len(), 24);
        for ((backup, read), state) in rows.into_iter().zip(&written) {
            assert!(backup.is_compressed());
            assert_eq!(&read.unwrap(), state);
            let header = header_of(&store, "dev", backup.serial);
            assert_eq!((header.serial, header.lineage.as_str()), (state.serial, state.lineage.as_str()));
            // Serial 1 is the first backup: full; then a full one every ten serials.
            let full = (backup.serial - 1) % backup::GROUP_SERIALS == 0;
            assert_eq!(header.reference.is_none(), full, "serial {}", backup.serial);
            if let Some(reference) = header.reference {
                assert_eq!(reference.serial, backup.serial - (backup.serial - 1) % backup::GROUP_SERIALS);
            }
        }
    }

    #[test]
    fn plain_backups_written_before_are_read_beside_compressed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let plain = FileStore::new(dir.path()).with_plain_backups();
        let before = history(&plain, "dev", 4);
        let store = FileStore::new(dir.path());
        let after = history(&store, "dev", 3);
        let rows = store.read_backups("dev").unwrap();
        let compressed: Vec<(u64, bool)> = rows.iter().map(|(b, _)| (b.serial, b.is_compressed())).collect();
        assert_eq!(compressed, [(1, false), (2, false), (3, false), (4, true), (5, true), (6, true)]);
        for ((_, read), state) in rows.into_iter().zip(before.iter().chain(&after)) {
            assert_eq!(&read.unwrap(), state);
        }
        // A plain file beside a compressed one of the same serial: listed once, the compressed
        // one (both files go when the serial is rotated out).
        let backups = store.backup_dir("dev");
        fs::write(backups.join("0000000005.json"), "left over").unwrap();
        assert_eq!(store.backups("dev").unwrap().len(), 6);
        assert_eq!(store.read_serial("dev", 5).unwrap(), after[0]);
    }

    #[test]
    fn a_damaged_backup_is_reported_alone_and_a_damaged_full_one_names_its_deltas_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let written = history(&store, "dev", 16);
        let backups = store.backup_dir("dev");
        // A delta (serial 3) damaged in its compressed data; the full backup of serial 11
        // (deltas 12 to 15 were made against it) cut short.
        let delta = backups.join(backup::file_name(3));
        let mut bytes = fs::read(&delta).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        fs::write(&delta, bytes).unwrap();
        let full = backups.join(backup::file_name(11));
        let bytes = fs::read(&full).unwrap();
        fs::write(&full, &bytes[..bytes.len() / 2]).unwrap();

        let rows = store.read_backups("dev").unwrap();
        assert_eq!(rows.len(), 15);
        for (backup, read) in &rows {
            match backup.serial {
                3 | 11 => {
                    let err = read.as_ref().unwrap_err().to_string();
                    let name =
                        format!("state/.backups/dev/{}: the backup is damaged: ", backup::file_name(backup.serial));
                    assert!(err.starts_with(&name), "{err}");
                    assert!(err.contains("enact state restore SERIAL"), "{err}");
                }
                12..=15 => {
                    let err = read.as_ref().unwrap_err().to_string();
                    assert!(err.contains("compressed against the backup of serial 11, which is damaged"), "{err}");
                }
                serial => assert_eq!(read.as_ref().unwrap(), &written[serial as usize - 1]),
            }
        }
        // Rollback (`read_serial`) and restore refuse them, saying why; nothing is written.
        let err = store.read_serial("dev", 13).unwrap_err().to_string();
        assert!(err.contains("serial 11, which is damaged"), "{err}");
        let err = store.restore("dev", 3).unwrap_err().to_string();
        assert!(err.contains("the backup is damaged"), "{err}");
        assert_eq!(store.read("dev").unwrap().as_ref(), written.last());
        // The next backups do not build on the damaged full one: a new one is written.
        history(&store, "dev", 1);
        assert_eq!(header_of(&store, "dev", 16).reference, None);

        // A missing reference, and one replaced by another file of its serial, are named too.
        fs::remove_file(&full).unwrap();
        let err = store.read_serial("dev", 12).unwrap_err().to_string();
        assert!(err.contains("serial 11, which is missing"), "{err}");
        fs::copy(backups.join(backup::file_name(1)), &full).unwrap();
        let err = store.read_serial("dev", 12).unwrap_err().to_string();
        assert!(err.contains("holds serial 1") || err.contains("was replaced"), "{err}");
    }

    #[test]
    fn a_prepared_backup_is_renamed_into_place_and_never_read_half_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let written = history(&store, "dev", 3);
        let backups = store.backup_dir("dev");

        // Prepared, then written: the compressed file is the prepared one, no temporary is left.
        store.prepare_backup("dev", &written[2]);
        let next = history(&store, "dev", 1).remove(0);
        assert_eq!(store.read_serial("dev", 3).unwrap(), written[2]);
        store.finish_backup();
        assert_eq!(store.read_serial("dev", 3).unwrap(), written[2]);
        assert!(backups.join("0000000003.json.zst").exists() && !backups.join("0000000003.json").exists());
        assert!(temporaries(&backups).is_empty());

        // The state file changed by hand after the backup was prepared: the write backs up what
        // the file holds now, not what was prepared.
        store.prepare_backup("dev", &next);
        let mut edited = next;
        edited.applied_at = Some("edited by hand".to_string());
        fs::write(store.path("dev"), edited.to_json()).unwrap();
        history(&store, "dev", 1);
        assert_eq!(store.read_serial("dev", 4).unwrap(), edited);
        store.finish_backup();
        assert_eq!(store.read_serial("dev", 4).unwrap(), edited);
        assert!(backups.join("0000000004.json.zst").exists() && !backups.join("0000000004.json").exists());
        assert!(temporaries(&backups).is_empty());

        // Prepared but never written (a plan without changes): dropping the store removes it.
        let current = store.read("dev").unwrap().unwrap();
        let other = store.clone();
        other.prepare_backup("dev", &current);
        drop(other); // `store` shares it still
        drop(store);
        assert!(temporaries(&backups).is_empty());

        // What a killed write leaves: temporaries never listed, removed once their process is
        // gone, and a plain backup (the interrupted rename) read as such.
        let store = FileStore::new(dir.path());
        let dead = u32::MAX - 1;
        for name in [format!(".0000000006.json.zst.tmp.{dead}"), format!(".0000000006.json.zst.prepared.tmp.{dead}")] {
            fs::write(backups.join(name), b"half").unwrap();
        }
        let mine = format!(".0000000007.json.zst.tmp.{}", std::process::id());
        fs::write(backups.join(&mine), b"being written").unwrap();
        assert_eq!(store.backups("dev").unwrap().len(), 4);
        history(&store, "dev", 1);
        assert_eq!(temporaries(&backups), [mine]);
        assert_eq!(store.read_backups("dev").unwrap().into_iter().filter(|(_, r)| r.is_ok()).count(), 5);
    }

    #[test]
    fn a_backup_still_being_prepared_at_the_write_is_a_plain_link_until_it_is_ready() {
        // The thread read the state file before the write (the usual case), or after it (it
        // then holds the next state: the plain link is compressed when the store lets go).
        for read_late in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = FileStore::new(dir.path());
            let written = history(&store, "dev", 2);
            let backups = store.backup_dir("dev");
            // A prepared backup of serial 2 whose thread waits until it is told to go on.
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let (path, at, lineage) = (store.path("dev"), backups.clone(), written[1].lineage.clone());
            let handle = std::thread::spawn(move || {
                let early = fs::read(&path).ok()?;
                wait.recv().ok()?;
                let text = if read_late { fs::read(&path).ok()? } else { early };
                let bytes = backup::encode_backup(&at, 2, &lineage, &text, &AtomicBool::new(false)).ok()??;
                let tmp = at.join(format!(".0000000002.json.zst.prepared.tmp.{}", std::process::id()));
                write_synced(&tmp, &bytes).ok()?;
                Some(Ready { tmp, hash: content_hash(&text) })
            });
            *store.prepared.lock().unwrap() = Some(Prepared {
                env: "dev".into(),
                serial: 2,
                lineage: written[1].lineage.clone(),
                cancel: Arc::default(),
                handle: Some(handle),
                commit: None,
            });
            history(&store, "dev", 1);
            let (plain, compressed) = (backups.join("0000000002.json"), backups.join("0000000002.json.zst"));
            assert!(plain.exists() && !compressed.exists(), "the write did not wait: a plain link meanwhile");
            assert_eq!(store.read_serial("dev", 2).unwrap(), written[1]);
            go.send(()).unwrap();
            store.finish_backup();
            assert!(!plain.exists() && compressed.exists(), "then the compressed file replaces it");
            assert_eq!(store.read_serial("dev", 2).unwrap(), written[1], "read late: {read_late}");
            assert!(temporaries(&backups).is_empty());
        }
    }

    #[test]
    fn a_state_put_back_at_a_serial_keeps_the_backup_deltas_were_made_against() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let written = history(&store, "dev", 5);
        let id = header_of(&store, "dev", 1).id;
        // state/dev.json put back to serial 1 (from git, say), then applied again.
        fs::write(store.path("dev"), written[0].to_json()).unwrap();
        history(&store, "dev", 1);
        assert_eq!(header_of(&store, "dev", 1).id, id, "the same text: the file stays");
        for serial in [1, 3, 4] {
            assert_eq!(store.read_serial("dev", serial).unwrap(), written[serial as usize - 1]);
        }
    }

    #[test]
    fn the_file_is_deterministic_pretty_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let state = store.write(&State::empty("dev")).unwrap();
        let text = fs::read_to_string(store.path("dev")).unwrap();
        assert_eq!(text, state.to_json());
        assert!(text.ends_with("}\n") && text.contains("\n  \"serial\": 1,"));
    }

    #[test]
    fn a_damaged_state_names_file_line_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        fs::write(store.path("dev"), "{\n  \"formatVersion\": 1,\n  \"lineage\": oops\n}").unwrap();
        let err = store.read("dev").unwrap_err().to_string();
        assert!(err.starts_with("state/dev.json:3:"), "{err}");
        assert!(err.contains("restore it from git"), "{err}");
    }
}
