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
