//! A large file enact reads — a state file, `chor.json` — is mapped into memory while it is
//! parsed rather than read, from [`MAP_FROM_BYTES`] on: the text is the page cache's own pages,
//! so it is neither copied nor written into fresh memory the kernel must clear first. At
//! 100,000 services (a 128 MB state, a 44 MB spec) those two were a large part of a plan's
//! time. The apply session does not map the state: it keeps the text it read for the backup.
//!
//! A mapped file that another program truncates while it is read raises SIGBUS when a page past
//! its new end is touched. enact itself never rewrites a file in place (it writes a new file and
//! renames it over the old one, and the mapping keeps the old one), but an editor may: a
//! handler installed before the first mapping then ends the process with a message and exit
//! code 1 instead of a crash. A mapping lives only while its file is parsed, before the command
//! has changed anything. A leaf: depends on nothing of enact.

use std::fs::File;
use std::path::Path;
use std::sync::Once;

/// From this many bytes on, a file is mapped rather than read (below it, reading is as cheap
/// and needs no mapping).
pub const MAP_FROM_BYTES: u64 = 1 << 20;

/// What the process says, on stderr, when a mapped file was truncated under it.
const TRUNCATED: &[u8] = b"error: a file enact was reading (the state or chor.json) was rewritten in place by another \
program while enact read it; nothing was changed: run the command again\n";

/// Calls `work` with the text of the file at `path`, mapped ([`Mapped`]) from
/// [`MAP_FROM_BYTES`] on and read below that.
///
/// # Errors
/// What opening, mapping or reading the file returns (`NotFound` for a missing file), and
/// `InvalidData` for a text that is not UTF-8, as [`std::fs::read_to_string`] refuses it.
pub fn with_text<T>(path: &Path, work: impl FnOnce(&str) -> T) -> std::io::Result<T> {
    let file = File::open(path)?;
    if !file.metadata().is_ok_and(|meta| meta.is_file() && meta.len() >= MAP_FROM_BYTES) {
        return std::fs::read_to_string(path).map(|text| work(&text));
    }
    let mapped = Mapped::map(&file)?;
    let text =
        std::str::from_utf8(mapped.bytes()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(work(text))
}

/// A file mapped read-only into memory.
#[derive(Debug)]
pub struct Mapped(memmap2::Mmap);

impl Mapped {
    /// Maps `file` (opened for reading) into memory, after making sure a truncation under the
    /// mapping ends the process cleanly (a SIGBUS handler installed once).
    ///
    /// # Errors
    /// What mmap(2) returns.
    #[allow(unsafe_code)]
    pub fn map(file: &File) -> std::io::Result<Mapped> {
        exit_on_sigbus();
        // SAFETY: the mapping is read-only and private to this process. Its bytes change only if
        // another program writes the file in place while it is mapped (enact replaces state
        // files by rename, which leaves this mapping on the old file); a truncation then raises
        // SIGBUS, which `exit_on_sigbus` turns into a clean exit before any torn byte is used.
        unsafe { memmap2::MmapOptions::new().populate().map(file) }.map(Mapped)
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Installs, once, a SIGBUS handler that writes [`TRUNCATED`] to stderr and ends the process
/// with exit code 1 (both async-signal-safe calls). enact maps no other file, so a SIGBUS in it
/// can only be a mapped file cut short.
#[allow(unsafe_code)]
fn exit_on_sigbus() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        extern "C" fn on_sigbus(_signal: libc::c_int) {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; the message is static.
            unsafe {
                libc::write(libc::STDERR_FILENO, TRUNCATED.as_ptr().cast(), TRUNCATED.len());
                libc::_exit(1);
            }
        }
        let handler: extern "C" fn(libc::c_int) = on_sigbus;
        // SAFETY: `action` is a zeroed sigaction (a valid "no flags, empty mask" value) whose
        // handler has the signature sa_handler expects; sigaction only reads it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &raw const action, std::ptr::null_mut());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// The child's part: map a file, cut it short, touch its last page.
    const CHILD: &str = "ENACT_TEST_MAPPED_CHILD";

    #[test]
    fn a_mapped_file_cut_short_ends_the_process_with_a_message_not_a_crash() {
        if let Some(path) = std::env::var_os(CHILD) {
            let file = File::open(&path).unwrap();
            let mapped = Mapped::map(&file).unwrap();
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
            let last = std::hint::black_box(mapped.bytes()[mapped.bytes().len() - 1]);
            panic!("read {last} past the end of a truncated file");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.json");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![b' '; 64 * 1024]).unwrap();
        drop(file);
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "mapped::tests::a_mapped_file_cut_short_ends_the_process_with_a_message_not_a_crash"])
            .env(CHILD, &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("rewritten in place by another program while enact read it"), "{stderr}");
    }

    #[test]
    fn a_large_file_is_mapped_and_reads_as_a_small_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (small, large) = (dir.path().join("small.json"), dir.path().join("large.json"));
        std::fs::write(&small, "{\"é\": 1}\n").unwrap();
        let big = "x".repeat(usize::try_from(MAP_FROM_BYTES).unwrap()) + "é\n";
        std::fs::write(&large, &big).unwrap();
        assert_eq!(with_text(&small, str::to_string).unwrap(), "{\"é\": 1}\n");
        assert_eq!(with_text(&large, str::len).unwrap(), big.len());
        assert!(with_text(&large, |text| text == big).unwrap());
        // As read_to_string: a missing file is NotFound, a text that is not UTF-8 InvalidData.
        let missing = with_text(&dir.path().join("none.json"), str::len).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        let mut bad = big.into_bytes();
        bad.push(0xff);
        std::fs::write(&large, &bad).unwrap();
        assert_eq!(with_text(&large, str::len).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_mapped_file_reads_as_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.json");
        std::fs::write(&path, "{\"env\": \"dev\"}\n").unwrap();
        let mapped = Mapped::map(&File::open(&path).unwrap()).unwrap();
        assert_eq!(mapped.bytes(), b"{\"env\": \"dev\"}\n");
    }
}
