//! The ssh provider against real OpenSSH servers on loopback addresses (one `sshd` per address,
//! each with its own host key): the travel example across three hosts, host-key checks, a wrong
//! user key, a host that is down, and hostile values that must never run.
//!
//! Every test has its own sshd port and service ports, so the tests run in parallel.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use common::sshd::{self, SshHosts};
use serde_json::{Value, json};

struct Repo {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Repo {
    fn drop(&mut self) {
        // Best effort: stop whatever the test left running, through enact, and then (the hosts
        // are this machine) every pid the state still records, in case a host was down.
        let _ = Command::cargo_bin("enact")
            .expect("enact binary")
            .args(["-C"])
            .arg(&self.root)
            .args(["destroy", "--auto-approve", "--no-color"])
            .timeout(Duration::from_secs(60))
            .output();
        let state: Value = fs::read_to_string(self.root.join("state/dev.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        for service in state["services"].as_object().into_iter().flat_map(|m| m.values()) {
            for instance in service["instances"].as_array().into_iter().flatten() {
                if let Some(pid) = instance["pid"].as_u64() {
                    let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
                }
            }
        }
    }
}

impl Repo {
    fn new(hosts: &SshHosts, known_hosts: &str, chor: &Value) -> Repo {
        let dir = tempfile::Builder::new().prefix("enact-ssh-").tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        fs::create_dir_all(root.join("services")).expect("services dir");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/travel/services");
        for name in ["airline.py", "travelagency.py"] {
            fs::copy(examples.join(name), root.join("services").join(name)).expect("copy service");
        }
        fs::write(root.join("known_hosts"), known_hosts).expect("known_hosts");
        let settings = json!({
            "defaultAccount": "lab",
            "nodeSelector": { "policy": "ROUND_ROBIN" },
            "accounts": { "lab": { "provider": "ssh", "knownHosts": "known_hosts", "hosts": hosts.account_hosts() } },
            "packageTypes": { "PYTHON": { "start": "python3 {package}" } }
        });
        fs::write(root.join("enact.json"), serde_json::to_string_pretty(&settings).expect("json")).expect("enact.json");
        let repo = Repo { root, _dir: dir };
        repo.write_chor(chor);
        repo
    }

    fn write_chor(&self, chor: &Value) {
        fs::write(self.root.join("chor.json"), serde_json::to_string_pretty(chor).expect("json")).expect("chor.json");
    }

    fn enact(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::cargo_bin("enact")
            .expect("enact binary")
            .arg("-C")
            .arg(&self.root)
            .arg("--no-color")
            .args(args)
            .timeout(Duration::from_secs(120))
            .output()
            .expect("enact runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn apply(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["apply", "--auto-approve", "--health-timeout", "20"];
        args.extend_from_slice(extra);
        self.enact(&args)
    }

    fn state(&self) -> Value {
        let text = fs::read_to_string(self.root.join("state/dev.json")).expect("state/dev.json");
        serde_json::from_str(&text).expect("state parses")
    }

    fn pids(&self, service: &str) -> Vec<u32> {
        self.state()["services"][service]["instances"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["pid"].as_u64()).map(|p| p as u32).collect())
            .unwrap_or_default()
    }

    fn uris(&self, service: &str) -> Vec<String> {
        self.state()["services"][service]["instances"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["nativeUri"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
}

/// A plain HTTP GET: the whole response (status line, headers, body).
fn get(url: &str) -> String {
    let Some(rest) = url.strip_prefix("http://") else { return format!("not an http URL: {url}") };
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let Ok(mut stream) = TcpStream::connect(authority) else { return format!("cannot connect to {authority}") };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The body of a 200 answer, or a panic showing what came instead.
fn get_ok(url: &str) -> String {
    let response = get(url);
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => body.to_string(),
        _ => panic!("GET {url} did not answer 200:\n{response}"),
    }
}

fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Every directory under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.push(path.clone());
                found.extend(walk(&path));
            }
        }
    }
    found
}

fn travel(port: u16, airlines: u32, version: &str) -> Value {
    json!({
        "deployableServiceSpecs": [
            { "name": "airline", "roles": ["airline"], "packageType": "PYTHON", "packageUri": "services/airline.py",
              "port": port, "numberOfInstances": airlines, "version": version },
            { "name": "travelagency", "roles": ["travelagency"], "serviceType": "REST", "packageType": "PYTHON",
              "packageUri": "services/travelagency.py", "port": port + 1, "numberOfInstances": 1,
              "dependencies": [ { "serviceSpecName": "airline", "serviceSpecRole": "airline" } ] }
        ]
    })
}

/// Books `n` trips; returns which airline instance served each.
fn book(repo: &Repo, n: usize) -> Vec<String> {
    let agency = repo.uris("travelagency").into_iter().next().expect("a travel agency");
    (0..n)
        .map(|_| {
            let body = get_ok(&format!("{agency}/buyTrip"));
            let trip: Value = serde_json::from_str(&body).expect("JSON trip");
            let flight = trip["flight"].as_str().expect("a flight").to_string();
            // flight-<instance>-<n>
            flight.trim_start_matches("flight-").rsplit_once('-').map(|(i, _)| i.to_string()).unwrap_or(flight)
        })
        .collect()
}

#[test]
fn the_travel_example_runs_across_three_hosts() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(3, 2, 2411);
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &travel(24100, 3, "1.0"));

    // Deploy: one airline per host, wired, answering in turn.
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let nodes: std::collections::BTreeSet<String> = repo.state()["services"]["airline"]["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["node"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(nodes.len(), 3, "one airline per host: {nodes:?}");
    let served: std::collections::BTreeSet<String> = book(&repo, 6).into_iter().collect();
    assert_eq!(served.len(), 3, "every replica answers in turn: {served:?}");

    // Scale in to 1, then out to 2.
    let before = repo.pids("airline");
    repo.write_chor(&travel(24100, 1, "1.0"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(repo.pids("airline").len(), 1);
    let gone: Vec<u32> = before.iter().copied().filter(|p| !repo.pids("airline").contains(p)).collect();
    assert_eq!(gone.len(), 2);
    assert!(gone.iter().all(|p| !process_alive(*p)), "scaled-in instances stopped on their hosts");
    assert_eq!(book(&repo, 3).into_iter().collect::<std::collections::BTreeSet<_>>().len(), 1);
    repo.write_chor(&travel(24100, 2, "1.0"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(book(&repo, 4).into_iter().collect::<std::collections::BTreeSet<_>>().len(), 2);

    // Version redeploy: every airline instance replaced, still callable.
    let old = repo.pids("airline");
    repo.write_chor(&travel(24100, 2, "1.1"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("-/+ airline"), "{out}");
    let new = repo.pids("airline");
    assert!(old.iter().all(|p| !new.contains(p) && !process_alive(*p)), "old {old:?} new {new:?}");
    assert_eq!(book(&repo, 2).len(), 2);

    // Destroy: nothing left on any host.
    let all: Vec<u32> = repo.pids("airline").into_iter().chain(repo.pids("travelagency")).collect();
    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(all.iter().all(|p| !process_alive(*p)), "every instance stopped");
    assert_eq!(repo.state()["services"], json!({}));
}

#[test]
fn an_unknown_host_key_is_refused_until_trusted() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(1, 5, 2412);
    let repo = Repo::new(&hosts, "", &travel(24200, 1, "1.0"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("unknown ssh-ed25519 host key SHA256:"), "{out}");
    assert!(out.contains("enact hosts trust") && out.contains("--accept-new-host-keys"), "{out}");
    assert!(fs::read_to_string(repo.root.join("known_hosts")).unwrap_or_default().is_empty());

    let (code, out, err) = repo.enact(&["hosts", "trust"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("trusted ssh-ed25519 SHA256:"), "{out}");
    assert!(fs::read_to_string(repo.root.join("known_hosts")).unwrap_or_default().contains("[127.0.0.5]:2412"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn accept_new_host_keys_records_them() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(1, 6, 2413);
    let repo = Repo::new(&hosts, "", &travel(24300, 1, "1.0"));
    let (code, out, err) = repo.apply(&["--accept-new-host-keys"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let known = fs::read_to_string(repo.root.join("known_hosts")).unwrap_or_default();
    assert!(known.trim_start().starts_with("[127.0.0.6]:2413 ssh-ed25519 "), "{known}");
}

#[test]
fn a_changed_host_key_is_always_refused() {
    if !sshd::available() {
        return;
    }
    let mut hosts = SshHosts::start(1, 7, 2414);
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &travel(24400, 1, "1.0"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    hosts.rekey_host(0);
    repo.write_chor(&travel(24400, 1, "2.0"));
    for extra in [&[][..], &["--accept-new-host-keys"][..]] {
        let (code, out, err) = repo.apply(extra);
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(out.contains("DIFFERENT host key"), "{out}");
        assert!(out.contains("known_hosts:1"), "names the line: {out}");
    }
    let (code, out, _) = repo.enact(&["hosts", "trust"]);
    assert_eq!(code, 1, "trust refuses a changed key too: {out}");
    // Trust the new key so the guard can clean up.
    fs::write(repo.root.join("known_hosts"), hosts.known_hosts()).expect("known_hosts");
}

#[test]
fn a_wrong_user_key_is_refused() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(1, 8, 2415);
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &travel(24500, 1, "1.0"));
    let stranger = repo.root.join("stranger");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let mut settings: Value =
        serde_json::from_str(&fs::read_to_string(repo.root.join("enact.json")).expect("read")).expect("json");
    settings["accounts"]["lab"]["hosts"][0]["privateKey"] = json!(stranger.to_string_lossy());
    fs::write(repo.root.join("enact.json"), settings.to_string()).expect("write");
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("refused the key") && out.contains("authorized_keys"), "{out}");
}

#[test]
fn a_host_that_goes_down_mid_apply_fails_its_steps_only_and_the_next_apply_converges() {
    if !sshd::available() {
        return;
    }
    let mut hosts = SshHosts::start(2, 9, 2416);
    // `a` (slow to start) lands on the first host; `b` calls `a` and needs the same port, so it
    // lands on the second host and its step starts only once `a` is up; `c` is independent.
    let chor = json!({ "deployableServiceSpecs": [
        { "name": "a", "roles": ["a"], "packageType": "PYTHON", "packageUri": "services/slow.py", "port": 24600 },
        { "name": "b", "roles": ["b"], "packageType": "PYTHON", "packageUri": "services/airline.py", "port": 24600,
          "dependencies": [ { "serviceSpecName": "a", "serviceSpecRole": "a" } ] },
        { "name": "c", "roles": ["c"], "packageType": "PYTHON", "packageUri": "services/airline.py", "port": 24601 }
    ]});
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &chor);
    let airline = fs::read_to_string(repo.root.join("services/airline.py")).expect("airline.py");
    let slow = airline.replacen('\n', "\nimport time as _t\n_t.sleep(1.5)\n", 1);
    fs::write(repo.root.join("services/slow.py"), slow).expect("slow.py");
    let apply = std::process::Command::new(assert_cmd::cargo::cargo_bin("enact"))
        .arg("-C")
        .arg(&repo.root)
        .args(["--no-color", "apply", "--auto-approve", "--health-timeout", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("apply starts");
    // Once `a` is starting (its intent is on disk before anything runs; it takes 1.5 s to
    // answer), the second host goes down.
    let journal = repo.root.join("state/dev.journal");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&journal).unwrap_or_default().contains("\"op\":\"startIntent\",\"service\":\"a\"") {
        assert!(std::time::Instant::now() < deadline, "a never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    hosts.stop_host(1);
    let output = apply.wait_with_output().expect("apply ends");
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("cannot reach host root@127.0.0.10:2416"), "{out}");
    assert!(out.contains("Apply: 2 done, 1 failed, 0 skipped"), "{out}");
    hosts.start_host(1);
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, _) = repo.enact(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "converged: {out}");
}

#[test]
fn hostile_values_reach_the_host_as_text_and_never_run() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(1, 11, 2417);
    let marker_dir = tempfile::tempdir().expect("tempdir");
    let marker = marker_dir.path().join("pwned");
    let m = marker.display();
    // A package whose file name is a small shell program (relative markers: a file name has no
    // slash); the recipe and a URL carry more, with absolute markers.
    let tag = format!("enact-pwned-{}", std::process::id());
    let hostile_name = format!("x;touch {tag}1;$(touch {tag}2);`touch {tag}3`;'\"z.py");
    let chor = json!({ "deployableServiceSpecs": [
        { "name": "airline", "roles": ["airline"], "packageType": "HOSTILE", "packageUri": format!("services/{hostile_name}"),
          "port": 24700 },
        { "name": "fetched", "roles": ["fetched"], "packageType": "HOSTILE",
          "packageUri": format!("http://127.0.0.1:1/a;touch%20{m}4;$(touch%20{m}5)"), "port": 24701 }
    ]});
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &chor);
    fs::copy(repo.root.join("services/airline.py"), repo.root.join("services").join(&hostile_name))
        .expect("hostile package");
    let mut settings: Value =
        serde_json::from_str(&fs::read_to_string(repo.root.join("enact.json")).expect("read")).expect("json");
    settings["packageTypes"]["HOSTILE"] =
        json!({ "start": "python3 {package} ;touch {name} $(touch) `id` {endpoint}" });
    fs::write(repo.root.join("enact.json"), settings.to_string()).expect("write");
    let (code, out, err) = repo.apply(&[]);
    // The hostile-named package deploys and runs (its name is just text); the hostile URL cannot
    // be fetched, which fails that one step.
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("✓ airline") || err.contains("✓ airline"), "{out}\n{err}");
    assert!(out.contains("failed fetched"), "{out}");
    assert_eq!(repo.pids("airline").len(), 1);
    for i in 4..=5 {
        assert!(!Path::new(&format!("{m}{i}")).exists(), "a hostile value ran: {m}{i} exists");
    }
    // The file name's markers are relative: look wherever a shell could have run them.
    let home = hosts.home();
    let mut places = vec![repo.root.clone(), std::env::current_dir().unwrap_or_default(), home.clone()];
    places.extend(walk(&home.join(".enact")));
    for place in places {
        for i in 1..=3 {
            let marker = place.join(format!("{tag}{i}"));
            assert!(!marker.exists(), "a hostile value ran: {} exists", marker.display());
        }
    }

    // A newline cannot even reach the host: validation refuses it before anything runs.
    let mut chor = chor;
    chor["deployableServiceSpecs"][0]["packageUri"] = json!(format!("services/a\ntouch {m}6"));
    repo.write_chor(&chor);
    let (code, _, err) = repo.apply(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("control character"), "{err}");
    assert!(!Path::new(&format!("{m}6")).exists());
}

/// Twelve instances of four services, one package, start at once on three hosts that share this
/// machine's filesystem (like hosts on one NFS home), so every writer uploads to the same remote
/// path: the package is installed whole, once, with no partial file left. `padding` bytes of
/// comment make the package larger, so that it goes over SFTP rather than inside a command;
/// hosts without `base64` (`base64` false) take even a small one over SFTP.
fn one_package_from_many_writers(first: u8, ssh_port: u16, service_port: u16, padding: usize, base64: bool) {
    // Without `base64`: the hosts' sessions get a PATH of every command of this machine but it.
    let bin = tempfile::Builder::new().prefix("enact-path-").tempdir().expect("tempdir");
    let path = if base64 { Vec::new() } else { vec![format!("PATH={}", path_without(bin.path(), "base64"))] };
    let hosts = SshHosts::start_with(3, first, ssh_port, &path);
    let services: Vec<Value> = (0..4)
        .map(|i| {
            json!({ "name": format!("s{i}"), "roles": [format!("s{i}")], "packageType": "PYTHON",
                         "packageUri": "services/shared.py", "port": service_port + i, "numberOfInstances": 3 })
        })
        .collect();
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &json!({ "deployableServiceSpecs": services }));
    // A package no other test uploads (its digest names the remote directory).
    let airline = fs::read_to_string(repo.root.join("services/airline.py")).expect("airline.py");
    let unique = format!("{airline}\n# {:?}\n{}\n", std::time::SystemTime::now(), "#".repeat(padding));
    fs::write(repo.root.join("services/shared.py"), &unique).expect("shared.py");
    // Timing lines (stderr) say which way the package went.
    let output = Command::cargo_bin("enact")
        .expect("enact binary")
        .arg("-C")
        .arg(&repo.root)
        .args(["--no-color", "apply", "--auto-approve", "--health-timeout", "20"])
        .env("ENACT_TIMINGS", "1")
        .timeout(Duration::from_secs(120))
        .output()
        .expect("enact runs");
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("Apply: 4 done, 0 failed, 0 skipped"), "{out}");
    let inline = padding == 0 && base64;
    let over_sftp = err.contains("SFTP session opened");
    assert_eq!(over_sftp, !inline, "over SFTP only when too large for a command or without base64:\n{err}");
    assert_eq!(err.contains("package uploaded with the command"), inline, "{err}");
    for i in 0..4 {
        assert_eq!(repo.uris(&format!("s{i}")).len(), 3);
    }
    // The hosts' home is a directory of this machine: the package is there, byte for byte, and alone.
    let installed: Vec<PathBuf> = walk(&hosts.home().join(".enact/dev/packages"))
        .into_iter()
        .map(|dir| dir.join("shared.py"))
        .filter(|p| fs::read_to_string(p).is_ok_and(|t| t == unique))
        .collect();
    assert_eq!(installed.len(), 1, "the package, byte for byte, once: {installed:?}");
    let dir = installed[0].parent().expect("package directory");
    let names: Vec<String> = fs::read_dir(dir)
        .expect("package dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["shared.py"], "no partial upload is left beside the package");
    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn hosts_that_share_a_home_directory_take_one_package_from_many_writers_at_once() {
    if !sshd::available() {
        return;
    }
    // A small package travels inside the command that installs it.
    one_package_from_many_writers(12, 2418, 24800, 0, true);
}

#[test]
fn a_host_without_base64_takes_even_a_small_package_over_sftp_from_many_writers_at_once() {
    if !sshd::available() {
        return;
    }
    one_package_from_many_writers(53, 2453, 27800, 0, false);
}

/// A directory of links to every command of this machine's usual PATH but `missing`; its path.
fn path_without(dir: &Path, missing: &str) -> String {
    for from in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        for entry in fs::read_dir(from).into_iter().flatten().flatten() {
            let link = dir.join(entry.file_name());
            if entry.file_name() != missing && !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).expect("link a command");
            }
        }
    }
    assert!(dir.join("sh").exists() && !dir.join(missing).exists());
    dir.display().to_string()
}

#[test]
fn a_package_too_large_for_a_command_goes_over_sftp_from_many_writers_at_once() {
    if !sshd::available() {
        return;
    }
    // Over 64 KiB, the largest package that travels inside a command.
    one_package_from_many_writers(50, 2450, 26800, 80 * 1024, true);
}

#[test]
fn status_and_plan_say_why_an_ssh_instance_is_not_healthy() {
    if !sshd::available() {
        return;
    }
    let mut hosts = SshHosts::start(1, 15, 2419);
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &travel(24900, 1, "1.0"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, _) = repo.enact(&["status"]);
    assert_eq!(code, 0, "everything runs");

    // A changed host key: the instance still answers, but enact cannot trust what it would see.
    hosts.rekey_host(0);
    let airline = repo.uris("airline").remove(0);
    assert!(get(&airline).contains("airline"), "the instance still answers");
    let (code, out, err) = repo.enact(&["status", "--json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["services"]["airline"]["instances"][0]["reason"], "host-key-changed", "{status}");
    let (code, out, _) = repo.enact(&["status"]);
    assert_eq!(code, 1);
    assert!(out.contains("why: SSH host key changed"), "{out}");
    let (code, out, err) = repo.enact(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "nothing is replaced on a host enact cannot trust: {out}\n{err}");
    assert!(out.contains("is not healthy (SSH host key changed)"), "{out}");

    // The host down: unreachable.
    fs::write(repo.root.join("known_hosts"), hosts.known_hosts()).expect("known_hosts");
    hosts.stop_host(0);
    let (code, out, _) = repo.enact(&["status", "--json"]);
    assert_eq!(code, 1);
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["services"]["airline"]["instances"][0]["reason"], "host-unreachable", "{status}");
    hosts.start_host(0);
    let (code, out, err) = repo.enact(&["status"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // enact's key refused.
    hosts.allow_client_key(false);
    let (code, out, _) = repo.enact(&["status", "--json"]);
    assert_eq!(code, 1);
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["services"]["airline"]["instances"][0]["reason"], "auth-refused", "{status}");
    hosts.allow_client_key(true);
}

#[test]
fn a_process_no_record_names_is_found_on_its_host_and_destroy_stops_it() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(2, 40, 2440);
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &travel(25500, 1, "1.0"));
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lost = repo.pids("airline");
    assert_eq!(lost.len(), 1);
    // The record of airline's instance is lost (as a damaged journal loses one); its process runs on.
    let mut state = repo.state();
    state["services"]["airline"]["instances"] = json!([]);
    fs::write(repo.root.join("state/dev.json"), serde_json::to_string_pretty(&state).expect("json")).expect("state");
    let (code, out, err) = repo.enact(&["status", "--json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    let untracked = status["untracked"].as_array().expect("untracked");
    assert_eq!(untracked.len(), 1, "{status}");
    assert_eq!(untracked[0]["pid"], lost[0], "{status}");
    assert_eq!(untracked[0]["service"], "airline", "{status}");
    assert!(untracked[0]["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.4")), "{status}");
    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("stopped 1 untracked process(es) that this environment started"),
        "{out}\n{err}"
    );
    for _ in 0..100 {
        if !process_alive(lost[0]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!process_alive(lost[0]), "destroy left the untracked process running");
}

/// The log files of `instance` of the environment of state lineage `lineage` on the loopback
/// hosts (they share the home directory `home`): name and size, the recorded cap and the
/// rotation note (`LOG.1.at`) left out.
fn remote_logs(home: &Path, lineage: &str, instance: &str) -> Vec<(String, u64)> {
    let dir = home.join(".enact/dev/logs").join(lineage);
    let mut files: Vec<(String, u64)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == format!("{instance}.log") || name.starts_with(&format!("{instance}.log."));
            (ours && !name.ends_with(".cap") && !name.ends_with(".at"))
                .then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    files.sort();
    files
}

/// Log watchers running for `instance` of lineage `lineage`: (pid, process group, environment).
fn watchers_of(lineage: &str, instance: &str) -> Vec<(u32, u32, String)> {
    let needle = format!("/.enact/dev/logs/{lineage}/{instance}.log");
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmdline = String::from_utf8_lossy(&fs::read(entry.path().join("cmdline")).unwrap_or_default()).into_owned();
        if !cmdline.contains("enact-logs") || !cmdline.contains(&needle) || !process_alive(pid) {
            continue;
        }
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let pgrp = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(2)?.parse().ok()).unwrap_or(0);
        let environ = String::from_utf8_lossy(&fs::read(entry.path().join("environ")).unwrap_or_default()).into_owned();
        found.push((pid, pgrp, environ));
    }
    found
}

/// Waits up to `secs` seconds for `done`.
fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_remote_log_keeps_its_cap_on_every_contact_and_while_enact_is_away_and_goes_with_destroy() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(1, 20, 2420);
    let (max, keep) = (256 * 1024_u64, 2_u32);
    let chor = json!({ "deployableServiceSpecs": [
        { "name": "logchat", "roles": ["logchat"], "packageType": "PYTHON", "packageUri": "services/chatty.py",
          "port": 24250 }
    ]});
    let repo = Repo::new(&hosts, &hosts.known_hosts(), &chor);
    fs::write(repo.root.join("services/chatty.py"), common::CHATTY).expect("chatty.py");
    let mut settings: Value =
        serde_json::from_str(&fs::read_to_string(repo.root.join("enact.json")).expect("read")).expect("json");
    settings["logs"] = json!({ "maxBytes": max, "keep": keep });
    fs::write(repo.root.join("enact.json"), settings.to_string()).expect("write");
    let capped = |files: &[(String, u64)]| {
        files.len() <= keep as usize + 1
            && files.iter().all(|(_, size)| *size <= max)
            && files.iter().map(|(_, size)| size).sum::<u64>() <= u64::from(keep + 1) * max
    };

    // The service printed 3 MB before it answered; a contact (status) rotates its log.
    let (code, out, err) = repo.apply(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lineage = repo.state()["lineage"].as_str().expect("lineage").to_string();
    let remote_logs = |instance: &str| remote_logs(&hosts.home(), &lineage, instance);
    let watchers_of = |instance: &str| watchers_of(&lineage, instance);
    let (code, out, err) = repo.enact(&["status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let files = remote_logs("logchat-1");
    assert!(capped(&files), "after a contact: {files:?}");
    assert!(files.iter().any(|(name, size)| name == "logchat-1.log.1" && *size == max), "{files:?}");
    let (code, out, err) = repo.enact(&["logs", "logchat", "-n", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let last: Vec<&str> = out.lines().filter(|l| l.starts_with("logchat-1 ")).collect();
    assert_eq!(last.len(), 2, "{out}");
    assert!(last[1].starts_with("logchat-1 start last "), "the newest line, read across the rotation: {out}");

    // Its watcher runs in its process group, without its token.
    let pid = repo.pids("logchat")[0];
    let watchers = watchers_of("logchat-1");
    assert_eq!(watchers.len(), 1, "{watchers:?}");
    assert_eq!(watchers[0].1, pid, "in the instance's process group");
    assert!(!watchers[0].2.contains("ENACT_TOKEN"), "the watcher has no token");

    // `logs --follow` from here: the last line, then what comes.
    let followed = repo.root.join("follow.out");
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_enact"))
        .arg("-C")
        .arg(&repo.root)
        .args(["--no-color", "logs", "logchat", "-f", "-n", "1"])
        .stdout(fs::File::create(&followed).expect("follow.out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("enact logs -f");
    let read_followed = || fs::read_to_string(&followed).unwrap_or_default();
    wait_until("the last line, followed", 30, || read_followed().starts_with(last[1]));

    // 3 MB more while enact is away (nothing of enact contacts the host until the log is under
    // the cap again): the watcher rotates it.
    let uri = repo.uris("logchat").remove(0);
    let address = uri.trim_start_matches("http://").split('/').next().expect("address").to_string();
    assert!(get(&format!("http://{address}/burst")).starts_with("HTTP/1.0 200"));
    wait_until("the watcher to rotate the log", 60, || capped(&remote_logs("logchat-1")));
    // Followed through the copy and truncation: every line whole and in order, up to the last.
    wait_until("the burst's last line, followed", 60, || read_followed().contains("logchat-1 burst last "));
    follow.kill().expect("kill");
    let _ = follow.wait();
    let text = read_followed();
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("logchat-1 burst line "))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(numbers.len() > 1000 && numbers.windows(2).all(|w| w[1] > w[0]), "{} lines", numbers.len());
    assert!(
        text.lines().all(|l| l.starts_with("logchat-1 ") || l.starts_with("(enact: output rotated away")),
        "whole lines only: {}",
        &text[..text.len().min(400)]
    );
    let (code, out, err) = repo.enact(&["logs", "logchat", "-n", "1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("logchat-1 burst last "), "the newest line is kept: {out}");

    // A stop ends the watcher with the instance (pause stops it; resume starts both again).
    let (code, out, err) = repo.enact(&["pause", "logchat", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    wait_until("the watcher to end with its instance", 10, || watchers_of("logchat-1").is_empty());
    let (code, out, err) = repo.enact(&["resume", "logchat", "--yes", "--health-timeout", "20"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let pid = repo.pids("logchat")[0];
    let watchers = watchers_of("logchat-1");
    assert_eq!(watchers.len(), 1, "{watchers:?}");

    // With its watcher gone, a contact still rotates the log.
    std::process::Command::new("kill").args(["-KILL", &watchers[0].0.to_string()]).status().expect("kill");
    wait_until("the watcher to end", 10, || watchers_of("logchat-1").is_empty());
    assert!(get(&format!("http://{address}/burst")).starts_with("HTTP/1.0 200"));
    assert!(!capped(&remote_logs("logchat-1")), "nothing rotated the log: {:?}", remote_logs("logchat-1"));
    let (code, out, err) = repo.enact(&["status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(capped(&remote_logs("logchat-1")), "after a contact: {:?}", remote_logs("logchat-1"));

    // Destroy: the instance and its logs go.
    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!process_alive(pid));
    assert_eq!(remote_logs("logchat-1"), Vec::<(String, u64)>::new());
    assert!(!hosts.home().join(".enact/dev/logs").join(&lineage).join("logchat-1.log.cap").exists());
}

#[test]
fn two_repositories_with_an_environment_of_one_name_keep_their_logs_apart_on_a_shared_host() {
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(1, 20, 2440);
    let repo_of = |port: u16| {
        let chor = json!({ "deployableServiceSpecs": [
            { "name": "logchat", "roles": ["logchat"], "packageType": "PYTHON", "packageUri": "services/chatty.py",
              "port": port }
        ]});
        let repo = Repo::new(&hosts, &hosts.known_hosts(), &chor);
        fs::write(repo.root.join("services/chatty.py"), common::CHATTY).expect("chatty.py");
        let (code, out, err) = repo.apply(&[]);
        assert_eq!(code, 0, "{out}\n{err}");
        repo
    };
    // Both run `logchat-1` in env `dev` on the one host.
    let (ours, theirs) = (repo_of(24460), repo_of(24461));
    let uri = ours.uris("logchat").remove(0);
    let address = uri.trim_start_matches("http://").split('/').next().expect("address").to_string();
    assert!(get(&format!("http://{address}/burst")).starts_with("HTTP/1.0 200"));
    let last = |repo: &Repo| {
        let (code, out, err) = repo.enact(&["logs", "logchat", "-n", "1"]);
        assert_eq!(code, 0, "{out}\n{err}");
        out.lines().filter(|l| l.starts_with("logchat-1 ")).map(str::to_string).collect::<Vec<_>>()
    };
    let (mine, yours) = (last(&ours), last(&theirs));
    assert!(mine.len() == 1 && mine[0].starts_with("logchat-1 burst last "), "{mine:?}");
    assert!(yours.len() == 1 && yours[0].starts_with("logchat-1 start last "), "the other's log is its own: {yours:?}");
    for repo in [&ours, &theirs] {
        let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
        assert_eq!(code, 0, "{out}\n{err}");
    }
}

#[test]
fn commands_sent_to_a_kept_open_shell_stay_apart() {
    use enact::provider::ssh::{SshOptions, SshProvider};
    use enact::repo::settings::{SshAccount, SshHost};
    if !sshd::available() {
        return;
    }
    let hosts = SshHosts::start(1, 46, 2446);
    let known_hosts = hosts.dir.path().join("known_hosts");
    fs::write(&known_hosts, hosts.known_hosts()).expect("known_hosts");
    let host = SshHost {
        address: hosts.addresses[0].clone(),
        port: Some(i64::from(hosts.port)),
        user: "root".into(),
        private_key: Some(hosts.client_key.to_string_lossy().into_owned()),
        memory: None,
    };
    let account = SshAccount {
        known_hosts: Some(known_hosts.to_string_lossy().into_owned()),
        hosts: vec![host.clone()],
        ..Default::default()
    };
    let options = SshOptions { repo_root: hosts.dir.path().to_path_buf(), accept_new_host_keys: false };
    let provider = SshProvider::new("lab", &account, options).expect("provider");
    let exec = |command: &str| provider.exec(&host, command).expect("the command runs");

    // Output without a final newline, stderr apart, the exit status; `exit` ends that command only.
    let first = exec("cd /; x=set; f() { echo f; }; printf out; echo err >&2; exit 3");
    assert_eq!((first.status, first.stdout.as_str(), first.stderr.as_str()), (Some(3), "out", "err\n"));
    // Nothing a command set is seen by the next one: variables, functions, the directory.
    let second = exec("echo \"${x:-unset}\"; command -v f || echo no-f; pwd");
    assert_eq!(second.status, Some(0));
    let lines: Vec<&str> = second.stdout.lines().collect();
    assert_eq!(&lines[..2], ["unset", "no-f"], "{second:?}");
    assert_ne!(lines[2], "/", "{second:?}");
    // A syntax error fails that command, not the shell; stdin is empty, never the next command.
    let broken = exec("echo 'unbalanced");
    assert!(broken.status.is_some_and(|s| s != 0), "{broken:?}");
    assert_eq!(exec("cat; echo read-nothing").stdout, "read-nothing\n");
    // An end marker a command prints itself is only text.
    assert_eq!(exec("printf '\\n__enact_end_x_1__ 0\\n'").stdout, "\n__enact_end_x_1__ 0\n");
    // Large outputs come whole.
    assert_eq!(exec("head -c 3000000 /dev/zero | tr '\\0' a").stdout.len(), 3_000_000);
    // A shell that dies under a command fails that command; the next one gets another shell.
    let killed = provider.exec(&host, "kill -9 $$").expect_err("the shell died under it");
    assert!(killed.to_string().contains("shell"), "{killed}");
    assert_eq!(exec("echo again").stdout, "again\n");
    // Commands from many threads at once each get their own answer.
    std::thread::scope(|scope| {
        let runs: Vec<_> =
            (0..16).map(|i| scope.spawn(move || (i, exec(&format!("sleep 0.0{}; echo {i}", i % 5))))).collect();
        for run in runs {
            let (i, output) = run.join().expect("thread");
            assert_eq!(output.stdout, format!("{i}\n"));
        }
    });
}
