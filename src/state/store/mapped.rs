//! A state file of [`MAP_FROM_BYTES`] or more is mapped into memory while it is parsed rather
//! than read: the text is the page cache's own pages, so it is neither copied nor written into
//! fresh memory the kernel must clear first. At 100,000 services (a 128 MB state) those two were
//! a large part of a plan's time. The apply session does not map: it keeps the text it read for
//! the backup.
//!
//! A mapped file that another program truncates while it is read raises SIGBUS when a page past
//! its new end is touched. enact itself never rewrites a state file in place (it writes a new
//! file and renames it over the old one, and the mapping keeps the old one), but an editor may:
//! a handler installed before the first mapping then ends the process with a message and exit
//! code 1 instead of a crash. The mapping lives only while the file is parsed, before the
//! command has changed anything.

use std::fs::File;
use std::sync::Once;

/// From this many bytes on, a state file is mapped rather than read (below it, reading is as
/// cheap and needs no mapping).
pub const MAP_FROM_BYTES: u64 = 1 << 20;

/// What the process says, on stderr, when a mapped state file was truncated under it.
const TRUNCATED: &[u8] = b"error: the state file was rewritten in place by another program while enact read it; \
nothing was changed: run the command again\n";

/// A state file mapped read-only into memory.
#[derive(Debug)]
pub struct Mapped(memmap2::Mmap);

impl Mapped {
    /// Maps `file` (opened for reading) into memory, after making sure a truncation under the
    /// mapping ends the process cleanly ([`exit_on_sigbus`]).
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
/// with exit code 1 (both async-signal-safe calls). enact touches no other mapped file, so a
/// SIGBUS in it can only be a mapped state file cut short.
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
            .args([
                "--exact",
                "state::store::mapped::tests::a_mapped_file_cut_short_ends_the_process_with_a_message_not_a_crash",
            ])
            .env(CHILD, &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("rewritten in place by another program while enact read it"), "{stderr}");
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
