//! Tests of the plan as a whole: rollouts of redeploys and resizes, `rollout.maxUnavailable`.

use super::*;
use crate::plan::converge::apply_model;
use crate::plan::model::{Rollout, RolloutOrder};
use crate::plan::placement::PlacedInstance;

/// One service `airline` on port 1234.
fn airline(instances: u32, memory: &str, version: &str) -> Choreography {
    let mut chor: Choreography = serde_json::from_value(serde_json::json!({ "deployableServiceSpecs": [{
        "name": "airline", "roles": ["airline"], "packageUri": "services/airline.py", "port": 1234,
        "numberOfInstances": instances, "resourceImpact": { "memory": memory }, "version": version
    }]}))
    .unwrap();
    chor.normalize();
    chor
}

fn settings(text: &str) -> Settings {
    serde_json::from_str(text).unwrap()
}

fn plan_of(spec: &Choreography, state: &State, settings: &Settings) -> Result<Planned, Vec<Diagnostic>> {
    plan(PlanInput { env: "dev", spec, state, settings, targets: &[], observed: None })
}

/// The state after applying `spec` to an empty environment.
fn applied(spec: &Choreography, settings: &Settings) -> State {
    let empty = State::empty("dev");
    apply_model(&empty, spec, &plan_of(spec, &empty, settings).unwrap())
}

fn placed(id: &str, after_stopping: Option<&str>) -> PlacedInstance {
    PlacedInstance {
        service: "airline".into(),
        id: id.into(),
        node: "n".into(),
        after_stopping: after_stopping.map(str::to_string),
    }
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn a_rollout_follows_the_executors_sequence() {
    let reason = || "no room".to_string();
    let (a, b) = (placed("airline-3", Some("airline-1")), placed("airline-4", Some("airline-2")));
    // One instance replaced old-before-new: nothing serves while it restarts.
    let one = rollout(&[&a], &ids(&["airline-1"]), 0, reason).unwrap();
    assert_eq!(
        one,
        Rollout {
            order: RolloutOrder::OldBeforeNew,
            reason: "no room".into(),
            old_first: ids(&["airline-1"]),
            empty_windows: 1
        }
    );
    // Two, each old-before-new: one always serves.
    let two = rollout(&[&a, &b], &ids(&["airline-1", "airline-2"]), 0, reason).unwrap();
    assert_eq!((two.order, two.empty_windows), (RolloutOrder::OldBeforeNew, 0));
    assert_eq!(two.old_first, ids(&["airline-1", "airline-2"]));
    // A kept instance serves throughout.
    assert_eq!(rollout(&[&a], &ids(&["airline-1"]), 1, reason).unwrap().empty_windows, 0);
    // New before old: the reason is the spare slot, and `reason` is not asked.
    let (c, d) = (placed("airline-3", None), placed("airline-4", None));
    let spare = rollout(&[&c, &d], &ids(&["airline-1", "airline-2"]), 0, || unreachable!()).unwrap();
    assert_eq!(
        (spare.order, spare.reason.as_str(), spare.empty_windows),
        (RolloutOrder::NewBeforeOld, SPARE_SLOT_REASON, 0)
    );
    let mixed = rollout(&[&c, &b], &ids(&["airline-1", "airline-2"]), 0, reason).unwrap();
    assert_eq!((mixed.order, mixed.old_first), (RolloutOrder::Mixed, ids(&["airline-2"])));
    // Nothing to stop, or nothing to start: not a rolling replacement.
    assert_eq!(rollout(&[&c], &[], 0, reason), None);
    assert_eq!(rollout(&[], &ids(&["airline-1"]), 0, reason), None);
}

#[test]
fn a_redeploy_at_the_vm_limit_says_it_goes_old_before_new() {
    let settings = settings(r#"{"nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 1}}"#);
    let state = applied(&airline(1, "SMALL", "1.0"), &settings);
    let planned = plan_of(&airline(1, "SMALL", "1.1"), &state, &settings).unwrap();
    let rollout = planned.plan.change("airline").and_then(|c| c.rollout.clone()).unwrap();
    assert_eq!(rollout.order, RolloutOrder::OldBeforeNew);
    assert_eq!(rollout.old_first, ids(&["airline-1"]));
    assert_eq!(rollout.empty_windows, 1);
    assert!(rollout.reason.contains("`vmLimit` 1 of account `local` is reached"), "{}", rollout.reason);
    let json = planned.plan.to_json();
    assert!(json.contains(r#""order": "old-before-new""#) && json.contains(r#""emptyWindows": 1"#), "{json}");
}

#[test]
fn a_redeploy_and_a_resize_with_spare_slots_go_new_before_old() {
    let settings = Settings::default();
    let state = applied(&airline(2, "SMALL", "1.0"), &settings);
    for spec in [airline(2, "SMALL", "1.1"), airline(2, "MEDIUM", "1.0")] {
        let planned = plan_of(&spec, &state, &settings).unwrap();
        let rollout = planned.plan.change("airline").and_then(|c| c.rollout.clone()).unwrap();
        assert_eq!(
            rollout,
            Rollout {
                order: RolloutOrder::NewBeforeOld,
                reason: SPARE_SLOT_REASON.into(),
                old_first: Vec::new(),
                empty_windows: 0
            }
        );
    }
    // Scaling and destroying replace nothing: no rollout.
    for spec in [airline(3, "SMALL", "1.0"), airline(1, "SMALL", "1.0"), Choreography::default()] {
        let planned = plan_of(&spec, &state, &settings).unwrap();
        assert!(planned.plan.changes.iter().all(|c| c.rollout.is_none()), "{}", planned.plan.to_json());
    }
}

#[test]
fn max_unavailable_0_refuses_an_old_before_new_replacement() {
    let limited = r#""nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 2}"#;
    let state = applied(&airline(2, "SMALL", "1.0"), &settings(&format!("{{{limited}}}")));
    let strict =
        settings(&format!(r#"{{{limited}, "services": {{"airline": {{"rollout": {{"maxUnavailable": 0}}}}}}}}"#));
    let errors = plan_of(&airline(2, "SMALL", "1.1"), &state, &strict).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    for part in [
        "service `airline`",
        "`rollout.maxUnavailable` is 0 (enact.json `services.airline.rollout`)",
        "airline-1, airline-2 would stop before their replacements are ready",
        "`vmLimit` 2 of account `local` is reached",
        "raise `nodeSelector.vmLimit`",
        "`rollout.maxUnavailable` ≥ 1",
    ] {
        assert!(text.contains(part), "{part:?} missing: {text}");
    }
    // The environment's 0 is overridden by the service's 1.
    let allowed = settings(&format!(
        r#"{{{limited}, "rollout": {{"maxUnavailable": 0}}, "services": {{"airline": {{"rollout": {{"maxUnavailable": 1}}}}}}}}"#
    ));
    assert!(plan_of(&airline(2, "SMALL", "1.1"), &state, &allowed).is_ok());
    // With a spare slot for each new instance, 0 is no obstacle.
    let roomy = settings(
        r#"{"nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 4}, "rollout": {"maxUnavailable": 0}}"#,
    );
    assert!(plan_of(&airline(2, "SMALL", "1.1"), &state, &roomy).is_ok());
}
