//! Instance logs on this machine: the log relay that writes and rotates them, reading their
//! tail across a rotation, and removing them.
//!
//! A local instance's stdout and stderr go to a pipe. Its reader, the relay, is this binary run
//! again as `enact __log-relay --max-bytes N --keep K -- PATH` (a command `--help` does not
//! list), started in the instance's session and process group. The relay appends what it reads
//! to `PATH` and rotates it when the next write would take it past N bytes: `PATH` becomes
//! `PATH.1`, `PATH.1` becomes `PATH.2`, … up to `PATH.K`, the oldest dropped; with K = 0 the file
//! is emptied instead. Rotation happens at a line end (a line longer than N bytes is cut at N),
//! so no file ever holds more than N bytes and an instance never has more than (K + 1) × N bytes
//! of log, whether enact runs or not.
//!
//! The relay never holds the instance up: one thread reads the pipe as fast as the instance
//! writes and hands what it read to a second thread that writes the file. When the writer falls
//! more than [`QUEUE_BYTES`] behind (a stalled disk), what does not fit is dropped, and the log
//! says how many bytes were lost, instead of the instance blocking on a full pipe. A write error
//! (a full disk) loses that output the same way; the relay goes on. It ignores SIGTERM, SIGINT
//! and SIGHUP, so stopping the instance's process group lets it write the instance's last lines;
//! it ends when every writer of the pipe has gone (end of file), or by SIGKILL. If the relay is
//! killed while the instance runs, the instance's next write to stdout or stderr fails with
//! EPIPE, which ends it if it keeps the default SIGPIPE action (an instance that ignores SIGPIPE,
//! as Python does, sees the error on its write); refresh then finds it gone and the next apply
//! replaces it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

use crate::repo::settings::LogCap;

/// The hidden command that runs the relay: `enact __log-relay …`.
pub const RELAY_COMMAND: &str = "__log-relay";

/// Bytes read from the pipe at a time.
const CHUNK: usize = 64 * 1024;

/// How far, in bytes, the file writer may fall behind the pipe reader before output is dropped
/// (8 MiB).
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// The relay's command line (after `__log-relay`).
#[derive(Debug, clap::Parser)]
#[command(name = RELAY_COMMAND, about = "Write stdin to a log file, rotating it by size (internal)")]
pub struct RelayArgs {
    /// Bytes one log file may hold.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    #[arg(long)]
    pub keep: u32,
    /// The log file, absolute.
    pub path: PathBuf,
}

/// The relay's command line for `log` under `cap`, without the program: `__log-relay
/// --max-bytes N --keep K -- PATH`.
pub fn relay_args(log: &Path, cap: LogCap) -> Vec<OsString> {
    vec![
        RELAY_COMMAND.into(),
        "--max-bytes".into(),
        cap.max_bytes.to_string().into(),
        "--keep".into(),
        cap.keep.to_string().into(),
        "--".into(),
        log.as_os_str().to_owned(),
    ]
}

/// Runs the relay: `args` are its command line, `__log-relay` first. Reads stdin until end of
/// file; exit code 0, or 2 for a bad command line (enact itself writes it, so that is a bug).
pub fn relay_main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match <RelayArgs as clap::Parser>::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    // Stopping the instance's process group must not end the relay before the instance's last
    // lines are written: it ends when the pipe closes.
    let ignored = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&ignored));
    }
    let input = match std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(_) => return ExitCode::from(2),
    };
    let cap = LogCap { max_bytes: args.max_bytes, keep: args.keep };
    relay(input, Rotator::open(&args.path, cap));
    ExitCode::SUCCESS
}

/// Output waiting for the writer.
#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: u64,
    closed: bool,
}

/// Copies `input` to `rotator` until end of file, never making the writer of `input` wait on
/// the file (see the module's documentation); returns once everything read is written.
pub fn relay(mut input: impl Read, rotator: Rotator) {
    let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
    // The rotator goes to the writer thread; when no thread can be made, this one writes (the
    // pipe may then fill while the disk stalls, as if the instance wrote the file itself).
    let slot = Arc::new(Mutex::new(Some(rotator)));
    let writer = {
        let (shared, slot) = (Arc::clone(&shared), Arc::clone(&slot));
        std::thread::Builder::new().name("log-writer".into()).spawn(move || {
            let taken = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some(mut rotator) = taken {
                write_queued(&shared, &mut rotator);
            }
        })
    };
    let mut inline = match &writer {
        Ok(_) => None,
        Err(_) => slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take(),
    };
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(rotator) = inline.as_mut() {
            rotator.write(&buffer[..n]);
            continue;
        }
        let (lock, ready) = &*shared;
        let mut queue = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.bytes + n > QUEUE_BYTES {
            queue.dropped += n as u64;
            continue;
        }
        // Small writes (a line each) are gathered into one chunk.
        match queue.chunks.back_mut() {
            Some(last) if last.len() + n <= CHUNK => last.extend_from_slice(&buffer[..n]),
            _ => queue.chunks.push_back(buffer[..n].to_vec()),
        }
        queue.bytes += n;
        ready.notify_one();
    }
    let (lock, ready) = &*shared;
    lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closed = true;
    ready.notify_one();
    if let Ok(handle) = writer {
        let _ = handle.join();
    }
}

/// The writer thread: writes what the reader queued until the reader is done and the queue
/// empty, noting output that was dropped.
fn write_queued(shared: &(Mutex<Queue>, Condvar), rotator: &mut Rotator) {
    let (lock, ready) = shared;
    loop {
        let (chunks, dropped, closed) = {
            let mut queue = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while queue.chunks.is_empty() && queue.dropped == 0 && !queue.closed {
                queue = ready.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            queue.bytes = 0;
            (std::mem::take(&mut queue.chunks), std::mem::take(&mut queue.dropped), queue.closed)
        };
        for chunk in &chunks {
            rotator.write(chunk);
        }
        if dropped > 0 {
            rotator.note_dropped(dropped);
        }
        if closed && chunks.is_empty() && dropped == 0 {
            rotator.flush_note();
            return;
        }
    }
}

/// `PATH.n`: the `n`th rotated file of the log at `path`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Writes one log file, rotating it by size (see the module's documentation).
#[derive(Debug)]
pub struct Rotator {
    path: PathBuf,
    cap: LogCap,
    /// The open file, with its device and inode; `None` when it could not be opened.
    file: Option<(File, (u64, u64))>,
    /// Bytes in the current file.
    size: u64,
    /// Output lost (dropped, or a failed write) not yet noted in the log.
    lost: u64,
}

impl Rotator {
    /// Opens (or creates) the log at `path` for appending. Rotated files past `cap.keep` (a cap
    /// lowered since) are removed and files larger than `cap.max_bytes` cut to their newest
    /// bytes, so the cap holds from the start. Problems are not fatal: output that cannot be
    /// written is counted and noted once writing works again.
    pub fn open(path: &Path, cap: LogCap) -> Rotator {
        let cap = LogCap { max_bytes: cap.max_bytes.max(1), keep: cap.keep };
        let mut rotator = Rotator { path: path.to_path_buf(), cap, file: None, size: 0, lost: 0 };
        let mut extra = cap.keep.saturating_add(1);
        while std::fs::remove_file(rotated(path, extra)).is_ok() {
            extra = extra.saturating_add(1);
        }
        for n in 1..=cap.keep {
            let _ = keep_newest(&rotated(path, n), cap.max_bytes);
        }
        rotator.reopen();
        if rotator.size > cap.max_bytes {
            if cap.keep == 0 {
                let _ = keep_newest(path, cap.max_bytes);
                rotator.reopen();
            } else {
                rotator.rotate();
                let _ = keep_newest(&rotated(path, 1), cap.max_bytes);
            }
        }
        rotator
    }

    /// Opens the file at the path again (it was rotated, removed or replaced by someone else).
    fn reopen(&mut self) {
        self.size = 0;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path).ok().and_then(|file| {
            let meta = file.metadata().ok()?;
            self.size = meta.len();
            Some((file, (meta.dev(), meta.ino())))
        });
    }

    /// Makes sure the open file is the one at the path.
    fn ensure_open(&mut self) {
        let current = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if current.is_none() || self.file.as_ref().map(|(_, id)| *id) != current {
            self.reopen();
        }
    }

    /// Appends `data`, rotating first whenever the next piece would take the file past the cap.
    pub fn write(&mut self, data: &[u8]) {
        self.ensure_open();
        if self.lost > 0 {
            self.flush_note();
        }
        let mut rest = data;
        while !rest.is_empty() {
            let room = usize::try_from(self.cap.max_bytes.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if rest.len() <= room {
                self.append(rest);
                break;
            }
            // Up to the last line end that fits; a line that does not fit starts a new file; one
            // longer than a whole file is cut.
            if let Some(end) = rest[..room].iter().rposition(|b| *b == b'\n') {
                self.append(&rest[..=end]);
                rest = &rest[end + 1..];
            } else if self.size == 0 {
                self.append(&rest[..room]);
                rest = &rest[room..];
            }
            self.rotate();
        }
    }

    fn append(&mut self, data: &[u8]) {
        match self.file.as_mut().map(|(file, _)| file.write_all(data)) {
            Some(Ok(())) => self.size += data.len() as u64,
            _ => self.lost += data.len() as u64,
        }
    }

    /// Counts output that never reached the relay (it was dropped while the writer lagged).
    fn note_dropped(&mut self, bytes: u64) {
        self.lost += bytes;
        self.flush_note();
    }

    /// Writes the note about lost output, if any was lost and the file takes writes again.
    fn flush_note(&mut self) {
        if self.lost == 0 {
            return;
        }
        let lost = std::mem::take(&mut self.lost);
        let note = format!(
            "[enact: {lost} bytes of this instance's output were lost (the log could not keep up, or a write failed)]\n"
        );
        self.write(note.as_bytes());
    }

    /// `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, …; with `keep` 0 the file is emptied.
    fn rotate(&mut self) {
        if self.cap.keep == 0 {
            if let Some((file, _)) = self.file.as_mut()
                && file.set_len(0).is_ok()
            {
                self.size = 0;
                return;
            }
            let _ = std::fs::remove_file(&self.path);
            self.reopen();
            return;
        }
        for n in (1..self.cap.keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
        }
        let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
        self.reopen();
    }
}

/// Cuts the file at `path` to its newest `max` bytes, from a line start when one is in them.
fn keep_newest(path: &Path, max: u64) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len <= max {
        return Ok(());
    }
    file.seek(SeekFrom::Start(len - max))?;
    let mut newest = Vec::new();
    file.take(max).read_to_end(&mut newest)?;
    let from = match newest.iter().position(|b| *b == b'\n') {
        Some(at) if at + 1 < newest.len() => at + 1,
        _ => 0,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".trim");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, &newest[from..])?;
    std::fs::rename(&partial, path)
}

/// The last `lines` lines of the log at `path`, reading on into `PATH.1`, `PATH.2`, … when the
/// current file has fewer (just after a rotation); lines joined by `\n`, without a final one.
/// Invalid UTF-8 is replaced.
///
/// # Errors
/// `PATH` cannot be read (it does not exist, say).
pub fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut need = lines;
    let mut n = 0;
    while need > 0 {
        let file = if n == 0 { path.to_path_buf() } else { rotated(path, n) };
        let (text, found) = match last_lines(&file, need) {
            Ok(found) => found,
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        };
        pieces.push(text);
        need -= found;
        n += 1;
    }
    let joined: Vec<String> = pieces
        .iter()
        .rev()
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p.strip_suffix(b"\n").unwrap_or(p)).into_owned())
        .collect();
    Ok(joined.join("\n"))
}

/// [`super::Provider::log_since`] for a log on this machine at `path`: what it gained since
/// `since`, or (`None`) its last `lines` lines, with the mark to read on from; a log rotated
/// since the mark is read on through the rotated files, back to the one the mark was in.
/// Invalid UTF-8 is replaced.
///
/// # Errors
/// `PATH` cannot be read (it does not exist, say).
pub fn read_since(
    path: &Path,
    since: Option<super::LogMark>,
    lines: usize,
) -> std::io::Result<(String, super::LogMark)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let now = super::LogMark { file: file.metadata()?.ino(), offset: len, head: head_of(&mut file, len)? };
    let mut text = Vec::new();
    let Some(mark) = since else {
        // The last lines up to the mark exactly, so that the next call neither repeats nor
        // skips a byte: from the current file, and from `PATH.1` when it has too few.
        file.seek(SeekFrom::Start(0))?;
        (&mut file).take(len).read_to_end(&mut text)?;
        let found = lines_in(&text);
        let kept = text.len() - last_lines_start(&text, lines);
        let mut out = String::new();
        if found < lines
            && let Ok(earlier) = tail(&rotated(path, 1), lines - found)
            && !earlier.is_empty()
        {
            out.push_str(&earlier);
            out.push('\n');
        }
        out.push_str(&String::from_utf8_lossy(&text[text.len() - kept..]));
        return Ok((out, now));
    };
    // Whether an open file is the one the mark was taken of: as long, and the same first bytes
    // (an inode number alone can be reused by the next file).
    let is_marked = |file: &mut File| -> std::io::Result<bool> {
        let len = file.metadata()?.len();
        Ok(len >= mark.offset && head_of(file, mark.offset)? == mark.head)
    };
    let mut from = mark.offset;
    if now.file != mark.file || !is_marked(&mut file)? {
        // Rotated since the mark: the file read is `PATH.k` now (renamed, as the log relay
        // rotates, or a copy, as an ssh host's watcher makes). The rest of it, then
        // `PATH.(k-1)` … `PATH.1` whole; when no kept file is it, it was rotated away unread.
        // Every kept file, newest first, each once: a rotation under way renames them one by
        // one (`PATH.k` to `PATH.(k+1)`, from the oldest), so a name can be missing for a moment
        // and a file can be met twice; the file open as the log is read on its own.
        // Renamed while this looks, a file can also move past the name just looked at: when
        // the file read is not found, it looks again (a rotation takes microseconds).
        let mut kept: Vec<(File, bool)> = Vec::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            kept.clear();
            let mut seen = vec![now.file];
            for n in 1..=MAX_FOLLOWED_ROTATIONS {
                let Ok(mut old) = File::open(rotated(path, n)) else { continue };
                let inode = old.metadata()?.ino();
                if seen.contains(&inode) {
                    continue;
                }
                seen.push(inode);
                let exact = inode == mark.file && is_marked(&mut old)?;
                kept.push((old, exact));
                if exact {
                    break;
                }
            }
            if kept.iter().any(|(_, exact)| *exact) {
                break;
            }
        }
        let k = kept.iter().position(|(_, exact)| *exact).or_else(|| {
            // A copy has another inode: the first kept file that is otherwise the one.
            kept.iter_mut().position(|(old, _)| is_marked(old).unwrap_or(false))
        });
        if k.is_none() {
            text.extend_from_slice(LOST.as_bytes());
        }
        let newest_first = kept.len();
        for (n, (old, _)) in kept.iter_mut().enumerate().take(k.map_or(newest_first, |k| k + 1)).rev() {
            let offset = if Some(n) == k { mark.offset } else { 0 };
            old.seek(SeekFrom::Start(offset))?;
            let len = old.metadata()?.len();
            old.take(len.saturating_sub(offset)).read_to_end(&mut text)?;
        }
        from = 0;
    }
    file.seek(SeekFrom::Start(from))?;
    file.take(len - from).read_to_end(&mut text)?;
    Ok((String::from_utf8_lossy(&text).into_owned(), now))
}

/// How many first bytes of a log say which file it is, with its inode ([`super::LogMark::head`]).
const HEAD_BYTES: u64 = 64;

/// A hash of the first `min(HEAD_BYTES, len)` bytes of `file`.
fn head_of(file: &mut File, len: u64) -> std::io::Result<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let mut head = Vec::with_capacity(64);
    file.seek(SeekFrom::Start(0))?;
    file.take(len.min(HEAD_BYTES)).read_to_end(&mut head)?;
    let mut hasher = std::hash::DefaultHasher::new();
    head.hash(&mut hasher);
    Ok(hasher.finish())
}

/// The line [`read_since`] gives where output was rotated away (past the files the cap keeps)
/// before it could be read.
pub const LOST: &str =
    "(enact: output rotated away before it was read: the log cap keeps less than was written meanwhile)\n";

/// The most rotated files [`read_since`] looks through for the file it was reading.
const MAX_FOLLOWED_ROTATIONS: u32 = 100;

/// How many lines `text` holds (a last one without its line end counts).
fn lines_in(text: &[u8]) -> usize {
    let ends = text.iter().filter(|b| **b == b'\n').count();
    if text.last().is_some_and(|b| *b != b'\n') { ends + 1 } else { ends }
}

/// Where the last `lines` lines of `text` start (0 when it has no more).
fn last_lines_start(text: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return text.len();
    }
    let scan = text.strip_suffix(b"\n").unwrap_or(text);
    scan.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(lines - 1).map_or(0, |(i, _)| i + 1)
}

/// The last `lines` lines of one file, read from its end, and how many there are (fewer when
/// the file has fewer).
fn last_lines(path: &Path, lines: usize) -> std::io::Result<(Vec<u8>, usize)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut tail: Vec<u8> = Vec::new();
    // Line ends seen, not counting one that ends the file.
    let mut ends = 0;
    let mut first = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let mut block = vec![0u8; usize::try_from(end - start).unwrap_or(CHUNK)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        let mut scan = block.len();
        if first {
            first = false;
            if block.last() == Some(&b'\n') {
                scan -= 1;
            }
        }
        if let Some(at) = block[..scan]
            .iter()
            .rev()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(lines - 1 - ends)
            .map(|(i, _)| scan - 1 - i)
        {
            block.drain(..=at);
            block.extend_from_slice(&tail);
            return Ok((block, lines));
        }
        ends += block[..scan].iter().filter(|b| **b == b'\n').count();
        block.extend_from_slice(&tail);
        tail = block;
        end = start;
    }
    let found = if tail.is_empty() { 0 } else { ends + 1 };
    Ok((tail, found))
}

/// Removes the log at `path` and its rotated files (`PATH.1`, `PATH.2`, …), and their directory
/// once it is empty. A file that is not there is no error.
///
/// # Errors
/// A file cannot be removed (permissions).
pub fn remove(path: &Path) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let name = name.to_string_lossy().into_owned();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        // `PATH`, `PATH.<n>`, and the `….trim` files a cut leaves when interrupted.
        let ours = file == name
            || file.strip_prefix(&name).and_then(|rest| rest.strip_prefix('.')).is_some_and(|suffix| {
                suffix
                    .split('.')
                    .next()
                    .is_some_and(|n| n == "trim" || (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
            });
        if ours {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max_bytes: u64, keep: u32) -> LogCap {
        LogCap { max_bytes, keep }
    }

    /// Sizes of `PATH`, `PATH.1`, … that exist, and whether any past `PATH.keep` does.
    fn sizes(path: &Path, keep: u32) -> Vec<u64> {
        let mut sizes = vec![std::fs::metadata(path).map_or(0, |m| m.len())];
        for n in 1..=keep + 2 {
            if let Ok(m) = std::fs::metadata(rotated(path, n)) {
                assert!(n <= keep, "{} exists past keep {keep}", rotated(path, n).display());
                sizes.push(m.len());
            }
        }
        sizes
    }

    /// Every line of `PATH.keep` … `PATH.1`, `PATH`, oldest first.
    fn all_lines(path: &Path, keep: u32) -> Vec<String> {
        let mut text = String::new();
        for n in (1..=keep).rev() {
            text.push_str(&std::fs::read_to_string(rotated(path, n)).unwrap_or_default());
        }
        text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn three_megabytes_through_a_256_kib_cap_keep_the_newest_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1.log");
        let (max, keep) = (256 * 1024, 3);
        let mut rotator = Rotator::open(&path, cap(max, keep));
        let mut written = 0;
        let mut n = 0;
        while written < 3_000_000 {
            let line = format!("line {n:08} {}\n", "x".repeat(n % 200));
            rotator.write(line.as_bytes());
            written += line.len();
            n += 1;
        }
        let sizes = sizes(&path, keep);
        assert_eq!(sizes.len(), 4, "{sizes:?}");
        assert!(sizes.iter().all(|s| *s <= max), "{sizes:?}");
        assert!(sizes.iter().sum::<u64>() <= u64::from(keep + 1) * max, "{sizes:?}");
        // The newest lines, whole and in order, across the files; the last one in `PATH`.
        let lines = all_lines(&path, keep);
        let numbers: Vec<usize> = lines.iter().map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap()).collect();
        assert_eq!(*numbers.last().unwrap(), n - 1);
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "lines are consecutive");
        assert!(lines.iter().all(|l| l.starts_with("line ")), "no line is cut");
        assert!(std::fs::read_to_string(&path).unwrap().ends_with(&format!(
            "line {:08} {}\n",
            n - 1,
            "x".repeat((n - 1) % 200)
        )));
        assert_eq!(tail(&path, 2).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_line_longer_than_the_cap_is_cut_and_keep_zero_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1.log");
        let mut rotator = Rotator::open(&path, cap(4096, 0));
        rotator.write(&[b'y'; 10_000]);
        rotator.write(b"\nlast\n");
        let text = std::fs::read(&path).unwrap();
        assert!(text.len() <= 4096, "{}", text.len());
        assert!(text.ends_with(b"last\n"));
        assert!(!rotated(&path, 1).exists());
    }

    #[test]
    fn a_cap_lowered_since_is_applied_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1.log");
        let big: String = (0..100_000).map(|i| format!("old {i}\n")).collect();
        std::fs::write(&path, &big).unwrap();
        for n in 1..=5 {
            std::fs::write(rotated(&path, n), &big).unwrap();
        }
        let mut rotator = Rotator::open(&path, cap(8192, 2));
        rotator.write(b"new\n");
        let sizes = sizes(&path, 2);
        assert!(sizes.iter().all(|s| *s <= 8192), "{sizes:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let previous = std::fs::read_to_string(rotated(&path, 1)).unwrap();
        assert!(previous.starts_with("old ") && previous.ends_with("old 99999\n"), "the newest old lines, whole");
    }

    #[test]
    fn a_log_removed_from_under_the_relay_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1.log");
        let mut rotator = Rotator::open(&path, cap(4096, 1));
        rotator.write(b"one\n");
        std::fs::remove_file(&path).unwrap();
        rotator.write(b"two\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
    }

    #[test]
    fn the_relay_copies_everything_until_end_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1.log");
        let input: Vec<u8> = (0..50_000).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        relay(std::io::Cursor::new(input.clone()), Rotator::open(&path, cap(1 << 20, 1)));
        assert_eq!(std::fs::read(&path).unwrap(), input);
    }

    /// Input that says when it has been read to its end.
    struct Signalling {
        data: std::io::Cursor<Vec<u8>>,
        done: Option<std::sync::mpsc::Sender<()>>,
    }

    impl Read for Signalling {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.data.read(buf)?;
            if n == 0
                && let Some(done) = self.done.take()
            {
                let _ = done.send(());
            }
            Ok(n)
        }
    }

    #[test]
    fn a_stalled_log_never_holds_the_writer_up_and_what_is_dropped_is_noted() {
        let dir = tempfile::tempdir().unwrap();
        // The log is a FIFO nobody reads yet: writing it blocks, like a disk that stalls.
        let path = dir.path().join("a-1.log");
        let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(made.success());
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut fifo = File::open(&path).unwrap();
                opened_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                let mut all = Vec::new();
                fifo.read_to_end(&mut all).unwrap();
                all
            })
        };
        let total = 4 * QUEUE_BYTES;
        let input: Vec<u8> = (0..).flat_map(|i: u64| format!("{i:015}\n").into_bytes()).take(total).collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let relaying = std::thread::spawn(move || {
            let rotator = Rotator::open(&path, cap(1 << 40, 0));
            relay(Signalling { data: std::io::Cursor::new(input), done: Some(done_tx) }, rotator);
        });
        opened_rx.recv().unwrap();
        // All of the input is read while the log takes nothing.
        done_rx.recv().unwrap();
        go_tx.send(()).unwrap();
        relaying.join().unwrap();
        let written = reader.join().unwrap();
        let text = String::from_utf8_lossy(&written);
        // Output may be dropped more than once (the writer takes the queue again between two
        // stalls), each time noted: together the notes name every byte that was lost.
        let notes: Vec<&str> = text.lines().filter(|l| l.starts_with("[enact: ")).collect();
        assert!(!notes.is_empty(), "a note says what was lost");
        let lost: usize = notes
            .iter()
            .map(|n| n["[enact: ".len()..].split_whitespace().next().unwrap().parse::<usize>().unwrap())
            .sum();
        let noted: usize = notes.iter().map(|n| n.len() + 1).sum();
        assert!(lost > 0 && lost <= total - QUEUE_BYTES, "{notes:?}");
        assert_eq!(written.len() - noted, total - lost, "everything else was written");
    }

    #[test]
    fn tail_reads_on_into_the_rotated_file_and_remove_takes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1.log");
        std::fs::write(rotated(&path, 2), "1\n2\n").unwrap();
        std::fs::write(rotated(&path, 1), "3\n4\n5\n").unwrap();
        std::fs::write(&path, "6\n7").unwrap();
        assert_eq!(tail(&path, 1).unwrap(), "7");
        assert_eq!(tail(&path, 2).unwrap(), "6\n7");
        assert_eq!(tail(&path, 4).unwrap(), "4\n5\n6\n7");
        assert_eq!(tail(&path, 100).unwrap(), "1\n2\n3\n4\n5\n6\n7");
        assert_eq!(tail(&path, 0).unwrap(), "");
        let long: String = (0..100_000).map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, &long).unwrap();
        assert_eq!(tail(&path, 3).unwrap(), "99997\n99998\n99999");
        let other = dir.path().join("a-10.log");
        std::fs::write(&other, "x").unwrap();
        std::fs::write(dir.path().join("a-1.log.1.trim"), "x").unwrap();
        remove(&path).unwrap();
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["a-10.log"]);
        assert!(tail(&path, 1).is_err());
        remove(&other).unwrap();
        assert!(!dir.path().exists(), "an emptied directory goes too");
    }
}
