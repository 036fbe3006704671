//! Crash safety of `enact apply` on the local provider ("nothing is lost on a crash").
//!
//! A temporary config repository runs real processes: `airline` (SOAP, 2–3 instances),
//! `travelagency` (REST, 1–2 instances, depends on airline) and `loyalty` (a standalone SOAP
//! service, sometimes removed from the spec and added back). Every trial changes the spec
//! (instance counts, versions, the standalone service), starts `enact apply --auto-approve`,
//! SIGKILLs it after a random delay of 0–1500 ms (seeded PRNG) and checks that
//!
//! - (a) `state/dev.json`, if present, parses; after the next command it always does;
//! - (b) the next `enact apply --auto-approve` exits 0;
//! - (c) `enact plan --detailed-exitcode` then exits 0 (converged);
//! - (d) every process started for this repository (`ENACT_TOKEN=…` and `ENACT_ENV=dev` in its
//!   environment, the repository's path in its command line) is an instance recorded in
//!   `state/dev.json`, and every recorded running instance's process is alive.
//!
//! In about one trial in four the recovering apply is killed too (a crash during recovery)
//! before the converging one. At the end `enact destroy` must leave no process behind. A guard
//! kills whatever is left, even when the test fails.
//!
//! `ENACT_CRASH_TRIALS` (default 20) and `ENACT_CRASH_SEED` change the run;
//! `scripts/crash-stress.sh` runs 100 trials.

#![allow(clippy::print_stderr, reason = "the test prints a summary of what the kills hit")]
#![allow(unsafe_code, reason = "libc::kill to clean up leftover processes")]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ENACT: &str = env!("CARGO_BIN_EXE_enact");
const DEFAULT_TRIALS: usize = 20;
const DEFAULT_SEED: u64 = 0x00c0_ffee;
const MAX_KILL_DELAY_MS: u64 = 1500;
/// Ports of the kill test's services (airline, travelagency, loyalty); other tests use others.
const KILL_PORTS: [u16; 3] = [23_001, 23_002, 23_003];
/// Ports of the signal test's services.
const SIGNAL_PORTS: [u16; 3] = [23_011, 23_012, 23_013];
/// A command that takes longer than this is hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Randomness

/// xorshift64*: seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ---------------------------------------------------------------------------------------------
// The choreography

#[derive(Debug, Clone)]
struct Spec {
    ports: [u16; 3],
    airline_instances: u32,
    airline_version: u32,
    travel_instances: u32,
    travel_version: u32,
    /// `None`: the standalone service is not in the spec.
    loyalty_version: Option<u32>,
}

impl Spec {
    fn initial(ports: [u16; 3]) -> Spec {
        Spec {
            ports,
            airline_instances: 3,
            airline_version: 1,
            travel_instances: 2,
            travel_version: 1,
            loyalty_version: Some(1),
        }
    }

    /// The next spec: at least one change that makes the apply do something.
    fn mutate(&self, rng: &mut Rng) -> Spec {
        let mut next = self.clone();
        loop {
            if rng.chance(40) {
                next.airline_instances = if next.airline_instances == 3 { 2 } else { 3 };
            }
            if rng.chance(50) {
                next.airline_version += 1;
            }
            if rng.chance(40) {
                next.travel_instances = if next.travel_instances == 2 { 1 } else { 2 };
            }
            if rng.chance(50) {
                next.travel_version += 1;
            }
            if rng.chance(25) {
                next.loyalty_version = match next.loyalty_version {
                    Some(_) => None,
                    None => Some(1),
                };
            } else if let Some(v) = next.loyalty_version.as_mut()
                && rng.chance(40)
            {
                *v += 1;
            }
            if next.describe() != self.describe() {
                return next;
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "airline ×{} v{}, travelagency ×{} v{}, loyalty {}",
            self.airline_instances,
            self.airline_version,
            self.travel_instances,
            self.travel_version,
            self.loyalty_version.map_or("absent".to_string(), |v| format!("v{v}"))
        )
    }

    fn to_json(&self) -> String {
        let mut services = vec![
            json!({
                "name": "airline",
                "roles": ["airline"],
                "serviceType": "SOAP",
                "packageType": "COMMAND_LINE",
                "packageUri": "services/airline.py",
                "endpointName": "airline",
                "port": self.ports[0],
                "numberOfInstances": self.airline_instances,
                "resourceImpact": { "memory": "SMALL" },
                "version": format!("{}.0", self.airline_version)
            }),
            json!({
                "name": "travelagency",
                "roles": ["travelagency"],
                "dependencies": [ { "serviceSpecName": "airline", "serviceSpecRole": "airline" } ],
                "serviceType": "REST",
                "packageType": "COMMAND_LINE",
                "packageUri": "services/travelagency.py",
                "endpointName": "travelagency",
                "port": self.ports[1],
                "numberOfInstances": self.travel_instances,
                "resourceImpact": { "memory": "SMALL" },
                "version": format!("{}.0", self.travel_version)
            }),
        ];
        if let Some(v) = self.loyalty_version {
            services.push(json!({
                "name": "loyalty",
                "roles": ["loyalty"],
                "serviceType": "SOAP",
                "packageType": "COMMAND_LINE",
                "packageUri": "services/airline.py",
                "endpointName": "loyalty",
                "port": self.ports[2],
                "numberOfInstances": 1,
                "resourceImpact": { "memory": "SMALL" },
                "version": format!("{v}.0")
            }));
        }
        let chor = json!({ "deployableServiceSpecs": services });
        serde_json::to_string_pretty(&chor).expect("a JSON value serializes") + "\n"
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process started for the repository.
#[derive(Debug, Clone)]
struct Proc {
    start_time: u64,
    /// `INSTANCE_ID`, `HOST`:`PORT` from its environment.
    instance: String,
    address: String,
}

/// The processes started for the repository at `root`: `ENACT_TOKEN=` and `ENACT_ENV=dev` in
/// the environment and `root` in the command line; zombies left out. pid → start time.
fn instance_processes(root: &str) -> BTreeMap<u32, u64> {
    instance_process_details(root).into_iter().map(|(pid, p)| (pid, p.start_time)).collect()
}

fn instance_process_details(root: &str) -> BTreeMap<u32, Proc> {
    let mut found = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let (Ok(environ), Ok(cmdline)) =
            (fs::read(entry.path().join("environ")), fs::read(entry.path().join("cmdline")))
        else {
            continue;
        };
        let mut token = false;
        let mut dev = false;
        let (mut instance, mut host, mut port) = (String::new(), String::new(), String::new());
        for var in environ.split(|&b| b == 0) {
            token |= var.starts_with(b"ENACT_TOKEN=");
            dev |= var == b"ENACT_ENV=dev";
            let var = String::from_utf8_lossy(var);
            if let Some(v) = var.strip_prefix("INSTANCE_ID=") {
                instance = v.to_string();
            } else if let Some(v) = var.strip_prefix("HOST=") {
                host = v.to_string();
            } else if let Some(v) = var.strip_prefix("PORT=") {
                port = v.to_string();
            }
        }
        let ours = String::from_utf8_lossy(&cmdline).contains(root);
        if !(token && dev && ours) {
            continue;
        }
        if let Some((state, start_time)) = proc_stat(pid)
            && state != 'Z'
            && state != 'X'
        {
            found.insert(pid, Proc { start_time, instance, address: format!("{host}:{port}") });
        }
    }
    found
}

/// Every process of the repository, and whether the state records it, for a failure message.
fn describe_processes(root: &str, state: Option<&Value>) -> String {
    let mut recorded = BTreeMap::new();
    for service in state.and_then(|s| s["services"].as_object()).into_iter().flat_map(|s| s.values()) {
        for instance in service["instances"].as_array().into_iter().flatten() {
            if let Some(pid) = instance["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                recorded.insert(pid, (instance["id"].as_str().unwrap_or("?").to_string(), ()));
            }
        }
    }
    let mut out = format!(
        "listening on the test's ports: {:?} {:?}\nprocesses of the repository now:\n",
        listeners(KILL_PORTS),
        listeners(SIGNAL_PORTS)
    );
    for (pid, p) in instance_process_details(root) {
        let _ = writeln!(
            out,
            "  pid {pid} (start time {}) {} on {}: {}",
            p.start_time,
            p.instance,
            p.address,
            match recorded.get(&pid) {
                Some((id, _)) => format!("recorded as {id}"),
                None => "NOT in the state".to_string(),
            }
        );
    }
    out
}

/// The IPv4 sockets listening on this test's ports (`/proc/net/tcp`), as `address:port`.
fn listeners(ports: [u16; 3]) -> Vec<String> {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut found = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address is `AABBCCDD:PPPP` (the address little-endian), st 0A is LISTEN.
        let (Some(local), Some(&"0A")) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        let Some((ip, port)) = local.split_once(':') else { continue };
        let (Ok(ip), Ok(port)) = (u32::from_str_radix(ip, 16), u16::from_str_radix(port, 16)) else {
            continue;
        };
        if ports.contains(&port) {
            found.push(format!("{}:{port}", std::net::Ipv4Addr::from(ip.swap_bytes())));
        }
    }
    found
}

/// State letter and start time of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions. An instance leads its own process
    // group (enact makes it a session leader), so -pid takes its children too.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Kills, when dropped (also when the test panics), the enact still running and every process
/// started for the repository.
struct Cleanup {
    root: String,
    enact: Option<Child>,
}

impl Cleanup {
    fn sweep(&mut self) -> usize {
        if let Some(mut child) = self.enact.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut killed = 0;
        for _ in 0..50 {
            let left = instance_processes(&self.root);
            if left.is_empty() {
                break;
            }
            for &pid in left.keys() {
                kill_group(pid);
                killed += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        killed
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let killed = self.sweep();
        if killed > 0 {
            eprintln!("crash test cleanup: killed {killed} leftover process(es)");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The repository and its commands

struct Repo {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    logs: PathBuf,
}

impl Drop for Repo {
    fn drop(&mut self) {
        // A failed test keeps its repository (state, journals copied after each kill, logs of
        // every command and instance) to look at.
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("crash test: the repository is kept in {}", dir.keep().display());
        }
    }
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::Builder::new().prefix("enact-crash-").tempdir().expect("a temporary directory");
        let root = dir.path().canonicalize().expect("the temporary directory has a canonical path");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/travel/services");
        fs::create_dir_all(root.join("services")).expect("mkdir services");
        fs::create_dir_all(root.join("envs")).expect("mkdir envs");
        for script in ["airline.py", "travelagency.py"] {
            // fs::copy keeps the executable bit.
            fs::copy(examples.join(script), root.join("services").join(script)).expect("copy an example service");
        }
        fs::write(
            root.join("enact.json"),
            r#"{
  "defaultEnv": "dev",
  "defaultAccount": "local",
  "accounts": { "local": { "provider": "local" } },
  "nodeSelector": { "policy": "ALWAYS_CREATE" }
}
"#,
        )
        .expect("write enact.json");
        fs::write(root.join("envs/dev.json"), "{}\n").expect("write envs/dev.json");
        let logs = root.join("test-logs");
        fs::create_dir_all(&logs).expect("mkdir test-logs");
        Repo { dir: Some(dir), root, logs }
    }

    fn root_str(&self) -> String {
        self.root.to_string_lossy().into_owned()
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("state/dev.json")
    }

    fn command(&self, args: &[&str], log: &str) -> Command {
        let stdout = fs::File::create(self.logs.join(format!("{log}.out"))).expect("log file");
        let stderr = fs::File::create(self.logs.join(format!("{log}.err"))).expect("log file");
        let mut cmd = Command::new(ENACT);
        cmd.arg("-C")
            .arg(&self.root)
            .arg("--no-color")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        cmd
    }

    fn output_of(&self, log: &str) -> String {
        let out = fs::read_to_string(self.logs.join(format!("{log}.out"))).unwrap_or_default();
        let err = fs::read_to_string(self.logs.join(format!("{log}.err"))).unwrap_or_default();
        format!("--- stdout ---\n{out}--- stderr ---\n{err}")
    }

    /// Runs a command to its end (or kills it after [`COMMAND_TIMEOUT`]).
    fn run(&self, cleanup: &mut Cleanup, args: &[&str], log: &str) -> Result<Run, String> {
        let started = Instant::now();
        let child = self.command(args, log).spawn().map_err(|e| format!("cannot run enact: {e}"))?;
        cleanup.enact = Some(child);
        let status = loop {
            let child = cleanup.enact.as_mut().expect("the child was just stored");
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                cleanup.enact = None;
                break status;
            }
            if started.elapsed() > COMMAND_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                cleanup.enact = None;
                return Err(format!(
                    "`enact {}` did not finish within {} s\n{}",
                    args.join(" "),
                    COMMAND_TIMEOUT.as_secs(),
                    self.output_of(log)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(Run { status, elapsed: started.elapsed(), output: self.output_of(log) })
    }

    /// Starts `apply --auto-approve` and stops it with `stop` after `delay` (unless it ended
    /// first). Whether it was stopped while running, and, for a signal, how it exited.
    fn stopped_apply(
        &self,
        cleanup: &mut Cleanup,
        delay: Duration,
        stop: Stop,
        log: &str,
    ) -> (bool, Option<ExitStatus>) {
        if matches!(stop, Stop::Kill) {
            return (self.killed_apply(cleanup, delay, log), None);
        }
        let started = Instant::now();
        let child = self.command(&["apply", "--auto-approve"], log).spawn().expect("run enact apply");
        cleanup.enact = Some(child);
        let child = cleanup.enact.as_mut().expect("the child was just stored");
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                cleanup.enact = None;
                return (false, Some(status));
            }
            if started.elapsed() >= delay {
                break;
            }
            std::thread::sleep(Duration::from_millis(1).min(delay - started.elapsed()));
        }
        let pid = i32::try_from(child.id()).expect("a pid");
        let (first, again) = match stop {
            Stop::Signal { signal, again } => (signal, again),
            Stop::Kill => unreachable!("handled above"),
        };
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child.
        unsafe {
            libc::kill(pid, first);
        }
        if let Some(after) = again {
            std::thread::sleep(after);
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        cleanup.enact = None;
        // 128 + the first signal's number, as a shell reports it.
        (status.is_some_and(|s| s.code() == Some(128 + first)), status)
    }

    /// Starts `apply --auto-approve` and SIGKILLs it after `delay` (unless it ended first).
    /// Whether it was killed while running.
    fn killed_apply(&self, cleanup: &mut Cleanup, delay: Duration, log: &str) -> bool {
        let started = Instant::now();
        let child = self.command(&["apply", "--auto-approve"], log).spawn().expect("run enact apply");
        cleanup.enact = Some(child);
        let child = cleanup.enact.as_mut().expect("the child was just stored");
        loop {
            if child.try_wait().ok().flatten().is_some() {
                cleanup.enact = None;
                return false;
            }
            if started.elapsed() >= delay {
                break;
            }
            std::thread::sleep(Duration::from_millis(1).min(delay - started.elapsed()));
        }
        // `Child::kill` sends SIGKILL.
        let _ = child.kill();
        let status = child.wait().ok();
        cleanup.enact = None;
        // It may have ended on its own between the last poll and the kill.
        status.is_some_and(|s| !s.success() && s.code().is_none())
    }

    /// Copies the state and the journal as a kill left them into the logs, `<log>.state.json`
    /// and `<log>.journal` (the next command consumes the journal).
    fn keep_copies(&self, log: &str) {
        for (from, to) in [("state/dev.json", "state.json"), ("state/dev.journal", "journal")] {
            let _ = fs::copy(self.root.join(from), self.logs.join(format!("{log}.{to}")));
        }
    }

    /// The state file, if there is one; an error if it does not parse.
    fn state(&self) -> Result<Option<Value>, String> {
        let path = self.state_path();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Value>(&text)
                .map(Some)
                .map_err(|e| format!("{} does not parse: {e}\n{text}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

struct Run {
    status: ExitStatus,
    elapsed: Duration,
    output: String,
}

impl Run {
    fn expect_code(&self, code: i32, what: &str) -> Result<(), String> {
        if self.status.code() == Some(code) {
            Ok(())
        } else {
            Err(format!("{what}: expected exit {code}, got {}\n{}", self.status, self.output))
        }
    }
}

/// Recorded instances: pid → (instance id, recorded start time).
fn recorded_instances(state: &Value) -> Result<BTreeMap<u32, (String, Option<u64>)>, String> {
    let mut recorded = BTreeMap::new();
    let services = state["services"].as_object().cloned().unwrap_or_default();
    for (name, service) in &services {
        if service["incomplete"].as_bool() == Some(true) {
            return Err(format!("service `{name}` is still incomplete after a converging apply"));
        }
        for instance in service["instances"].as_array().cloned().unwrap_or_default() {
            let id = instance["id"].as_str().unwrap_or("?").to_string();
            if instance["status"].as_str() != Some("running") {
                continue;
            }
            let Some(pid) = instance["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) else {
                return Err(format!("running instance {id} has no pid"));
            };
            if let Some((other, _)) = recorded.insert(pid, (id.clone(), instance["startTime"].as_u64())) {
                return Err(format!("instances {other} and {id} share pid {pid}"));
            }
        }
    }
    Ok(recorded)
}

/// (d): the processes of the repository are exactly the recorded running instances.
fn check_processes(root: &str, state: &Value) -> Result<usize, String> {
    let recorded = recorded_instances(state)?;
    let running = instance_processes(root);
    let mut problems = Vec::new();
    for (pid, start_time) in &running {
        match recorded.get(pid) {
            None => problems
                .push(format!("pid {pid} runs for this repository but no instance in the state has it (untracked)")),
            Some((id, Some(recorded_start))) if recorded_start != start_time => problems.push(format!(
                "instance {id}: pid {pid} runs, but started at {start_time}, not at the recorded {recorded_start}"
            )),
            Some(_) => {}
        }
    }
    for (pid, (id, _)) in &recorded {
        if !running.contains_key(pid) {
            problems.push(format!("instance {id} is recorded running with pid {pid}, which is not alive"));
        }
    }
    if problems.is_empty() { Ok(recorded.len()) } else { Err(problems.join("\n")) }
}

/// Nodes of the state on which no instance runs (a node leaked by an interrupted apply).
fn empty_nodes(state: &Value) -> BTreeSet<String> {
    let mut nodes: BTreeSet<String> =
        state["nodes"].as_object().map(|n| n.keys().cloned().collect()).unwrap_or_default();
    if let Some(services) = state["services"].as_object() {
        for service in services.values() {
            for instance in service["instances"].as_array().into_iter().flatten() {
                if let Some(node) = instance["node"].as_str() {
                    nodes.remove(node);
                }
            }
        }
    }
    nodes
}

// ---------------------------------------------------------------------------------------------
// The test

#[derive(Debug, Default)]
struct Tally {
    trials: usize,
    killed_mid_run: usize,
    /// Signalled applies that stopped cleanly (exit 128 + the signal after one signal), checked at once.
    clean_stops: usize,
    finished_before_kill: usize,
    /// Kills that left a journal behind (the apply had begun its work).
    journal_left: usize,
    no_state_yet: usize,
    double_crashes: usize,
    recovered: usize,
    found_running: usize,
    lock_taken_over: usize,
    converge_total: Duration,
    max_empty_nodes: usize,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim();
            v.strip_prefix("0x").map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default)
}

/// How a trial stops the apply.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: a crash.
    Kill,
    /// SIGINT, SIGTERM or SIGHUP, and maybe a second SIGINT after a while (abort at once).
    Signal { signal: i32, again: Option<Duration> },
}

#[test]
fn a_killed_apply_never_loses_or_leaks_a_process() {
    trials("crash", KILL_PORTS, false);
}

/// Ctrl-C, SIGTERM and SIGHUP at random moments: the first stops the apply cleanly (exit 130,
/// 143 or 129, the state written, no lock, no journal, every running process recorded); a
/// second one aborts at once and the next apply recovers.
#[test]
fn an_interrupted_apply_stops_cleanly_and_never_loses_a_process() {
    trials("signal", SIGNAL_PORTS, true);
}

fn trials(name: &str, ports: [u16; 3], signals: bool) {
    let trials = usize::try_from(env_number("ENACT_CRASH_TRIALS", DEFAULT_TRIALS as u64)).unwrap_or(DEFAULT_TRIALS);
    let seed = env_number("ENACT_CRASH_SEED", DEFAULT_SEED);
    let repo = Repo::new();
    let root = repo.root_str();
    let mut cleanup = Cleanup { root: root.clone(), enact: None };
    let busy = listeners(ports);
    assert!(
        busy.is_empty(),
        "other processes listen on the ports this test needs: {busy:?} (`ss -ltnp | grep ':2300'` names them)"
    );
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let started = Instant::now();
    eprintln!("{name} test: {trials} trials, seed {seed:#x}, repository {root}");

    // A first, uninterrupted apply.
    let mut spec = Spec::initial(ports);
    fs::write(repo.root.join("chor.json"), spec.to_json()).expect("write chor.json");
    let run = repo.run(&mut cleanup, &["apply", "--auto-approve"], "initial-apply").unwrap_or_else(|e| panic!("{e}"));
    run.expect_code(0, "the first apply").unwrap_or_else(|e| panic!("{e}"));

    for trial in 1..=trials {
        spec = spec.mutate(&mut rng);
        let delay = Duration::from_millis(rng.upto(MAX_KILL_DELAY_MS));
        let stop = if signals {
            let signal = match rng.upto(3) {
                0 => libc::SIGTERM,
                1 => libc::SIGHUP,
                _ => libc::SIGINT,
            };
            let again = rng.chance(20).then(|| Duration::from_millis(rng.upto(300)));
            Stop::Signal { signal, again }
        } else {
            Stop::Kill
        };
        let double = rng.chance(25);
        let second_delay = Duration::from_millis(rng.upto(MAX_KILL_DELAY_MS));
        let context = format!(
            "trial {trial} of {trials} (seed {seed:#x}): spec {}; {stop:?} after {} ms{}",
            spec.describe(),
            delay.as_millis(),
            if double {
                format!(", the recovering apply killed after {} ms", second_delay.as_millis())
            } else {
                String::new()
            }
        );
        let fail =
            |message: String| -> ! { panic!("{context}\n{message}\n(command outputs are in {})", repo.logs.display()) };
        fs::write(repo.root.join("chor.json"), spec.to_json()).expect("write chor.json");

        let log = format!("t{trial:03}-killed");
        let (stopped, status) = repo.stopped_apply(&mut cleanup, delay, stop, &log);
        if stopped {
            tally.killed_mid_run += 1;
        } else {
            tally.finished_before_kill += 1;
        }
        if let (Stop::Signal { signal, again }, Some(status)) = (stop, status) {
            // A signal ends an apply with 128 + its number (or it finished first: 0), never
            // anything else.
            if status.code() != Some(0) && status.code() != Some(128 + signal) {
                fail(format!("the signalled apply exited with {status}\n{}", repo.output_of(&log)));
            }
            if again.is_none() && status.code() == Some(128 + signal) {
                // A clean stop: the state written, nothing left behind, every process recorded.
                for leftover in ["state/dev.journal", "state/dev.lock"] {
                    if repo.root.join(leftover).exists() {
                        fail(format!("{leftover} is left after a clean stop\n{}", repo.output_of(&log)));
                    }
                }
                tally.clean_stops += 1;
                if let Ok(Some(state)) = repo.state()
                    && let Err(e) = check_processes(&root, &state)
                {
                    fail(format!("after a clean stop: {e}\n{}", describe_processes(&root, Some(&state))));
                }
            }
        }
        if repo.root.join("state/dev.journal").exists() {
            tally.journal_left += 1;
        }
        repo.keep_copies(&log);
        // (a) before the next command: the state, if present, parses.
        match repo.state() {
            Ok(Some(_)) => {}
            Ok(None) => tally.no_state_yet += 1,
            Err(e) => fail(format!("(a) after the kill: {e}")),
        }

        if double {
            tally.double_crashes += 1;
            let log = format!("t{trial:03}-killed-again");
            repo.stopped_apply(&mut cleanup, second_delay, stop, &log);
            repo.keep_copies(&log);
            if let Err(e) = repo.state() {
                fail(format!("(a) after the second kill: {e}"));
            }
        }

        // (b) the next apply converges.
        let log = format!("t{trial:03}-apply");
        let run = repo.run(&mut cleanup, &["apply", "--auto-approve"], &log).unwrap_or_else(|e| fail(e));
        run.expect_code(0, "(b) the apply after the kill").unwrap_or_else(|e| {
            fail(format!("{e}\n{}", describe_processes(&root, repo.state().ok().flatten().as_ref())))
        });
        let converge = run.elapsed;
        tally.converge_total += converge;
        if run.output.contains("recovered an interrupted apply") {
            tally.recovered += 1;
        }
        if run.output.contains("found running") {
            tally.found_running += 1;
        }
        if run.output.contains("took over the lock") {
            tally.lock_taken_over += 1;
        }
        // (a) after the next command: the state is there and parses.
        let state = match repo.state() {
            Ok(Some(state)) => state,
            Ok(None) => fail("(a) no state file after a successful apply".to_string()),
            Err(e) => fail(format!("(a) after the next apply: {e}")),
        };
        for leftover in ["state/dev.journal", "state/dev.lock"] {
            if repo.root.join(leftover).exists() {
                fail(format!("{leftover} is left after a successful apply"));
            }
        }

        // (c) converged.
        let log = format!("t{trial:03}-plan");
        let run = repo.run(&mut cleanup, &["plan", "--detailed-exitcode"], &log).unwrap_or_else(|e| fail(e));
        run.expect_code(0, "(c) plan --detailed-exitcode after the apply").unwrap_or_else(|e| fail(e));

        // (d) no untracked process, no dead recorded one.
        let expected = spec.airline_instances + spec.travel_instances + u32::from(spec.loyalty_version.is_some());
        match check_processes(&root, &state) {
            Ok(n) if n == expected as usize => {}
            Ok(n) => fail(format!("(d) {n} instance(s) recorded running, the spec wants {expected}")),
            Err(e) => fail(format!(
                "(d) {e}\n{}state:\n{}",
                describe_processes(&root, Some(&state)),
                serde_json::to_string_pretty(&state).unwrap_or_default()
            )),
        }
        tally.max_empty_nodes = tally.max_empty_nodes.max(empty_nodes(&state).len());
        tally.trials += 1;
        eprintln!(
            "trial {trial:>3}: killed after {:>4} ms{} → converged in {:.2} s ({})",
            delay.as_millis(),
            if double { " (and again)" } else { "" },
            converge.as_secs_f64(),
            spec.describe()
        );
    }

    // Destroy: nothing may be left.
    let run = repo.run(&mut cleanup, &["destroy", "--auto-approve"], "destroy").unwrap_or_else(|e| panic!("{e}"));
    run.expect_code(0, "destroy").unwrap_or_else(|e| panic!("{e}"));
    let left = instance_processes(&root);
    assert!(left.is_empty(), "processes left after destroy: {left:?}\n{}", run.output);
    let state = repo.state().unwrap_or_else(|e| panic!("{e}")).expect("a state after destroy");
    assert_eq!(
        state["services"].as_object().map_or(0, serde_json::Map::len),
        0,
        "services left in the state after destroy"
    );
    let leaked = empty_nodes(&state);
    let mut shown: Vec<&str> = leaked.iter().map(String::as_str).take(8).collect();
    if leaked.len() > shown.len() {
        shown.push("…");
    }

    eprintln!(
        "\n{name} test summary (seed {seed:#x}): {} trials in {:.1} s\n\
         - stopped while apply ran: {} (clean stops checked at once: {}), apply finished first: {}\n\
         - a journal was left: {}, no state file yet: {}, double crashes: {}\n\
         - next command recovered a journal: {}, found an interrupted start running: {}, took over a stale lock: {}\n\
         - converging apply: mean {:.2} s\n\
         - empty nodes in the state (not freed; see the report): at most {} after a converging apply, {} after destroy [{}]\n\
         - checks (a) state parses, (b) apply exits 0, (c) plan converged, (d) processes = state: all passed",
        tally.trials,
        started.elapsed().as_secs_f64(),
        tally.killed_mid_run,
        tally.clean_stops,
        tally.finished_before_kill,
        tally.journal_left,
        tally.no_state_yet,
        tally.double_crashes,
        tally.recovered,
        tally.found_running,
        tally.lock_taken_over,
        run_secs(tally.converge_total, tally.trials),
        tally.max_empty_nodes,
        leaked.len(),
        shown.join(", ")
    );
    drop(cleanup);
}

fn run_secs(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() / n.max(1) as f64
}
