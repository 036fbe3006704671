//! `enact apply` on the local provider, end to end: real processes on loopback addresses
//! (127.0.0.2, 127.0.0.3, …), wired over real HTTP, driven through the built binary in temporary
//! config repositories that hold the travel example's Python services.
//!
//! Every test uses its own ports (the local provider hands out the same loopback addresses in
//! every repository, and tests run in parallel), and a [`Repo`] guard that, even when the test
//! fails, runs `enact destroy` and then kills any process enact started from its directory.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use std::time::Duration;

use common::local::*;
use serde_json::{Value, json};

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
    assert_eq!(wired_to(&agency, "weather"), BTreeSet::from([weather.clone()]));

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

    // The legacy weather stops answering: enact does not run it, so status still exits 0, but
    // its summary and a warning say so.
    let status = stdout(&repo.enact_ok(&["status"], 0));
    assert!(status.contains("3 of 3 instance(s) healthy; 1 of 1 legacy endpoint(s) answering."), "{status}");
    let weather_child = repo.children.last_mut().expect("the weather process");
    weather_child.kill().expect("kill weather");
    weather_child.wait().expect("weather ends");
    let output = repo.enact_ok(&["status"], 0);
    assert!(
        stdout(&output).contains("3 of 3 instance(s) healthy; 1 of 1 legacy endpoint(s) not answering."),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains(&format!("legacy service `weather` does not answer at {weather}")),
        "{}",
        describe(&output)
    );
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

    let second = repo.enact(&["apply", "--auto-approve"]);
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    // Refused at once: the first apply still holds the lock when the second has returned.
    assert!(
        fs::read_to_string(&lock)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|l| l["pid"] == holder),
        "the second apply waited for the first"
    );
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

    let output = repo.enact_ok(&["pause", "airline", "--yes"], 0);
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

    let output = repo.enact_ok(&["resume", "airline", "--yes"], 0);
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
    repo.enact_ok(&["pause", "travelagency", "--yes"], 0);
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
    let output = repo.enact_ok(&["resume", "travelagency", "--yes"], 0);
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

// ---------------------------------------------------------------------------------------------
// Many instances
// ---------------------------------------------------------------------------------------------

/// Fifty instances of one service start together (on a bounded number of threads): every one
/// runs, answers and is recorded, both consumer instances are told all fifty, and destroy leaves
/// nothing running.
#[test]
fn fifty_instances_start_together_are_all_wired_and_destroy_leaves_none() {
    let base = 25100;
    let chor = json!({
        "deployableServiceSpecs": [
            deployable("airline", "airline.py", "SOAP", base, 50),
            with_deps(deployable("travelagency", "travelagency.py", "REST", base + 1, 2), &[("airline", "airline")])
        ]
    });
    // Fifty interpreters starting at once on a busy machine: room beyond the 30 s default.
    let settings = json!({
        "defaultEnv": "dev",
        "defaultAccount": "local",
        "accounts": { "local": { "provider": "local" } },
        "timeouts": { "healthMs": 120000 }
    });
    let repo = Repo::new(&chor, Some(&settings));
    let output = repo.apply();
    assert!(stdout(&output).contains("Apply: 2 done, 0 failed, 0 skipped"), "{}", describe(&output));

    let state = repo.state();
    let airlines = instances(&state, "airline");
    assert_eq!(airlines.len(), 50, "fifty airline instances recorded");
    let uris = set_of(&field(&airlines, "nativeUri"));
    assert_eq!(uris.len(), 50, "fifty distinct endpoints");
    let airline_pids = pids(&airlines);
    assert_eq!(airline_pids.iter().collect::<BTreeSet<_>>().len(), 50, "fifty processes");
    for pid in &airline_pids {
        assert!(process_alive(*pid), "airline pid {pid} runs");
    }
    assert_all_healthy(&repo.status());
    let agencies = field(&instances(&state, "travelagency"), "nativeUri");
    assert_eq!(agencies.len(), 2);
    for agency in &agencies {
        assert_eq!(wired_to(agency, "airline"), uris, "{agency} is told every airline instance");
    }

    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    wait_dead(&airline_pids);
    assert_eq!(processes_of(&repo.root), Vec::<u32>::new(), "destroy leaves nothing running");
    let state = repo.state();
    assert_eq!(state["services"].as_object().map(serde_json::Map::len), Some(0), "{state}");
    assert_eq!(state["nodes"].as_object().map(serde_json::Map::len), Some(0), "{state}");
}

// ---------------------------------------------------------------------------------------------
// Memory of what enact starts
// ---------------------------------------------------------------------------------------------

/// `THP_enabled:` of `/proc/<pid>/status`: whether transparent huge pages are on for a process
/// (`None` when the kernel does not say).
fn thp_enabled(pid: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim().to_string())
}

/// An instance's log relay (enact run again, one per instance for as long as it runs) starts
/// with transparent huge pages off, so it holds about 1 MiB of its own instead of about 5 MiB;
/// the instance keeps what enact was given.
#[test]
#[allow(clippy::print_stderr, reason = "says why the test is skipped where the kernel does not tell")]
fn a_log_relay_runs_in_small_pages_and_its_instance_as_enact_was_started() {
    let Some(ours) = thp_enabled("self") else {
        eprintln!("this kernel does not say whether huge pages are on (no THP_enabled in /proc/self/status): skipped");
        return;
    };
    let base = 22300;
    let chor = json!({ "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", base, 1)] });
    let repo = Repo::new(&chor, None);
    let output = repo.apply();
    assert!(stdout(&output).contains("Apply: 1 done, 0 failed, 0 skipped"), "{}", describe(&output));
    let instance = pids(&instances(&repo.state(), "airline"))[0];

    let needle = repo.root.to_string_lossy().into_owned();
    let relays: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| {
            let cmdline =
                String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
            cmdline.contains("__log-relay") && cmdline.contains(&needle)
        })
        .collect();
    assert_eq!(relays.len(), 1, "one relay for the one instance: {relays:?}");
    assert_eq!(thp_enabled(&relays[0]).as_deref(), Some("0"), "the relay runs without huge pages");
    assert_eq!(thp_enabled(&instance.to_string()), Some(ours), "the instance has what enact was given");

    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    wait_dead(&[instance]);
}
