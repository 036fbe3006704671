//! Where states live. [`FileStore`] writes `state/<env>.json` atomically (temp, fsync, rename,
//! fsync of the directory) and keeps the states it replaces in `state/.backups/<env>/` (the last
//! [`BACKUPS_KEPT`]); [`MemoryStore`] is its fake for unit tests.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::model::{STATE_FORMAT_VERSION, State};
use crate::diagnostic::{Diagnostic, SourceFile, strip_position};
use crate::error::{Error, Result};

pub const BACKUPS_KEPT: usize = 100;
pub const BACKUPS_DIR: &str = ".backups";

/// One recorded state kept as a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub serial: u64,
    pub path: PathBuf,
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

/// Checks that `next` may replace `current`, and fills in serial and lineage.
fn successor(current: Option<&State>, next: &State) -> Result<State> {
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
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore { dir: dir.into(), display_prefix: PathBuf::from("state") }
    }

    /// Paths in messages start with `display` (the state directory as the user knows it).
    pub fn with_display(mut self, display: impl Into<PathBuf>) -> Self {
        self.display_prefix = display.into();
        self
    }

    pub fn path(&self, env: &str) -> PathBuf {
        self.dir.join(format!("{env}.json"))
    }

    /// The state a backup holds.
    ///
    /// # Errors
    /// The backup cannot be read, or is damaged (located, like a damaged state).
    pub fn read_backup(&self, env: &str, backup: &Backup) -> Result<State> {
        let text = fs::read_to_string(&backup.path).map_err(Error::io("read", &backup.path))?;
        parse_state(&backup.path, &text, env)
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
        let current = self.read(env);
        let newest = backups.iter().map(|b| b.serial).max().unwrap_or(0);
        let replaced = current.as_ref().ok().and_then(|c| c.as_ref().map(|c| c.serial));
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
            Ok(Some(current)) => {
                let backup = dir.join(format!("{:010}.json", current.serial));
                fs::copy(&path, &backup).map_err(Error::io("back up", &path))?;
            }
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

    fn prune(&self, env: &str) -> Result<()> {
        let backups = self.backups(env)?;
        if backups.len() > BACKUPS_KEPT {
            for old in &backups[..backups.len() - BACKUPS_KEPT] {
                fs::remove_file(&old.path).map_err(Error::io("remove old backup", &old.path))?;
            }
        }
        Ok(())
    }
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
        File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("sync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl StateStore for FileStore {
    fn read(&self, env: &str) -> Result<Option<State>> {
        let path = self.path(env);
        match fs::read_to_string(&path) {
            Ok(text) => parse_state(&self.display(env), &text, env).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { action: "read", path, source: e }),
        }
    }

    fn write(&self, state: &State) -> Result<State> {
        let current = self.read(&state.env)?;
        let written = successor(current.as_ref(), state)?;
        let path = self.path(&state.env);
        if let Some(current) = &current {
            let dir = self.backup_dir(&state.env);
            fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
            let backup = dir.join(format!("{:010}.json", current.serial));
            let _ = fs::remove_file(&backup);
            fs::hard_link(&path, &backup)
                .or_else(|_| fs::copy(&path, &backup).map(drop))
                .map_err(Error::io("back up", &path))?;
        }
        write_atomic(&path, written.to_json().as_bytes())?;
        self.prune(&state.env)?;
        Ok(written)
    }

    fn backups(&self, env: &str) -> Result<Vec<Backup>> {
        let dir = self.backup_dir(env);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Io { action: "list", path: dir, source: e });
            }
        };
        let mut backups: Vec<Backup> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let serial = name.to_str()?.strip_suffix(".json")?.parse().ok()?;
                Some(Backup { serial, path: entry.path() })
            })
            .collect();
        backups.sort_by_key(|b| b.serial);
        Ok(backups)
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
        let text = fs::read_to_string(&backup.path).map_err(Error::io("read", &backup.path))?;
        parse_state(&backup.path, &text, env)
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
        let written = successor(current.as_ref(), state)?;
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
    fn file_store_keeps_the_last_hundred_backups_and_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let mut state = State::empty("prod");
        for _ in 0..105 {
            state = store.write(&state).unwrap();
        }
        let backups = store.backups("prod").unwrap();
        assert_eq!(backups.len(), BACKUPS_KEPT);
        assert_eq!(backups.first().map(|b| b.serial), Some(5));
        assert_eq!(backups.last().map(|b| b.serial), Some(104));
        let stray: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(stray.is_empty());
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
