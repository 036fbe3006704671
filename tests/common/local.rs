//! The local-provider test harness: a temporary config repository holding the travel example's
//! Python services, driven through the built binary, and readers of the services' own logs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Markers written by [`Repo::sync_logs`] so far.
static SYNCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The longest any single enact command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// The config repository guard
// ---------------------------------------------------------------------------------------------

/// A temporary config repository. Dropping it destroys the environment and kills every process
/// started from it.
pub struct Repo {
    /// Canonical path of the repository.
    pub root: PathBuf,
    /// Processes the test started itself (a legacy service, a background enact).
    pub children: Vec<Child>,
    pub _dir: TempDir,
}

impl Repo {
    /// A repository with the travel example's services, `chor` as chor.json, an empty dev
    /// overlay, and `settings` as enact.json (the local account when `None`).
    pub fn new(chor: &Value, settings: Option<&Value>) -> Repo {
        let dir = tempfile::Builder::new().prefix("enact-apply-local-").tempdir().expect("a temporary directory");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let services = root.join("services");
        fs::create_dir_all(&services).expect("services dir");
        fs::create_dir_all(root.join("envs")).expect("envs dir");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/travel/services");
        for entry in fs::read_dir(&examples).expect("example services") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "py") {
                let to = services.join(path.file_name().expect("file name"));
                fs::copy(&path, &to).expect("copy a service");
                make_executable(&to);
            }
        }
        let repo = Repo { root, children: Vec::new(), _dir: dir };
        let default_settings = json!({
            "defaultEnv": "dev",
            "defaultAccount": "local",
            "accounts": { "local": { "provider": "local" } }
        });
        repo.write_json("enact.json", settings.unwrap_or(&default_settings));
        repo.write_json("envs/dev.json", &json!({}));
        repo.write_chor(chor);
        repo
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub fn write_json(&self, relative: &str, value: &Value) {
        let text = serde_json::to_string_pretty(value).expect("JSON") + "\n";
        fs::write(self.path(relative), text).expect("write a config file");
    }

    pub fn write_chor(&self, chor: &Value) {
        self.write_json("chor.json", chor);
    }

    /// Runs enact with extra environment variables set for it.
    pub fn enact_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = Command::cargo_bin("enact").expect("the enact binary");
        cmd.current_dir(&self.root)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("ENACT_TOKEN")
            .envs(vars.iter().copied())
            .write_stdin("")
            .timeout(COMMAND_TIMEOUT);
        cmd.output().expect("run enact")
    }

    /// Runs enact in the repository (no terminal, no colour), with a deadline.
    pub fn enact(&self, args: &[&str]) -> Output {
        let mut cmd = Command::cargo_bin("enact").expect("the enact binary");
        cmd.current_dir(&self.root)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("ENACT_TOKEN")
            .write_stdin("")
            .timeout(COMMAND_TIMEOUT);
        cmd.output().expect("run enact")
    }

    /// Runs enact and insists on exit code `code`.
    pub fn enact_ok(&self, args: &[&str], code: i32) -> Output {
        let output = self.enact(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "`enact {}` exited with {:?}, expected {code}\n{}",
            args.join(" "),
            output.status,
            describe(&output)
        );
        output
    }

    /// `enact apply --auto-approve --keep-logs`: the tests judge the wiring from the logs of
    /// every instance that ever ran, those an apply replaced or scaled in included (without
    /// `--keep-logs` they go with their instances; tests/logs.rs tests that).
    pub fn apply(&self) -> Output {
        self.enact_ok(&["apply", "--auto-approve", "--keep-logs"], 0)
    }

    /// Starts enact in the background; its output goes to `<name>.out` and `<name>.err`.
    pub fn spawn_enact(&mut self, args: &[&str], name: &str) -> u32 {
        let out = fs::File::create(self.path(&format!("{name}.out"))).expect("output file");
        let err = fs::File::create(self.path(&format!("{name}.err"))).expect("output file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_enact"))
            .current_dir(&self.root)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start enact in the background");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Waits for a child started by the test to exit.
    /// Starts `enact apply --auto-approve` and SIGKILLs it 100 ms after its journal shows the
    /// start intent of `service` (waiting up to `within`). Returns the journal's path.
    pub fn apply_killed_while_starting(&mut self, service: &str, within: Duration) -> PathBuf {
        let pid = self.spawn_enact(&["apply", "--auto-approve"], "apply");
        let journal = self.path("state/dev.journal");
        let intent = format!("\"op\":\"startIntent\",\"service\":\"{service}\"");
        wait_for(&format!("{service} to start"), within, || {
            fs::read_to_string(&journal).unwrap_or_default().contains(&intent)
        });
        thread::sleep(Duration::from_millis(100));
        std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
        self.wait_child(pid, Duration::from_secs(10));
        journal
    }

    /// The pids that run for this repository and the pids the state records for `services`,
    /// each sorted: a test asserts they are equal (nothing runs that the state does not know).
    pub fn running_and_recorded(&self, services: &[&str]) -> (Vec<u32>, Vec<u32>) {
        let state = self.state();
        let mut recorded: Vec<u32> = services.iter().flat_map(|s| pids(&instances(&state, s))).collect();
        recorded.sort_unstable();
        let mut running = processes_of(&self.root);
        running.sort_unstable();
        (running, recorded)
    }

    pub fn wait_child(&mut self, pid: u32, timeout: Duration) -> ExitStatus {
        let child = self.children.iter_mut().find(|c| c.id() == pid).expect("a child of this test");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for a child") {
                return status;
            }
            assert!(Instant::now() < deadline, "process {pid} did not finish within {timeout:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the legacy weather service on 127.0.0.1:`port` (instance `legacy-weather`, its
    /// output in `legacy-weather.log`) and waits until it answers.
    pub fn start_weather(&mut self, port: u16) -> String {
        self.start_legacy("weather.py", "weather", "legacy-weather", port)
    }

    /// Starts `script` by hand as a legacy service on 127.0.0.1:`port`, logging to
    /// `<instance_id>.log` in the repository, and waits until it answers; its URI.
    pub fn start_legacy(&mut self, script: &str, endpoint: &str, instance_id: &str, port: u16) -> String {
        let log = fs::File::create(self.path(&format!("{instance_id}.log"))).expect("legacy log");
        let child = std::process::Command::new("python3")
            .arg(self.path(&format!("services/{script}")))
            .current_dir(&self.root)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ENDPOINT_NAME", endpoint)
            .env("INSTANCE_ID", instance_id)
            .env_remove("ENACT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("legacy log"))
            .stderr(log)
            .spawn()
            .expect("start a legacy service");
        self.children.push(child);
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        wait_for(&format!("the legacy service {instance_id} on {address}"), Duration::from_secs(15), || {
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        format!("http://127.0.0.1:{port}/{endpoint}")
    }

    /// The log of a legacy service started with [`Repo::start_legacy`].
    pub fn legacy_log(&self, instance_id: &str) -> Vec<LogLine> {
        let text = fs::read_to_string(self.path(&format!("{instance_id}.log"))).unwrap_or_default();
        parse_log(&text, instance_id)
    }

    /// The recorded state of dev.
    pub fn state(&self) -> Value {
        let text = fs::read_to_string(self.path("state/dev.json")).expect("state/dev.json");
        serde_json::from_str(&text).expect("state JSON")
    }

    pub fn status(&self) -> Value {
        let output = self.enact_ok(&["status", "--json"], 0);
        serde_json::from_slice(&output.stdout).expect("status --json is JSON")
    }

    /// Waits until every running instance's log relay has written what the instance wrote so
    /// far: a marker line is written into each instance's stdout pipe and waited for in its log
    /// (an instance that stopped has its last lines in its log already: a stop waits for its
    /// relay).
    pub fn sync_logs(&self) {
        use std::os::unix::fs::OpenOptionsExt as _;
        let Ok(text) = fs::read_to_string(self.path("state/dev.json")) else { return };
        let Ok(state) = serde_json::from_str::<Value>(&text) else { return };
        for service in state["services"].as_object().into_iter().flat_map(|s| s.values()) {
            for instance in service["instances"].as_array().into_iter().flatten() {
                let (Some(id), Some(pid)) = (instance["id"].as_str(), instance["pid"].as_u64()) else { continue };
                let marker = format!("#sync {} {}\n", std::process::id(), SYNCS.fetch_add(1, Ordering::SeqCst));
                // Not blocking: a pipe whose relay is gone cannot be opened, and then there is
                // nothing to wait for.
                let opened =
                    fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(format!("/proc/{pid}/fd/1"));
                let Ok(mut pipe) = opened else { continue };
                if pipe.write_all(marker.as_bytes()).is_err() {
                    continue;
                }
                let log = self.path(&format!("state/.logs/dev/{id}.log"));
                wait_for(&format!("the log relay of {id} to write what it was sent"), Duration::from_secs(30), || {
                    [log.clone(), PathBuf::from(format!("{}.1", log.display()))]
                        .iter()
                        .any(|f| fs::read_to_string(f).is_ok_and(|t| t.contains(&marker)))
                });
            }
        }
    }

    /// Every instance log, per instance id (once every relay has caught up).
    pub fn logs(&self) -> BTreeMap<String, Vec<LogLine>> {
        self.sync_logs();
        let mut logs = BTreeMap::new();
        let dir = self.path("state/.logs/dev");
        let Ok(entries) = fs::read_dir(&dir) else {
            return logs;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".log")) else {
                continue;
            };
            let text = fs::read_to_string(&path).unwrap_or_default();
            logs.insert(id.to_string(), parse_log(&text, id));
        }
        logs
    }

    pub fn log_of(&self, instance: &str) -> Vec<LogLine> {
        self.logs().remove(instance).unwrap_or_default()
    }
}

impl Drop for Repo {
    #[allow(clippy::print_stderr, reason = "cleanup problems are worth seeing")]
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if self.path("state/dev.json").exists() {
            let output = self.enact(&["destroy", "--auto-approve"]);
            if !output.status.success() {
                eprintln!("cleanup: `enact destroy` failed in {}\n{}", self.root.display(), describe(&output));
            }
        }
        let leftovers = processes_of(&self.root);
        if !leftovers.is_empty() {
            eprintln!("cleanup: killing processes left by {}: {leftovers:?}", self.root.display());
            for pid in &leftovers {
                let _ =
                    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && leftovers.iter().any(|p| process_alive(*p)) {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(unix)]
pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub fn describe(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `done` every 20 ms; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Whether `pid` runs (a zombie does not).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("X");
    state != "Z" && state != "X"
}

/// Live processes started by enact (`ENACT_TOKEN` in their environment) whose working
/// directory or command line is inside `root`.
pub fn processes_of(root: &Path) -> Vec<u32> {
    let needle = root.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|var| var.starts_with(b"ENACT_TOKEN=")) {
            continue;
        }
        let in_cwd = fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
        let in_cmdline =
            fs::read(entry.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle));
        if (in_cwd || in_cmdline) && process_alive(pid) {
            found.push(pid);
        }
    }
    found
}

pub fn wait_dead(pids: &[u32]) {
    wait_for(&format!("processes {pids:?} to exit"), Duration::from_secs(10), || {
        pids.iter().all(|p| !process_alive(*p))
    });
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A plain HTTP/1.1 GET: (status, body).
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address: SocketAddr = authority.parse().map_err(|e| format!("{authority}: {e}"))?;
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(3)).map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send to {address}: {e}"))?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map_err(|e| format!("read from {address}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer from {url}: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line from {url}: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `GET <agency>/buyTrip`: (status, JSON answer).
pub fn buy_trip(agency: &str) -> Result<(u16, Value), String> {
    let (status, body) = http_get(&format!("{agency}/buyTrip"))?;
    let doc = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((status, doc))
}

/// A buyTrip that must succeed; the airline instance that sold the flight.
pub fn trip_ok(agency: &str) -> (String, Value) {
    let (status, doc) = buy_trip(agency).expect("buyTrip answers");
    assert_eq!(status, 200, "buyTrip via {agency}: {doc}");
    let flight = doc["flight"].as_str().expect("a flight").to_string();
    (flight_instance(&flight), doc)
}

/// `flight-airline-2-7` → `airline-2`.
pub fn flight_instance(flight: &str) -> String {
    let rest = flight.strip_prefix("flight-").unwrap_or(flight);
    rest.rsplit_once('-').map_or(rest, |(instance, _)| instance).to_string()
}

/// What an agency instance says it is wired to.
pub fn wired_to(agency: &str, role: &str) -> BTreeSet<String> {
    let (status, body) = http_get(&format!("{agency}/health")).expect("health answers");
    assert_eq!(status, 200, "{agency}/health: {body}");
    let doc: Value = serde_json::from_str(&body).expect("health JSON");
    doc["wired"][role]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// One buyTrip of a [`Caller`]: the agency called, and its answer.
pub type Call = (String, Result<(u16, Value), String>);

/// Calls buyTrip in a loop in a background thread until finished.
pub struct Caller {
    pub stop: Arc<AtomicBool>,
    pub handle: Option<JoinHandle<Vec<Call>>>,
}

impl Caller {
    pub fn start(agencies: Vec<String>) -> Caller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut results = Vec::new();
            let mut n = 0usize;
            while !flag.load(Ordering::SeqCst) {
                let agency = &agencies[n % agencies.len()];
                results.push((agency.clone(), buy_trip(agency)));
                n += 1;
                thread::sleep(Duration::from_millis(15));
            }
            results
        });
        Caller { stop, handle: Some(handle) }
    }

    /// Stops the loop and insists every call was answered 200; returns how many there were.
    pub fn finish_all_ok(mut self, during: &str) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let results = self.handle.take().expect("running").join().expect("the caller thread");
        let failures: Vec<String> = results
            .iter()
            .filter(|(_, r)| !matches!(r, Ok((200, _))))
            .map(|(agency, r)| format!("{agency}: {r:?}"))
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} buyTrip calls failed during {during}:\n{}",
            failures.len(),
            results.len(),
            failures.join("\n")
        );
        results.len()
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Specs and state
// ---------------------------------------------------------------------------------------------

/// A deployable service running `script`, with `name` as its role and endpoint.
pub fn deployable(name: &str, script: &str, service_type: &str, port: u16, instances: u32) -> Value {
    json!({
        "name": name,
        "roles": [name],
        "serviceType": service_type,
        "packageType": "COMMAND_LINE",
        "packageUri": format!("services/{script}"),
        "endpointName": name,
        "port": port,
        "numberOfInstances": instances,
        "resourceImpact": { "memory": "SMALL" },
        "version": "1.0"
    })
}

pub fn with_deps(mut service: Value, deps: &[(&str, &str)]) -> Value {
    service["dependencies"] =
        deps.iter().map(|(name, role)| json!({ "serviceSpecName": name, "serviceSpecRole": role })).collect();
    service
}

/// The travel choreography: airline (SOAP) on `base`, travelagency (REST) on `base + 1`
/// depending on airline and the legacy weather on 127.0.0.1:`base + 2`.
pub fn travel(base: u16, airlines: u32, agencies: u32) -> Value {
    json!({
        "deployableServiceSpecs": [
            deployable("airline", "airline.py", "SOAP", base, airlines),
            with_deps(
                deployable("travelagency", "travelagency.py", "REST", base + 1, agencies),
                &[("airline", "airline"), ("weather", "weather")]
            )
        ],
        "legacyServiceSpecs": [
            {
                "name": "weather",
                "roles": ["weather"],
                "serviceType": "SOAP",
                "nativeURIs": [format!("http://127.0.0.1:{}/weather", base + 2)]
            }
        ]
    })
}

/// Sets a field of the service `name` in a choreography.
pub fn set(chor: &mut Value, name: &str, pointer: &str, value: Value) {
    for list in ["deployableServiceSpecs", "legacyServiceSpecs"] {
        if let Some(services) = chor[list].as_array_mut() {
            for service in services {
                if service["name"] == name {
                    *service.pointer_mut(pointer).expect("an existing field") = value;
                    return;
                }
            }
        }
    }
    panic!("no service {name} in the choreography");
}

pub fn remove_service(chor: &mut Value, name: &str) {
    for list in ["deployableServiceSpecs", "legacyServiceSpecs"] {
        if let Some(services) = chor[list].as_array_mut() {
            services.retain(|s| s["name"] != name);
        }
    }
}

pub fn instances(state: &Value, service: &str) -> Vec<Value> {
    state["services"][service]["instances"].as_array().cloned().unwrap_or_default()
}

pub fn field(instances: &[Value], key: &str) -> Vec<String> {
    instances.iter().map(|i| i[key].as_str().expect("a string field").to_string()).collect()
}

pub fn pids(instances: &[Value]) -> Vec<u32> {
    instances.iter().map(|i| i["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).expect("a pid")).collect()
}

/// The nativeUri of the first travelagency instance.
pub fn agency_uri(state: &Value) -> String {
    field(&instances(state, "travelagency"), "nativeUri").into_iter().next().expect("a travelagency instance")
}

pub fn set_of(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// Every node the state records runs an instance: none is left behind, empty.
pub fn assert_no_empty_nodes(state: &Value) {
    let used: BTreeSet<String> = state["services"]
        .as_object()
        .expect("services")
        .values()
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .map(|i| i["node"].as_str().expect("node").to_string())
        .collect();
    let nodes: BTreeSet<String> = state["nodes"].as_object().map(|n| n.keys().cloned().collect()).unwrap_or_default();
    assert_eq!(nodes, used, "nodes recorded vs nodes in use: {}", state["nodes"]);
}

/// Every instance in `status --json` is healthy (and every legacy URI answers).
pub fn assert_all_healthy(status: &Value) {
    let services = status["services"].as_object().expect("services");
    assert!(!services.is_empty(), "no services in {status}");
    for (name, service) in services {
        for instance in service["instances"].as_array().expect("instances") {
            assert_eq!(instance["health"], "healthy", "{name}/{}: {instance}", instance["id"]);
            assert_eq!(instance["alive"], true, "{name}: {instance}");
            assert_eq!(instance["answering"], true, "{name}: {instance}");
        }
        if let Some(uris) = service["nativeUris"].as_array() {
            for uri in uris {
                assert_eq!(uri[1], true, "legacy {name}: {uri} does not answer");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Instance logs: "<epoch ms> <instance id> <event>"
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct LogLine {
    pub t: u64,
    pub event: String,
}

/// The events of one instance log. The services log with `print()`, which writes the text and
/// the newline separately, so two threads logging at once can leave two events on one line
/// (and an empty line after): every `<13-digit ms> <id> ` starts an event.
pub fn parse_log(text: &str, id: &str) -> Vec<LogLine> {
    let marker = format!(" {id} ");
    let mut events = Vec::new();
    for line in text.lines() {
        let mut starts = Vec::new();
        let mut from = 0;
        while let Some(i) = line[from..].find(&marker) {
            let at = from + i;
            if at >= 13 && line.get(at - 13..at).is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit())) {
                starts.push(at - 13);
            }
            from = at + 1;
        }
        for (k, start) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(line.len());
            events.extend(parse_line(&line[*start..end]));
        }
    }
    events
}

pub fn parse_line(line: &str) -> Option<LogLine> {
    let mut parts = line.splitn(3, ' ');
    let t = parts.next()?.parse().ok()?;
    let _instance = parts.next()?;
    Some(LogLine { t, event: parts.next()?.trim_end().to_string() })
}

/// One run of an instance: from `listening` to `stopping` (a log file can hold several when an
/// instance id is used again).
#[derive(Debug, Clone)]
pub struct Life {
    pub instance: String,
    pub uri: String,
    pub start: u64,
    pub stop: Option<u64>,
    pub lines: Vec<LogLine>,
}

pub fn lives(logs: &BTreeMap<String, Vec<LogLine>>) -> Vec<Life> {
    let mut all = Vec::new();
    for (instance, lines) in logs {
        let mut current: Option<Life> = None;
        for line in lines {
            if let Some(uri) = line.event.strip_prefix("listening ") {
                all.extend(current.take());
                current = Some(Life {
                    instance: instance.clone(),
                    uri: uri.to_string(),
                    start: line.t,
                    stop: None,
                    lines: Vec::new(),
                });
                continue;
            }
            let Some(life) = current.as_mut() else {
                continue;
            };
            if line.event.starts_with("stopping") && life.stop.is_none() {
                life.stop = Some(line.t);
            }
            life.lines.push(line.clone());
        }
        all.extend(current);
    }
    all
}

/// The endpoints of a `wired role=<role> …` event.
pub fn wired_endpoints(event: &str, role: &str) -> Option<BTreeSet<String>> {
    let rest = event.strip_prefix(&format!("wired role={role} "))?;
    let list = rest.split_once("endpoints=")?.1;
    Some(list.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect())
}

/// The last endpoint list `life` was told for `role` at or before `t`.
pub fn wired_at(life: &Life, role: &str, t: u64) -> Option<BTreeSet<String>> {
    life.lines.iter().filter(|l| l.t <= t).filter_map(|l| wired_endpoints(&l.event, role)).next_back()
}

#[derive(Debug, Default)]
pub struct InvariantReport {
    pub stops: usize,
    pub wiring_checks: usize,
    pub calls: usize,
}

/// The invariant: no consumer ever points at an endpoint that is not running, read from the
/// services' own logs. For every instance of `provider` that logged `stopping` at T, every
/// consumer instance alive at T was last told (at or before T) a list without it, and no
/// consumer called it at or after T (until something listens there again). And no consumer is
/// told an endpoint of `provider` before that instance listens.
pub fn check_no_stale_endpoints(logs: &BTreeMap<String, Vec<LogLine>>, provider: &str, role: &str) -> InvariantReport {
    let all = lives(logs);
    let is_provider = |l: &Life| {
        l.instance.strip_prefix(provider).and_then(|r| r.strip_prefix('-')).is_some_and(|n| n.parse::<u64>().is_ok())
    };
    let providers: Vec<&Life> = all.iter().filter(|l| is_provider(l)).collect();
    let consumers: Vec<&Life> = all
        .iter()
        .filter(|l| !is_provider(l))
        .filter(|l| l.lines.iter().any(|x| wired_endpoints(&x.event, role).is_some()))
        .collect();
    let mut report = InvariantReport::default();
    let mut violations = Vec::new();
    for stopped in &providers {
        let Some(t) = stopped.stop else { continue };
        report.stops += 1;
        let uri = &stopped.uri;
        let next_listen =
            providers.iter().filter(|p| p.uri == *uri && p.start > t).map(|p| p.start).min().unwrap_or(u64::MAX);
        for consumer in &consumers {
            let alive = consumer.start <= t && consumer.stop.is_none_or(|s| s >= t);
            if alive && let Some(list) = wired_at(consumer, role, t) {
                report.wiring_checks += 1;
                if list.contains(uri) {
                    violations.push(format!(
                        "{} ({uri}) stopped at {t}, but {} was still wired to {list:?}",
                        stopped.instance, consumer.instance
                    ));
                }
            }
            for line in &consumer.lines {
                if line.event == format!("call {role} via {uri}") && line.t >= t && line.t < next_listen {
                    violations.push(format!(
                        "{} called {uri} at {}, after {} stopped at {t}",
                        consumer.instance, line.t, stopped.instance
                    ));
                }
            }
        }
    }
    // Told about an endpoint only while something listens there.
    for consumer in &consumers {
        report.calls += consumer.lines.iter().filter(|l| l.event.starts_with(&format!("call {role} via "))).count();
        for line in &consumer.lines {
            let Some(list) = wired_endpoints(&line.event, role) else {
                continue;
            };
            for uri in &list {
                let running =
                    providers.iter().any(|p| p.uri == *uri && p.start <= line.t && p.stop.is_none_or(|s| s >= line.t));
                if !running {
                    violations.push(format!(
                        "{} was told {uri} at {}, when no instance listened there",
                        consumer.instance, line.t
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "the wiring invariant was broken:\n{}", violations.join("\n"));
    report
}

// ---------------------------------------------------------------------------------------------
// The wiring invariant, judged from the services' own logs
// ---------------------------------------------------------------------------------------------

/// Every list one consumer instance was told for one role, in order: (time, endpoints).
pub fn told(lines: &[LogLine], role: &str) -> Vec<(u64, BTreeSet<String>)> {
    lines.iter().filter_map(|l| wired_endpoints(&l.event, role).map(|e| (l.t, e))).collect()
}

/// What [`judge_wiring`] looked at.
#[derive(Debug, Default)]
pub struct Judgement {
    /// `setInvocationAddress` calls read from the consumers' logs for the role.
    pub calls: usize,
    /// Provider instances that stopped.
    pub stops: usize,
}

/// Judges, from the logs of every instance (`logs`, plus legacy consumers' logs in `extra`), the
/// wiring of `role`, whose providers are instances of the services `providers`:
///
/// - every list a consumer was told differs from the one it held before (a consumer learns each
///   list once; the first list is never empty);
/// - every endpoint told was listening at that moment, and `ready` (when given) says it was
///   ready: `ready(endpoint, t)`;
/// - no consumer alive when a provider instance stopped still held it;
/// - when `never_empty`, no consumer was told an empty list while a provider instance was
///   serving (listening and not stopping).
pub fn judge_wiring(
    logs: &BTreeMap<String, Vec<LogLine>>,
    extra: &BTreeMap<String, Vec<LogLine>>,
    role: &str,
    providers: &[&str],
    never_empty: bool,
) -> Judgement {
    let all = lives(logs);
    let is_provider = |l: &Life| {
        providers.iter().any(|p| {
            l.instance.strip_prefix(p).and_then(|r| r.strip_prefix('-')).is_some_and(|n| n.parse::<u64>().is_ok())
        })
    };
    let provider_lives: Vec<&Life> = all.iter().filter(|l| is_provider(l)).collect();
    let serving_at = |uri: &str, t: u64| {
        provider_lives.iter().any(|p| p.uri == uri && p.start <= t && p.stop.is_none_or(|s| s >= t))
    };
    let mut judgement = Judgement::default();
    let mut violations = Vec::new();
    // Consumers: every life of a deployed instance that was told the role, and every legacy log.
    let mut consumers: Vec<(String, Vec<LogLine>, u64, Option<u64>)> = all
        .iter()
        .filter(|l| !told(&l.lines, role).is_empty())
        .map(|l| (l.instance.clone(), l.lines.clone(), l.start, l.stop))
        .collect();
    for (name, lines) in extra {
        consumers.push((
            name.clone(),
            lines.clone(),
            0,
            lines.iter().find(|l| l.event.starts_with("stopping")).map(|l| l.t),
        ));
    }
    for (name, lines, _, stop) in &consumers {
        let lists = told(lines, role);
        judgement.calls += lists.len();
        let mut held: BTreeSet<String> = BTreeSet::new();
        for (i, (t, list)) in lists.iter().enumerate() {
            if *list == held {
                violations.push(format!(
                    "{name} was told the list it already held for `{role}` at {t} (call {}): {list:?}",
                    i + 1
                ));
            }
            for uri in list {
                if !serving_at(uri, *t) {
                    violations.push(format!("{name} was told {uri} at {t}, when no instance served there"));
                }
            }
            if never_empty && list.is_empty() {
                let serving: Vec<&str> = provider_lives
                    .iter()
                    .filter(|p| p.start <= *t && p.stop.is_none_or(|s| s > *t))
                    .map(|p| p.instance.as_str())
                    .collect();
                if !serving.is_empty() {
                    violations
                        .push(format!("{name} was told an empty list for `{role}` at {t} while {serving:?} served it"));
                }
            }
            if stop.is_some_and(|s| s < *t) {
                violations.push(format!("{name} was told a list at {t}, after it began stopping"));
            }
            held = list.clone();
        }
    }
    for provider in &provider_lives {
        let Some(t) = provider.stop else { continue };
        judgement.stops += 1;
        for (name, lines, start, stop) in &consumers {
            if *start > t || stop.is_some_and(|s| s < t) {
                continue;
            }
            let held = told(lines, role).into_iter().filter(|(at, _)| *at <= t).map(|(_, l)| l).next_back();
            if held.is_some_and(|l| l.contains(&provider.uri)) {
                violations.push(format!(
                    "{} ({}) stopped at {t}, but {name} still held it for `{role}`",
                    provider.instance, provider.uri
                ));
            }
        }
    }
    assert!(violations.is_empty(), "the wiring invariant was broken:\n{}", violations.join("\n"));
    judgement
}
