//! Transparent huge pages for enact's own memory: left as the system has them while enact plans,
//! turned off for the rest of the process once it works on ssh hosts, and turned back on for
//! the processes it starts.
//!
//! Why: the allocator asks the kernel for huge pages, which pays while a plan of thousands of
//! services fills tens of MB (fewer page faults), but the threads that wait on ssh hosts each
//! touch a little fresh memory, and every 2 MiB page one of them touches is cleared whole. On a
//! 2-core machine that clearing took 60–70% of enact's CPU during an ssh apply of 20 instances,
//! CPU the instances starting on the same machine needed. The switch is Linux's
//! `PR_SET_THP_DISABLE` (prctl(2)), the one mimalloc itself uses for `MIMALLOC_ALLOW_THP=0`;
//! it holds for the whole process, and children inherit it across fork and exec, so a child
//! enact starts as a service instance gets it back ([`restore_in_child`]), and the log relay of
//! a local instance, enact run again, starts with it off ([`off_in_child`]).
//!
//! A leaf: it uses nothing of enact. Elsewhere than Linux both calls do nothing.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process turned huge pages off itself (and so must turn them back on in its
/// children); false when they were off already (the user's choice, which children keep).
static TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// Turns transparent huge pages off for the rest of this process, unless they are off already.
/// Memory already mapped keeps its pages; what is touched from now on comes in 4 KiB pages.
/// Failure (an old kernel, a sandbox that refuses prctl) changes nothing: the pages stay as
/// they were, which costs time, not correctness.
pub fn small_pages_from_now() {
    #[cfg(target_os = "linux")]
    {
        if TURNED_OFF.load(Ordering::SeqCst) {
            return;
        }
        // PR_GET_THP_DISABLE: 1 when off already (then the children keep that), 0 when on.
        if thp_disable_flag() == Some(false) && set_thp_disable(true) {
            TURNED_OFF.store(true, Ordering::SeqCst);
        }
    }
}

/// Gives a child of this process the huge pages it would have had if [`small_pages_from_now`]
/// had not run. Async-signal-safe (one system call, no allocation): for `pre_exec`, between
/// fork and exec.
pub fn restore_in_child() {
    #[cfg(target_os = "linux")]
    if TURNED_OFF.load(Ordering::SeqCst) {
        set_thp_disable(false);
    }
}

/// Starts a child of this process (enact's own log relay) with huge pages off, whatever this
/// process has: it lives as long as its instance, one per local instance, and in 4 KiB pages
/// needs about 1 MiB of its own where huge pages made that about 5 MiB (the allocator's first
/// pages are touched before `main`, so the relay could not turn them off itself).
/// Async-signal-safe (one system call, no allocation): for the child between fork and exec.
pub fn off_in_child() {
    #[cfg(target_os = "linux")]
    set_thp_disable(true);
}

/// Whether huge pages are off for this process (`PR_GET_THP_DISABLE`); `None` when the kernel
/// does not say.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn thp_disable_flag() -> Option<bool> {
    // SAFETY: prctl(PR_GET_THP_DISABLE) reads a flag of the calling process; its other
    // arguments must be 0 and no memory is passed.
    let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    (flag >= 0).then_some(flag == 1)
}

/// Sets `PR_SET_THP_DISABLE` to `off`; whether the kernel took it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_thp_disable(off: bool) -> bool {
    // SAFETY: prctl(PR_SET_THP_DISABLE) sets a flag of the calling process; its last three
    // arguments must be 0 and no memory is passed. Async-signal-safe: a bare system call.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(off), 0, 0, 0) == 0 }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    /// What `/proc/<pid>/status` says of a process's huge pages (`THP_enabled:`).
    fn thp_enabled_of(status: &str) -> Option<String> {
        status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim().to_string())
    }

    #[test]
    #[allow(clippy::print_stderr, reason = "says why the test is skipped where the kernel does not tell")]
    fn huge_pages_go_off_here_and_come_back_in_a_child_started_with_the_restore() {
        if thp_disable_flag() != Some(false) {
            eprintln!("huge pages are off for this test process already, or the kernel does not say: skipped");
            return;
        }
        small_pages_from_now();
        assert_eq!(thp_disable_flag(), Some(true), "off for this process");
        let mine = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(thp_enabled_of(&mine).as_deref(), Some("0"));

        // A child inherits the flag unless it is given the pages back between fork and exec.
        let inherited = std::process::Command::new("cat").arg("/proc/self/status").output().unwrap();
        assert_eq!(thp_enabled_of(&String::from_utf8_lossy(&inherited.stdout)).as_deref(), Some("0"));
        let mut restored = std::process::Command::new("cat");
        restored.arg("/proc/self/status");
        // SAFETY: the closure makes one system call and allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            restored.pre_exec(|| {
                restore_in_child();
                Ok(())
            });
        }
        let restored = restored.output().unwrap();
        assert_eq!(thp_enabled_of(&String::from_utf8_lossy(&restored.stdout)).as_deref(), Some("1"));

        // A second call changes nothing.
        small_pages_from_now();
        assert_eq!(thp_disable_flag(), Some(true));
    }
}
