//! The local provider: nodes are loopback addresses of this machine; an instance is a process in
//! its own session (so it outlives enact), its output in a log file.
//!
//! Every environment of every config repository has a block of its own in 127.0.0.0/8 (4,095
//! addresses, picked by a hash of the repository's path and the environment's name), so two
//! repositories on one machine that use the same ports do not collide; an address where one of a
//! new node's ports is already held by some other process is passed over.
//!
//! A process is identified by its pid *and* its start time (from `/proc/<pid>/stat`): enact
//! signals a pid only while both match, so a pid reused by the kernel is never killed.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Provider, ProviderError, ProviderResult, StartRequest, Started};
use crate::plan::placement::NewNode;
use crate::state::{InstanceState, NodeState};

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

/// State and start time of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

/// The start time of a running process (clock ticks since boot).
pub fn start_time_of(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// Whether `pid` is still the process that was started (same start time) and not a zombie.
pub fn process_alive(pid: u32, start_time: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some((state, started)) => state != 'Z' && state != 'X' && start_time.is_none_or(|t| t == started),
        None => false,
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

/// Starts `program` with `args`, detached: in a session of its own (it outlives enact and is
/// stopped as a group), with exactly `environment`, stdin from `/dev/null`, stdout and stderr
/// appended to `log`, the `marker` open on descriptor [`MARKER_FD`], in `dir` when given.
/// Returns its pid.
///
/// It is `posix_spawn(3)`: glibc creates the child without copying enact's memory (`vfork`
/// semantics), so a start costs the same however large enact is — `fork(2)`, which
/// `std::process::Command` needs for `setsid` and a descriptor of our choosing, copies the page
/// tables and every mapping of the parent, and an apply that starts N instances from N threads
/// grows by N thread stacks: that made starts quadratic in N.
///
/// # Errors
/// The program cannot be run (not found, not executable: the `io::Error` of the exec), a NUL
/// byte in an argument or variable, or the spawn itself fails.
#[allow(unsafe_code)]
fn spawn_detached(
    program: &str,
    args: &[String],
    environment: &[(String, std::ffi::OsString)],
    dir: Option<&Path>,
    log: &std::fs::File,
    marker: &std::fs::File,
) -> std::io::Result<u32> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd as _;
    use std::os::unix::ffi::OsStrExt as _;

    let c_string = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in the command or its environment")
        })
    };
    let check = |code: libc::c_int| if code == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(code)) };
    let path = c_string(program.as_bytes())?;
    let argv: Vec<CString> = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| c_string(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = environment
        .iter()
        .map(|(k, v)| c_string(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()?;
    let dir = dir.map(|d| c_string(d.as_os_str().as_bytes())).transpose()?;
    let pointers = |strings: &[CString]| -> Vec<*mut libc::c_char> {
        strings.iter().map(|s| s.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect()
    };
    let (argv, envp) = ((pointers(&argv), argv), (pointers(&envp), envp));

    /// File actions, destroyed on every path.
    struct Actions(libc::posix_spawn_file_actions_t);
    impl Drop for Actions {
        fn drop(&mut self) {
            // SAFETY: initialized by posix_spawn_file_actions_init, destroyed once.
            unsafe { libc::posix_spawn_file_actions_destroy(&raw mut self.0) };
        }
    }
    /// Attributes, destroyed on every path.
    struct Attributes(libc::posix_spawnattr_t);
    impl Drop for Attributes {
        fn drop(&mut self) {
            // SAFETY: initialized by posix_spawnattr_init, destroyed once.
            unsafe { libc::posix_spawnattr_destroy(&raw mut self.0) };
        }
    }

    // SAFETY: every pointer handed to libc points into a CString or a vector that outlives the
    // call, the argument and environment arrays end with a null pointer, the descriptors are
    // open files borrowed for the duration of the call, and the actions and attributes are
    // initialized before use and destroyed once (their Drop).
    unsafe {
        let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        let mut actions = Actions(actions.assume_init());
        if let Some(dir) = &dir {
            check(libc::posix_spawn_file_actions_addchdir_np(&raw mut actions.0, dir.as_ptr()))?;
        }
        check(libc::posix_spawn_file_actions_addopen(&raw mut actions.0, 0, c"/dev/null".as_ptr(), libc::O_RDONLY, 0))?;
        check(libc::posix_spawn_file_actions_adddup2(&raw mut actions.0, log.as_raw_fd(), 1))?;
        check(libc::posix_spawn_file_actions_adddup2(&raw mut actions.0, log.as_raw_fd(), 2))?;
        check(libc::posix_spawn_file_actions_adddup2(&raw mut actions.0, marker.as_raw_fd(), MARKER_FD))?;

        let mut attributes = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        check(libc::posix_spawnattr_init(attributes.as_mut_ptr()))?;
        let mut attributes = Attributes(attributes.assume_init());
        let flags =
            libc::c_int::from(libc::POSIX_SPAWN_SETSID) | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        let flags =
            libc::c_short::try_from(flags).map_err(|_| std::io::Error::other("posix_spawn flags out of range"))?;
        check(libc::posix_spawnattr_setflags(&raw mut attributes.0, flags))?;
        // No signal blocked, and SIGPIPE (which Rust programs ignore) back to its default, as
        // `std::process::Command` does.
        let mut signals = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(signals.as_mut_ptr());
        let mut signals = signals.assume_init();
        check(libc::posix_spawnattr_setsigmask(&raw mut attributes.0, &raw const signals))?;
        libc::sigaddset(&raw mut signals, libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(&raw mut attributes.0, &raw const signals))?;

        let mut pid: libc::pid_t = 0;
        let spawn = if program.contains('/') { libc::posix_spawn } else { libc::posix_spawnp };
        check(spawn(
            &raw mut pid,
            path.as_ptr(),
            &raw const actions.0,
            &raw const attributes.0,
            argv.0.as_ptr(),
            envp.0.as_ptr(),
        ))?;
        u32::try_from(pid).map_err(|_| std::io::Error::other("posix_spawn gave a negative pid"))
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

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn create_nodes(&self, nodes: &[NewNode], taken: &BTreeSet<String>) -> ProviderResult<Vec<NodeState>> {
        let mut used = taken.clone();
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
            });
        }
        Ok(made)
    }

    fn destroy_node(&self, _id: &str, _node: &NodeState) -> ProviderResult<()> {
        Ok(())
    }

    fn start(&self, request: &StartRequest<'_>) -> ProviderResult<Started> {
        let port = crate::plan::placement::port_of(request.spec);
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
            super::Package::Url(url) => {
                crate::apply::package::fetch_cached(url, &request.cache_dir).map_err(ProviderError::new)?
            }
            super::Package::None => {
                return Err(ProviderError::new("the local provider needs a package to run"));
            }
        };
        let command =
            super::command_for(request.settings, request.spec, &package, &request.node.address, request.instance_id)?;
        let Some((program, args)) = command.split_first() else {
            return Err(ProviderError::new("the package type's start command is empty"));
        };
        if let Some(dir) = request.log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ProviderError::new(format!("cannot create log directory {}: {e}", dir.display())))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&request.log)
            .map_err(|e| ProviderError::new(format!("cannot open log {}: {e}", request.log.display())))?;
        let mut environment: Vec<(String, std::ffi::OsString)> =
            request.environment().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        for inherited in INHERITED {
            if let Some(value) = std::env::var_os(inherited) {
                environment.push((inherited.to_string(), value));
            }
        }
        let dir = Path::new(program).parent().filter(|d| d.is_dir());
        // A marker the child holds open from the moment it is created (its environment only
        // shows the token once it execs): an apply killed in between still finds it.
        let marker = marker_path(request.token);
        if let Some(dir) = marker.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let marker_file = std::fs::File::create(&marker)
            .map_err(|e| ProviderError::new(format!("cannot create {}: {e}", marker.display())))?;
        let spawned = spawn_detached(program, args, &environment, dir, &log, &marker_file);
        // The child holds the marker open (and recovery finds it even once deleted); a failed
        // spawn leaves nothing behind.
        drop(marker_file);
        let _ = std::fs::remove_file(&marker);
        let pid = spawned.map_err(|e| {
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
        let start_time = proc_stat(pid).map(|(_, t)| t);
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
        if !process_alive(pid, instance.start_time) {
            return Ok(());
        }
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !process_alive(pid, instance.start_time) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid, instance.start_time) {
            signal_group(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !process_alive(pid, instance.start_time) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ProviderError::new(format!("instance {} (pid {pid}) did not stop after SIGKILL", instance.id)))
    }

    fn alive(&self, instance: &InstanceState, _node: &NodeState) -> bool {
        instance.pid.is_some_and(|pid| process_alive(pid, instance.start_time))
    }

    fn logs(&self, _instance: &InstanceState, _node: &NodeState, log: &Path, lines: usize) -> ProviderResult<String> {
        if !log.exists() {
            return Err(ProviderError::new(format!("no log file at {}", log.display())));
        }
        Ok(tail(log, lines))
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
                let (state, start_time) = proc_stat(pid)?;
                if state != 'Z' {
                    return Some(Started { pid: Some(pid), start_time: Some(start_time) });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let made = LocalProvider::new().create_nodes(&[new_node("local-1", &[])], &BTreeSet::new()).unwrap();
        assert_eq!(made[0].address, "127.0.16.1");
    }

    #[test]
    fn an_address_whose_port_another_process_holds_is_passed_over() {
        let provider = LocalProvider::new();
        let first = address_at(BLOCK + 1);
        let listener = std::net::TcpListener::bind((first.as_str(), 0)).expect("bind on loopback");
        let port = listener.local_addr().expect("address").port();
        let taken = BTreeSet::from([address_at(BLOCK + 2)]);
        let made =
            provider.create_nodes(&[new_node("local-1", &[port]), new_node("local-2", &[port])], &taken).unwrap();
        let addresses: Vec<&str> = made.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(addresses, vec![address_at(BLOCK + 3), address_at(BLOCK + 4)], "held by a listener, then taken");
    }

    #[test]
    fn a_spawned_instance_leads_its_own_session_holds_its_marker_and_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let log = OpenOptions::new().create(true).append(true).open(dir.join("out.log")).unwrap();
        let marker_path = dir.join("marker");
        let marker = std::fs::File::create(&marker_path).unwrap();
        let environment = vec![("GREETING".to_string(), "hello".into())];
        let args = vec!["-c".to_string(), "echo \"$GREETING from $PWD\"; exec sleep 30".to_string()];
        let pid = spawn_detached("/bin/sh", &args, &environment, Some(&dir), &log, &marker).unwrap();
        reap_later(pid);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
        assert_eq!(fields[3], pid.to_string(), "it leads its own session: {stat}");
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/fd/{MARKER_FD}")).unwrap(), marker_path);
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), dir);
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(), Path::new("/dev/null"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(dir.join("out.log")).unwrap().contains("hello from") {
            assert!(Instant::now() < deadline, "the instance never wrote to its log");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_to_string(dir.join("out.log")).unwrap(), format!("hello from {}\n", dir.display()));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(!environ.split(|b| *b == 0).any(|v| v.starts_with(b"PATH=")), "exactly the given environment");
        signal_group(pid, libc::SIGKILL);
        // The reaper collects it: no zombie is left behind.
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "pid {pid} was never reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
        let missing = spawn_detached("/no/such/program", &[], &[], None, &log, &marker).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let (_, started) = proc_stat(me).unwrap();
        assert!(process_alive(me, Some(started)));
        assert!(!process_alive(me, Some(started + 1)));
        assert!(!process_alive(u32::MAX - 1, None));
    }
}
