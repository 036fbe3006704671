//! Comparing one service's recorded spec with its desired spec: the action, the instance and
//! memory counts, and every changed field by JSON pointer (RFC 6901), in the order of the spec
//! model. Pure; used by [`super::plan`].

use std::collections::BTreeSet;

use serde_json::Value;

use crate::plan::model::{Action, Change, FieldChange, FromTo, SpecValue};
use crate::spec::Service;
use crate::state::ServiceState;

/// Fields whose change replaces every instance (a redeploy).
pub const REDEPLOY_FIELDS: [&str; 6] = ["version", "packageUri", "packageType", "port", "endpointName", "serviceType"];

/// Compares one service's recorded and desired spec.
pub(super) fn compare(name: &str, recorded: Option<&ServiceState>, after: Option<Service<'_>>) -> Option<Change> {
    let before = recorded.map(|s| s.spec.as_service());
    let incomplete = recorded.is_some_and(|s| s.incomplete);
    // What runs, not what the spec said: after a failure the two can differ.
    let recorded_instances = match recorded {
        Some(s) if !s.spec.as_service().is_legacy() => u32::try_from(s.instances.len()).unwrap_or(u32::MAX),
        _ => 0,
    };
    let instances_of = |s: Option<Service<'_>>| match s {
        Some(Service::Deployable(d)) => d.instances(),
        _ => 0,
    };
    let memory_of = |s: Option<Service<'_>>| match s {
        Some(Service::Deployable(d)) => Some(d.memory()),
        _ => None,
    };
    let action = match (before, after) {
        (None, None) => return None,
        (None, Some(_)) => Action::Create,
        (Some(_), None) => Action::Destroy,
        (Some(b), Some(a)) => {
            if same_spec(b, a) && !incomplete && recorded_instances == instances_of(after) {
                return None;
            }
            Action::Update
        }
    };
    let fields = field_changes(before, after);
    let kind_changes = matches!((before, after), (Some(b), Some(a)) if b.is_legacy() != a.is_legacy());
    let mut forced_by: Vec<String> = Vec::new();
    if action == Action::Update {
        if incomplete {
            forced_by.push("incomplete".to_string());
        }
        if kind_changes {
            forced_by.push("/kind".to_string());
        }
        forced_by.extend(
            fields
                .iter()
                .filter(|f| REDEPLOY_FIELDS.iter().any(|r| f.path.strip_prefix('/') == Some(*r)))
                .map(|f| f.path.clone()),
        );
    }
    let action = if forced_by.is_empty() { action } else { Action::Replace };
    let (from, to) = (recorded_instances, instances_of(after));
    let (memory_from, memory_to) = (memory_of(before), memory_of(after));
    Some(Change {
        service: name.to_string(),
        action,
        instances: (from != to).then_some(FromTo { from, to }),
        memory: (memory_from != memory_to).then_some(FromTo { from: memory_from, to: memory_to }),
        fields,
        rewire: Vec::new(),
        forced_by,
        legacy: after.or(before).is_some_and(Service::is_legacy),
        before: before.map(SpecValue::of),
        after: after.map(SpecValue::of),
        rollout: None,
        restart: Vec::new(),
    })
}

/// Every field that differs between two specs, by JSON pointer, as [`diff_values`] finds
/// between their JSON values; specs of one kind are compared field by field, and only the
/// fields that differ become JSON.
fn field_changes(before: Option<Service<'_>>, after: Option<Service<'_>>) -> Vec<FieldChange> {
    fn deployable(s: Option<Service<'_>>) -> Option<&crate::spec::DeployableServiceSpec> {
        match s {
            Some(Service::Deployable(d)) => Some(d),
            _ => None,
        }
    }
    fn legacy(s: Option<Service<'_>>) -> Option<&crate::spec::LegacyServiceSpec> {
        match s {
            Some(Service::Legacy(l)) => Some(l),
            _ => None,
        }
    }
    let mut out = Vec::new();
    match (before, after) {
        (None | Some(Service::Deployable(_)), None | Some(Service::Deployable(_))) => {
            deployable_changes(deployable(before), deployable(after), &mut out);
        }
        (None | Some(Service::Legacy(_)), None | Some(Service::Legacy(_))) => {
            legacy_changes(legacy(before), legacy(after), &mut out);
        }
        // The kind changes: whole values.
        _ => diff_values(
            "",
            &before.map_or(Value::Null, Service::to_value),
            &after.map_or(Value::Null, Service::to_value),
            &mut out,
        ),
    }
    out
}

/// Compares one field of two specs (either may be missing): when it differs, the JSON values
/// of the two sides (`null` where the field is left out) go to [`diff_values`] under `/key`.
macro_rules! compare_field {
    ($out:expr, $before:expr, $after:expr, $key:literal, $field:ident, $left_out:expr) => {{
        let (b, a) = ($before.map(|s| &s.$field), $after.map(|s| &s.$field));
        if b != a {
            let value = |side: Option<&_>| match side {
                Some(v) if !$left_out(v) => serde_json::to_value(v).unwrap_or(Value::Null),
                _ => Value::Null,
            };
            diff_values(concat!("/", $key), &value(b), &value(a), $out);
        }
    }};
}

/// [`field_changes`] of two deployable specs, in the order of [`crate::spec::format::field_rank`].
fn deployable_changes(
    before: Option<&crate::spec::DeployableServiceSpec>,
    after: Option<&crate::spec::DeployableServiceSpec>,
    out: &mut Vec<FieldChange>,
) {
    compare_field!(out, before, after, "name", name, |_: &String| false);
    compare_field!(out, before, after, "roles", roles, Vec::is_empty);
    compare_field!(out, before, after, "dependencies", dependencies, Vec::is_empty);
    compare_field!(out, before, after, "serviceType", service_type, Option::is_none);
    compare_field!(out, before, after, "packageType", package_type, Option::is_none);
    compare_field!(out, before, after, "packageUri", package_uri, Option::is_none);
    compare_field!(out, before, after, "endpointName", endpoint_name, Option::is_none);
    compare_field!(out, before, after, "port", port, Option::is_none);
    compare_field!(out, before, after, "numberOfInstances", number_of_instances, Option::is_none);
    compare_field!(out, before, after, "resourceImpact", resource_impact, Option::is_none);
    compare_field!(out, before, after, "version", version, Option::is_none);
    compare_field!(out, before, after, "cloudAccount", cloud_account, Option::is_none);
    compare_field!(out, before, after, "desiredQoS", desired_qos, Option::is_none);
}

/// [`field_changes`] of two legacy specs, in the order of [`crate::spec::format::field_rank`].
fn legacy_changes(
    before: Option<&crate::spec::LegacyServiceSpec>,
    after: Option<&crate::spec::LegacyServiceSpec>,
    out: &mut Vec<FieldChange>,
) {
    compare_field!(out, before, after, "name", name, |_: &String| false);
    compare_field!(out, before, after, "roles", roles, Vec::is_empty);
    compare_field!(out, before, after, "dependencies", dependencies, Vec::is_empty);
    compare_field!(out, before, after, "serviceType", service_type, Option::is_none);
    compare_field!(out, before, after, "nativeURIs", native_uris, Vec::is_empty);
}

fn same_spec(a: Service<'_>, b: Service<'_>) -> bool {
    match (a, b) {
        // Both sides are normally normalized already: equal as they are is equal.
        (Service::Deployable(a), Service::Deployable(b)) if a == b => true,
        (Service::Legacy(a), Service::Legacy(b)) if a == b => true,
        (Service::Deployable(a), Service::Deployable(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.normalize();
            b.normalize();
            a == b
        }
        (Service::Legacy(a), Service::Legacy(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.normalize();
            b.normalize();
            a == b
        }
        _ => false,
    }
}

/// Every leaf that differs, by JSON pointer; arrays compare whole.
fn diff_values(path: &str, before: &Value, after: &Value, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            // Key order of the spec model, not alphabetical, reads better: keep `name` first.
            let mut keys: Vec<&String> = keys.into_iter().collect();
            keys.sort_by_key(|k| (k.as_str() != "name", crate::spec::format::field_rank(k)));
            for key in keys {
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                diff_values(&child, b.get(key).unwrap_or(&Value::Null), a.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Object(b), Value::Null) if !path.is_empty() || !b.is_empty() => {
            diff_values(path, before, &Value::Object(serde_json::Map::new()), out);
        }
        (Value::Null, Value::Object(_)) => {
            diff_values(path, &Value::Object(serde_json::Map::new()), after, out);
        }
        (b, a) if b != a => out.push(FieldChange { path: path.to_string(), from: b.clone(), to: a.clone() }),
        _ => {}
    }
}

/// An update of a service whose spec does not change (it is rewired, or dead instances of it
/// are replaced).
pub(super) fn unchanged(name: &str, before: &ServiceState, after: Option<Service<'_>>) -> Change {
    let recorded = SpecValue::of(before.spec.as_service());
    let same_as_recorded = |a: Service<'_>| match (a, before.spec.as_service()) {
        (Service::Deployable(a), Service::Deployable(b)) => a == b,
        (Service::Legacy(a), Service::Legacy(b)) => a == b,
        _ => false,
    };
    Change {
        service: name.to_string(),
        action: Action::Update,
        instances: None,
        memory: None,
        fields: Vec::new(),
        rewire: Vec::new(),
        forced_by: Vec::new(),
        legacy: after.is_some_and(Service::is_legacy),
        before: Some(recorded.clone()),
        // The same spec both sides (as it normally is here): one copy, shared.
        after: after.map(|a| if same_as_recorded(a) { recorded } else { SpecValue::of(a) }),
        rollout: None,
        restart: Vec::new(),
    }
}

/// Every (provider, role) a service depends on.
pub(super) fn dependency_pairs(deps: &[crate::spec::ServiceDependency]) -> BTreeSet<(&str, &str)> {
    deps.iter().map(|d| (d.service_spec_name.as_str(), d.service_spec_role.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::ResourceImpact;
    use crate::spec::{DeployableServiceSpec, LegacyServiceSpec, ServiceDependency};
    use crate::state::AppliedSpec;
    use proptest::prelude::*;

    /// A spec of either kind, each field left out or one of a few values.
    fn any_service() -> impl Strategy<Value = AppliedSpec> {
        let text = || proptest::option::of(prop_oneof![Just("a".to_string()), Just("b".to_string())]);
        let list = || proptest::collection::vec(prop_oneof![Just("x".to_string()), Just("y".to_string())], 0..3);
        let deployable = (
            (text(), list(), 0..3usize, text(), text(), proptest::option::of(0..3i64)),
            (proptest::option::of(1..3i64), proptest::option::of((0..3u8, text())), text(), text()),
        )
            .prop_map(
                |((name, roles, deps, package_type, endpoint, port), (instances, impact, version, account))| {
                    AppliedSpec::Deployable(DeployableServiceSpec {
                        name: name.unwrap_or_default(),
                        roles,
                        dependencies: (0..deps)
                            .map(|d| ServiceDependency {
                                service_spec_name: format!("p{d}"),
                                service_spec_role: "r".into(),
                            })
                            .collect(),
                        package_type,
                        endpoint_name: endpoint,
                        port,
                        number_of_instances: instances,
                        resource_impact: impact.map(|(m, cpu)| ResourceImpact {
                            memory: [None, Some(crate::spec::Memory::Small), Some(crate::spec::Memory::Large)]
                                [usize::from(m)],
                            cpu,
                            ..ResourceImpact::default()
                        }),
                        version,
                        cloud_account: account,
                        ..DeployableServiceSpec::default()
                    })
                },
            );
        let legacy = (text(), list(), list()).prop_map(|(name, roles, uris)| {
            AppliedSpec::Legacy(LegacyServiceSpec {
                name: name.unwrap_or_default(),
                roles,
                native_uris: uris,
                ..Default::default()
            })
        });
        prop_oneof![3 => deployable, 1 => legacy]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Comparing field by field finds what comparing the two whole JSON values finds.
        #[test]
        fn typed_field_changes_are_those_of_the_json_values(
            before in proptest::option::of(any_service()),
            after in proptest::option::of(any_service()),
        ) {
            let (b, a) = (before.as_ref().map(AppliedSpec::as_service), after.as_ref().map(AppliedSpec::as_service));
            let mut whole = Vec::new();
            diff_values("", &b.map_or(Value::Null, Service::to_value), &a.map_or(Value::Null, Service::to_value), &mut whole);
            prop_assert_eq!(field_changes(b, a), whole);
            // And a change carries the specs as their JSON.
            prop_assert_eq!(b.map(|s| serde_json::to_value(SpecValue::of(s)).unwrap()), b.map(Service::to_value));
        }
    }
}
