//! Moving configuration between environments, as edits of an overlay (`envs/<env>.json`):
//!
//! - [`promote`]: copy FROM's *promotable* fields into TO, keep TO's *environment-local* ones,
//!   three-way against what was promoted last time (recorded under `$promotions`);
//! - [`merge`]: take an exported spec into an environment (Zato's `enmasse` import): services
//!   matched by name, created or updated, deleted only when asked;
//! - [`diff`]: two environments' effective specs, promotable and environment-local apart.
//!
//! Everything here is pure: it takes effective specs and an overlay value and returns the new
//! overlay value and a report. Writing, confirming and validating are the command's. Formats:
//! `docs/formats.md` §3 (`$promotions`). Depends on the spec and the leaves.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::spec::parse::{LISTS, PROMOTIONS};
use crate::spec::{Choreography, Service};

/// Fields that travel from environment to environment.
pub const PROMOTABLE: [&str; 8] =
    ["version", "packageUri", "packageType", "serviceType", "roles", "dependencies", "endpointName", "port"];
/// Fields each environment keeps for itself.
pub const ENVIRONMENT_LOCAL: [&str; 3] = ["numberOfInstances", "resourceImpact", "cloudAccount"];

/// What happened to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum ServiceOutcome {
    /// The target had no such service: the overlay now adds it.
    Created,
    /// Fields of the target's service now take the source's values.
    Updated {
        /// The JSON names of the fields written, in order.
        fields: Vec<String>,
    },
    /// Source and target already agree.
    Unchanged,
    /// Promote: fields TO changed since the last promotion and FROM did not: TO's kept.
    KeptLocal {
        /// The JSON names of the fields kept.
        fields: Vec<String>,
    },
    /// Changed on both sides since the last promotion (see the report's conflicts).
    Conflicted {
        /// The JSON names of the fields in conflict.
        fields: Vec<String>,
    },
    /// Gone from the source; kept because `--prune` was not given.
    RemovedInSource,
    /// Gone from the source and removed from the target (`--prune`).
    Deleted,
}

/// A field both sides changed since the last promotion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    /// JSON pointer: `/<service>/<field>`.
    pub pointer: String,
    /// The value recorded at the last promotion (`$promotions`); `null` when absent.
    pub base: Value,
    /// FROM's value now; `null` when absent.
    pub source: Value,
    /// TO's value now; `null` when absent.
    pub target: Value,
}

/// What a promotion or a merge did (or, refused, would do): every service's outcome and the
/// conflicts. Printed by `enact promote` and `enact merge` (`--json` as is).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The outcome of every service looked at, by name.
    pub services: BTreeMap<String, ServiceOutcome>,
    /// Fields both sides changed since the last promotion, in service and field order.
    pub conflicts: Vec<Conflict>,
}

impl Report {
    /// Whether the overlay changed: a service created, updated or deleted.
    pub fn changes(&self) -> bool {
        self.services
            .values()
            .any(|o| matches!(o, ServiceOutcome::Created | ServiceOutcome::Updated { .. } | ServiceOutcome::Deleted))
    }
}

/// The JSON key of the list a service belongs in.
fn list_of(service: Service<'_>) -> &'static str {
    if service.is_legacy() { LISTS[1] } else { LISTS[0] }
}

/// The normalized JSON object of a service.
fn object(service: Service<'_>) -> Map<String, Value> {
    match service.to_value() {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The promotable fields of a service: [`PROMOTABLE`], or for a legacy service its type,
/// roles and dependencies.
fn promotable_fields(service: Service<'_>) -> &'static [&'static str] {
    if service.is_legacy() { &["serviceType", "roles", "dependencies"] } else { &PROMOTABLE }
}

/// The overlay entry of `name` in `list`, made if missing.
fn entry<'a>(overlay: &'a mut Map<String, Value>, list: &str, name: &str) -> &'a mut Map<String, Value> {
    let items = overlay.entry(list.to_string()).or_insert_with(|| Value::Array(Vec::new()));
    if !items.is_array() {
        *items = Value::Array(Vec::new());
    }
    let Value::Array(items) = items else { unreachable!("made an array above") };
    let index = match items.iter().position(|i| i.get("name").and_then(Value::as_str) == Some(name)) {
        Some(i) => i,
        None => {
            let mut fresh = Map::new();
            fresh.insert("name".into(), Value::String(name.to_string()));
            items.push(Value::Object(fresh));
            items.len() - 1
        }
    };
    if !items[index].is_object() {
        items[index] = Value::Object(Map::new());
    }
    let Value::Object(map) = &mut items[index] else { unreachable!("made an object above") };
    map.remove("$delete");
    map
}

/// Removes a service from the target: a `$delete` entry if the base spec has it, else its
/// overlay entry goes.
fn delete(overlay: &mut Map<String, Value>, list: &str, name: &str, in_base: bool) {
    if let Some(Value::Array(items)) = overlay.get_mut(list) {
        items.retain(|i| i.get("name").and_then(Value::as_str) != Some(name));
    }
    if in_base {
        let items = overlay.entry(list.to_string()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = items {
            items.push(serde_json::json!({ "name": name, "$delete": true }));
        }
    }
}

/// Sets a field of an overlay entry.
fn set(entry: &mut Map<String, Value>, field: &str, value: &Value) {
    // `null` removes the field from what the base spec says.
    entry.insert(field.to_string(), value.clone());
}

/// What FROM's promotable fields were, with a digest, for the record.
fn record(from: &str, values: &Map<String, Value>) -> Value {
    let canonical = serde_json::to_string(values).unwrap_or_default();
    let digest: String = Sha256::digest(canonical.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    serde_json::json!({ "from": from, "digest": format!("sha256:{digest}"), "values": values })
}

/// The inputs of a promotion.
#[derive(Debug, Clone, Copy)]
pub struct Promotion<'a> {
    /// FROM, the environment promoted from (recorded in `$promotions`).
    pub from: &'a str,
    /// FROM's effective spec.
    pub source: &'a Choreography,
    /// TO's effective spec, before the promotion.
    pub target: &'a Choreography,
    /// Names of services of the base spec (`$delete` is how an overlay removes those).
    pub base_names: &'a BTreeSet<String>,
    /// Only these services (`--only`); all when empty.
    pub only: &'a [String],
    /// `--force`: take FROM's value of a field in conflict.
    pub force: bool,
    /// `--prune`: remove from TO the services FROM does not have.
    pub prune: bool,
}

/// Promotes FROM into TO's overlay. Conflicts are reported and, unless forced, left as TO has
/// them (the caller refuses to write when there are any).
pub fn promote(p: Promotion<'_>, overlay: &mut Map<String, Value>) -> Report {
    let mut report = Report::default();
    let source: BTreeMap<&str, Service<'_>> = p.source.services().map(|s| (s.name(), s)).collect();
    let target: BTreeMap<&str, Service<'_>> = p.target.services().map(|s| (s.name(), s)).collect();
    let wanted = |name: &str| p.only.is_empty() || p.only.iter().any(|o| o == name);
    let mut records = match overlay.remove(PROMOTIONS) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (&name, &from_service) in source.iter().filter(|(n, _)| wanted(n)) {
        let fields = promotable_fields(from_service);
        let src = object(from_service);
        let values: Map<String, Value> =
            fields.iter().filter_map(|f| src.get(*f).map(|v| ((*f).to_string(), v.clone()))).collect();
        let list = list_of(from_service);
        match target.get(name) {
            None => {
                let e = entry(overlay, list, name);
                for (field, value) in &values {
                    set(e, field, value);
                }
                report.services.insert(name.to_string(), ServiceOutcome::Created);
            }
            Some(&to_service) => {
                let tgt = object(to_service);
                let base = records.get(name).and_then(|r| r.get("values")).and_then(Value::as_object).cloned();
                let (mut updated, mut kept, mut conflicted) = (Vec::new(), Vec::new(), Vec::new());
                for field in fields {
                    let s = src.get(*field).cloned().unwrap_or(Value::Null);
                    let t = tgt.get(*field).cloned().unwrap_or(Value::Null);
                    if s == t {
                        continue;
                    }
                    let b = base.as_ref().map(|b| b.get(*field).cloned().unwrap_or(Value::Null));
                    match b {
                        Some(b) if t != b && s != b => {
                            report.conflicts.push(Conflict {
                                pointer: format!("/{name}/{field}"),
                                base: b,
                                source: s.clone(),
                                target: t,
                            });
                            if p.force {
                                set(entry(overlay, list, name), field, &s);
                                updated.push((*field).to_string());
                            } else {
                                conflicted.push((*field).to_string());
                            }
                        }
                        // FROM did not change it since the last promotion; TO did: TO's stays.
                        Some(b) if s == b => kept.push((*field).to_string()),
                        _ => {
                            set(entry(overlay, list, name), field, &s);
                            updated.push((*field).to_string());
                        }
                    }
                }
                let outcome = if !conflicted.is_empty() {
                    ServiceOutcome::Conflicted { fields: conflicted }
                } else if !updated.is_empty() {
                    ServiceOutcome::Updated { fields: updated }
                } else if !kept.is_empty() {
                    ServiceOutcome::KeptLocal { fields: kept }
                } else {
                    ServiceOutcome::Unchanged
                };
                report.services.insert(name.to_string(), outcome);
            }
        }
        records.insert(name.to_string(), record(p.from, &values));
    }
    for (&name, &to_service) in target.iter().filter(|(n, _)| wanted(n) && !source.contains_key(*n)) {
        if p.prune {
            delete(overlay, list_of(to_service), name, p.base_names.contains(name));
            records.remove(name);
            report.services.insert(name.to_string(), ServiceOutcome::Deleted);
        } else {
            report.services.insert(name.to_string(), ServiceOutcome::RemovedInSource);
        }
    }
    if !records.is_empty() {
        overlay.insert(PROMOTIONS.to_string(), Value::Object(records));
    }
    report
}

/// Merges an exported spec into an environment: every service of `file` ends up exactly as the
/// file says; services the file lacks stay unless `prune`.
pub fn merge(
    file: &Choreography,
    target: &Choreography,
    base_names: &BTreeSet<String>,
    prune: bool,
    overlay: &mut Map<String, Value>,
) -> Report {
    let mut report = Report::default();
    let target_services: BTreeMap<&str, Service<'_>> = target.services().map(|s| (s.name(), s)).collect();
    let file_names: BTreeSet<&str> = file.services().map(Service::name).collect();
    for service in file.services() {
        let name = service.name();
        let want = object(service);
        let list = list_of(service);
        match target_services.get(name) {
            None => {
                let e = entry(overlay, list, name);
                for (field, value) in want.iter().filter(|(f, _)| *f != "name") {
                    set(e, field, value);
                }
                report.services.insert(name.to_string(), ServiceOutcome::Created);
            }
            Some(&current) => {
                if list_of(current) != list {
                    // Deployable ↔ legacy: replace the entry in the other list.
                    delete(overlay, list_of(current), name, base_names.contains(name));
                }
                let have = object(current);
                let keys: BTreeSet<&String> = want.keys().chain(have.keys()).filter(|k| *k != "name").collect();
                let mut updated = Vec::new();
                for key in keys {
                    let w = want.get(key).cloned().unwrap_or(Value::Null);
                    if have.get(key).cloned().unwrap_or(Value::Null) != w || list_of(current) != list {
                        set(entry(overlay, list, name), key, &w);
                        updated.push(key.clone());
                    }
                }
                let outcome = if updated.is_empty() {
                    ServiceOutcome::Unchanged
                } else {
                    ServiceOutcome::Updated { fields: updated }
                };
                report.services.insert(name.to_string(), outcome);
            }
        }
    }
    for (&name, &current) in target_services.iter().filter(|(n, _)| !file_names.contains(*n)) {
        if prune {
            delete(overlay, list_of(current), name, base_names.contains(name));
            report.services.insert(name.to_string(), ServiceOutcome::Deleted);
        } else {
            report.services.insert(name.to_string(), ServiceOutcome::RemovedInSource);
        }
    }
    report
}

/// One field that differs between two environments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDifference {
    /// The service's name.
    pub service: String,
    /// The field's JSON name.
    pub field: String,
    /// Its value in the first environment (`null` when absent).
    pub a: Value,
    /// Its value in the second environment (`null` when absent).
    pub b: Value,
    /// Where `a` is `null`, the default that holds there ([`default_of`]); left out of the
    /// JSON otherwise, and for a field without a default (then `null` means "not set").
    #[serde(rename = "aDefault", skip_serializing_if = "Option::is_none")]
    pub a_default: Option<Value>,
    /// Where `b` is `null`, the default that holds there, as [`FieldDifference::a_default`].
    #[serde(rename = "bDefault", skip_serializing_if = "Option::is_none")]
    pub b_default: Option<Value>,
}

/// The value field `field` of service `service` holds where an effective spec leaves it out
/// (a normalized spec drops defaults): `numberOfInstances` 1, `resourceImpact`
/// `{"memory":"SMALL"}`, `serviceType` `"SOAP"`, `packageType` `"COMMAND_LINE"`, `endpointName`
/// the service's name (the defaults of docs/formats.md §2); `None` for a field without one.
pub fn default_of(service: &str, field: &str) -> Option<Value> {
    match field {
        "numberOfInstances" => Some(Value::from(1)),
        "resourceImpact" => Some(serde_json::json!({ "memory": "SMALL" })),
        "serviceType" => Some(Value::from("SOAP")),
        "packageType" => Some(Value::from("COMMAND_LINE")),
        "endpointName" => Some(Value::from(service)),
        _ => None,
    }
}

/// How two environments' effective specs differ.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvDiff {
    /// Differences in [`PROMOTABLE`] fields: what `promote` would carry over.
    pub promotable: Vec<FieldDifference>,
    /// Differences in [`ENVIRONMENT_LOCAL`] fields: what each environment keeps.
    pub environment_local: Vec<FieldDifference>,
    /// Fields of neither kind (desiredQoS, nativeURIs, …).
    pub other: Vec<FieldDifference>,
    /// Services only the first environment has, by name.
    pub only_in_a: Vec<String>,
    /// Services only the second environment has, by name.
    pub only_in_b: Vec<String>,
}

/// How the effective specs `a` and `b` of two environments differ, service by service and
/// field by field (services in name order), promotable and environment-local fields apart.
pub fn diff(a: &Choreography, b: &Choreography) -> EnvDiff {
    let mut out = EnvDiff::default();
    let a_services: BTreeMap<&str, Service<'_>> = a.services().map(|s| (s.name(), s)).collect();
    let b_services: BTreeMap<&str, Service<'_>> = b.services().map(|s| (s.name(), s)).collect();
    for (&name, &sa) in &a_services {
        let Some(&sb) = b_services.get(name) else {
            out.only_in_a.push(name.to_string());
            continue;
        };
        let (oa, ob) = (object(sa), object(sb));
        let keys: BTreeSet<&String> = oa.keys().chain(ob.keys()).filter(|k| *k != "name").collect();
        for key in keys {
            let (va, vb) = (oa.get(key).cloned().unwrap_or(Value::Null), ob.get(key).cloned().unwrap_or(Value::Null));
            if va == vb {
                continue;
            }
            let default = |v: &Value| v.is_null().then(|| default_of(name, key)).flatten();
            let (a_default, b_default) = (default(&va), default(&vb));
            let difference =
                FieldDifference { service: name.to_string(), field: key.clone(), a: va, b: vb, a_default, b_default };
            if promotable_fields(sa).contains(&key.as_str()) {
                out.promotable.push(difference);
            } else if ENVIRONMENT_LOCAL.contains(&key.as_str()) {
                out.environment_local.push(difference);
            } else {
                out.other.push(difference);
            }
        }
    }
    out.only_in_b = b_services.keys().filter(|n| !a_services.contains_key(*n)).map(|n| (*n).to_string()).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chor(v: Value) -> Choreography {
        let mut c: Choreography = serde_json::from_value(v).unwrap();
        c.normalize();
        c
    }

    fn svc(name: &str, version: &str, instances: i64) -> Value {
        json!({ "name": name, "roles": [name], "packageUri": "a.py", "port": 1, "version": version, "numberOfInstances": instances })
    }

    fn promotion<'a>(from: &'a Choreography, to: &'a Choreography, base: &'a BTreeSet<String>) -> Promotion<'a> {
        Promotion { from: "dev", source: from, target: to, base_names: base, only: &[], force: false, prune: false }
    }

    #[test]
    fn promotable_fields_move_and_local_ones_stay() {
        let dev = chor(json!({ "deployableServiceSpecs": [svc("a", "2.0", 1)] }));
        let test = chor(json!({ "deployableServiceSpecs": [svc("a", "1.0", 5)] }));
        let base = BTreeSet::new();
        let mut overlay = Map::new();
        let report = promote(promotion(&dev, &test, &base), &mut overlay);
        assert_eq!(report.services["a"], ServiceOutcome::Updated { fields: vec!["version".into()] });
        assert_eq!(overlay["deployableServiceSpecs"][0], json!({ "name": "a", "version": "2.0" }));
        assert_eq!(overlay[PROMOTIONS]["a"]["values"]["version"], json!("2.0"));
        assert!(overlay[PROMOTIONS]["a"]["digest"].as_str().unwrap().starts_with("sha256:"));
    }

    #[test]
    fn a_field_changed_on_both_sides_since_the_last_promotion_conflicts() {
        let base = BTreeSet::new();
        let mut overlay = Map::new();
        overlay.insert(PROMOTIONS.into(), json!({ "a": { "from": "dev", "values": { "version": "1.0", "port": 1, "roles": ["a"], "packageUri": "a.py" } } }));
        let dev = chor(json!({ "deployableServiceSpecs": [svc("a", "2.0", 1)] }));
        let test = chor(json!({ "deployableServiceSpecs": [svc("a", "1.5", 1)] }));
        let report = promote(promotion(&dev, &test, &base), &mut overlay.clone());
        assert_eq!(
            report.conflicts,
            vec![Conflict {
                pointer: "/a/version".into(),
                base: json!("1.0"),
                source: json!("2.0"),
                target: json!("1.5")
            }]
        );
        // TO changed it, FROM did not: TO's is kept.
        let dev_same = chor(json!({ "deployableServiceSpecs": [svc("a", "1.0", 1)] }));
        let report = promote(promotion(&dev_same, &test, &base), &mut overlay.clone());
        assert!(report.conflicts.is_empty());
        assert_eq!(report.services["a"], ServiceOutcome::KeptLocal { fields: vec!["version".into()] });
        // --force takes FROM's.
        let mut forced = overlay.clone();
        let report = promote(Promotion { force: true, ..promotion(&dev, &test, &base) }, &mut forced);
        assert_eq!(report.conflicts.len(), 1);
        assert_eq!(forced["deployableServiceSpecs"][0]["version"], json!("2.0"));
    }

    #[test]
    fn removed_services_go_only_with_prune() {
        let base: BTreeSet<String> = ["gone".to_string()].into();
        let dev = chor(json!({ "deployableServiceSpecs": [svc("a", "1", 1)] }));
        let test = chor(json!({ "deployableServiceSpecs": [svc("a", "1", 1), svc("gone", "1", 1)] }));
        let mut overlay = Map::new();
        let report = promote(promotion(&dev, &test, &base), &mut overlay);
        assert_eq!(report.services["gone"], ServiceOutcome::RemovedInSource);
        let report = promote(Promotion { prune: true, ..promotion(&dev, &test, &base) }, &mut overlay);
        assert_eq!(report.services["gone"], ServiceOutcome::Deleted);
        assert!(
            overlay["deployableServiceSpecs"].as_array().unwrap().contains(&json!({ "name": "gone", "$delete": true }))
        );
    }

    #[test]
    fn merge_makes_every_file_service_exact_and_keeps_the_rest() {
        let file = chor(json!({ "deployableServiceSpecs": [svc("a", "3", 2), svc("new", "1", 1)] }));
        let current = chor(json!({ "deployableServiceSpecs": [
            { "name": "a", "roles": ["a"], "packageUri": "a.py", "port": 1, "version": "1", "cloudAccount": "x" },
            svc("other", "1", 1)
        ] }));
        let mut overlay = Map::new();
        let report = merge(&file, &current, &BTreeSet::new(), false, &mut overlay);
        assert_eq!(report.services["new"], ServiceOutcome::Created);
        assert_eq!(report.services["other"], ServiceOutcome::RemovedInSource);
        let ServiceOutcome::Updated { fields } = &report.services["a"] else { panic!("{report:?}") };
        assert_eq!(fields, &vec!["cloudAccount".to_string(), "numberOfInstances".into(), "version".into()]);
        assert_eq!(overlay["deployableServiceSpecs"][0]["cloudAccount"], Value::Null);
    }

    #[test]
    fn diff_separates_promotable_and_local_fields() {
        let a = chor(json!({ "deployableServiceSpecs": [svc("a", "1", 1), svc("x", "1", 1)] }));
        let b = chor(json!({ "deployableServiceSpecs": [svc("a", "2", 3), svc("y", "1", 1)] }));
        let d = diff(&a, &b);
        assert_eq!(d.promotable.len(), 1);
        assert_eq!(d.promotable[0].field, "version");
        assert_eq!(d.environment_local[0].field, "numberOfInstances");
        assert_eq!((d.only_in_a, d.only_in_b), (vec!["x".to_string()], vec!["y".to_string()]));
    }

    #[test]
    fn a_left_out_field_says_the_default_that_holds_and_only_then() {
        let a = chor(json!({ "deployableServiceSpecs": [svc("api", "1.0", 3)] }));
        let mut b_service = svc("api", "1.0", 1);
        b_service["endpointName"] = json!("v2");
        let b = chor(json!({ "deployableServiceSpecs": [b_service] }));
        let d = diff(&a, &b);
        let instances = &d.environment_local[0];
        assert_eq!((&instances.a, &instances.b), (&json!(3), &Value::Null), "1 is the default, dropped: {d:?}");
        assert_eq!((&instances.a_default, &instances.b_default), (&None, &Some(json!(1))));
        let endpoint = d.promotable.iter().chain(&d.other).find(|f| f.field == "endpointName").expect("endpointName");
        assert_eq!((endpoint.field.as_str(), &endpoint.a_default), ("endpointName", &Some(json!("api"))));
        assert_eq!(endpoint.b_default, None);
        assert_eq!(default_of("api", "desiredQoS"), None);
    }
}
