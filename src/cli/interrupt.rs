//! Ctrl-C (SIGINT), SIGTERM and SIGHUP. A command that only reads stops at once. A command that
//! holds an environment's lock stops cleanly on the first signal: at a confirmation prompt it
//! answers "no" (nothing changed, lock released); during an apply no new step starts, running
//! steps finish within their timeouts, the state is written, the summary printed, the lock
//! released, and enact exits 128 + the signal's number, as a shell reports a process a signal
//! ended (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP). A second signal aborts at once with
//! the first one's code: the journal already covers every side effect, and the next command
//! recovers from it.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, mpsc};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The exit code of a command stopped by SIGINT (128 + 2, as shells report it); see
/// [`exit_code`] for the others.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The first signal that arrived (0: none yet).
static FIRST: AtomicI32 = AtomicI32::new(0);

/// Set by the first signal: checked by the executor before it starts a step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How many signals arrived.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many guards are alive: while any is, the first signal does not end the process.
static GUARDED: AtomicUsize = AtomicUsize::new(0);
/// Who waits for a signal (a confirmation prompt).
static WAITERS: Mutex<Vec<mpsc::Sender<()>>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Starts listening for SIGINT, SIGTERM and SIGHUP (once per process). When the signals cannot
/// be registered enact keeps their default behaviour.
pub fn install() {
    INSTALLED.get_or_init(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                on_signal(signal);
            }
        });
        drop(spawned);
    });
}

#[allow(clippy::print_stderr, reason = "a signal is answered on the terminal, whatever the command prints")]
fn on_signal(signal: i32) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = FIRST.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    let name = match signal {
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "interrupt",
    };
    if n == 1 && GUARDED.load(Ordering::SeqCst) > 0 {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *WAITERS.lock().unwrap_or_else(PoisonError::into_inner));
        for waiter in waiters {
            let _ = waiter.send(());
        }
        eprintln!(
            "\n{name}: stopping cleanly — no new step starts, running ones finish, the state is written \
             (again to abort at once)"
        );
        return;
    }
    if GUARDED.load(Ordering::SeqCst) > 0 {
        eprintln!("\n{name} again: aborting; the journal covers what was started, the next command recovers it");
    }
    std::process::exit(i32::from(exit_code()));
}

/// The exit code of a command a signal stopped: 128 + the number of the first signal that came
/// (the shells' convention: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), and
/// [`EXIT_INTERRUPTED`] when none came (a prompt whose input ended, say).
pub fn exit_code() -> u8 {
    match FIRST.load(Ordering::SeqCst) {
        0 => EXIT_INTERRUPTED,
        signal => u8::try_from(128 + signal).unwrap_or(EXIT_INTERRUPTED),
    }
}

/// While alive, the first signal asks the command to stop cleanly instead of ending the process.
#[derive(Debug)]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        GUARDED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A [`Guard`] for a command that holds an environment's lock.
pub fn guard() -> Guard {
    install();
    GUARDED.fetch_add(1, Ordering::SeqCst);
    Guard(())
}

/// Whether a signal asked the command to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Reads one line from stdin; `None` when a signal came first (or stdin closed).
pub fn read_line() -> Option<String> {
    if interrupted() {
        return None;
    }
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let (signal_tx, signal_rx) = mpsc::channel::<()>();
    WAITERS.lock().unwrap_or_else(PoisonError::into_inner).push(signal_tx);
    let reader = tx.clone();
    // The read cannot be woken by a signal; the thread is left behind if one comes first.
    let spawned = std::thread::Builder::new().name("prompt".into()).spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        let _ = reader.send(read.ok().filter(|n| *n > 0).map(|_| answer));
    });
    if spawned.is_err() {
        return None;
    }
    let forward = std::thread::spawn(move || {
        if signal_rx.recv().is_ok() {
            let _ = tx.send(None);
        }
    });
    drop(forward);
    let _ = std::io::stderr().flush();
    rx.recv().ok().flatten()
}
