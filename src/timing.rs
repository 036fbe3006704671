//! Phase timings, to see where a command's time goes: with `ENACT_TIMINGS=1` in the environment,
//! enact writes one line to stderr per phase and per remote operation,
//! `[timing +1.234 s] what (0.056 s) [rss 61.2 MiB]`: the time since the command started, what
//! was done, how long it took, and the process's resident memory then (left out where
//! `/proc/self/statm` does not exist). Off (and free: nothing is formatted) otherwise. A leaf: depends on nothing of
//! enact.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When the command started (the first call to [`start`] or [`enabled`]).
static START: OnceLock<Instant> = OnceLock::new();
/// Whether `ENACT_TIMINGS` is set (to anything but empty or `0`).
static ENABLED: OnceLock<bool> = OnceLock::new();

/// Starts the clock the lines are relative to; call it first thing in `main`.
pub fn start() {
    let _ = START.get_or_init(Instant::now);
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
    let line = match took {
        Some(d) => format!("[timing +{since:.3} s] {} ({:.3} s){rss}", what(), d.as_secs_f64()),
        None => format!("[timing +{since:.3} s] {}{rss}", what()),
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
