//! One apply per environment: `state/<env>.lock` names its holder; a second apply
//! is refused at once naming the holder's pid; a lock whose process is gone (same host) is taken
//! over with a warning; `enact state unlock` removes any other.
//!
//! The environment runs on the simulated provider with `latencyMs` 1500, so an apply holds the
//! lock for a few seconds (one node batch and one start of 1.5 s each).

#![allow(clippy::print_stderr, reason = "the tests print how fast a refusal came")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ENACT: &str = env!("CARGO_BIN_EXE_enact");

struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::Builder::new().prefix("enact-lock-").tempdir().expect("a temporary directory");
        let root = dir.path().to_path_buf();
        let settings = json!({
            "defaultEnv": "dev",
            "defaultAccount": "slow",
            "accounts": { "slow": { "provider": "simulated", "latencyMs": 1500 } }
        });
        fs::write(root.join("enact.json"), pretty(&settings)).expect("write enact.json");
        fs::create_dir_all(root.join("envs")).expect("mkdir envs");
        fs::write(root.join("envs/dev.json"), "{}\n").expect("write envs/dev.json");
        fs::create_dir_all(root.join("services")).expect("mkdir services");
        fs::write(root.join("services/svc.py"), "print('simulated')\n").expect("write svc.py");
        let repo = Repo { _dir: dir, root };
        repo.spec("1.0");
        repo
    }

    /// One service of one instance, at `version`.
    fn spec(&self, version: &str) {
        let chor = json!({ "deployableServiceSpecs": [ {
            "name": "svc",
            "roles": ["svc"],
            "packageUri": "services/svc.py",
            "port": 8080,
            "numberOfInstances": 1,
            "version": version
        } ] });
        fs::write(self.root.join("chor.json"), pretty(&chor)).expect("write chor.json");
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join("state/dev.lock")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ENACT);
        cmd.arg("-C")
            .arg(&self.root)
            .arg("--no-color")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn_apply(&self) -> Child {
        self.command(&["apply", "--auto-approve"]).spawn().expect("start enact apply")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run enact")
    }

    fn write_lock(&self, info: &Value) {
        fs::create_dir_all(self.root.join("state")).expect("mkdir state");
        fs::write(self.lock_path(), pretty(info)).expect("write the lock file");
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON serializes") + "\n"
}

fn text(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Waits for a child, returning its output and how long it ran since `started`.
fn finish(child: Child, started: Instant) -> (Output, Duration) {
    finish_all(vec![child], started).pop().expect("one outcome per child")
}

/// Waits for every child, each timed from `started` to its own exit (their outputs are small
/// enough for the pipes, so none blocks while another is awaited).
fn finish_all(mut children: Vec<Child>, started: Instant) -> Vec<(Output, Duration)> {
    let mut ended: Vec<Option<Duration>> = vec![None; children.len()];
    while ended.iter().any(Option::is_none) {
        for (child, end) in children.iter_mut().zip(&mut ended) {
            if end.is_none() && child.try_wait().expect("poll enact").is_some() {
                *end = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    children
        .into_iter()
        .zip(ended)
        .map(|(child, end)| {
            let output = child.wait_with_output().expect("wait for enact");
            (output, end.unwrap_or_default())
        })
        .collect()
}

fn wait_for(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A pid that ran and is gone.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("run true");
    let pid = child.id();
    child.wait().expect("wait for true");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} was reused at once");
    pid
}

#[test]
fn a_second_apply_is_refused_at_once_naming_the_holder() {
    let repo = Repo::new();
    let first = repo.spawn_apply();
    let holder = first.id();
    let first_started = Instant::now();
    assert!(wait_for(&repo.lock_path(), Duration::from_secs(10)), "the first apply never took the lock");

    let started = Instant::now();
    let second = repo.spawn_apply();
    let (refused, took) = finish(second, started);
    let (done, first_took) = finish(first, first_started);

    eprintln!(
        "the second apply was refused after {} ms; the first took {} ms",
        took.as_millis(),
        first_took.as_millis()
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("locked by pid {holder}")),
        "the refusal does not name the holder's pid {holder}\n{}",
        text(&refused)
    );
    assert!(stderr.contains("state unlock"), "the refusal does not say how to remove the lock\n{}", text(&refused));
    // The refused apply changed nothing, and the first one finished normally.
    assert_eq!(done.status.code(), Some(0), "{}", text(&done));
    assert!(first_took > took, "the first apply ended before the second was refused: the test proved nothing");
    assert!(!repo.lock_path().exists(), "the lock is left after the apply");
    let plan = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
}

#[test]
fn of_two_applies_started_together_exactly_one_runs() {
    let repo = Repo::new();
    let started = Instant::now();
    let a = repo.spawn_apply();
    let b = repo.spawn_apply();
    let pids = [a.id(), b.id()];
    let outcomes = finish_all(vec![a, b], started);
    let (winner, loser) = one_winner(&outcomes);
    let (refused, took) = &outcomes[loser];
    eprintln!(
        "of two applies started together, pid {} ran and pid {} was refused after {} ms",
        pids[winner],
        pids[loser],
        took.as_millis()
    );
    // Which pid the refusal names is checked by the next test: it can catch the holder
    // between creating the lock file and writing it.
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is locked by pid"), "{}", text(refused));
}

/// The index of the apply that ran and of the one refused.
fn one_winner(outcomes: &[(Output, Duration)]) -> (usize, usize) {
    let codes: Vec<Option<i32>> = outcomes.iter().map(|(o, _)| o.status.code()).collect();
    let winner = codes.iter().position(|c| *c == Some(0));
    let loser = codes.iter().position(|c| *c == Some(1));
    match (winner, loser) {
        (Some(w), Some(l)) => (w, l),
        _ => panic!(
            "expected one apply to succeed and one to be refused, got {codes:?}\n{}",
            outcomes.iter().map(|(o, _)| text(o)).collect::<Vec<_>>().join("\n")
        ),
    }
}

/// Races two applies 20 times (at `latencyMs` 200): every refusal must name the pid of the
/// apply that runs. Fails today in a few percent of the races with "locked by pid 0 of ? on ?
/// since ?, running `(unreadable lock file: )`": the lock file is created empty
/// (`create_new`) and written afterwards, and the loser can read it in between.
#[test]
fn every_refusal_names_the_holder_even_in_a_race() {
    let repo = Repo::new();
    let settings = json!({
        "defaultEnv": "dev",
        "defaultAccount": "quick",
        "accounts": { "quick": { "provider": "simulated", "latencyMs": 200 } }
    });
    fs::write(repo.root.join("enact.json"), pretty(&settings)).expect("write enact.json");
    let mut wrong = Vec::new();
    for round in 1..=20 {
        repo.spec(&format!("{round}.0"));
        let started = Instant::now();
        let a = repo.spawn_apply();
        let b = repo.spawn_apply();
        let pids = [a.id(), b.id()];
        let outcomes = finish_all(vec![a, b], started);
        let (winner, loser) = one_winner(&outcomes);
        let stderr = String::from_utf8_lossy(&outcomes[loser].0.stderr).into_owned();
        if !stderr.contains(&format!("locked by pid {}", pids[winner])) {
            wrong.push(format!("round {round}: {}", stderr.trim()));
        }
    }
    assert!(wrong.is_empty(), "{} of 20 refusals did not name the holder:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn a_dead_holders_lock_is_taken_over_with_a_warning() {
    let repo = Repo::new();
    let dead = dead_pid();
    repo.write_lock(&json!({
        "pid": dead,
        "host": hostname(),
        "user": "someone",
        "time": "2026-01-01T00:00:00Z",
        "command": "enact apply -e dev"
    }));
    let output = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains(&format!("took over the lock of pid {dead}")),
        "no warning about the lock taken over\n{}",
        text(&output)
    );
    assert!(!repo.lock_path().exists(), "the lock is left after the apply");
}

#[test]
fn another_hosts_lock_is_kept_until_state_unlock() {
    let repo = Repo::new();
    let remote = json!({
        "pid": 4242,
        "host": "elsewhere.example",
        "user": "someone",
        "time": "2026-01-01T00:00:00Z",
        "command": "enact apply -e dev"
    });
    repo.write_lock(&remote);

    // Not taken over: the process may well run on that host.
    let started = Instant::now();
    let refused = repo.run(&["apply", "--auto-approve"]);
    let took = started.elapsed();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    // How fast is printed by the other tests and measured by benches/concurrent_applies.sh.
    let _ = took;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("locked by pid 4242") && stderr.contains("elsewhere.example"), "{}", text(&refused));
    assert!(repo.lock_path().exists(), "a refused apply removed the lock");
    assert!(!repo.root.join("state/dev.json").exists(), "a refused apply wrote a state");

    let unlock = repo.run(&["state", "unlock"]);
    assert_eq!(unlock.status.code(), Some(0), "{}", text(&unlock));
    let stdout = String::from_utf8_lossy(&unlock.stdout);
    assert!(
        stdout.contains("4242") && stdout.contains("elsewhere.example"),
        "`state unlock` does not say whose lock it removed\n{}",
        text(&unlock)
    );
    assert!(!repo.lock_path().exists(), "`state unlock` left the lock");

    let again = repo.run(&["state", "unlock"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("was not locked"), "{}", text(&again));

    let applied = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
}
