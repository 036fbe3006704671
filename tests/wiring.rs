//! The wiring invariant under every kind of change, on real processes wired over real HTTP,
//! judged from the services' own logs: every consumer instance learns each list once, holds the
//! full current list of each role after every apply, never holds an endpoint that stopped or was
//! not yet serving, and never an empty list while a provider of the role serves.

mod common;

use std::collections::BTreeMap;

use common::local::*;
use serde_json::{Value, json};

/// A provider of role `role` running airline.py (SOAP).
fn provider(name: &str, role: &str, port: u16, instances: u32) -> Value {
    let mut service = deployable(name, "airline.py", "SOAP", port, instances);
    service["roles"] = json!([role]);
    service
}

/// The travel agency (REST) as `front`, calling `deps` in role `airline`.
fn front(port: u16, deps: &[&str]) -> Value {
    let deps: Vec<(&str, &str)> = deps.iter().map(|d| (*d, "airline")).collect();
    with_deps(deployable("front", "travelagency.py", "REST", port, 1), &deps)
}

fn chor(services: Vec<Value>) -> Value {
    json!({ "deployableServiceSpecs": services })
}

/// The endpoints of the instances of `services` in the recorded state.
fn endpoints_of(repo: &Repo, services: &[&str]) -> std::collections::BTreeSet<String> {
    let state = repo.state();
    services.iter().flat_map(|s| field(&instances(&state, s), "nativeUri")).collect()
}

/// The lists `instance` was told for `role`, oldest first.
fn lists(repo: &Repo, instance: &str, role: &str) -> Vec<std::collections::BTreeSet<String>> {
    told(&repo.log_of(instance), role).into_iter().map(|(_, l)| l).collect()
}

#[test]
fn a_consumer_moves_between_providers_of_one_role_in_one_call_either_way() {
    let base = 23000;
    // `api` sorts before `back`: the order in which the removed dependency used to be told `[]`
    // after the new one was wired.
    let repo = Repo::new(&chor(vec![provider("back", "airline", base, 2), front(base + 1, &["back"])]), None);
    repo.apply();
    let agency = agency_uri_of(&repo);
    let caller = Caller::start(vec![agency.clone()]);

    // back → api, back removed.
    repo.write_chor(&chor(vec![provider("api", "airline", base + 2, 2), front(base + 1, &["api"])]));
    let output = repo.apply();
    assert!(stdout(&output).contains("0 failed, 0 skipped"), "{}", describe(&output));
    assert_eq!(wired_to(&agency, "airline"), endpoints_of(&repo, &["api"]));
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);

    // api → back (a new `back`), api removed: the other direction.
    repo.write_chor(&chor(vec![provider("back", "airline", base + 3, 1), front(base + 1, &["back"])]));
    repo.apply();
    assert_eq!(wired_to(&agency, "airline"), endpoints_of(&repo, &["back"]));

    // Both providers in one role: the consumer holds the union; dropping one dependency while its
    // provider keeps running leaves the other's endpoints, never an empty list.
    repo.write_chor(&chor(vec![
        provider("api", "airline", base + 2, 1),
        provider("back", "airline", base + 3, 1),
        front(base + 1, &["api", "back"]),
    ]));
    repo.apply();
    assert_eq!(wired_to(&agency, "airline"), endpoints_of(&repo, &["api", "back"]));
    repo.write_chor(&chor(vec![
        provider("api", "airline", base + 2, 1),
        provider("back", "airline", base + 3, 1),
        front(base + 1, &["api"]),
    ]));
    repo.apply();
    assert_eq!(wired_to(&agency, "airline"), endpoints_of(&repo, &["api"]));
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);

    let calls = caller.finish_all_ok("four provider swaps");
    assert!(calls >= 10, "only {calls} calls through the consumer");
    let judged = judge_wiring(&repo.logs(), &BTreeMap::new(), "airline", &["api", "back"], true);
    // One call per distinct list: back×2, api×2, back×1, api+back, api.
    assert_eq!(lists(&repo, "front-1", "airline").len(), 5, "{:?}", lists(&repo, "front-1", "airline"));
    assert_eq!(judged.calls, 5);
    assert_eq!(judged.stops, 4, "{judged:?}");
}

fn agency_uri_of(repo: &Repo) -> String {
    field(&instances(&repo.state(), "front"), "nativeUri").remove(0)
}

#[test]
fn each_consumer_is_told_each_list_once() {
    let base = 23100;
    let mut repo = Repo::new(&json!({}), None);
    // A legacy consumer (an airline.py started by hand) calls `airline` too.
    let partner = repo.start_legacy("airline.py", "partner", "partner-legacy", base + 5);
    let mut ring_a = with_deps(deployable("ring-a", "travelagency.py", "REST", base + 2, 1), &[("ring-b", "ringb")]);
    ring_a["roles"] = json!(["ringa"]);
    let mut ring_b = with_deps(deployable("ring-b", "airline.py", "SOAP", base + 3, 2), &[("ring-a", "ringa")]);
    ring_b["roles"] = json!(["ringb"]);
    let spec = |airlines: u32| {
        json!({
            "deployableServiceSpecs": [
                deployable("airline", "airline.py", "SOAP", base, airlines),
                with_deps(deployable("travelagency", "travelagency.py", "REST", base + 1, 1), &[("airline", "airline")]),
                ring_a.clone(),
                ring_b.clone()
            ],
            "legacyServiceSpecs": [{
                "name": "partner", "roles": ["partner"], "serviceType": "SOAP",
                "nativeURIs": [partner.clone()],
                "dependencies": [{ "serviceSpecName": "airline", "serviceSpecRole": "airline" }]
            }]
        })
    };
    repo.write_chor(&spec(1));
    repo.apply();
    let once = |instance: &str, role: &str, n: usize, lists: Vec<std::collections::BTreeSet<String>>| {
        assert_eq!(lists.len(), n, "{instance} was told these lists for `{role}`: {lists:?}");
    };
    once("travelagency-1", "airline", 1, lists(&repo, "travelagency-1", "airline"));
    once(
        "partner",
        "airline",
        1,
        told(&repo.legacy_log("partner-legacy"), "airline").into_iter().map(|x| x.1).collect(),
    );
    once("ring-a-1", "ringb", 1, lists(&repo, "ring-a-1", "ringb"));
    for b in ["ring-b-1", "ring-b-2"] {
        once(b, "ringa", 1, lists(&repo, b, "ringa"));
    }

    // Scale out 1 → 3, then in 3 → 1: one more list each time.
    for (airlines, n) in [(3, 2), (1, 3)] {
        repo.write_chor(&spec(airlines));
        repo.apply();
        once("travelagency-1", "airline", n, lists(&repo, "travelagency-1", "airline"));
        once(
            "partner",
            "airline",
            n,
            told(&repo.legacy_log("partner-legacy"), "airline").into_iter().map(|x| x.1).collect(),
        );
        assert_eq!(wired_to(&agency_of(&repo), "airline"), endpoints_of(&repo, &["airline"]));
    }
    let legacy = BTreeMap::from([("partner-legacy".to_string(), repo.legacy_log("partner-legacy"))]);
    let judged = judge_wiring(&repo.logs(), &legacy, "airline", &["airline"], true);
    assert_eq!(judged.calls, 6, "{judged:?}");
    assert_eq!(judged.stops, 2, "{judged:?}");
    judge_wiring(&repo.logs(), &BTreeMap::new(), "ringb", &["ring-b"], true);
    judge_wiring(&repo.logs(), &BTreeMap::new(), "ringa", &["ring-a"], true);
    // The cycle's lists did not change: nobody in it was told again.
    once("ring-a-1", "ringb", 1, lists(&repo, "ring-a-1", "ringb"));
}

fn agency_of(repo: &Repo) -> String {
    field(&instances(&repo.state(), "travelagency"), "nativeUri").remove(0)
}

/// Applies and destroys `spec` `rounds` times; every round must succeed, leave nothing running,
/// and destroy must tell no consumer anything (they all stop).
fn apply_and_destroy(repo: &Repo, rounds: usize) {
    for round in 1..=rounds {
        let output = repo.enact(&["apply", "--auto-approve"]);
        assert_eq!(output.status.code(), Some(0), "round {round}: apply\n{}", describe(&output));
        let wired_before: usize =
            repo.logs().values().map(|l| l.iter().filter(|x| x.event.starts_with("wired ")).count()).sum();
        // The logs are read after the destroy: kept.
        let output = repo.enact(&["destroy", "--auto-approve", "--keep-logs"]);
        assert_eq!(output.status.code(), Some(0), "round {round}: destroy\n{}", describe(&output));
        let wired_after: usize =
            repo.logs().values().map(|l| l.iter().filter(|x| x.event.starts_with("wired ")).count()).sum();
        assert_eq!(wired_after, wired_before, "round {round}: destroy told a consumer that was being stopped");
        let left = processes_of(&repo.root);
        assert!(left.is_empty(), "round {round}: processes left after destroy: {left:?}");
    }
}

#[test]
fn a_two_service_cycle_is_applied_and_destroyed_fifty_times() {
    let base = 23200;
    let mut a = with_deps(deployable("a", "travelagency.py", "REST", base, 1), &[("b", "b")]);
    a["roles"] = json!(["a"]);
    let mut b = with_deps(deployable("b", "airline.py", "SOAP", base + 1, 1), &[("a", "a")]);
    b["roles"] = json!(["b"]);
    let repo = Repo::new(&chor(vec![a, b]), None);
    apply_and_destroy(&repo, 50);
}

#[test]
fn a_three_service_cycle_is_applied_and_destroyed_fifty_times() {
    let base = 23300;
    let mut a = with_deps(deployable("a", "travelagency.py", "REST", base, 1), &[("b", "b")]);
    a["roles"] = json!(["a"]);
    let mut b = with_deps(deployable("b", "airline.py", "SOAP", base + 1, 1), &[("c", "c")]);
    b["roles"] = json!(["b"]);
    let mut c = with_deps(deployable("c", "airline.py", "SOAP", base + 2, 1), &[("a", "a")]);
    c["roles"] = json!(["c"]);
    let repo = Repo::new(&chor(vec![a, b, c]), None);
    apply_and_destroy(&repo, 50);
}

/// Settings where `airline` warms up for 1.5 s after its port opens, and a readiness check that
/// waits for it (`with_readiness`) or not.
fn warming_settings(with_readiness: bool) -> Value {
    let mut warm = json!({ "start": "python3 {package} --warmup-ms 1500" });
    if with_readiness {
        warm["readiness"] = json!({ "path": "/{endpoint}", "minReadyMs": 300 });
    }
    json!({
        "defaultEnv": "dev",
        "accounts": { "local": { "provider": "local" } },
        "packageTypes": { "WARM": warm }
    })
}

#[test]
fn consumers_are_told_of_an_instance_only_once_it_is_ready() {
    let base = 23400;
    let warm = |instances: u32, version: &str| {
        let mut airline = provider("airline", "airline", base, instances);
        airline["packageType"] = json!("WARM");
        airline["version"] = json!(version);
        let mut agency = front(base + 1, &["airline"]);
        agency["numberOfInstances"] = json!(2);
        chor(vec![airline, agency])
    };
    let repo = Repo::new(&warm(1, "1.0"), Some(&warming_settings(true)));
    repo.apply();
    let agencies = field(&instances(&repo.state(), "front"), "nativeUri");
    let caller = Caller::start(agencies.clone());
    for (what, instances, version) in [
        ("scale out 1 → 3", 3, "1.0"),
        ("redeploy of 3", 3, "1.1"),
        ("scale in 3 → 1", 1, "1.1"),
        ("redeploy of 1", 1, "1.2"),
    ] {
        repo.write_chor(&warm(instances, version));
        let output = repo.apply();
        assert!(stdout(&output).contains("0 failed, 0 skipped"), "{what}: {}", describe(&output));
        for agency in &agencies {
            assert_eq!(wired_to(agency, "airline"), endpoints_of(&repo, &["airline"]), "after {what}");
        }
    }
    let calls = caller.finish_all_ok("scale-out, redeploys and scale-in of a service that warms up");
    assert!(calls >= 20, "only {calls} calls");

    // From the logs: every endpoint a consumer was told had logged `ready` at least
    // `minReadyMs` (300 ms) before.
    let logs = repo.logs();
    judge_wiring(&logs, &BTreeMap::new(), "airline", &["airline"], true);
    let all = lives(&logs);
    let ready_at = |uri: &str, t: u64| {
        all.iter()
            .filter(|l| l.uri == uri && l.start <= t)
            .filter_map(|l| l.lines.iter().find(|x| x.event == "ready").map(|x| x.t))
            .filter(|r| *r <= t)
            .max()
    };
    let mut checked = 0;
    for consumer in all.iter().filter(|l| l.instance.starts_with("front-")) {
        for (t, list) in told(&consumer.lines, "airline") {
            for uri in &list {
                let ready = ready_at(uri, t)
                    .unwrap_or_else(|| panic!("{} was told {uri} at {t} before it was ready", consumer.instance));
                assert!(t >= ready + 250, "{} was told {uri} {} ms after it was ready", consumer.instance, t - ready);
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} endpoints checked");
}

/// Settings with `LIMITED_ROUND_ROBIN` and `vmLimit`, and `rollout` per service when given.
fn limited_settings(vm_limit: u32, services: Value) -> Value {
    json!({
        "defaultEnv": "dev",
        "accounts": { "local": { "provider": "local" } },
        "nodeSelector": { "policy": "LIMITED_ROUND_ROBIN", "vmLimit": vm_limit },
        "services": services
    })
}

/// The most instances of `service` that ran at once, from their logs.
fn most_at_once(repo: &Repo, service: &str) -> usize {
    let all = lives(&repo.logs());
    let mine: Vec<&Life> =
        all.iter().filter(|l| l.instance.strip_prefix(service).is_some_and(|r| r.starts_with('-'))).collect();
    mine.iter()
        .map(|l| l.start)
        .map(|t| mine.iter().filter(|o| o.start <= t && o.stop.is_none_or(|s| s >= t)).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_rolling_replacement_keeps_the_vm_limit_and_the_plan_says_what_it_does() {
    let base = 23500;
    let spec = |version: &str| {
        let mut airline = provider("airline", "airline", base, 2);
        airline["version"] = json!(version);
        chor(vec![airline, front(base + 1, &["airline"])])
    };
    let repo = Repo::new(&spec("1.0"), Some(&limited_settings(2, json!({}))));
    repo.apply();
    assert_eq!(repo.state()["nodes"].as_object().map(|n| n.len()), Some(2));
    let agency = agency_uri_of(&repo);

    // vmLimit 2 is reached: each new instance takes the place of an old one, old before new.
    repo.write_chor(&spec("1.1"));
    let plan = repo.enact_ok(&["plan", "--json"], 0);
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    let change = plan["changes"].as_array().unwrap().iter().find(|c| c["service"] == "airline").unwrap();
    assert_eq!(change["rollout"]["order"], "old-before-new", "{change}");
    assert_eq!(change["rollout"]["oldFirst"], json!(["airline-1", "airline-2"]));
    assert_eq!(change["rollout"]["emptyWindows"], 0);
    assert!(change["rollout"]["reason"].as_str().unwrap().contains("`vmLimit` 2"), "{change}");
    assert!(plan["nodes"].as_object().unwrap().is_empty(), "no node made or freed: {}", plan["nodes"]);
    let human = stdout(&repo.enact_ok(&["plan"], 0));
    assert!(human.contains("old-before-new"), "{human}");

    let caller = Caller::start(vec![agency.clone()]);
    repo.apply();
    caller.finish_all_ok("an old-before-new redeploy of two instances");
    assert_eq!(repo.state()["nodes"].as_object().map(|n| n.len()), Some(2));
    assert!(most_at_once(&repo, "airline") <= 2, "{} airline instances ran at once", most_at_once(&repo, "airline"));
    assert_eq!(wired_to(&agency, "airline"), endpoints_of(&repo, &["airline"]));
    judge_wiring(&repo.logs(), &BTreeMap::new(), "airline", &["airline"], true);
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}

#[test]
fn a_lone_instance_replaced_in_place_empties_its_role_only_when_the_plan_says_so() {
    let base = 23600;
    let spec = |version: &str| {
        let mut airline = provider("airline", "airline", base, 1);
        airline["version"] = json!(version);
        chor(vec![airline, front(base + 1, &["airline"])])
    };
    let repo = Repo::new(&spec("1.0"), Some(&limited_settings(1, json!({}))));
    repo.apply();
    repo.write_chor(&spec("1.1"));
    let human = stdout(&repo.enact_ok(&["plan"], 0));
    assert!(human.contains("airline-1 stops before its replacement is ready"), "{human}");
    assert!(human.contains("no serving instance once"), "{human}");

    // With maxUnavailable 0 the same plan is refused and nothing changes.
    repo.write_json("enact.json", &limited_settings(1, json!({ "airline": { "rollout": { "maxUnavailable": 0 } } })));
    let before = std::fs::read(repo.path("state/dev.json")).unwrap();
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let output = repo.enact_ok(args, 1);
        let err = stderr(&output);
        assert!(err.contains("`rollout.maxUnavailable` is 0") && err.contains("airline-1"), "{err}");
    }
    assert_eq!(std::fs::read(repo.path("state/dev.json")).unwrap(), before, "a refused plan changed the state");

    // Allowed (the default): the consumer goes without a provider once, as the plan said.
    repo.write_json("enact.json", &limited_settings(1, json!({})));
    repo.apply();
    let told = lists(&repo, "front-1", "airline");
    assert_eq!(told.iter().filter(|l| l.is_empty()).count(), 1, "{told:?}");
    assert_eq!(told.len(), 3, "{told:?}");
    assert_eq!(wired_to(&agency_uri_of(&repo), "airline"), endpoints_of(&repo, &["airline"]));
    judge_wiring(&repo.logs(), &BTreeMap::new(), "airline", &["airline"], false);
}
