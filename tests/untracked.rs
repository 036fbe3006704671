//! Recovery never trusts the journal alone. Every instance carries its environment's lineage
//! (`ENACT_LINEAGE`), so the processes of a killed apply are found on the machine whatever the
//! journal says: records overwritten in the middle, a torn last line, the first line gone, the
//! whole journal deleted. Recovery stops what no record names, `status` names it and exits 1,
//! and `destroy` stops it; nothing runs that the state does not know.

mod common;

use std::time::Duration;

use common::local::*;
use serde_json::json;

/// A service `slow` (airline.py that sleeps `seconds` before it listens) on `port`, depending on
/// `fast` in role `fast`.
fn slow_after_fast(repo: &Repo, port: u16, seconds: f64) -> serde_json::Value {
    let airline = std::fs::read_to_string(repo.path("services/airline.py")).expect("airline.py");
    let slow = airline.replacen('\n', &format!("\nimport time as _t\n_t.sleep({seconds})\n"), 1);
    std::fs::write(repo.path("services/slow.py"), slow).expect("slow.py");
    make_executable(&repo.path("services/slow.py"));
    let mut service = deployable("slow", "slow.py", "SOAP", port, 1);
    service["roles"] = json!(["slow"]);
    with_deps(service, &[("fast", "fast")])
}

/// A repository whose apply of `fast` (3 instances, on `port`) then `slow` (on `port + 1`, 2 s to
/// listen) was SIGKILLed while `slow` started. With `first_applied`, an apply of `slow` alone
/// went before (so the state has a lineage and a serial); otherwise the killed apply was the first.
fn killed_after_fast_started(port: u16, first_applied: bool) -> (Repo, std::path::PathBuf) {
    let mut repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), None);
    let mut fast = deployable("fast", "airline.py", "SOAP", port, 3);
    fast["roles"] = json!(["fast"]);
    let slow = slow_after_fast(&repo, port + 1, 2.0);
    if first_applied {
        let mut alone = slow.clone();
        alone["dependencies"] = json!([]);
        repo.write_chor(&json!({ "deployableServiceSpecs": [alone] }));
        repo.apply();
        // The next apply replaces `slow` (new version) after starting `fast`.
        let mut changed = slow;
        changed["version"] = json!("2");
        repo.write_chor(&json!({ "deployableServiceSpecs": [fast, changed] }));
    } else {
        repo.write_chor(&json!({ "deployableServiceSpecs": [fast, slow] }));
    }
    let journal = repo.apply_killed_while_starting("slow", Duration::from_secs(60));
    (repo, journal)
}

/// The lines of the journal, as bytes.
fn journal_lines(journal: &std::path::Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(journal).expect("journal");
    text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

/// After recovery and one apply: the processes that run are exactly the recorded ones, the plan
/// is empty, and destroy leaves nothing running.
fn converges_and_destroys(repo: &Repo) {
    let state = repo.state();
    let (running, recorded) = repo.running_and_recorded(&["fast", "slow"]);
    assert_eq!(running, recorded, "every process that runs is recorded, and only those: {state}");
    assert_eq!(instances(&state, "fast").len(), 3, "{state}");
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
    repo.enact_ok(&["status"], 0);
    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    wait_dead(&running);
    assert!(processes_of(&repo.root).is_empty(), "destroy left processes running");
}

#[test]
fn records_overwritten_in_the_middle_of_the_journal_lose_no_process() {
    let (repo, journal) = killed_after_fast_started(25100, false);
    let mut lines = journal_lines(&journal);
    let slow_at = lines
        .iter()
        .position(|l| String::from_utf8_lossy(l).contains("\"op\":\"startIntent\",\"service\":\"slow\""))
        .expect("slow's intent");
    assert!(slow_at >= 7, "fast's records come first: {} lines", lines.len());
    // Every record between the first line and slow's intent is overwritten: fast's starts are lost.
    for line in &mut lines[1..slow_at] {
        *line = b"{\"op\":\"garbage\"".to_vec();
    }
    std::fs::write(&journal, lines.join(&b'\n')).expect("damaged journal");
    let fast_running = processes_of(&repo.root).len();
    assert!(fast_running >= 3, "fast's 3 instances and slow run: {fast_running}");

    // plan names what no record names, and counts it.
    let out = stdout(&repo.enact_ok(&["plan"], 0));
    assert!(out.contains("process(es) that carry env `dev`'s lineage but no record names"), "{out}");
    assert!(out.contains("fast-"), "names the instances: {out}");
    assert!(out.contains("untracked to stop."), "{out}");

    let output = repo.apply();
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(all.contains("unreadable record(s) skipped"), "{all}");
    // fast's three, and slow when it was already spawned (its node's record was lost with the rest).
    assert!(all.contains("process(es) this environment started that no record names"), "{all}");
    for fast in ["fast-1", "fast-2", "fast-3"] {
        assert!(all.contains(&format!("instance {fast} of service fast) on this machine")), "{all}");
    }
    converges_and_destroys(&repo);
}

#[test]
fn a_deleted_journal_leaves_processes_that_status_names_and_destroy_stops() {
    let (repo, journal) = killed_after_fast_started(25200, true);
    std::fs::remove_file(&journal).expect("journal removed");
    let running = processes_of(&repo.root);
    // Recorded: the first `slow`; running besides it: fast's three and the new `slow`.
    assert_eq!(pids(&instances(&repo.state(), "slow")).len(), 1);
    assert!(running.len() >= 4, "{running:?}");
    let output = repo.enact_ok(&["status", "--json"], 1);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status JSON");
    let untracked = status["untracked"].as_array().expect("untracked").clone();
    assert!(untracked.len() >= 3, "{status}");
    assert!(untracked.iter().any(|o| o["service"] == "fast"), "{status}");
    let human = repo.enact_ok(&["status"], 1);
    assert!(stdout(&human).contains("untracked"), "{}", stdout(&human));
    assert!(stderr(&human).contains("no record names them"), "{}", stderr(&human));

    let output = repo.enact_ok(&["destroy", "--auto-approve"], 0);
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(all.contains("- first stops 4 process(es) that carry env `dev`'s lineage but no record names"), "{all}");
    assert!(all.contains("4 untracked to stop."), "{all}");
    assert!(all.contains("stopped 4 untracked process(es) that this environment started"), "{all}");
    wait_dead(&running);
    assert!(processes_of(&repo.root).is_empty(), "destroy left processes running");
    repo.enact_ok(&["status"], 0);
}

#[test]
fn a_torn_last_line_and_an_unreadable_first_line_are_recovered_all_the_same() {
    // The last line cut in the middle, as a kill during a write leaves it.
    let (repo, journal) = killed_after_fast_started(25300, true);
    let mut text = std::fs::read(&journal).expect("journal");
    let keep = text.len() - 20;
    text.truncate(keep);
    std::fs::write(&journal, &text).expect("torn journal");
    repo.apply();
    converges_and_destroys(&repo);

    // The first line (lineage and serial) unreadable: still an interrupted apply, not stale.
    let (repo, journal) = killed_after_fast_started(25400, true);
    let mut lines = journal_lines(&journal);
    lines[0] = vec![0xff, 0x00, b'{'];
    std::fs::write(&journal, lines.join(&b'\n')).expect("damaged journal");
    let output = repo.apply();
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(all.contains("recovered an interrupted apply"), "{all}");
    assert!(all.contains("line 1"), "names the unreadable line: {all}");
    converges_and_destroys(&repo);
}

/// Drops the record of airline's first instance (a state edited by hand), whose process runs
/// on; returns its pid.
fn lose_first_airline_record(repo: &Repo) -> u32 {
    let mut state = repo.state();
    let lost = pids(&instances(&state, "airline"))[0];
    let kept: Vec<serde_json::Value> = instances(&state, "airline").into_iter().skip(1).collect();
    state["services"]["airline"]["instances"] = json!(kept);
    repo.write_json("state/dev.json", &state);
    lost
}

/// `output`, an apply, stopped the untracked process `lost`, and airline runs its two recorded
/// instances again, and nothing else; returns their pids.
fn stopped_and_converged(repo: &Repo, output: &std::process::Output, lost: u32) -> Vec<u32> {
    assert!(
        stderr(output).contains("stopped 1 untracked process(es) that this environment started and no record names"),
        "{}",
        describe(output)
    );
    wait_dead(&[lost]);
    let (running, recorded) = repo.running_and_recorded(&["airline"]);
    assert_eq!(running, recorded, "{}", repo.state());
    assert_eq!(recorded.len(), 2, "the apply converged to two instances again");
    running
}

#[test]
fn a_process_whose_record_was_edited_away_is_named_by_plan_and_stopped_by_apply() {
    let repo =
        Repo::new(&json!({ "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", 25800, 2)] }), None);
    repo.apply();
    let lost = lose_first_airline_record(&repo);
    let out = stdout(&repo.enact_ok(&["plan"], 0));
    assert!(out.contains("- first stops 1 process(es) that carry env `dev`'s lineage but no record names"), "{out}");
    assert!(out.contains(&format!("pid {lost}")), "{out}");
    assert!(out.contains("1 untracked to stop."), "{out}");
    // The machine form counts it; stderr says it for whoever reads the terminal.
    let output = repo.enact_ok(&["plan", "--json"], 0);
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    assert_eq!(plan["untracked"]["processes"], 1, "{plan}");
    assert_eq!(plan["untracked"]["ec2Instances"], 0, "{plan}");
    // And lists it, as `status --json` does.
    let found = &plan["untracked"]["found"];
    assert_eq!(found["processes"].as_array().map(Vec::len), Some(1), "{plan}");
    assert_eq!(found["processes"][0]["pid"], json!(lost), "{plan}");
    assert_eq!(found["processes"][0]["service"], "airline", "{plan}");
    assert_eq!(found["processes"][0]["account"], "local", "{plan}");
    assert_eq!(found["ec2Instances"], json!([]), "{plan}");
    assert!(stderr(&output).contains("carry env `dev`'s lineage but no record names them"), "{}", describe(&output));
    // An apply not approved changes nothing: the process runs on.
    let output = repo.enact_ok(&["apply"], 1);
    let plan = stdout(&output);
    assert!(plan.contains("- first stops 1 process(es)") && plan.contains("1 untracked to stop."), "{plan}");
    assert!(!stderr(&output).contains("stopped 1 untracked"), "{}", describe(&output));
    assert!(process_alive(lost), "an apply refused stopped the untracked process");
    // A saved plan that says so stops it too.
    repo.enact_ok(&["plan", "--out", "p.plan"], 0);
    let output = repo.enact_ok(&["apply", "p.plan"], 0);
    stopped_and_converged(&repo, &output, lost);

    // Again, applied at once: approved, it stops the process and converges.
    let lost = lose_first_airline_record(&repo);
    let output = repo.apply();
    assert!(stdout(&output).contains("1 untracked to stop."), "{}", describe(&output));
    let running = stopped_and_converged(&repo, &output, lost);
    repo.enact_ok(&["status"], 0);
    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    wait_dead(&running);
}
