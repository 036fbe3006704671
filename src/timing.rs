//! Phase timings, to see where a command's time goes: with `ENACT_TIMINGS=1` in the environment,
//! enact writes one line to stderr per phase and per remote operation,
//! `[timing +1.234 s] what (0.056 s) [rss 61.2 MiB] [cpu 80.3 ms]`: the time since the command
//! started, what was done, how long it took, the process's resident memory then (left out where
//! `/proc/self/statm` does not exist) and the CPU time all its threads have used since it
//! started. Off (and free: nothing is formatted) otherwise. A leaf: depends on nothing of enact.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When the command started (the first call to [`start`] or [`enabled`]).
static START: OnceLock<Instant> = OnceLock::new();
/// The process's CPU time then, in ms: the lines count CPU time from the same moment as wall
/// time (loading the program before `main` is left out of both).
static START_CPU: OnceLock<f64> = OnceLock::new();
/// Whether `ENACT_TIMINGS` is set (to anything but empty or `0`).
static ENABLED: OnceLock<bool> = OnceLock::new();

/// Starts the clock the lines are relative to; call it first thing in `main`.
pub fn start() {
    let _ = START.get_or_init(Instant::now);
    let _ = START_CPU.get_or_init(|| process_cpu_ms().unwrap_or(0.0));
    let _ = enabled();
}

/// Whether timing lines are written (`ENACT_TIMINGS` set, not empty and not `0`).
pub fn enabled() -> bool {
    *ENABLED.get_or_init(|| {
        let _ = START.get_or_init(Instant::now);
        std::env::var_os("ENACT_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// Writes `[timing +T s] what (D s)` when enabled; `took` is the phase's duration (left out when
/// `None`). `what` is only called when enabled.
pub fn mark(took: Option<Duration>, what: impl FnOnce() -> String) {
    if !enabled() {
        return;
    }
    let since = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let rss = resident_mib().map(|m| format!(" [rss {m:.1} MiB]")).unwrap_or_default();
    let cpu = cpu_ms().map(|ms| format!(" [cpu {ms:.1} ms]")).unwrap_or_default();
    let line = match took {
        Some(d) => format!("[timing +{since:.3} s] {} ({:.3} s){rss}{cpu}", what(), d.as_secs_f64()),
        None => format!("[timing +{since:.3} s] {}{rss}{cpu}", what()),
    };
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), format!("{line}\n").as_bytes());
}

/// The process's resident memory in MiB, from `/proc/self/statm` (its second field, in pages
/// of 4 KiB); `None` where that file does not exist or does not parse.
fn resident_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

/// The CPU time every thread of the process has used since [`start`], user and system time
/// together, in ms; `None` if the clock cannot be read. Against the wall-clock offset of the
/// same line it shows how many cores a phase kept busy.
fn cpu_ms() -> Option<f64> {
    let now = process_cpu_ms()?;
    Some(now - START_CPU.get().copied().unwrap_or(0.0))
}

/// The CPU time the process has used since it began, in ms
/// (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, POSIX); `None` if the clock cannot be read.
#[allow(unsafe_code)]
fn process_cpu_ms() -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live, writable `timespec`, all the call writes to.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    #[allow(clippy::cast_precision_loss, reason = "ms of CPU time, far below 2^52")]
    (read == 0).then(|| ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6)
}

/// Runs `work` and, when enabled, writes how long it took under `what`.
pub fn phase<T>(what: &str, work: impl FnOnce() -> T) -> T {
    if !enabled() {
        return work();
    }
    let begun = Instant::now();
    let result = work();
    mark(Some(begun.elapsed()), || what.to_string());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_clock_counts_the_work_done() {
        start();
        let before = cpu_ms().expect("the process CPU clock reads");
        // About 20 ms of work on this thread, that the optimizer cannot drop.
        let until = Instant::now() + Duration::from_millis(20);
        let mut spins: u64 = 0;
        while Instant::now() < until {
            spins = std::hint::black_box(spins + 1);
        }
        let after = cpu_ms().expect("the process CPU clock reads");
        assert!(after - before >= 10.0, "{before} ms then {after} ms after {spins} spins");
    }
}
