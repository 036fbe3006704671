//! One apply per environment: `state/<env>.lock`, created exclusively, records who holds it
//! (pid, host, user, time, command). A second apply fails at once naming the holder. A lock
//! whose process is gone (same host, pid not running) is taken over with a warning; any other
//! is removed only by `enact state unlock`. The format is docs/formats.md §8.
//!
//! Depends on leaves only (diagnostic, error, time, and the process checks).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::error::{Error, Result};

/// Who holds an environment's lock: the content of `state/<env>.lock` (docs/formats.md §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockInfo {
    /// The holder's process id (0 in the holder made up for an unreadable lock file).
    pub pid: u32,
    /// The holder's start time, so a reused pid does not keep a dead holder's lock alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// The holder's host name ([`hostname`]).
    pub host: String,
    /// The user who ran the holder: `$USER`, else `$LOGNAME`, else the name of the process's
    /// user id, else `uid N`.
    pub user: String,
    /// When the lock was taken, RFC 3339 UTC.
    pub time: String,
    /// The command that holds it, like `enact apply -e dev`.
    pub command: String,
}

/// A held lock; released (the file removed) when dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    /// Set when a stale lock was taken over, for the caller to show.
    pub took_over: Option<LockInfo>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The lock file of `env` in the state directory `dir`: `<dir>/<env>.lock`.
pub fn lock_path(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.lock"))
}

/// This machine's host name, as a lock records it: `/proc/sys/kernel/hostname`, else
/// `localhost`.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Who runs enact, for the lock: `USER`, else `LOGNAME`, else the name of the process's user
/// id (a cron job or a container often has neither variable), else `uid N`.
fn user() -> String {
    std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(user_of_uid)
}

/// The user name of the real user id, from the system's user database (`getpwuid_r`: files,
/// LDAP or whatever NSS is configured with).
#[allow(unsafe_code)]
fn user_of_uid() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `entry` and `found` are locals, `buffer` is
    // a live allocation whose length is passed; the strings `entry` points at live in `buffer`.
    let code = unsafe { libc::getpwuid_r(uid, &raw mut entry, buffer.as_mut_ptr(), buffer.len(), &raw mut found) };
    if code == 0 && !found.is_null() && !entry.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buffer`.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        if let Ok(name) = name.to_str()
            && !name.is_empty()
        {
            return name.to_string();
        }
    }
    format!("uid {uid}")
}

/// The holder of `env`'s lock, if any; a lock file that cannot be parsed is a holder with pid 0
/// whose command quotes the file's first characters.
///
/// # Errors
/// The lock file exists but cannot be read.
pub fn holder(dir: &Path, env: &str) -> Result<Option<LockInfo>> {
    let path = lock_path(dir, env);
    // Read as bytes: a damaged lock (not even UTF-8) still names itself, and can be removed.
    match fs::read(&path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).unwrap_or(LockInfo {
            pid: 0,
            start_time: None,
            host: "?".into(),
            user: "?".into(),
            time: "?".into(),
            command: format!("(unreadable lock file: {})", text.chars().take(60).collect::<String>()),
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { action: "read", path, source: e }),
    }
}

fn describe(env: &str, info: &LockInfo) -> String {
    format!(
        "env `{env}` is locked by pid {} of {} on {} since {}, running `{}`",
        info.pid, info.user, info.host, info.time, info.command
    )
}

/// Takes `env`'s lock for `command`, taking over one whose holder is gone (same host, pid not
/// running with its start time).
///
/// # Errors
/// Another live holder (named, with how to unlock), a lock that keeps changing, or the
/// filesystem.
pub fn acquire(dir: &Path, env: &str, command: &str) -> Result<Lock> {
    fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let path = lock_path(dir, env);
    let me = std::process::id();
    let info = LockInfo {
        pid: me,
        start_time: crate::process::start_time_of(me),
        host: hostname(),
        user: user(),
        time: crate::time::now_rfc3339(),
        command: command.to_string(),
    };
    let mut took_over = None;
    for _ in 0..3 {
        // Written in full beside the lock, then linked into place: the lock never exists
        // without its holder's details, and linking fails if it already exists.
        let tmp = dir.join(format!(".{env}.lock.{me}"));
        let text = serde_json::to_string_pretty(&info).unwrap_or_default();
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|mut file| file.write_all(text.as_bytes()).and_then(|()| file.sync_all()));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Io { action: "write", path: tmp, source: e });
        }
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                return Ok(Lock { path, took_over });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let Some(current) = holder(dir, env)? else {
                    continue;
                };
                let stale = current.host == info.host
                    && current.pid != 0
                    && !crate::process::process_alive(current.pid, current.start_time);
                if !stale {
                    return Err(Diagnostic::new(describe(env, &current))
                        .hint(format!(
                            "wait for it to finish; if that process is gone for good, run `enact -e {env} state unlock`"
                        ))
                        .into());
                }
                // The holder died without releasing it: take it over.
                let _ = fs::remove_file(&path);
                took_over = Some(current);
            }
            Err(e) => {
                return Err(Error::Io { action: "create lock", path, source: e });
            }
        }
    }
    Err(Diagnostic::new(format!("could not take the lock of env `{env}`: it keeps changing"))
        .hint("another enact is starting on this environment; try again")
        .into())
}

/// Removes `env`'s lock whoever holds it; returns who held it.
///
/// # Errors
/// The lock file cannot be read or removed.
pub fn force_unlock(dir: &Path, env: &str) -> Result<Option<LockInfo>> {
    let current = holder(dir, env)?;
    if current.is_some() {
        let path = lock_path(dir, env);
        fs::remove_file(&path).map_err(Error::io("remove", &path))?;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_of_arbitrary_bytes_is_named_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(lock_path(dir.path(), "dev"), [0xff, 0xfe, b'{', 0x80, 0x00]).unwrap();
        let held = holder(dir.path(), "dev").unwrap().expect("a holder");
        assert!(held.command.starts_with("(unreadable lock file"), "{held:?}");
        // Not this host's live process: apply refuses (pid 0 is never taken over), unlock works.
        let err = acquire(dir.path(), "dev", "enact apply").unwrap_err().to_string();
        assert!(err.contains("unreadable lock file") && err.contains("state unlock"), "{err}");
        assert!(force_unlock(dir.path(), "dev").unwrap().is_some());
        assert!(holder(dir.path(), "dev").unwrap().is_none());
        drop(acquire(dir.path(), "dev", "enact apply").unwrap());
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = acquire(dir.path(), "dev", "enact apply").unwrap();
        let err = acquire(dir.path(), "dev", "enact apply").unwrap_err().to_string();
        assert!(err.contains(&format!("locked by pid {}", std::process::id())), "{err}");
        assert!(err.contains("running `enact apply`") && err.contains("state unlock"), "{err}");
        // Another environment is independent.
        let other = acquire(dir.path(), "prod", "enact apply").unwrap();
        drop(lock);
        drop(other);
        assert!(acquire(dir.path(), "dev", "enact apply").is_ok());
    }

    #[test]
    fn the_user_comes_from_the_uid_without_user_or_logname() {
        let name = user_of_uid();
        assert!(!name.is_empty() && name != "unknown", "{name}");
        // getpwuid_r agrees with the user database for this uid.
        let uid = fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).ok();
        if let (Some(uid), Ok(passwd)) = (uid, fs::read_to_string("/etc/passwd")) {
            let listed = passwd.lines().find(|l| l.split(':').nth(2) == Some(&uid.to_string()));
            if let Some(line) = listed {
                assert_eq!(Some(name.as_str()), line.split(':').next(), "{line}");
            }
        }
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let dead = LockInfo {
            pid: u32::MAX - 7,
            start_time: None,
            host: hostname(),
            user: "x".into(),
            time: "then".into(),
            command: "enact apply".into(),
        };
        fs::write(lock_path(dir.path(), "dev"), serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = acquire(dir.path(), "dev", "enact apply").unwrap();
        assert_eq!(lock.took_over, Some(dead));
    }

    #[test]
    fn another_hosts_lock_is_never_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LockInfo {
            pid: u32::MAX - 7,
            start_time: None,
            host: "elsewhere.example".into(),
            user: "x".into(),
            time: "then".into(),
            command: "enact apply".into(),
        };
        fs::write(lock_path(dir.path(), "dev"), serde_json::to_string(&remote).unwrap()).unwrap();
        assert!(acquire(dir.path(), "dev", "enact apply").is_err());
        assert_eq!(force_unlock(dir.path(), "dev").unwrap(), Some(remote));
        assert!(acquire(dir.path(), "dev", "enact apply").is_ok());
    }
}
