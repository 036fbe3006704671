//! Where states live. [`FileStore`] writes `state/<env>.json` atomically (temp, fsync, rename,
//! fsync of the directory) and keeps the states it replaces in `state/.backups/<env>/` (the last
//! [`BACKUPS_KEPT`]), compressed (see [`super::backup`]); [`MemoryStore`] is its fake for unit
//! tests.
//!
//! Depends on the state model and the leaves (diagnostic, error, the process checks).

mod backups;
mod file;
mod memory;
mod read;
mod write;

use std::fs::File;
use std::hash::BuildHasher as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::model::{STATE_FORMAT_VERSION, State};
use crate::diagnostic::{Diagnostic, SourceFile, strip_position};
use crate::error::Result;
pub use file::FileStore;
pub use memory::MemoryStore;
pub use write::write_atomic;

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
    ///
    /// # Errors
    /// The state cannot be read, is damaged (located at its line and column), is of a newer
    /// format, or records another environment.
    fn read(&self, env: &str) -> Result<Option<State>>;

    /// Records `state` as the successor of the state it was derived from: `state.serial` must be
    /// the serial on record (and the lineage the same); the written state has `serial + 1`, and a
    /// lineage is made for an environment applied the first time. Returns what was written.
    ///
    /// # Errors
    /// Another lineage or serial on record (nothing is written), a serial at its largest, the
    /// state on record damaged, or the filesystem.
    fn write(&self, state: &State) -> Result<State>;

    /// [`StateStore::write`] without the copy: on success `state` becomes what was written
    /// (its serial + 1, its lineage made if it had none, the current `formatVersion`); on an
    /// error it is left as it was.
    ///
    /// # Errors
    /// As [`StateStore::write`].
    fn write_in_place(&self, state: &mut State) -> Result<()> {
        *state = self.write(state)?;
        Ok(())
    }

    /// Backups of `env`, oldest first.
    ///
    /// # Errors
    /// The backup directory exists but cannot be listed.
    fn backups(&self, env: &str) -> Result<Vec<Backup>>;

    /// The state recorded at `serial`: the current one or a backup.
    ///
    /// # Errors
    /// No state of that serial is kept, or the one kept cannot be read (named, with why).
    fn read_serial(&self, env: &str, serial: u64) -> Result<State>;

    /// The state of `env`, or an empty one.
    ///
    /// # Errors
    /// As [`StateStore::read`].
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
    let fields = Successor::of(current, next)?;
    let mut written = next.clone();
    fields.fill(&mut written);
    Ok(written)
}

/// What a write changes in the state it records: the serial, the lineage of a first write,
/// the format version.
#[derive(Debug)]
struct Successor {
    serial: u64,
    /// A new lineage, for a state that has none and replaces nothing.
    lineage: Option<String>,
}

impl Successor {
    /// Checks that `next` may replace `current`.
    fn of(current: Option<&Head>, next: &State) -> Result<Successor> {
        let mut lineage = None;
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
                if next.lineage.is_empty() {
                    lineage = Some(new_lineage());
                }
            }
        }
        let serial = next.serial.checked_add(1).ok_or_else(|| {
            Diagnostic::new(format!(
                "refusing to write state of env `{}`: its serial is {}, the largest there is, and the next write \
                 would wrap it to 0",
                next.env, next.serial
            ))
            .hint("start a new history: move the state file away (its services keep running) and import or apply it again")
        })?;
        Ok(Successor { serial, lineage })
    }

    /// Sets these fields in `state`; returns what [`Successor::undo`] needs to set them back.
    fn fill(self, state: &mut State) -> Undo {
        let undo = Undo { serial: state.serial, format_version: state.format_version, lineage: self.lineage.is_some() };
        if let Some(lineage) = self.lineage {
            state.lineage = lineage;
        }
        state.serial = self.serial;
        state.format_version = STATE_FORMAT_VERSION;
        undo
    }
}

/// The fields of a state before [`Successor::fill`].
#[derive(Debug)]
struct Undo {
    serial: u64,
    format_version: u32,
    /// Whether the lineage was made (it was empty before).
    lineage: bool,
}

impl Undo {
    fn undo(self, state: &mut State) {
        state.serial = self.serial;
        state.format_version = self.format_version;
        if self.lineage {
            state.lineage.clear();
        }
    }
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
///
/// # Errors
/// Text that is not a state (located at its line and column), a newer `formatVersion`, or a
/// state of another environment than `env`.
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

#[cfg(test)]
mod tests;
