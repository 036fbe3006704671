//! Refresh and drift on the local provider, with real processes: an instance killed outside
//! enact, or one whose port closes after it passed its health check, is seen by `plan` and
//! `status` (with the reason), replaced and rewired by `apply`, and the next plan is empty.

mod common;

use std::time::Duration;

use common::local::*;
use serde_json::{Value, json};

/// The pid and `nativeUri` of instance `id` of `service`.
fn instance_of(repo: &Repo, service: &str, id: &str) -> (u32, String) {
    let all = instances(&repo.state(), service);
    let instance = all.iter().find(|i| i["id"] == id).unwrap_or_else(|| panic!("no instance {id}: {all:?}"));
    let pid = instance["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).expect("a pid");
    (pid, instance["nativeUri"].as_str().expect("a nativeUri").to_string())
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill").arg(pid.to_string()).status().expect("kill runs");
    assert!(status.success(), "kill {pid}");
    wait_dead(&[pid]);
}

#[test]
fn an_instance_killed_outside_enact_is_seen_replaced_and_rewired() {
    let base = 23700;
    let repo = Repo::new(
        &json!({ "deployableServiceSpecs": [
            deployable("airline", "airline.py", "SOAP", base, 2),
            with_deps(deployable("travelagency", "travelagency.py", "REST", base + 1, 1), &[("airline", "airline")])
        ]}),
        None,
    );
    repo.apply();
    let agency = field(&instances(&repo.state(), "travelagency"), "nativeUri").remove(0);
    let (dead_pid, dead_uri) = instance_of(&repo, "airline", "airline-1");
    kill(dead_pid);

    // Offline, the state is taken at its word.
    repo.enact_ok(&["plan", "--refresh=false", "--detailed-exitcode"], 0);
    // A refreshing plan sees it, and says why.
    let plan = stdout(&repo.enact_ok(&["plan", "--detailed-exitcode"], 2));
    assert!(plan.contains("instance airline-1 is not running (process gone) → replaced"), "{plan}");
    let json: Value = serde_json::from_slice(&repo.enact_ok(&["plan", "--json"], 0).stdout).expect("plan JSON");
    assert_eq!(json["refreshed"], true);
    assert_eq!(json["down"][0]["instance"], "airline-1");
    assert_eq!(json["down"][0]["reason"], "process-gone");
    assert_eq!(json["down"][0]["replaced"], true);
    // `status` says why, and fails.
    let status = repo.enact_ok(&["status"], 1);
    assert!(stdout(&status).contains("why: process gone"), "{}", stdout(&status));
    assert!(stderr(&status).contains("not healthy"), "{}", stderr(&status));
    let status: Value = serde_json::from_slice(&repo.enact_ok(&["status", "--json"], 1).stdout).expect("status JSON");
    assert_eq!(status["unhealthy"], 1);
    let dead = status["services"]["airline"]["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["id"] == "airline-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dead["reason"], "process-gone", "{status}");

    // Apply unwires the dead one first, starts a new one and wires it.
    let output = repo.apply();
    assert!(stdout(&output).contains("0 failed, 0 skipped"), "{}", describe(&output));
    let airlines = field(&instances(&repo.state(), "airline"), "nativeUri");
    assert_eq!(airlines.len(), 2);
    assert!(!field(&instances(&repo.state(), "airline"), "id").contains(&"airline-1".to_string()));
    assert_eq!(wired_to(&agency, "airline"), set_of(&airlines));
    let told = told(&repo.log_of("travelagency-1"), "airline");
    assert_eq!(told.len(), 3, "the full list, the list without the dead one, the new list: {told:?}");
    assert!(!told[1].1.contains(&dead_uri), "{told:?}");
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
    repo.enact_ok(&["status"], 0);
    trip_ok(&agency);
}

#[test]
fn an_instance_whose_port_closes_after_its_health_check_is_seen_and_replaced() {
    let base = 23800;
    let repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), None);
    // Listens, passes its health check, and, the first time, closes its port a second later
    // while it keeps running.
    let marker = repo.path("flaky.once");
    let script = format!(
        "#!/usr/bin/env python3\n\
         import os, socket, time\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind((os.environ['HOST'], int(os.environ['PORT']))); s.listen()\n\
         print(f\"{{int(time.time()*1000)}} {{os.environ['INSTANCE_ID']}} listening\", flush=True)\n\
         if os.path.exists({marker:?}):\n\
         \x20   os.remove({marker:?}); time.sleep(1); s.close()\n\
         while True: time.sleep(1)\n",
        marker = marker.display().to_string()
    );
    std::fs::write(repo.path("services/flaky.py"), script).expect("flaky.py");
    make_executable(&repo.path("services/flaky.py"));
    std::fs::write(repo.path("flaky.once"), "").expect("marker");
    let mut chor = json!({ "deployableServiceSpecs": [deployable("flaky", "flaky.py", "REST", base, 1)] });
    chor["deployableServiceSpecs"][0]["roles"] = json!(["flaky"]);
    repo.write_chor(&chor);
    repo.apply();
    std::thread::sleep(Duration::from_millis(1500));
    let status: Value = serde_json::from_slice(&repo.enact_ok(&["status", "--json"], 1).stdout).expect("status JSON");
    let instance = &status["services"]["flaky"]["instances"][0];
    assert_eq!(instance["reason"], "port-closed", "{status}");
    assert_eq!(instance["alive"], true, "{status}");
    let plan = stdout(&repo.enact_ok(&["plan"], 0));
    assert!(plan.contains("instance flaky-1 is not running (port closed) → replaced"), "{plan}");
    let (old, _) = instance_of(&repo, "flaky", "flaky-1");
    repo.apply();
    // The broken process was stopped, not left behind.
    assert!(!process_alive(old), "flaky-1 (pid {old}) still runs");
    repo.enact_ok(&["status"], 0);
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}

#[test]
fn two_repositories_with_the_same_spec_and_ports_run_side_by_side() {
    let base = 24200;
    let chor = json!({ "deployableServiceSpecs": [
        deployable("airline", "airline.py", "SOAP", base, 2),
        with_deps(deployable("travelagency", "travelagency.py", "REST", base + 1, 1), &[("airline", "airline")])
    ]});
    let (a, b) = (Repo::new(&chor, None), Repo::new(&chor, None));
    // Both at once, as two operators would.
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| a.enact(&["apply", "--auto-approve"]));
        let second = scope.spawn(|| b.enact(&["apply", "--auto-approve"]));
        (first.join().expect("apply a"), second.join().expect("apply b"))
    });
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    assert_eq!(second.status.code(), Some(0), "{}", describe(&second));
    let agencies: Vec<String> =
        [&a, &b].iter().map(|r| field(&instances(&r.state(), "travelagency"), "nativeUri").remove(0)).collect();
    assert_ne!(agencies[0], agencies[1], "each repository has addresses of its own");
    for (repo, agency) in [&a, &b].iter().zip(&agencies) {
        let (seller, _) = trip_ok(agency);
        assert!(seller.starts_with("airline-"), "{seller}");
        repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
        repo.enact_ok(&["status"], 0);
    }
}

#[test]
fn instances_start_with_a_clean_environment_without_enacts_secrets() {
    let base = 24300;
    let repo =
        Repo::new(&json!({ "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", base, 1)] }), None);
    let output = repo.enact_env(
        &["apply", "--auto-approve"],
        &[("AWS_SECRET_ACCESS_KEY", "do-not-leak-1"), ("GITHUB_TOKEN", "do-not-leak-2")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let (pid, _) = instance_of(&repo, "airline", "airline-1");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the instance's environment");
    let vars: Vec<String> =
        environ.split(|b| *b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert!(!vars.iter().any(|v| v.contains("do-not-leak")), "enact's environment leaked: {vars:?}");
    for name in ["HOST", "PORT", "SERVICE_NAME", "INSTANCE_ID", "ENDPOINT_NAME", "PATH"] {
        assert!(vars.iter().any(|v| v.starts_with(&format!("{name}="))), "{name} is missing: {vars:?}");
    }
    trip_free_check(&repo);
}

/// The instance still works in its clean environment.
fn trip_free_check(repo: &Repo) {
    let uri = field(&instances(&repo.state(), "airline"), "nativeUri").remove(0);
    let (status, _) = http_get(&uri).expect("airline answers");
    assert_eq!(status, 200);
}

#[test]
fn a_script_whose_interpreter_is_missing_is_reported_as_such() {
    let base = 24400;
    let repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), None);
    std::fs::write(repo.path("services/odd.py"), "#!/usr/bin/python9.99\nprint('never')\n").expect("odd.py");
    make_executable(&repo.path("services/odd.py"));
    let mut odd = deployable("odd", "odd.py", "SOAP", base, 1);
    odd["roles"] = json!(["odd"]);
    repo.write_chor(&json!({ "deployableServiceSpecs": [odd] }));
    let output = repo.enact_ok(&["apply", "--auto-approve"], 1);
    let out = stdout(&output);
    assert!(out.contains("names the interpreter `/usr/bin/python9.99`, which does not exist"), "{out}");
    assert!(!out.contains("no such program or package file"), "{out}");
}

#[test]
fn the_health_timeout_is_a_setting_per_service_and_the_flag_overrides_it() {
    let base = 24500;
    let settings = json!({
        "defaultEnv": "dev",
        "accounts": { "local": { "provider": "local" } },
        "services": { "slow": { "timeouts": { "healthMs": 1000, "stopGraceMs": 500 } } }
    });
    let repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), Some(&settings));
    let airline = std::fs::read_to_string(repo.path("services/airline.py")).expect("airline.py");
    std::fs::write(repo.path("services/slow.py"), airline.replacen('\n', "\nimport time as _t\n_t.sleep(3)\n", 1))
        .expect("slow.py");
    make_executable(&repo.path("services/slow.py"));
    let mut slow = deployable("slow", "slow.py", "SOAP", base, 1);
    slow["roles"] = json!(["slow"]);
    repo.write_chor(&json!({ "deployableServiceSpecs": [slow] }));
    let output = repo.enact_ok(&["apply", "--auto-approve"], 1);
    assert!(
        stdout(&output).contains("did not answer") && stdout(&output).contains("within 1 s"),
        "{}",
        describe(&output)
    );
    assert!(processes_of(&repo.root).is_empty(), "the instance that did not answer was stopped");
    // The flag wins over the setting.
    repo.enact_ok(&["apply", "--auto-approve", "--health-timeout", "30"], 0);
    repo.enact_ok(&["status"], 0);
}
