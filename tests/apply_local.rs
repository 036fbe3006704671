//! `enact apply` on the local provider, end to end: real processes on loopback addresses
//! (127.0.0.2, 127.0.0.3, …), wired over real HTTP, driven through the built binary in temporary
//! config repositories that hold the travel example's Python services.
//!
//! Every test uses its own ports (the local provider hands out the same loopback addresses in
//! every repository, and tests run in parallel), and a [`Repo`] guard that, even when the test
//! fails, runs `enact destroy` and then kills any process enact started from its directory.

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

/// The longest any single enact command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// The config repository guard
// ---------------------------------------------------------------------------------------------

/// A temporary config repository. Dropping it destroys the environment and kills every process
/// started from it.
struct Repo {
    /// Canonical path of the repository.
    root: PathBuf,
    /// Processes the test started itself (a legacy service, a background enact).
    children: Vec<Child>,
    _dir: TempDir,
}

impl Repo {
    /// A repository with the travel example's services, `chor` as chor.json, an empty dev
    /// overlay, and `settings` as enact.json (the local account when `None`).
    fn new(chor: &Value, settings: Option<&Value>) -> Repo {
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

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn write_json(&self, relative: &str, value: &Value) {
        let text = serde_json::to_string_pretty(value).expect("JSON") + "\n";
        fs::write(self.path(relative), text).expect("write a config file");
    }

    fn write_chor(&self, chor: &Value) {
        self.write_json("chor.json", chor);
    }

    /// Runs enact in the repository (no terminal, no colour), with a deadline.
    fn enact(&self, args: &[&str]) -> Output {
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
    fn enact_ok(&self, args: &[&str], code: i32) -> Output {
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

    fn apply(&self) -> Output {
        self.enact_ok(&["apply", "--auto-approve"], 0)
    }

    /// Starts enact in the background; its output goes to `<name>.out` and `<name>.err`.
    fn spawn_enact(&mut self, args: &[&str], name: &str) -> u32 {
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
    fn wait_child(&mut self, pid: u32, timeout: Duration) -> ExitStatus {
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

    /// Starts the legacy weather service on 127.0.0.1:`port` and waits until it answers.
    fn start_weather(&mut self, port: u16) -> String {
        let log = fs::File::create(self.path("weather.log")).expect("weather log");
        let child = std::process::Command::new("python3")
            .arg(self.path("services/weather.py"))
            .current_dir(&self.root)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ENDPOINT_NAME", "weather")
            .env("INSTANCE_ID", "legacy-weather")
            .env_remove("ENACT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("weather log"))
            .stderr(log)
            .spawn()
            .expect("start weather.py");
        self.children.push(child);
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        wait_for(&format!("the legacy weather service on {address}"), Duration::from_secs(15), || {
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        format!("http://127.0.0.1:{port}/weather")
    }

    /// The recorded state of dev.
    fn state(&self) -> Value {
        let text = fs::read_to_string(self.path("state/dev.json")).expect("state/dev.json");
        serde_json::from_str(&text).expect("state JSON")
    }

    fn status(&self) -> Value {
        let output = self.enact_ok(&["status", "--json"], 0);
        serde_json::from_slice(&output.stdout).expect("status --json is JSON")
    }

    /// Every instance log, per instance id.
    fn logs(&self) -> BTreeMap<String, Vec<LogLine>> {
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

    fn log_of(&self, instance: &str) -> Vec<LogLine> {
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
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn describe(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `done` every 20 ms; fails the test after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
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
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("X");
    state != "Z" && state != "X"
}

/// Live processes started by enact (`ENACT_TOKEN` in their environment) whose working
/// directory or command line is inside `root`.
fn processes_of(root: &Path) -> Vec<u32> {
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

fn wait_dead(pids: &[u32]) {
    wait_for(&format!("processes {pids:?} to exit"), Duration::from_secs(10), || {
        pids.iter().all(|p| !process_alive(*p))
    });
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(url: &str) -> Result<(u16, String), String> {
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
fn buy_trip(agency: &str) -> Result<(u16, Value), String> {
    let (status, body) = http_get(&format!("{agency}/buyTrip"))?;
    let doc = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((status, doc))
}

/// A buyTrip that must succeed; the airline instance that sold the flight.
fn trip_ok(agency: &str) -> (String, Value) {
    let (status, doc) = buy_trip(agency).expect("buyTrip answers");
    assert_eq!(status, 200, "buyTrip via {agency}: {doc}");
    let flight = doc["flight"].as_str().expect("a flight").to_string();
    (flight_instance(&flight), doc)
}

/// `flight-airline-2-7` → `airline-2`.
fn flight_instance(flight: &str) -> String {
    let rest = flight.strip_prefix("flight-").unwrap_or(flight);
    rest.rsplit_once('-').map_or(rest, |(instance, _)| instance).to_string()
}

/// What an agency instance says it is wired to.
fn wired_to(agency: &str, role: &str) -> BTreeSet<String> {
    let (status, body) = http_get(&format!("{agency}/health")).expect("health answers");
    assert_eq!(status, 200, "{agency}/health: {body}");
    let doc: Value = serde_json::from_str(&body).expect("health JSON");
    doc["wired"][role]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// One buyTrip of a [`Caller`]: the agency called, and its answer.
type Call = (String, Result<(u16, Value), String>);

/// Calls buyTrip in a loop in a background thread until finished.
struct Caller {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Call>>>,
}

impl Caller {
    fn start(agencies: Vec<String>) -> Caller {
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
    fn finish_all_ok(mut self, during: &str) -> usize {
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
fn deployable(name: &str, script: &str, service_type: &str, port: u16, instances: u32) -> Value {
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

fn with_deps(mut service: Value, deps: &[(&str, &str)]) -> Value {
    service["dependencies"] =
        deps.iter().map(|(name, role)| json!({ "serviceSpecName": name, "serviceSpecRole": role })).collect();
    service
}

/// The travel choreography: airline (SOAP) on `base`, travelagency (REST) on `base + 1`
/// depending on airline and the legacy weather on 127.0.0.1:`base + 2`.
fn travel(base: u16, airlines: u32, agencies: u32) -> Value {
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
fn set(chor: &mut Value, name: &str, pointer: &str, value: Value) {
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

fn remove_service(chor: &mut Value, name: &str) {
    for list in ["deployableServiceSpecs", "legacyServiceSpecs"] {
        if let Some(services) = chor[list].as_array_mut() {
            services.retain(|s| s["name"] != name);
        }
    }
}

fn instances(state: &Value, service: &str) -> Vec<Value> {
    state["services"][service]["instances"].as_array().cloned().unwrap_or_default()
}

fn field(instances: &[Value], key: &str) -> Vec<String> {
    instances.iter().map(|i| i[key].as_str().expect("a string field").to_string()).collect()
}

fn pids(instances: &[Value]) -> Vec<u32> {
    instances.iter().map(|i| i["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).expect("a pid")).collect()
}

/// The nativeUri of the first travelagency instance.
fn agency_uri(state: &Value) -> String {
    field(&instances(state, "travelagency"), "nativeUri").into_iter().next().expect("a travelagency instance")
}

fn set_of(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// Every node the state records runs an instance: none is left behind, empty.
fn assert_no_empty_nodes(state: &Value) {
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
fn assert_all_healthy(status: &Value) {
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
struct LogLine {
    t: u64,
    event: String,
}

/// The events of one instance log. The services log with `print()`, which writes the text and
/// the newline separately, so two threads logging at once can leave two events on one line
/// (and an empty line after): every `<13-digit ms> <id> ` starts an event.
fn parse_log(text: &str, id: &str) -> Vec<LogLine> {
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

fn parse_line(line: &str) -> Option<LogLine> {
    let mut parts = line.splitn(3, ' ');
    let t = parts.next()?.parse().ok()?;
    let _instance = parts.next()?;
    Some(LogLine { t, event: parts.next()?.trim_end().to_string() })
}

/// One run of an instance: from `listening` to `stopping` (a log file can hold several when an
/// instance id is used again).
#[derive(Debug, Clone)]
struct Life {
    instance: String,
    uri: String,
    start: u64,
    stop: Option<u64>,
    lines: Vec<LogLine>,
}

fn lives(logs: &BTreeMap<String, Vec<LogLine>>) -> Vec<Life> {
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
fn wired_endpoints(event: &str, role: &str) -> Option<BTreeSet<String>> {
    let rest = event.strip_prefix(&format!("wired role={role} "))?;
    let list = rest.split_once("endpoints=")?.1;
    Some(list.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect())
}

/// The last endpoint list `life` was told for `role` at or before `t`.
fn wired_at(life: &Life, role: &str, t: u64) -> Option<BTreeSet<String>> {
    life.lines.iter().filter(|l| l.t <= t).filter_map(|l| wired_endpoints(&l.event, role)).next_back()
}

#[derive(Debug, Default)]
struct InvariantReport {
    stops: usize,
    wiring_checks: usize,
    calls: usize,
}

/// DESIGN §5: no consumer ever points at an endpoint that is not running, read from the
/// services' own logs. For every instance of `provider` that logged `stopping` at T, every
/// consumer instance alive at T was last told (at or before T) a list without it, and no
/// consumer called it at or after T (until something listens there again). And no consumer is
/// told an endpoint of `provider` before that instance listens.
fn check_no_stale_endpoints(logs: &BTreeMap<String, Vec<LogLine>>, provider: &str, role: &str) -> InvariantReport {
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
// 1. deploy and wire
// ---------------------------------------------------------------------------------------------

#[test]
fn apply_deploys_and_wires_the_travel_choreography() {
    let base = 21000;
    let mut repo = Repo::new(&travel(base, 2, 1), None);
    let weather = repo.start_weather(base + 2);

    let output = repo.apply();
    let out = stdout(&output);
    assert!(out.contains("Apply: 3 done, 0 failed, 0 skipped"), "{}", describe(&output));

    let status = repo.status();
    assert_all_healthy(&status);
    assert_eq!(status["services"]["airline"]["instances"].as_array().map(Vec::len), Some(2));
    assert_eq!(status["services"]["travelagency"]["instances"].as_array().map(Vec::len), Some(1));
    assert_eq!(status["services"]["weather"]["kind"], "legacy");

    let state = repo.state();
    let airlines = instances(&state, "airline");
    let airline_uris = field(&airlines, "nativeUri");
    assert_eq!(set_of(&airline_uris).len(), 2, "two distinct airline endpoints");
    for uri in &airline_uris {
        assert!(uri.ends_with(&format!(":{base}/airline")), "{uri}");
    }
    for pid in pids(&airlines) {
        assert!(process_alive(pid), "airline pid {pid} runs");
    }
    let agency = agency_uri(&state);
    assert_eq!(wired_to(&agency, "airline"), set_of(&airline_uris));
    assert_eq!(wired_to(&agency, "weather"), BTreeSet::from([weather]));

    // Replicas answer in turn, and the legacy weather answers through the agency.
    let mut sellers = Vec::new();
    for _ in 0..6 {
        let (seller, doc) = trip_ok(&agency);
        assert_eq!(doc["forecast"], "sunny@legacy-weather", "{doc}");
        assert_eq!(doc["servedBy"], "travelagency-1", "{doc}");
        sellers.push(seller);
    }
    assert_eq!(
        sellers.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"airline-1".to_string(), &"airline-2".to_string()]),
        "{sellers:?}"
    );
    for pair in sellers.windows(2) {
        assert_ne!(pair[0], pair[1], "calls alternate between replicas: {sellers:?}");
    }

    // The agency's log tells the same story.
    let log = repo.log_of("travelagency-1");
    let wired: Vec<&LogLine> = log.iter().filter(|l| l.event.starts_with("wired role=airline ")).collect();
    assert!(!wired.is_empty(), "travelagency-1 was wired: {log:?}");

    // Applying again changes nothing.
    let again = repo.apply();
    assert!(stdout(&again).contains("No changes"), "{}", describe(&again));
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}

// ---------------------------------------------------------------------------------------------
// 2. scale out and in
// ---------------------------------------------------------------------------------------------

#[test]
fn scale_out_starts_answering_and_scale_in_stops_the_leaving_instances() {
    let base = 21100;
    let mut chor = travel(base, 2, 1);
    let mut repo = Repo::new(&chor, None);
    repo.start_weather(base + 2);
    repo.apply();
    let agency = agency_uri(&repo.state());
    let agency_pid = pids(&instances(&repo.state(), "travelagency"));

    // Scale out: 2 → 3.
    set(&mut chor, "airline", "/numberOfInstances", json!(3));
    repo.write_chor(&chor);
    repo.apply();
    let state = repo.state();
    let airlines = instances(&state, "airline");
    assert_eq!(airlines.len(), 3);
    assert_eq!(
        pids(&instances(&state, "travelagency")),
        agency_pid,
        "the consumer was rewired in place, not restarted"
    );
    let uris = field(&airlines, "nativeUri");
    assert_eq!(wired_to(&agency, "airline"), set_of(&uris));
    let sellers: BTreeSet<String> = (0..6).map(|_| trip_ok(&agency).0).collect();
    assert_eq!(
        sellers,
        BTreeSet::from(["airline-1", "airline-2", "airline-3"].map(String::from)),
        "the third replica answers"
    );

    // Scale in: 3 → 1.
    let leaving: Vec<u32> = airlines
        .iter()
        .filter(|i| i["id"] != "airline-1")
        .map(|i| u32::try_from(i["pid"].as_u64().expect("pid")).expect("pid"))
        .collect();
    assert_eq!(leaving.len(), 2);
    set(&mut chor, "airline", "/numberOfInstances", json!(1));
    repo.write_chor(&chor);
    let caller = Caller::start(vec![agency.clone()]);
    repo.apply();
    let calls = caller.finish_all_ok("the scale in");
    assert!(calls > 0);
    for pid in &leaving {
        assert!(!process_alive(*pid), "stopped instance pid {pid} is gone");
    }
    let state = repo.state();
    let remaining = instances(&state, "airline");
    assert_eq!(field(&remaining, "id"), vec!["airline-1".to_string()]);
    assert_eq!(state["nodes"].as_object().map(|n| n.len()), Some(2), "freed nodes");
    assert_eq!(wired_to(&agency, "airline"), set_of(&field(&remaining, "nativeUri")));
    for _ in 0..4 {
        assert_eq!(trip_ok(&agency).0, "airline-1");
    }
    let report = check_no_stale_endpoints(&repo.logs(), "airline", "airline");
    assert_eq!(report.stops, 2, "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. memory change and redeploy
// ---------------------------------------------------------------------------------------------

#[test]
fn memory_change_moves_instances_and_a_new_version_replaces_them_without_downtime() {
    let base = 21200;
    let mut chor = travel(base, 2, 1);
    let mut repo = Repo::new(&chor, None);
    repo.start_weather(base + 2);
    repo.apply();
    let before = repo.state();
    let agency = agency_uri(&before);
    let old = instances(&before, "airline");
    let old_nodes = set_of(&field(&old, "node"));
    let old_uris = set_of(&field(&old, "nativeUri"));
    let old_pids = pids(&old);

    // SMALL → MEDIUM: new nodes, new addresses, the old processes gone, callable throughout.
    set(&mut chor, "airline", "/resourceImpact/memory", json!("MEDIUM"));
    repo.write_chor(&chor);
    let caller = Caller::start(vec![agency.clone()]);
    repo.apply();
    caller.finish_all_ok("the memory change");
    let state = repo.state();
    let moved = instances(&state, "airline");
    assert_eq!(moved.len(), 2);
    for node in field(&moved, "node") {
        assert!(!old_nodes.contains(&node), "{node} is a new node");
        assert_eq!(state["nodes"][&node]["memory"], "MEDIUM", "{}", state["nodes"]);
    }
    for node in &old_nodes {
        assert!(state["nodes"].get(node).is_none(), "old node {node} freed");
    }
    let new_uris = set_of(&field(&moved, "nativeUri"));
    assert!(old_uris.is_disjoint(&new_uris), "{old_uris:?} vs {new_uris:?}");
    wait_dead(&old_pids);
    assert_eq!(wired_to(&agency, "airline"), new_uris);
    trip_ok(&agency);

    // 1.0 → 1.1: every airline instance replaced, new pids, no buyTrip fails meanwhile.
    let old_ids = set_of(&field(&moved, "id"));
    let old_pids = pids(&moved);
    set(&mut chor, "airline", "/version", json!("1.1"));
    repo.write_chor(&chor);
    let caller = Caller::start(vec![agency.clone()]);
    let output = repo.apply();
    let calls = caller.finish_all_ok("the redeploy");
    assert!(calls >= 3, "only {calls} calls were made during the redeploy");
    assert!(stdout(&output).contains("1 done") || stdout(&output).contains("done"));
    let state = repo.state();
    let replaced = instances(&state, "airline");
    assert_eq!(replaced.len(), 2);
    assert!(set_of(&field(&replaced, "id")).is_disjoint(&old_ids), "every instance replaced: {replaced:?}");
    for pid in pids(&replaced) {
        assert!(!old_pids.contains(&pid) && process_alive(pid));
    }
    wait_dead(&old_pids);
    assert_eq!(state["services"]["airline"]["spec"]["version"], "1.1");
    assert_eq!(wired_to(&agency, "airline"), set_of(&field(&replaced, "nativeUri")));
    let sellers: BTreeSet<String> = (0..4).map(|_| trip_ok(&agency).0).collect();
    assert_eq!(sellers, set_of(&field(&replaced, "id")));

    // A new version of the consumer itself: a new process, callable at its new address.
    let old_agency_pids = pids(&instances(&state, "travelagency"));
    set(&mut chor, "travelagency", "/version", json!("1.1"));
    repo.write_chor(&chor);
    repo.apply();
    let state = repo.state();
    let agency_now = instances(&state, "travelagency");
    assert_eq!(agency_now.len(), 1);
    assert_ne!(pids(&agency_now), old_agency_pids);
    wait_dead(&old_agency_pids);
    let agency = agency_uri(&state);
    assert_eq!(wired_to(&agency, "airline"), set_of(&field(&replaced, "nativeUri")));
    let (_, doc) = trip_ok(&agency);
    assert_eq!(doc["forecast"], "sunny@legacy-weather", "{doc}");
    check_no_stale_endpoints(&repo.logs(), "airline", "airline");
}

// ---------------------------------------------------------------------------------------------
// 4. undeploy and destroy
// ---------------------------------------------------------------------------------------------

#[test]
fn removed_services_are_undeployed_and_destroy_stops_everything() {
    let base = 21300;
    let mut chor = travel(base, 1, 1);
    chor["deployableServiceSpecs"].as_array_mut().expect("list").push(deployable(
        "extra",
        "airline.py",
        "SOAP",
        base + 3,
        2,
    ));
    let mut repo = Repo::new(&chor, None);
    repo.start_weather(base + 2);
    repo.apply();
    let state = repo.state();
    let extra_pids = pids(&instances(&state, "extra"));
    assert_eq!(extra_pids.len(), 2);
    let node_count = state["nodes"].as_object().map(|n| n.len());
    assert_eq!(node_count, Some(4));

    // A service with no consumers, removed from the spec.
    remove_service(&mut chor, "extra");
    repo.write_chor(&chor);
    repo.apply();
    wait_dead(&extra_pids);
    let state = repo.state();
    assert!(state["services"].get("extra").is_none(), "{}", state["services"]);
    assert_eq!(state["nodes"].as_object().map(|n| n.len()), Some(2));
    assert!(repo.status()["services"].get("extra").is_none());
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);

    // A provider removed together with the dependency on it: the consumer is told there is
    // no airline before the airline stops.
    let agency = agency_uri(&state);
    let airline_pids = pids(&instances(&state, "airline"));
    remove_service(&mut chor, "airline");
    set(
        &mut chor,
        "travelagency",
        "/dependencies",
        json!([{ "serviceSpecName": "weather", "serviceSpecRole": "weather" }]),
    );
    repo.write_chor(&chor);
    repo.apply();
    wait_dead(&airline_pids);
    assert!(repo.state()["services"].get("airline").is_none());
    assert!(wired_to(&agency, "airline").is_empty());
    let (status, doc) = buy_trip(&agency).expect("buyTrip answers");
    assert_eq!(status, 503, "{doc}");
    let report = check_no_stale_endpoints(&repo.logs(), "airline", "airline");
    assert_eq!(report.stops, 1, "{report:?}");
    assert!(report.wiring_checks >= 1, "{report:?}");

    // Destroy: nothing left running, nothing left in the state.
    let agency_pids = pids(&instances(&repo.state(), "travelagency"));
    let output = repo.enact_ok(&["destroy", "--auto-approve"], 0);
    assert!(stdout(&output).contains("Destroy:"), "{}", describe(&output));
    wait_dead(&agency_pids);
    wait_for("every process of the repository to exit", Duration::from_secs(10), || {
        processes_of(&repo.root).is_empty()
    });
    let state = repo.state();
    assert_eq!(state["services"].as_object().map(|s| s.len()), Some(0), "{state}");
    assert_eq!(state["nodes"].as_object().map(|n| n.len()).unwrap_or(0), 0, "{state}");
}

// ---------------------------------------------------------------------------------------------
// 5. a dependency cycle
// ---------------------------------------------------------------------------------------------

#[test]
fn a_dependency_cycle_is_deployed_as_one_group_and_wired_both_ways() {
    let base = 21400;
    // agency (REST) calls carrier in role `airline`; carrier (SOAP) calls agency back.
    let mut carrier = with_deps(deployable("carrier", "airline.py", "SOAP", base + 1, 2), &[("agency", "agency")]);
    carrier["roles"] = json!(["airline"]);
    let mut chor = json!({
        "deployableServiceSpecs": [
            with_deps(
                deployable("agency", "travelagency.py", "REST", base, 1),
                &[("carrier", "airline")]
            ),
            carrier
        ]
    });
    let repo = Repo::new(&chor, None);
    repo.apply();
    assert_all_healthy(&repo.status());
    let state = repo.state();
    let agency_uris = field(&instances(&state, "agency"), "nativeUri");
    let carrier_uris = field(&instances(&state, "carrier"), "nativeUri");
    assert_eq!(carrier_uris.len(), 2);

    let last_wired = |instance: &str, role: &str| {
        repo.log_of(instance)
            .iter()
            .filter_map(|l| wired_endpoints(&l.event, role))
            .next_back()
            .unwrap_or_else(|| panic!("{instance} logged no `wired role={role}`"))
    };
    let log = repo.log_of("agency-1");
    assert!(log.iter().any(|l| l.event.starts_with("wired role=airline name=carrier endpoints=")), "{log:?}");
    assert_eq!(last_wired("agency-1", "airline"), set_of(&carrier_uris));
    for carrier in ["carrier-1", "carrier-2"] {
        let log = repo.log_of(carrier);
        assert!(log.iter().any(|l| l.event.starts_with("wired role=agency name=agency endpoints=")), "{log:?}");
        assert_eq!(last_wired(carrier, "agency"), set_of(&agency_uris));
    }
    let agency = &agency_uris[0];
    let (seller, _) = trip_ok(agency);
    assert!(seller.starts_with("carrier-"), "{seller}");

    // Growing one side of the cycle wires the new instance and tells the other side.
    set(&mut chor, "carrier", "/numberOfInstances", json!(3));
    repo.write_chor(&chor);
    repo.apply();
    let carrier_uris = field(&instances(&repo.state(), "carrier"), "nativeUri");
    assert_eq!(carrier_uris.len(), 3);
    assert_eq!(last_wired("agency-1", "airline"), set_of(&carrier_uris));
    assert_eq!(last_wired("carrier-3", "agency"), set_of(&agency_uris));
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}

// ---------------------------------------------------------------------------------------------
// 6. the invariant, from the services' own logs
// ---------------------------------------------------------------------------------------------

#[test]
fn no_consumer_ever_points_at_a_stopped_instance() {
    let base = 21500;
    let mut chor = travel(base, 3, 2);
    let mut repo = Repo::new(&chor, None);
    repo.start_weather(base + 2);
    repo.apply();
    let agencies = field(&instances(&repo.state(), "travelagency"), "nativeUri");
    assert_eq!(agencies.len(), 2);

    let caller = Caller::start(agencies.clone());
    let changes: [(&str, &str, Value); 5] = [
        ("scale in 3 → 2", "/numberOfInstances", json!(2)),
        ("redeploy 1.0 → 1.1", "/version", json!("1.1")),
        ("memory SMALL → MEDIUM", "/resourceImpact/memory", json!("MEDIUM")),
        ("scale out 2 → 3", "/numberOfInstances", json!(3)),
        ("scale in 3 → 1", "/numberOfInstances", json!(1)),
    ];
    for (what, pointer, value) in changes {
        set(&mut chor, "airline", pointer, value);
        repo.write_chor(&chor);
        let output = repo.apply();
        assert!(stdout(&output).contains("0 failed, 0 skipped"), "{what}: {}", describe(&output));
        // After every apply each consumer holds the full, current list.
        let current = set_of(&field(&instances(&repo.state(), "airline"), "nativeUri"));
        for agency in &agencies {
            assert_eq!(wired_to(agency, "airline"), current, "after {what}");
        }
    }
    let report = check_no_stale_endpoints(&repo.logs(), "airline", "airline");
    let calls = caller.finish_all_ok("the five applies");
    assert!(calls >= 10, "only {calls} calls");
    // 1 (scale in) + 2 (redeploy) + 2 (memory) + 2 (scale in) instances stopped.
    assert_eq!(report.stops, 7, "{report:?}");
    // Both consumers were alive at every stop.
    assert!(report.wiring_checks >= 14, "{report:?}");
    assert!(report.calls > 0, "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. failure isolation
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failed_step_stops_only_its_dependents_and_the_next_apply_converges() {
    let base = 21600;
    let broken_script = "#!/bin/sh\necho \"broken: cannot start\" >&2\nexit 1\n";
    let mut broken = deployable("broken", "broken.sh", "SOAP", base + 3, 1);
    broken["roles"] = json!(["airline"]);
    let mut chor = json!({
        "deployableServiceSpecs": [
            deployable("independent", "airline.py", "SOAP", base, 1),
            broken,
            with_deps(
                deployable("consumer", "travelagency.py", "REST", base + 1, 1),
                &[("broken", "airline")]
            )
        ]
    });
    let repo = Repo::new(&chor, None);
    let script = repo.path("services/broken.sh");
    fs::write(&script, broken_script).expect("write broken.sh");
    make_executable(&script);

    let output = repo.enact_ok(&["apply", "--auto-approve"], 1);
    let out = stdout(&output);
    assert!(out.contains("Apply: 1 done, 1 failed, 1 skipped"), "{}", describe(&output));
    assert!(out.contains("failed broken:"), "{}", describe(&output));
    assert!(out.contains("skipped consumer:"), "{}", describe(&output));
    assert!(out.contains("cannot start") || out.contains("exited"), "the failure says why: {}", describe(&output));
    let state = repo.state();
    let independent = instances(&state, "independent");
    assert_eq!(independent.len(), 1, "{state}");
    assert!(pids(&independent).iter().all(|p| process_alive(*p)));
    assert!(instances(&state, "consumer").is_empty(), "{state}");
    assert!(
        instances(&state, "broken").iter().all(|i| i["pid"].as_u64().is_none_or(|p| !process_alive(p as u32))),
        "{state}"
    );
    // Nothing of the failed or skipped services runs, and their nodes are not kept.
    let running = processes_of(&repo.root);
    assert_eq!(running, pids(&independent), "only the independent service runs");
    assert_no_empty_nodes(&state);
    repo.enact_ok(&["plan", "--detailed-exitcode"], 2);

    // Fixed: the next apply converges.
    set(&mut chor, "broken", "/packageUri", json!("services/airline.py"));
    repo.write_chor(&chor);
    let output = repo.apply();
    assert!(stdout(&output).contains("0 failed, 0 skipped"), "{}", describe(&output));
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
    let state = repo.state();
    assert_eq!(pids(&instances(&state, "independent")), pids(&independent));
    assert_no_empty_nodes(&state);
    let consumer = field(&instances(&state, "consumer"), "nativeUri");
    let (seller, _) = trip_ok(&consumer[0]);
    assert_eq!(seller, "broken-1");
    assert_all_healthy(&repo.status());
}

// ---------------------------------------------------------------------------------------------
// 8. locking
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_apply_fails_at_once_naming_the_lock_holder() {
    let settings = json!({
        "defaultEnv": "dev",
        "defaultAccount": "sim",
        "accounts": { "sim": { "provider": "simulated", "latencyMs": 1500 } }
    });
    let chor = json!({
        "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", 21700, 1)]
    });
    let mut repo = Repo::new(&chor, Some(&settings));
    let holder = repo.spawn_enact(&["apply", "--auto-approve"], "first");
    let lock = repo.path("state/dev.lock");
    wait_for("the first apply to take the lock", Duration::from_secs(15), || {
        fs::read_to_string(&lock)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|l| l["pid"] == holder)
    });

    let started = Instant::now();
    let second = repo.enact(&["apply", "--auto-approve"]);
    let elapsed = started.elapsed();
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    assert!(elapsed < Duration::from_secs(1), "the second apply took {elapsed:?}");
    let err = stderr(&second);
    assert!(err.contains(&format!("pid {holder}")), "{err}");
    assert!(err.contains("locked"), "{err}");

    let status = repo.wait_child(holder, Duration::from_secs(60));
    let first_err = fs::read_to_string(repo.path("first.err")).unwrap_or_default();
    let first_out = fs::read_to_string(repo.path("first.out")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{first_out}\n{first_err}");
    assert!(!lock.exists(), "the lock is released");
    assert_eq!(instances(&repo.state(), "airline").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 9. pause and resume
// ---------------------------------------------------------------------------------------------

#[test]
fn pause_unwires_and_stops_a_service_and_resume_brings_it_back() {
    let base = 21800;
    let mut repo = Repo::new(&travel(base, 2, 1), None);
    repo.start_weather(base + 2);
    repo.apply();
    let state = repo.state();
    let agency = agency_uri(&state);
    let airline_pids = pids(&instances(&state, "airline"));
    let airline_uris = set_of(&field(&instances(&state, "airline"), "nativeUri"));

    let output = repo.enact_ok(&["pause", "airline"], 0);
    assert!(stdout(&output).contains("Paused 1: airline"), "{}", describe(&output));
    wait_dead(&airline_pids);
    let status = repo.status();
    assert_eq!(status["services"]["airline"]["paused"], true, "{status}");
    for instance in status["services"]["airline"]["instances"].as_array().expect("instances") {
        assert_eq!(instance["health"], "paused", "{instance}");
    }
    assert_eq!(status["services"]["travelagency"]["instances"][0]["health"], "healthy");
    assert!(wired_to(&agency, "airline").is_empty());
    let (code, doc) = buy_trip(&agency).expect("buyTrip answers");
    assert_eq!(code, 503, "no providers wired: {doc}");

    // The plan shows the paused service and leaves it alone.
    let plan = repo.enact_ok(&["plan"], 0);
    let text = stdout(&plan) + &stderr(&plan);
    assert!(text.contains("paused") && text.contains("airline"), "{text}");
    let json_plan = repo.enact_ok(&["plan", "--json"], 0);
    let json_plan: Value = serde_json::from_slice(&json_plan.stdout).expect("plan JSON");
    assert_eq!(json_plan["paused"], json!(["airline"]), "{json_plan}");
    let output = repo.apply();
    assert!(stdout(&output).contains("No changes"), "{}", describe(&output));
    assert!(wired_to(&agency, "airline").is_empty());

    let output = repo.enact_ok(&["resume", "airline"], 0);
    assert!(stdout(&output).contains("Resumed 1: airline"), "{}", describe(&output));
    let status = repo.status();
    assert_all_healthy(&status);
    assert_eq!(status["services"]["airline"]["paused"], false);
    let resumed = instances(&repo.state(), "airline");
    assert_eq!(set_of(&field(&resumed, "nativeUri")), airline_uris);
    assert_eq!(wired_to(&agency, "airline"), airline_uris);
    let sellers: BTreeSet<String> = (0..4).map(|_| trip_ok(&agency).0).collect();
    assert_eq!(sellers.len(), 2, "{sellers:?}");
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);

    // A paused consumer stays paused while its provider changes, and comes back wired to the
    // provider's current instances; a change to its own spec waits for the resume.
    let agency_pids = pids(&instances(&repo.state(), "travelagency"));
    repo.enact_ok(&["pause", "travelagency"], 0);
    wait_dead(&agency_pids);
    let mut chor = travel(base, 3, 1);
    set(&mut chor, "travelagency", "/version", json!("1.1"));
    repo.write_chor(&chor);
    repo.apply();
    assert_eq!(
        repo.state()["services"]["travelagency"]["spec"]["version"],
        "1.0",
        "apply left the paused service's spec alone"
    );
    let status = repo.status();
    assert_eq!(status["services"]["travelagency"]["paused"], true, "{status}");
    assert_eq!(status["services"]["travelagency"]["instances"][0]["health"], "paused", "{status}");
    let output = repo.enact_ok(&["resume", "travelagency"], 0);
    assert!(stdout(&output).contains("Resumed 1: travelagency"), "{}", describe(&output));
    assert_all_healthy(&repo.status());
    let state = repo.state();
    let agency = agency_uri(&state);
    let airline_uris = set_of(&field(&instances(&state, "airline"), "nativeUri"));
    assert_eq!(airline_uris.len(), 3);
    assert_eq!(wired_to(&agency, "airline"), airline_uris);
    trip_ok(&agency);
    // The version change it missed while paused is still to do.
    repo.enact_ok(&["plan", "--detailed-exitcode"], 2);
    repo.apply();
    assert_eq!(repo.state()["services"]["travelagency"]["spec"]["version"], "1.1");
    trip_ok(&agency_uri(&repo.state()));
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
    check_no_stale_endpoints(&repo.logs(), "airline", "airline");
}

// ---------------------------------------------------------------------------------------------
// 10. apply PLANFILE
// ---------------------------------------------------------------------------------------------

#[test]
fn a_saved_plan_is_applied_exactly_once() {
    let base = 21900;
    let mut chor = travel(base, 1, 1);
    let mut repo = Repo::new(&chor, None);
    repo.start_weather(base + 2);
    repo.apply();
    let serial = repo.state()["serial"].as_u64().expect("serial");

    set(&mut chor, "airline", "/numberOfInstances", json!(2));
    repo.write_chor(&chor);
    let planfile = repo.path("p.json");
    let planfile = planfile.to_str().expect("UTF-8 path");
    repo.enact_ok(&["plan", "--out", planfile], 0);
    // The spec moves on after the plan was saved: apply does the plan, not the spec.
    set(&mut chor, "airline", "/numberOfInstances", json!(3));
    repo.write_chor(&chor);

    let output = repo.enact_ok(&["apply", planfile], 0);
    assert!(stdout(&output).contains("1 done") || stdout(&output).contains("done"));
    let state = repo.state();
    assert_eq!(state["serial"].as_u64(), Some(serial + 1));
    let airlines = instances(&state, "airline");
    assert_eq!(airlines.len(), 2, "exactly the saved plan: {state}");
    let agency = agency_uri(&state);
    assert_eq!(wired_to(&agency, "airline"), set_of(&field(&airlines, "nativeUri")));

    let again = repo.enact_ok(&["apply", planfile], 1);
    assert!(stderr(&again).contains("stale"), "{}", describe(&again));
    assert_eq!(repo.state()["serial"].as_u64(), Some(serial + 1), "nothing changed");
    assert_eq!(instances(&repo.state(), "airline").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 11. a rolling redeploy on shared nodes (ROUND_ROBIN)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_rolling_redeploy_on_shared_nodes_never_starts_two_instances_on_one_port() {
    let base = 22000;
    let settings = json!({
        "defaultEnv": "dev",
        "defaultAccount": "local",
        "accounts": { "local": { "provider": "local" } },
        "nodeSelector": { "policy": "ROUND_ROBIN" }
    });
    let mut chor = travel(base, 2, 1);
    let mut repo = Repo::new(&chor, Some(&settings));
    repo.start_weather(base + 2);
    repo.apply();
    let state = repo.state();
    let agency = agency_uri(&state);
    let old_pids = pids(&instances(&state, "airline"));

    set(&mut chor, "airline", "/version", json!("1.1"));
    repo.write_chor(&chor);
    let caller = Caller::start(vec![agency.clone()]);
    let output = repo.apply();
    caller.finish_all_ok("the redeploy on shared nodes");
    assert!(stdout(&output).contains("0 failed, 0 skipped"), "{}", describe(&output));
    wait_dead(&old_pids);
    let state = repo.state();
    let airlines = instances(&state, "airline");
    assert_eq!(airlines.len(), 2);
    assert_eq!(state["services"]["airline"]["spec"]["version"], "1.1");
    assert_eq!(wired_to(&agency, "airline"), set_of(&field(&airlines, "nativeUri")));
    assert_no_empty_nodes(&state);
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
    check_no_stale_endpoints(&repo.logs(), "airline", "airline");
}

// ---------------------------------------------------------------------------------------------
// The log reader itself
// ---------------------------------------------------------------------------------------------

#[test]
fn log_lines_written_at_once_by_two_threads_are_told_apart() {
    let text = "1795390534890 travelagency-2 listening http://127.0.0.9:1/travelagency\n\
        1795390534897 travelagency-2 wired role=airline name=airline endpoints=http://a/airline,http://b/airline\
        1795390534898 travelagency-2 call airline via http://a/airline\n\
        \n\
        1795390534899 travelagency-2 stopping (SIGTERM)\n";
    let events = parse_log(text, "travelagency-2");
    let shown: Vec<(u64, &str)> = events.iter().map(|e| (e.t, e.event.as_str())).collect();
    assert_eq!(
        shown,
        vec![
            (1795390534890, "listening http://127.0.0.9:1/travelagency"),
            (1795390534897, "wired role=airline name=airline endpoints=http://a/airline,http://b/airline"),
            (1795390534898, "call airline via http://a/airline"),
            (1795390534899, "stopping (SIGTERM)"),
        ]
    );
    let life = &lives(&BTreeMap::from([("travelagency-2".to_string(), events)]))[0];
    assert_eq!(life.stop, Some(1795390534899));
    assert_eq!(
        wired_at(life, "airline", 1795390534899),
        Some(set_of(&["http://a/airline".into(), "http://b/airline".into()]))
    );
}
