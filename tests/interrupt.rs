//! Ctrl-C on real processes: at the confirmation prompt (on a real pseudo-terminal) it changes
//! nothing and releases the lock; during an apply, the step that runs finishes, nothing new
//! starts, the state records every process that runs, and the lock and journal are gone.
//! (`tests/crash.rs` sends SIGINT, SIGTERM and SIGHUP at random moments, 20 times.)

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::local::*;
use serde_json::json;

/// Runs `enact ARGS` in `dir` on a pseudo-terminal, sends SIGINT once `prompt` appears in its
/// output, and returns (exit code, everything it printed).
fn interrupt_at_prompt(dir: &std::path::Path, args: &[&str], prompt: &str) -> (i32, String) {
    signal_at_prompt(dir, args, prompt, "SIGINT")
}

/// [`interrupt_at_prompt`] with another signal (`SIGTERM`, `SIGHUP`).
fn signal_at_prompt(dir: &std::path::Path, args: &[&str], prompt: &str, signal: &str) -> (i32, String) {
    let script = r#"
import os, pty, signal, sys, time
enact, sig, prompt, args = sys.argv[1], getattr(signal, sys.argv[2]), sys.argv[3].encode(), sys.argv[4:]
pid, fd = pty.fork()
if pid == 0:
    os.environ["NO_COLOR"] = "1"
    os.execv(enact, [enact] + args)
seen, deadline = b"", time.time() + 60
while prompt not in seen and time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
os.kill(pid, sig)
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_enact"))
        .arg(signal)
        .arg(prompt)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A service `slow` (airline.py that sleeps `seconds` before it listens) on `port`.
fn slow_service(repo: &Repo, port: u16, seconds: f64) -> serde_json::Value {
    let airline = std::fs::read_to_string(repo.path("services/airline.py")).expect("airline.py");
    let slow = airline.replacen('\n', &format!("\nimport time as _t\n_t.sleep({seconds})\n"), 1);
    std::fs::write(repo.path("services/slow.py"), slow).expect("slow.py");
    make_executable(&repo.path("services/slow.py"));
    let mut service = deployable("slow", "slow.py", "SOAP", port, 1);
    service["roles"] = json!(["slow"]);
    service
}

#[test]
fn ctrl_c_at_the_confirmation_prompt_changes_nothing_and_releases_the_lock() {
    let base = 23900;
    let repo =
        Repo::new(&json!({ "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", base, 1)] }), None);
    let (code, out) = interrupt_at_prompt(&repo.root, &["apply"], "Only 'yes' will be accepted");
    assert_eq!(code, 130, "{out}");
    assert!(out.contains("interrupted; nothing was changed"), "{out}");
    assert!(!repo.path("state/dev.lock").exists(), "the lock is left behind");
    assert!(!repo.path("state/dev.json").exists(), "nothing was applied");
    assert!(processes_of(&repo.root).is_empty(), "nothing runs");
    // And the environment is usable at once.
    repo.apply();
    let (code, out) = interrupt_at_prompt(&repo.root, &["destroy"], "Only 'yes' will be accepted");
    assert_eq!(code, 130, "{out}");
    assert!(!repo.path("state/dev.lock").exists(), "the lock is left behind");
    assert_eq!(instances(&repo.state(), "airline").len(), 1, "destroy did nothing");
}

#[test]
fn sigterm_and_sighup_at_the_prompt_change_nothing_and_exit_128_plus_their_number() {
    let base = 23950;
    let repo =
        Repo::new(&json!({ "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", base, 1)] }), None);
    for (signal, code_expected) in [("SIGTERM", 143), ("SIGHUP", 129)] {
        let (code, out) = signal_at_prompt(&repo.root, &["apply"], "Only 'yes' will be accepted", signal);
        assert_eq!(code, code_expected, "{signal}: {out}");
        assert!(out.contains("interrupted; nothing was changed"), "{signal}: {out}");
        assert!(!repo.path("state/dev.lock").exists(), "{signal}: the lock is left behind");
        assert!(!repo.path("state/dev.json").exists(), "{signal}: nothing was applied");
    }
}

#[test]
fn ctrl_c_during_an_apply_lets_the_running_step_finish_and_records_it() {
    let base = 24000;
    let mut repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), None);
    // `slow` takes 1.5 s to start listening; `after` depends on it.
    let slow = slow_service(&repo, base, 1.5);
    let after = with_deps(deployable("after", "travelagency.py", "REST", base + 1, 1), &[("slow", "slow")]);
    repo.write_chor(&json!({ "deployableServiceSpecs": [slow, after] }));
    let pid = repo.spawn_enact(&["apply", "--auto-approve"], "apply");
    let journal = repo.path("state/dev.journal");
    wait_for("slow to start", Duration::from_secs(30), || {
        std::fs::read_to_string(&journal).unwrap_or_default().contains("\"op\":\"startIntent\",\"service\":\"slow\"")
    });
    let status = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = repo.wait_child(pid, Duration::from_secs(60));
    let out = std::fs::read_to_string(repo.path("apply.out")).unwrap_or_default();
    let err = std::fs::read_to_string(repo.path("apply.err")).unwrap_or_default();
    assert_eq!(exit.code(), Some(130), "{out}\n{err}");
    assert!(err.contains("stopping cleanly"), "{err}");
    assert!(out.contains("skipped after: not started: enact was interrupted"), "{out}");
    assert!(!repo.path("state/dev.lock").exists(), "no lock left");
    assert!(!journal.exists(), "no journal left: the state was written");
    // The running step finished: `slow` runs and is recorded; `after` never started.
    let state = repo.state();
    let recorded = pids(&instances(&state, "slow"));
    assert_eq!(recorded.len(), 1, "{state}");
    let running = processes_of(&repo.root);
    assert_eq!(running, recorded, "every process that runs is recorded, and only those");
    assert!(instances(&state, "after").is_empty(), "{state}");
    // The next apply finishes the job.
    repo.apply();
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}

/// A repository whose first apply was SIGKILLed while `slow` (1 s to listen, on `port`) was
/// starting: its journal is left behind, and no state.
fn killed_while_slow_starts(port: u16) -> (Repo, std::path::PathBuf) {
    let mut repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), None);
    let slow = slow_service(&repo, port, 1.0);
    repo.write_chor(&json!({ "deployableServiceSpecs": [slow] }));
    let journal = repo.apply_killed_while_starting("slow", Duration::from_secs(30));
    (repo, journal)
}

#[test]
fn an_apply_killed_while_an_instance_starts_is_visible_to_plan_status_and_show() {
    let (repo, journal) = killed_while_slow_starts(24100);
    // The orphan runs, and answers once its second of start-up is over (however long the
    // machine takes to get it there).
    wait_for("the orphan to run", Duration::from_secs(10), || !processes_of(&repo.root).is_empty());
    let healthy = || {
        let output = repo.enact(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .is_ok_and(|s| s["services"]["slow"]["instances"][0]["health"] == "healthy")
    };
    wait_for("the orphan to answer", Duration::from_secs(30), healthy);
    assert!(!repo.path("state/dev.json").exists(), "the killed apply never wrote a state");

    // plan: not "never applied, 1 to create" in silence.
    let output = repo.enact_ok(&["plan"], 0);
    let err = stderr(&output);
    assert!(err.contains("was interrupted and left state/dev.journal"), "{err}");
    assert!(err.contains("slow-1"), "names the instance it knows of: {err}");
    assert!(err.contains("no longer runs: the next `enact apply` takes it over"), "mentions the stale lock: {err}");
    // status: the orphan is there, and answers; its service is incomplete until an apply
    // converges it, so status fails.
    let output = repo.enact_ok(&["status"], 1);
    assert!(stderr(&output).contains("1 service(s) of env `dev` are incomplete"), "{}", stderr(&output));
    let output = repo.enact_ok(&["status", "--json"], 1);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status JSON");
    assert_eq!(status["services"]["slow"]["instances"][0]["id"], "slow-1", "{status}");
    assert_eq!(status["services"]["slow"]["instances"][0]["health"], "healthy", "{status}");
    // show: the state as it will be recovered.
    let output = repo.enact_ok(&["show"], 0);
    assert!(stdout(&output).contains("slow-1"), "{}", stdout(&output));
    // Nothing was written by those.
    assert!(journal.exists() && !repo.path("state/dev.json").exists());
    // The next apply recovers it; nothing is left untracked.
    repo.apply();
    let state = repo.state();
    assert_eq!(processes_of(&repo.root), pids(&instances(&state, "slow")));
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}

#[test]
fn unreadable_journal_records_are_named_not_skipped_in_silence() {
    let (repo, journal) = killed_while_slow_starts(24700);
    // Damage the second line with bytes that are not even UTF-8.
    let text = std::fs::read(&journal).expect("journal");
    let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    assert!(lines.len() >= 3, "{}", String::from_utf8_lossy(&text));
    lines[1] = vec![0xff, 0xfe, b'{', 0x80];
    std::fs::write(&journal, lines.join(&b'\n')).expect("damaged journal");
    let err = stderr(&repo.enact_ok(&["plan"], 0));
    assert!(err.contains("1 unreadable record(s) (line 2)"), "{err}");
    let output = repo.apply();
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(all.contains("1 unreadable record(s) skipped (line 2"), "{all}");
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}
