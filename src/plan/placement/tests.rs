//! Tests of placement: node limits, ports, rolling replacements in place.

use super::*;
use crate::plan::converge::apply_model;
use crate::plan::{PlanInput, plan};
use crate::repo::settings::Settings;
use crate::spec::Choreography;

/// `services` as `(name, instances, memory, port, version)`.
fn chor(services: &[(&str, u32, &str, u16, &str)]) -> Choreography {
    let list: Vec<serde_json::Value> = services
        .iter()
        .map(|(name, instances, memory, port, version)| {
            serde_json::json!({
                "name": name, "roles": [name], "packageUri": format!("services/{name}.py"), "port": port,
                "numberOfInstances": instances, "resourceImpact": { "memory": memory }, "version": version
            })
        })
        .collect();
    let mut chor: Choreography = serde_json::from_value(serde_json::json!({ "deployableServiceSpecs": list })).unwrap();
    chor.normalize();
    chor
}

fn settings(text: &str) -> Settings {
    serde_json::from_str(text).unwrap()
}

fn limited(vm_limit: u32) -> Settings {
    settings(&format!(r#"{{"nodeSelector": {{"policy": "LIMITED_ROUND_ROBIN", "vmLimit": {vm_limit}}}}}"#))
}

/// The state after applying `spec` to an empty environment.
fn applied(spec: &Choreography, settings: &Settings) -> State {
    let empty = State::empty("dev");
    let input = PlanInput { env: "dev", spec, state: &empty, settings, targets: &[], observed: None };
    apply_model(&empty, spec, &plan(input).unwrap())
}

/// Places `spec` from `state` the way the planner does, for the services that differ.
fn place_all(spec: &Choreography, state: &State, settings: &Settings) -> Result<Placement, Vec<Diagnostic>> {
    let input = PlanInput { env: "dev", spec, state, settings, targets: &[], observed: None };
    plan(input).map(|p| p.placement)
}

fn after_stopping(placement: &Placement) -> Vec<(&str, &str, Option<&str>)> {
    placement.started.iter().map(|p| (p.id.as_str(), p.node.as_str(), p.after_stopping.as_deref())).collect()
}

#[test]
fn a_port_another_service_gives_up_stays_taken_for_the_whole_plan() {
    // `old` stops in its own step, which `new`'s start does not wait for: `new` must not
    // take `old`'s port on `old`'s node, under either round-robin policy.
    for settings in [settings(r#"{"nodeSelector": {"policy": "ROUND_ROBIN"}}"#), limited(4)] {
        let state = applied(&chor(&[("old", 2, "SMALL", 8000, "1.0")]), &settings);
        for after in [
            chor(&[("new", 1, "SMALL", 8000, "1.0")]),
            chor(&[("new", 1, "SMALL", 8000, "1.0"), ("old", 1, "SMALL", 8000, "1.0")]),
            chor(&[("new", 1, "SMALL", 8000, "1.0"), ("old", 2, "SMALL", 8000, "1.1")]),
        ] {
            let placement = place_all(&after, &state, &settings).unwrap();
            let new = placement.started.iter().find(|p| p.service == "new").unwrap();
            assert!(!state.nodes.contains_key(&new.node), "`new` was placed on {} beside a stopping `old`", new.node);
        }
    }
    // Another port on the same node is fine (ROUND_ROBIN reuses the node it empties).
    let settings = settings(r#"{"nodeSelector": {"policy": "ROUND_ROBIN"}}"#);
    let state = applied(&chor(&[("old", 2, "SMALL", 8000, "1.0")]), &settings);
    let placement = place_all(&chor(&[("new", 1, "SMALL", 8001, "1.0")]), &state, &settings).unwrap();
    assert!(state.nodes.contains_key(&placement.started[0].node), "{:?}", placement.started);
}

#[test]
fn at_its_vm_limit_a_redeploy_replaces_each_instance_on_the_node_it_leaves() {
    let settings = limited(2);
    let state = applied(&chor(&[("airline", 2, "SMALL", 1234, "1.0")]), &settings);
    assert_eq!(state.nodes.len(), 2);
    let placement = place_all(&chor(&[("airline", 2, "SMALL", 1234, "1.1")]), &state, &settings).unwrap();
    assert_eq!(
        after_stopping(&placement),
        vec![("airline-3", "local-1", Some("airline-1")), ("airline-4", "local-2", Some("airline-2"))]
    );
    assert!(placement.new_nodes.is_empty(), "{:?}", placement.new_nodes);
    assert!(placement.freed_nodes.is_empty(), "{:?}", placement.freed_nodes);
}

#[test]
fn below_its_vm_limit_a_redeploy_starts_new_before_old_on_new_nodes() {
    let settings = limited(4);
    let state = applied(&chor(&[("airline", 2, "SMALL", 1234, "1.0")]), &settings);
    let placement = place_all(&chor(&[("airline", 2, "SMALL", 1234, "1.1")]), &state, &settings).unwrap();
    assert_eq!(after_stopping(&placement), vec![("airline-3", "local-3", None), ("airline-4", "local-4", None)]);
    assert_eq!(placement.freed_nodes, vec!["local-1", "local-2"]);
    assert_eq!(state.nodes.len() + placement.new_nodes.len(), 4);
}

#[test]
fn a_node_this_plan_empties_counts_against_the_vm_limit_and_may_be_reused() {
    let settings = limited(1);
    let state = applied(&chor(&[("airline", 1, "SMALL", 1234, "1.0")]), &settings);
    // airline goes, hotel comes: apply frees local-1 only at the end, so hotel shares it.
    let placement = place_all(&chor(&[("hotel", 1, "SMALL", 1235, "1.0")]), &state, &settings).unwrap();
    assert_eq!(after_stopping(&placement), vec![("hotel-1", "local-1", None)]);
    assert!(placement.new_nodes.is_empty(), "{:?}", placement.new_nodes);
    assert!(placement.freed_nodes.is_empty(), "local-1 keeps running hotel");
}

#[test]
fn a_resize_beyond_the_vm_limit_is_refused_naming_the_limit() {
    let settings = limited(1);
    let state = applied(&chor(&[("airline", 1, "SMALL", 1234, "1.0")]), &settings);
    let errors = place_all(&chor(&[("airline", 1, "MEDIUM", 1234, "1.0")]), &state, &settings).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert_eq!(errors[0].service.as_deref(), Some("airline"));
    for part in ["cannot resize from SMALL to MEDIUM", "`vmLimit` 1 of account `local`", "none of them is MEDIUM"] {
        assert!(text.contains(part), "{part:?} missing: {text}");
    }
    assert!(errors[0].hint.as_deref().is_some_and(|h| h.contains("nodeSelector.vmLimit")), "{text}");
    // With room for a MEDIUM node the resize goes ahead, new before old.
    let placement = place_all(&chor(&[("airline", 1, "MEDIUM", 1234, "1.0")]), &state, &limited(2)).unwrap();
    assert_eq!(after_stopping(&placement), vec![("airline-2", "local-2", None)]);
    assert_eq!(placement.freed_nodes, vec!["local-1"]);
}

#[test]
fn the_reason_for_old_before_new_names_the_limit_or_the_hosts() {
    let spec = chor(&[("airline", 1, "SMALL", 8080, "1.0")]);
    let spec = &spec.deployable_service_specs[0];
    assert_eq!(
        old_first_reason(&limited(2).env_view("dev"), spec),
        "`vmLimit` 2 of account `local` is reached and each SMALL node already runs an instance on port 8080"
    );
    let ssh = settings(
        r#"{"defaultAccount": "lab", "accounts": {"lab": {"provider": "ssh", "hosts": [
            {"address": "10.0.0.1", "user": "u"}, {"address": "10.0.0.2", "user": "u"}]}}}"#,
    );
    assert_eq!(
        old_first_reason(&ssh.env_view("dev"), spec),
        "each of the 2 hosts of ssh account `lab` already runs an instance on port 8080"
    );
}

/// Settings whose services go to the simulated account `sim`, with `extra` merged in.
fn sim(extra: serde_json::Value) -> Settings {
    let mut value = serde_json::json!({ "accounts": { "sim": { "provider": "simulated" } }, "defaultAccount": "sim" });
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(value).unwrap()
}

/// The plan from `state` to `spec`, and the state it leads to.
fn step(spec: &Choreography, state: &State, settings: &Settings) -> (crate::plan::Planned, State) {
    let input = PlanInput { env: "dev", spec, state, settings, targets: &[], observed: None };
    let planned = plan(input).unwrap();
    let after = apply_model(state, spec, &planned);
    (planned, after)
}

/// The spare nodes of `state`, by id.
fn spares(state: &State) -> Vec<&str> {
    state.nodes.iter().filter(|(_, n)| n.spare).map(|(id, _)| id.as_str()).collect()
}

#[test]
fn the_first_apply_makes_initial_size_spares_besides_the_nodes_placement_needs() {
    let settings = sim(serde_json::json!({ "reservoir": { "initialSize": 2 } }));
    let spec = chor(&[("airline", 1, "SMALL", 1234, "1.0"), ("hotel", 1, "MEDIUM", 1235, "1.0")]);
    let (planned, state) = step(&spec, &State::empty("dev"), &settings);
    let placement = &planned.placement;
    assert_eq!(placement.new_nodes.len(), 2, "{:?}", placement.new_nodes);
    let made: Vec<(&str, Memory)> = placement.new_spares.iter().map(|n| (n.id.as_str(), n.memory)).collect();
    assert_eq!(made, vec![("sim-3", Memory::Small), ("sim-4", Memory::Small)]);
    let changes = planned.plan.nodes["sim"].spares.unwrap();
    assert_eq!((changes.create, changes.destroy, changes.handed_out, changes.after), (2, 0, 0, 2));
    let text = crate::plan::render::render(&planned.plan, crate::paint::Painter::new(false));
    assert!(text.contains("Nodes in account `sim`: +1 MEDIUM, +1 SMALL, +2 spare"), "{text}");
    assert_eq!(spares(&state), vec!["sim-3", "sim-4"]);
    // Applied, it plans to nothing.
    let (again, _) = step(&spec, &state, &settings);
    assert!(!again.plan.has_changes(), "{:?}", again.plan.nodes);
}

#[test]
fn new_instances_take_spares_first_and_the_reservoir_refills_at_its_threshold() {
    let settings = sim(serde_json::json!({ "reservoir": { "initialSize": 3, "threshold": 1 } }));
    let (_, state) = step(&chor(&[("airline", 1, "SMALL", 1234, "1.0")]), &State::empty("dev"), &settings);
    assert_eq!(spares(&state), vec!["sim-2", "sim-3", "sim-4"]);
    // One more airline takes the oldest spare; two are left, above the threshold: no refill.
    let (planned, state) = step(&chor(&[("airline", 2, "SMALL", 1234, "1.0")]), &state, &settings);
    assert_eq!(after_stopping(&planned.placement), vec![("airline-2", "sim-2", None)]);
    assert_eq!(planned.placement.handed_out, vec!["sim-2"]);
    assert!(planned.placement.new_nodes.is_empty() && planned.placement.new_spares.is_empty());
    assert!(!state.nodes["sim-2"].spare, "a spare handed out is an ordinary node");
    assert_eq!(spares(&state), vec!["sim-3", "sim-4"]);
    // Three more: two take the spares, one gets a new node; none is left (at most 1): refilled to 3.
    let (planned, state) = step(&chor(&[("airline", 5, "SMALL", 1234, "1.0")]), &state, &settings);
    let nodes: Vec<&str> = planned.placement.started.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, vec!["sim-3", "sim-4", "sim-5"]);
    let changes = planned.plan.nodes["sim"].spares.unwrap();
    assert_eq!((changes.create, changes.handed_out, changes.after), (3, 2, 3));
    assert_eq!(spares(&state), vec!["sim-6", "sim-7", "sim-8"]);
    // A MEDIUM instance never takes a SMALL spare.
    let spec = chor(&[("airline", 5, "SMALL", 1234, "1.0"), ("hotel", 1, "MEDIUM", 1235, "1.0")]);
    let (planned, _) = step(&spec, &state, &settings);
    assert!(planned.placement.handed_out.is_empty());
    assert_eq!(planned.placement.new_nodes.iter().map(|n| n.memory).collect::<Vec<_>>(), vec![Memory::Medium]);
}

#[test]
fn round_robin_fills_existing_nodes_before_it_takes_a_spare() {
    let settings =
        sim(serde_json::json!({ "nodeSelector": { "policy": "ROUND_ROBIN" }, "reservoir": { "initialSize": 1 } }));
    let (_, state) = step(&chor(&[("airline", 1, "SMALL", 1234, "1.0")]), &State::empty("dev"), &settings);
    assert_eq!(spares(&state), vec!["sim-2"]);
    // Another port fits on sim-1; the same port needs another node: the spare.
    let spec = chor(&[("airline", 1, "SMALL", 1234, "1.0"), ("hotel", 1, "SMALL", 1235, "1.0")]);
    let (planned, state) = step(&spec, &state, &settings);
    assert_eq!(after_stopping(&planned.placement), vec![("hotel-1", "sim-1", None)]);
    assert!(planned.placement.handed_out.is_empty());
    let spec = chor(&[("airline", 1, "SMALL", 1234, "1.0"), ("hotel", 2, "SMALL", 1235, "1.0")]);
    let (planned, state) = step(&spec, &state, &settings);
    assert_eq!(after_stopping(&planned.placement), vec![("hotel-2", "sim-2", None)]);
    assert_eq!(spares(&state), vec!["sim-3"], "refilled once none is left");
}

#[test]
fn spares_count_against_the_vm_limit() {
    let settings = sim(serde_json::json!({
        "nodeSelector": { "policy": "LIMITED_ROUND_ROBIN", "vmLimit": 3 }, "reservoir": { "initialSize": 2 }
    }));
    // Two nodes for the airlines leave room for one spare of two.
    let (planned, state) = step(&chor(&[("airline", 2, "SMALL", 1234, "1.0")]), &State::empty("dev"), &settings);
    let changes = planned.plan.nodes["sim"].spares.unwrap();
    assert_eq!((changes.create, changes.after, changes.limited_from), (1, 1, Some(2)));
    let text = crate::plan::render::render(&planned.plan, crate::paint::Painter::new(false));
    assert!(
        text.contains("The reservoir of account `sim` keeps 1 spare node, not 2: `vmLimit` leaves no room for more"),
        "{text}"
    );
    assert_eq!(state.nodes.len(), 3);
    // A third airline takes the spare; none can be made again, and that is no change by itself.
    let (planned, state) = step(&chor(&[("airline", 3, "SMALL", 1234, "1.0")]), &state, &settings);
    assert_eq!(planned.placement.handed_out, vec!["sim-3"]);
    assert!(planned.placement.new_nodes.is_empty() && planned.placement.new_spares.is_empty());
    assert_eq!((state.nodes.len(), spares(&state).len()), (3, 0));
    let (again, _) = step(&chor(&[("airline", 3, "SMALL", 1234, "1.0")]), &state, &settings);
    assert!(!again.plan.has_changes());
    assert_eq!(again.plan.nodes["sim"].spares.and_then(|s| s.limited_from), Some(2));
    let text = crate::plan::render::render(&again.plan, crate::paint::Painter::new(false));
    assert!(text.starts_with("No changes.") && text.contains("keeps 0 spare nodes, not 2"), "{text}");
}

#[test]
fn a_spare_in_the_way_of_the_vm_limit_is_freed_first_for_a_larger_instance() {
    let settings = sim(serde_json::json!({
        "nodeSelector": { "policy": "LIMITED_ROUND_ROBIN", "vmLimit": 2 }, "reservoir": { "initialSize": 1 }
    }));
    let (_, state) = step(&chor(&[("airline", 1, "SMALL", 1234, "1.0")]), &State::empty("dev"), &settings);
    assert_eq!(spares(&state), vec!["sim-2"]);
    // A MEDIUM hotel cannot take the SMALL spare, and the limit has no room for a third node.
    let spec = chor(&[("airline", 1, "SMALL", 1234, "1.0"), ("hotel", 1, "MEDIUM", 1235, "1.0")]);
    let (planned, state) = step(&spec, &state, &settings);
    assert_eq!(planned.placement.freed_spares, vec!["sim-2"]);
    assert_eq!(after_stopping(&planned.placement), vec![("hotel-1", "sim-3", None)]);
    let changes = planned.plan.nodes["sim"].spares.unwrap();
    assert_eq!((changes.destroy, changes.after, changes.limited_from), (1, 0, Some(1)));
    assert_eq!(state.nodes.keys().collect::<Vec<_>>(), vec!["sim-1", "sim-3"]);
}

#[test]
fn spares_go_when_the_reservoir_shrinks_or_the_environment_no_longer_uses_the_account() {
    let settings = sim(serde_json::json!({ "reservoir": { "initialSize": 3 } }));
    let spec = chor(&[("airline", 1, "SMALL", 1234, "1.0")]);
    let (_, state) = step(&spec, &State::empty("dev"), &settings);
    assert_eq!(spares(&state), vec!["sim-2", "sim-3", "sim-4"]);
    // A smaller reservoir frees the newest spares first.
    let smaller = sim(serde_json::json!({ "reservoir": { "initialSize": 1 } }));
    let (planned, after) = step(&spec, &state, &smaller);
    assert!(planned.plan.has_changes(), "freeing spares is a change");
    assert_eq!(planned.placement.freed_spares, vec!["sim-3", "sim-4"]);
    assert_eq!(spares(&after), vec!["sim-2"]);
    // No reservoir, or no service left in the account (destroy): every spare goes.
    let (planned, _) = step(&spec, &state, &sim(serde_json::json!({})));
    assert_eq!(planned.placement.freed_spares, vec!["sim-2", "sim-3", "sim-4"]);
    let (planned, after) = step(&Choreography::default(), &state, &settings);
    assert_eq!(planned.placement.freed_spares, vec!["sim-2", "sim-3", "sim-4"]);
    assert!(after.nodes.is_empty(), "{:?}", after.nodes);
    // A plan limited by `--target` leaves the reservoir as it is.
    let input = PlanInput {
        env: "dev",
        spec: &spec,
        state: &state,
        settings: &smaller,
        targets: &["airline".to_string()],
        observed: None,
    };
    let planned = plan(input).unwrap();
    assert!(planned.placement.freed_spares.is_empty() && !planned.plan.has_changes());
}

#[test]
fn local_and_ssh_accounts_keep_no_reservoir() {
    let settings = settings(r#"{"reservoir": {"initialSize": 2}}"#);
    let (planned, state) = step(&chor(&[("airline", 1, "SMALL", 1234, "1.0")]), &State::empty("dev"), &settings);
    assert!(planned.placement.new_spares.is_empty());
    assert!(spares(&state).is_empty() && planned.plan.nodes["local"].spares.is_none());
}
