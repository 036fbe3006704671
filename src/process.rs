//! Process identity on this machine: whether a process id still names the process that was
//! started (and not another that reused the id), read from `/proc/<pid>/stat` (Linux, see
//! proc(5)).
//!
//! A leaf: it uses nothing of enact. The state lock (is its holder still alive?), the state
//! store (whose temporary file is left over?) and the local provider (is an instance still
//! running?) all ask it.

/// What `/proc/<pid>/stat` says of a process: the fields enact uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The process state (field 3): `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    /// The session id (field 6): equal to the pid for a session leader.
    pub session: u32,
    /// When the process started (field 22), in clock ticks since the machine booted: with the
    /// pid, what tells a process from a later one that reused its id.
    pub start_time: u64,
}

impl Stat {
    /// Whether the process is gone but not yet reaped (a zombie, `Z`, or dead, `X`).
    pub fn is_defunct(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// The fields of `/proc/<pid>/stat` enact uses; `None` when there is no such process (or the
/// file cannot be read, as on a system without `/proc`).
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state: ppid, pgrp, session (field 6), …, start time (field 22).
    let session = fields.nth(2)?.parse().ok()?;
    let start_time = fields.nth(15)?.parse().ok()?;
    Some(Stat { state, session, start_time })
}

/// The start time of a running process, in clock ticks since the machine booted (`/proc/<pid>/stat`
/// field 22); `None` when there is no such process.
pub fn start_time_of(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// Whether `pid` is still the process that was started, and not a zombie: when `start_time` is
/// given (clock ticks since boot, as [`start_time_of`] read it), a process with another start
/// time is another process that reused the id.
pub fn process_alive(pid: u32, start_time: Option<u64>) -> bool {
    stat(pid).is_some_and(|s| !s.is_defunct() && start_time.is_none_or(|t| t == s.start_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let started = start_time_of(me).expect("this process has a start time");
        assert!(process_alive(me, Some(started)));
        assert!(process_alive(me, None));
        assert!(!process_alive(me, Some(started + 1)));
        assert!(!process_alive(u32::MAX - 1, None));
        assert_eq!(start_time_of(u32::MAX - 1), None);
    }

    #[test]
    fn the_fields_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let me = std::process::id();
        let stat = stat(me).expect("stat");
        assert!(!stat.is_defunct());
        // The test process may or may not lead its session; the field agrees with the kernel's
        // own line, read the simple way here.
        let text = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let fields: Vec<&str> = text.rsplit_once(") ").unwrap().1.split(' ').collect();
        assert_eq!(stat.session.to_string(), fields[3]);
        assert_eq!(stat.start_time.to_string(), fields[19]);
    }
}
