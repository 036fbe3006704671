//! The local provider: nodes are loopback addresses of this machine; an instance is a process in
//! its own session (so it outlives enact), its output in a log file written and rotated by its
//! log relay ([`super::logfile`]), forked from the instance before it execs, so it is in the
//! instance's session and process group. A stop returns once the relay has written the
//! instance's last lines and ended.
//!
//! Every environment of every config repository has a block of its own in 127.0.0.0/8 (4,095
//! addresses, picked by a hash of the repository's path and the environment's name), so two
//! repositories on one machine that use the same ports do not collide; an address where one of a
//! new node's ports is already held by some other process is passed over.
//!
//! A process is identified by its pid *and* its start time (from `/proc/<pid>/stat`): enact
//! signals a pid only while both match, so a pid reused by the kernel is never killed
//! ([`crate::process`]).
//!
//! Depends on the provider trait, the state, the spec and the leaves.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{LogPlace, NodeRequest, Provider, ProviderError, ProviderResult, StartRequest, Started};
use crate::process::{self, process_alive};
use crate::spec::endpoint::port_of;
use crate::state::{InstanceState, NewNode, NodeState};

/// The provider of a `local` account: nodes are loopback addresses of this machine, instances
/// its processes.
#[derive(Debug, Default)]
pub struct LocalProvider {
    /// The first block of loopback addresses new nodes are looked for in.
    block: u32,
}

/// Addresses per block (the block's first one, `.0` of it, is never handed out).
const BLOCK: u32 = 4096;
/// Blocks in 127.0.0.0/8; block 0 (127.0.0.1 and the addresses of older versions) is skipped.
const BLOCKS: u32 = (1 << 24) / BLOCK;

impl LocalProvider {
    /// A provider whose new nodes come from block 1 (tests).
    pub fn new() -> Self {
        LocalProvider { block: 1 }
    }

    /// The provider of environment `env` of the repository at `repo_root`.
    pub fn for_environment(repo_root: &Path, env: &str) -> Self {
        LocalProvider { block: block_of(repo_root, env) }
    }
}

/// The block of `env` of the repository at `repo_root`: 1–4095, by FNV-1a over the canonical
/// path and the name.
pub fn block_of(repo_root: &Path, env: &str) -> u32 {
    let root = repo_root.canonicalize().unwrap_or_else(|_| repo_root.to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in root.as_os_str().as_encoded_bytes().iter().chain(b"\0").chain(env.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    1 + u32::try_from(hash % u64::from(BLOCKS - 1)).unwrap_or(0)
}

/// The `n`th address of 127.0.0.0/8 (`127.0.0.0` + n).
fn address_at(n: u32) -> String {
    format!("127.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// Whether some process listens on `address:port`.
fn held(address: &str, port: u16) -> bool {
    port != 0 && super::port_answers(address, port)
}

/// What an instance takes from enact's own environment besides what [`StartRequest::environment`]
/// sets: where programs are, and the user's home (interpreters look for their settings there).
const INHERITED: [&str; 2] = ["PATH", "HOME"];

/// The descriptor an instance keeps its start marker on.
const MARKER_FD: i32 = 199;

/// Where the start marker of `token` lives while an instance is being started: a directory of
/// the user's own (`enact-starting-<uid>` in the temporary directory), so one user's markers
/// never stand in another's way.
fn marker_path(token: &str) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's user.
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    std::env::temp_dir().join(format!("enact-starting-{uid}")).join(token)
}

/// The interpreter a script's `#!` line names, when the script exists and that interpreter does
/// not (the kernel's "not found" for a missing interpreter reads like a missing package).
fn missing_interpreter(program: &Path) -> Option<String> {
    let head = std::fs::read(program).ok()?;
    let line = head.strip_prefix(b"#!")?.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let interpreter = line.split_whitespace().next()?.to_string();
    (!Path::new(&interpreter).exists()).then_some(interpreter)
}

/// The processes of this machine that carry `ENACT_LINEAGE=lineage` and lead their session.
fn tagged_processes(lineage: &str) -> Vec<super::Tagged> {
    let needle = format!("ENACT_LINEAGE={lineage}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(stat) = process::stat(pid) else { continue };
        if stat.session != pid || stat.is_defunct() {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if !vars.contains(&needle.as_bytes()) {
            continue;
        }
        let var = |name: &str| {
            vars.iter()
                .find_map(|v| v.strip_prefix(name.as_bytes()).and_then(|v| v.strip_prefix(b"=")))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        found.push(super::Tagged {
            pid,
            start_time: Some(stat.start_time),
            instance: var("INSTANCE_ID"),
            service: var("SERVICE_NAME"),
            host: var("HOST"),
            account: var("ENACT_ACCOUNT"),
        });
    }
    found
}

/// Whether `pid` runs the log relay (by its command line).
fn is_relay(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|b| *b == 0).any(|arg| arg == super::logfile::RELAY_COMMAND.as_bytes())
}

/// The log relays of the instance `group` (its pid). The relay is forked by the instance before
/// it execs, so it is the instance's child: `/proc/<pid>/task/<pid>/children` names it at the
/// cost of one file, whatever runs on the machine. Where the kernel has no such file, every
/// process of the group is looked at.
fn relays_of(group: u32) -> Vec<u32> {
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{group}/task/{group}/children")) {
        return children.split_whitespace().filter_map(|c| c.parse().ok()).filter(|&c| is_relay(c)).collect();
    }
    let mut relays = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return relays;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == group {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name: state, ppid, pgrp, …
        let pgrp = stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().nth(2)?.parse::<u32>().ok());
        if pgrp != Some(group) {
            continue;
        }
        if is_relay(pid) {
            relays.push(pid);
        }
    }
    relays
}

/// How long a stop waits for an instance's log relay to write the instance's last lines and end.
const RELAY_DRAIN: Duration = Duration::from_secs(2);

/// Waits until `relays` have ended, for [`RELAY_DRAIN`] at most (a child of the instance that
/// outlived it and still holds the pipe keeps its relay running).
fn wait_relays(relays: &[u32]) {
    let deadline = Instant::now() + RELAY_DRAIN;
    while relays.iter().any(|p| process_alive(*p, None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[allow(unsafe_code)]
fn signal_group(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid signals the process
    // group the instance leads (it was made a session leader at start), so children go too.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Makes the log's directory and checks the log can be written (the relay, which writes it,
/// could not say so); the log's absolute path (the relay runs in the instance's directory).
fn prepare_log(log: &Path) -> ProviderResult<std::path::PathBuf> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProviderError::new(format!("cannot create log directory {}: {e}", dir.display())))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ProviderError::new(format!("cannot open log {}: {e}", log.display())))?;
    std::path::absolute(log).map_err(|e| ProviderError::new(format!("cannot open log {}: {e}", log.display())))
}

/// How the log relay is executed, prepared before the fork: the fork must not allocate.
struct RelayExec {
    /// The program, argv and environment as C strings; the pointer arrays below point into them.
    strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `strings`, owned by the same value and never changed; they
// are only read (by execve, in the forked child).
#[allow(unsafe_code)]
unsafe impl Send for RelayExec {}
#[allow(unsafe_code)]
unsafe impl Sync for RelayExec {}

impl RelayExec {
    /// `/proc/self/exe __log-relay --max-bytes N --keep K -- LOG`, with an empty environment.
    /// `/proc/self/exe` is, in the forked child, this very binary, even if its file was
    /// replaced or removed since enact started.
    fn new(log: &Path, cap: crate::repo::settings::LogCap) -> ProviderResult<Self> {
        use std::os::unix::ffi::OsStrExt as _;
        let to_c = |s: &[u8]| {
            std::ffi::CString::new(s)
                .map_err(|_| ProviderError::new(format!("the log path {} holds a NUL byte", log.display())))
        };
        let mut strings = vec![to_c(b"/proc/self/exe")?, to_c(b"enact")?];
        for arg in super::logfile::relay_args(log, cap) {
            strings.push(to_c(arg.as_bytes())?);
        }
        let mut argv: Vec<*const libc::c_char> = strings[1..].iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        Ok(RelayExec { strings, argv, envp: vec![std::ptr::null()] })
    }

    fn program(&self) -> *const libc::c_char {
        self.strings[0].as_ptr()
    }

    fn argv(&self) -> *const *const libc::c_char {
        self.argv.as_ptr()
    }

    fn envp(&self) -> *const *const libc::c_char {
        self.envp.as_ptr()
    }
}

/// Hands a child to the one reaper thread, which collects it once it exits (so it never lingers
/// as a zombie while enact runs). One thread for every child, rather than one thread per child:
/// it looks at the children it holds every [`REAP_EVERY`].
#[allow(unsafe_code)]
fn reap_later(pid: u32) {
    static REAPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<u32>>> = std::sync::OnceLock::new();
    let sender = REAPER.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<u32>();
        let reaper = move || {
            let mut children: Vec<libc::pid_t> = Vec::new();
            let mut swept = Instant::now();
            loop {
                // A new child, a tick (None), or the end (Err).
                let next = if children.is_empty() {
                    receiver.recv().map(Some).map_err(drop)
                } else {
                    match receiver.recv_timeout(REAP_EVERY.saturating_sub(swept.elapsed())) {
                        Ok(pid) => Ok(Some(pid)),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
                    }
                };
                match next {
                    Ok(Some(pid)) => children.extend(libc::pid_t::try_from(pid)),
                    Ok(None) => {}
                    Err(()) => return,
                }
                if swept.elapsed() >= REAP_EVERY {
                    // SAFETY: waitpid(2) with WNOHANG on our own children touches no memory of
                    // ours but the status word; 0 means the child still runs.
                    children.retain(|&pid| unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0);
                    swept = Instant::now();
                }
            }
        };
        std::thread::Builder::new().name("enact-reaper".into()).spawn(reaper).ok().map(|_| sender)
    });
    if let Some(sender) = sender {
        let _ = sender.send(pid);
    }
}

/// How often the reaper looks at the children it holds.
const REAP_EVERY: Duration = Duration::from_millis(200);

impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn create_nodes(&self, nodes: &[NewNode], request: &NodeRequest<'_>) -> ProviderResult<Vec<NodeState>> {
        let mut used = request.taken.clone();
        // Addresses from the environment's block on (then the blocks after it), skipping each
        // block's `.0`.
        let mut candidates = (0..BLOCKS - 1)
            .map(|i| 1 + (self.block - 1 + i) % (BLOCKS - 1))
            .flat_map(|b| (1..BLOCK).map(move |n| b * BLOCK + n));
        let mut made = Vec::with_capacity(nodes.len());
        for node in nodes {
            let address = loop {
                let Some(n) = candidates.next() else {
                    return Err(ProviderError::new("no free loopback address is left in 127.0.0.0/8"));
                };
                let candidate = address_at(n);
                if used.contains(&candidate) || node.ports.iter().any(|p| held(&candidate, *p)) {
                    continue;
                }
                break candidate;
            };
            used.insert(address.clone());
            made.push(NodeState {
                account: node.account.clone(),
                provider: "local".into(),
                address,
                memory: Some(node.memory),
                size: Some(node.size.clone()),
                provider_id: None,
                spare: false,
            });
        }
        Ok(made)
    }

    fn destroy_node(&self, _id: &str, _node: &NodeState) -> ProviderResult<()> {
        Ok(())
    }

    #[allow(unsafe_code)]
    fn start(&self, request: &StartRequest<'_>) -> ProviderResult<Started> {
        let port = port_of(request.spec);
        let address = format!("{}:{port}", request.node.address);
        if let Ok(addr) = address.parse::<SocketAddr>()
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return Err(ProviderError::new(format!(
                "{address} is already in use by another process; stop it, or give the service another port"
            )));
        }
        let package = match &request.package {
            super::Package::Path(path) => path.to_string_lossy().into_owned(),
            super::Package::Url(url) => super::package::fetch_cached(url, &request.cache_dir)?,
            super::Package::None => {
                return Err(ProviderError::new("the local provider needs a package to run"));
            }
        };
        let command =
            super::command_for(request.settings, request.spec, &package, &request.node.address, request.instance_id)?;
        let Some((program, args)) = command.split_first() else {
            return Err(ProviderError::new("the package type's start command is empty"));
        };
        let log = prepare_log(&request.log)?;
        let relay = RelayExec::new(&log, request.log_cap)?;
        let mut command = Command::new(program);
        // A clean environment: enact's own (cloud credentials, tokens) never reaches a service.
        // Its stdout and stderr become the log relay's pipe once it is forked (below).
        command
            .env_clear()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(request.environment());
        for inherited in INHERITED {
            if let Some(value) = std::env::var_os(inherited) {
                command.env(inherited, value);
            }
        }
        if let Some(dir) = Path::new(program).parent().filter(|d| d.is_dir()) {
            command.current_dir(dir);
        }
        // A marker the child holds open from the moment it is forked (its environment only
        // shows the token once it execs): an apply killed in between still finds it.
        let marker = marker_path(request.token);
        if let Some(dir) = marker.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let marker_file = std::fs::File::create(&marker)
            .map_err(|e| ProviderError::new(format!("cannot create {}: {e}", marker.display())))?;
        let marker_fd = std::os::fd::AsRawFd::as_raw_fd(&marker_file);
        // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, setsid, pipe2,
        // fork, dup2, close, execve, _exit), on memory prepared before the fork (`relay`), and
        // nothing is allocated. setsid makes the instance a session leader so it outlives enact
        // and can be stopped as a group; the relay is forked from it, so it is in that session
        // and process group, with the pipe's read end as its stdin and neither the token nor
        // the marker; the instance gets the write end as stdout and stderr; dup2 keeps the
        // marker open across exec (the original is close-on-exec).
        unsafe {
            command.pre_exec(move || {
                crate::pages::restore_in_child();
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut pipe = [0; 2];
                if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                match libc::fork() {
                    -1 => return Err(std::io::Error::last_os_error()),
                    0 => {
                        crate::pages::off_in_child();
                        libc::close(marker_fd);
                        libc::dup2(pipe[0], 0);
                        libc::execve(relay.program(), relay.argv(), relay.envp());
                        libc::_exit(127);
                    }
                    _ => {}
                }
                libc::dup2(pipe[1], 1);
                libc::dup2(pipe[1], 2);
                libc::close(pipe[0]);
                libc::close(pipe[1]);
                libc::dup2(marker_fd, MARKER_FD);
                Ok(())
            });
        }
        let spawned = command.spawn();
        // The child holds the marker open (and recovery finds it even once deleted); a failed
        // spawn leaves nothing behind.
        drop(marker_file);
        let _ = std::fs::remove_file(&marker);
        let child = spawned.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (is the package executable? `chmod +x` it, or give it a package type with a start recipe)"
            } else if e.kind() == std::io::ErrorKind::NotFound {
                if let Some(interpreter) = missing_interpreter(Path::new(program)) {
                    return ProviderError::new(format!(
                        "cannot start `{program}`: its first line names the interpreter `{interpreter}`, which does not exist on this machine; install it, fix the `#!` line, or give the service a package type whose recipe names the interpreter"
                    ));
                }
                " (no such program or package file)"
            } else {
                ""
            };
            ProviderError::new(format!("cannot start `{program}`: {e}{hint}"))
        })?;
        let pid = child.id();
        let start_time = process::start_time_of(pid);
        // Reap the child if it exits while enact still runs, so it never lingers as a zombie.
        reap_later(pid);
        Ok(Started { pid: Some(pid), start_time })
    }

    fn wait_healthy(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        port: u16,
        timeout: Duration,
    ) -> ProviderResult<()> {
        let address = format!("{}:{port}", node.address);
        let addr: SocketAddr =
            address.parse().map_err(|_| ProviderError::new(format!("`{address}` is not a socket address")))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = instance.pid
                && !process_alive(pid, instance.start_time)
            {
                return Err(ProviderError::new(format!(
                    "instance {} exited before it answered on {address}",
                    instance.id
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::new(format!(
                    "instance {} did not answer on {address} within {} s",
                    instance.id,
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self, instance: &InstanceState, _node: &NodeState, grace: Duration) -> ProviderResult<()> {
        let Some(pid) = instance.pid else {
            return Ok(());
        };
        // Its log relay ends once the instance has (end of file on its pipe); a stop returns
        // when the instance's last lines are in its log.
        let relays = relays_of(pid);
        let stopped = || {
            wait_relays(&relays);
            Ok(())
        };
        if !process_alive(pid, instance.start_time) {
            return stopped();
        }
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !process_alive(pid, instance.start_time) {
                return stopped();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid, instance.start_time) {
            signal_group(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !process_alive(pid, instance.start_time) {
                return stopped();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ProviderError::new(format!("instance {} (pid {pid}) did not stop after SIGKILL", instance.id)))
    }

    fn alive(&self, instance: &InstanceState, _node: &NodeState) -> bool {
        instance.pid.is_some_and(|pid| process_alive(pid, instance.start_time))
    }

    fn logs(
        &self,
        _instance: &InstanceState,
        _node: &NodeState,
        log: LogPlace<'_>,
        lines: usize,
    ) -> ProviderResult<String> {
        super::logfile::tail(log.local, lines).map_err(|e| log_error(log.local, &e))
    }

    fn follows_logs(&self) -> bool {
        true
    }

    fn log_since(
        &self,
        _instance: &InstanceState,
        _node: &NodeState,
        log: LogPlace<'_>,
        since: Option<super::LogMark>,
        lines: usize,
    ) -> ProviderResult<(String, super::LogMark)> {
        super::logfile::read_since(log.local, since, lines).map_err(|e| log_error(log.local, &e))
    }

    fn remove_logs(&self, _instance: &InstanceState, _node: &NodeState, log: LogPlace<'_>) -> ProviderResult<()> {
        let log = log.local;
        super::logfile::remove(log)
            .map_err(|e| ProviderError::new(format!("cannot remove the log {}: {e}", log.display())))
    }

    fn tagged(&self, _node: &NodeState, lineage: &str) -> ProviderResult<Vec<super::Tagged>> {
        Ok(tagged_processes(lineage))
    }

    fn find(&self, _node: &NodeState, token: &str) -> Option<Started> {
        let needle = format!("ENACT_TOKEN={token}");
        let marker = marker_path(token);
        let marker = marker.to_string_lossy();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let holds_marker = std::fs::read_dir(entry.path().join("fd")).into_iter().flatten().flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| {
                    let target = target.to_string_lossy();
                    target == marker || target.strip_suffix(" (deleted)") == Some(&*marker)
                })
            });
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if holds_marker || environ.split(|&b| b == 0).any(|var| var == needle.as_bytes()) {
                let stat = process::stat(pid)?;
                if stat.state != 'Z' {
                    return Some(Started { pid: Some(pid), start_time: Some(stat.start_time) });
                }
            }
        }
        None
    }
}

/// What a log on this machine that cannot be read is: missing, or why not.
fn log_error(log: &Path, e: &std::io::Error) -> ProviderError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ProviderError::new(format!("no log file at {}", log.display()))
    } else {
        ProviderError::new(format!("cannot read {}: {e}", log.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn new_node(id: &str, ports: &[u16]) -> NewNode {
        NewNode {
            id: id.into(),
            account: "local".into(),
            provider: "local",
            memory: crate::spec::Memory::Small,
            size: "SMALL".into(),
            address: None,
            provisioned: true,
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn each_environment_of_each_repository_has_its_own_block() {
        let a = block_of(Path::new("/srv/a"), "dev");
        assert_eq!(a, block_of(Path::new("/srv/a"), "dev"), "stable");
        assert_ne!(a, block_of(Path::new("/srv/b"), "dev"));
        assert_ne!(a, block_of(Path::new("/srv/a"), "prod"));
        assert!((1..BLOCKS).contains(&a));
        // Block 1's first address is 127.0.16.1; the `.0` of a block is skipped.
        let made = LocalProvider::new()
            .create_nodes(&[new_node("local-1", &[])], &NodeRequest { id: "r", taken: &BTreeSet::new() })
            .unwrap();
        assert_eq!(made[0].address, "127.0.16.1");
    }

    #[test]
    fn an_address_whose_port_another_process_holds_is_passed_over() {
        let provider = LocalProvider::new();
        let first = address_at(BLOCK + 1);
        let listener = std::net::TcpListener::bind((first.as_str(), 0)).expect("bind on loopback");
        let port = listener.local_addr().expect("address").port();
        let taken = BTreeSet::from([address_at(BLOCK + 2)]);
        let made = provider
            .create_nodes(
                &[new_node("local-1", &[port]), new_node("local-2", &[port])],
                &NodeRequest { id: "r", taken: &taken },
            )
            .unwrap();
        let addresses: Vec<&str> = made.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(addresses, vec![address_at(BLOCK + 3), address_at(BLOCK + 4)], "held by a listener, then taken");
    }

    #[test]
    fn the_one_reaper_collects_children_that_exit() {
        let pids: Vec<u32> =
            (0..3).map(|_| Command::new("/bin/sh").args(["-c", "exit 0"]).spawn().unwrap().id()).collect();
        for &pid in &pids {
            reap_later(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for pid in pids {
            // No zombie is left behind: the pid goes away once the reaper has collected it.
            while Path::new(&format!("/proc/{pid}")).exists() {
                assert!(Instant::now() < deadline, "pid {pid} was never reaped");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
