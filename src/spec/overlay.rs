//! The overlay merge, the one place it is done: an environment's overlay (`envs/<env>.json`)
//! merged onto the base spec (`chor.json`) as an RFC 7396 JSON merge patch, except that the
//! service lists merge by `name` (`docs/formats.md` §3).
//!
//! Objects merge key by key and the overlay wins; `null` removes a key (at any depth) and a
//! service list that is `null` or absent leaves the base list as it is; an overlay service with
//! `"$delete": true` removes the base service of that name; a service the base lacks is added;
//! other arrays (`roles`, `dependencies`, `nativeURIs`) are replaced whole. The same name twice
//! in one overlay list, and `$delete` of a name the base lacks, are errors. Shapes and
//! directives were checked when the files were parsed ([`crate::spec::parse`]).
//!
//! The merge is done on two representations with the same plan of steps:
//!
//! - [`merge`]: onto the base spec as a JSON value, every problem collected and located in the
//!   overlay (the path that explains errors);
//! - [`merge_typed`]: onto the base spec already read into the model, only the services the
//!   overlay names going through JSON (the fast path of loading an environment); it stops at
//!   the first problem, which the caller explains by taking the located path.
//!
//! Depends on the spec model and the diagnostics only.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::model::Choreography;
use super::parse::LISTS;
use crate::diagnostic::{Diagnostic, Segment, SourceFile};

/// A problem of an overlay's service list, found while merging. `list` is the JSON key of the
/// list (`deployableServiceSpecs` or `legacyServiceSpecs`) and `index` the entry's position in
/// it, so each converts into a diagnostic located in the overlay ([`MergeError::diagnostic`]).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The same service twice in one overlay list: the two entries should be one.
    #[error("service `{name}` appears twice in this overlay (also at {list}[{first}])")]
    Duplicate {
        /// The list, by its JSON key.
        list: &'static str,
        /// The service's name.
        name: String,
        /// The second entry of that name.
        index: usize,
        /// The first entry of that name.
        first: usize,
    },
    /// `"$delete": true` for a service the base spec does not have.
    #[error("`$delete` of service `{name}`, which the base spec does not have")]
    DeleteUnknown {
        /// The list, by its JSON key.
        list: &'static str,
        /// The service's name.
        name: String,
        /// The entry's position in the list.
        index: usize,
    },
    /// An overlay entry without a string `name` (parsing refuses one first).
    #[error("a service has no `name`")]
    Unnamed {
        /// The list, by its JSON key.
        list: &'static str,
        /// The entry's position in the list.
        index: usize,
    },
    /// A merged service the model refuses ([`merge_typed`] only; [`merge`] leaves that check
    /// to reading the merged spec as a whole).
    #[error("service `{name}` as merged does not fit the spec: {source}")]
    Refused {
        /// The list, by its JSON key.
        list: &'static str,
        /// The service's name.
        name: String,
        /// The entry's position in the list.
        index: usize,
        /// What the model refused.
        source: serde_json::Error,
    },
}

impl MergeError {
    /// The error as a diagnostic located at its entry in `source`, the overlay's text, with
    /// what to do.
    pub fn diagnostic(&self, source: &SourceFile) -> Diagnostic {
        let (list, index) = match self {
            MergeError::Duplicate { list, index, .. }
            | MergeError::DeleteUnknown { list, index, .. }
            | MergeError::Unnamed { list, index }
            | MergeError::Refused { list, index, .. } => (*list, *index),
        };
        let at = Some(source.locate(&[Segment::Key(list.to_string()), Segment::Index(index)], false));
        let d = Diagnostic::new(self.to_string()).at(at);
        match self {
            MergeError::Duplicate { .. } => d.hint("merge the two entries into one"),
            MergeError::DeleteUnknown { name, .. } => {
                d.service(name).hint("remove this entry, or check the service's name in chor.json")
            }
            MergeError::Unnamed { .. } => d.hint("every service needs a unique `name`: it is how services are matched"),
            MergeError::Refused { name, .. } => d.service(name).hint("fix the overlay's fields of this service"),
        }
    }
}

/// What one overlay entry does to the base list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Merge into the base service at this index.
    Into(usize),
    /// Remove the base service at this index.
    Delete(usize),
    /// Add a new service at the end.
    Append,
}

/// The plan of merging the overlay list `items` into a base list whose services are named
/// `base_names` (in order): one step per entry, in the overlay's order, with the entry's index,
/// or the problems. Where a name is in the base list twice the last one is merged into, as a
/// JSON object keeps the last of two keys.
fn plan_list<'a, 'o>(
    list: &'static str,
    base_names: impl Iterator<Item = Option<&'a str>>,
    items: &'o [Value],
) -> (Vec<(usize, &'o Value, Step)>, Vec<MergeError>) {
    let positions: foldhash::HashMap<&str, usize> =
        base_names.enumerate().filter_map(|(i, name)| Some((name?, i))).collect();
    let mut seen: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    let mut steps = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            errors.push(MergeError::Unnamed { list, index });
            continue;
        };
        if let Some(first) = seen.insert(name, index) {
            errors.push(MergeError::Duplicate { list, name: name.to_string(), index, first });
            continue;
        }
        let delete = item.get("$delete") == Some(&Value::Bool(true));
        let step = match positions.get(name) {
            Some(&i) if delete => Step::Delete(i),
            Some(&i) => Step::Into(i),
            None if delete => {
                errors.push(MergeError::DeleteUnknown { list, name: name.to_string(), index });
                continue;
            }
            None => Step::Append,
        };
        steps.push((index, item, step));
    }
    (steps, errors)
}

/// Drops the entries of `list` marked in `deleted`, keeping order; entries past the end of
/// `deleted` (services the overlay added) are kept.
fn drop_deleted<T>(list: &mut Vec<T>, deleted: &[bool]) {
    if !deleted.contains(&true) {
        return;
    }
    let mut i = 0;
    list.retain(|_| {
        i += 1;
        !deleted.get(i - 1).copied().unwrap_or(false)
    });
}

/// Merges `overlay` into `base`, both JSON values of spec files that passed
/// [`crate::spec::parse::parse_spec_file`] (`base` as the base spec, `overlay` as an overlay).
///
/// # Errors
/// Every problem of the overlay's lists ([`MergeError`]), each located in `source`, the
/// overlay's text; `base` is then partly merged and should be dropped.
pub fn merge(base: &mut Value, overlay: &Value, source: &SourceFile) -> Result<(), Vec<Diagnostic>> {
    let (Value::Object(overlay), Value::Object(base)) = (overlay, base) else {
        return Ok(());
    };
    let mut errors = Vec::new();
    for list in LISTS {
        let Some(Value::Array(items)) = overlay.get(list) else {
            continue;
        };
        let target = base.entry(list.to_string()).or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(target) = target else {
            continue;
        };
        let (steps, problems) = plan_list(list, target.iter().map(|s| s.get("name").and_then(Value::as_str)), items);
        errors.extend(problems.iter().map(|e| e.diagnostic(source)));
        let mut deleted = vec![false; target.len()];
        for (_, item, step) in steps {
            match step {
                Step::Into(i) => merge_patch(&mut target[i], item),
                Step::Delete(i) => deleted[i] = true,
                Step::Append => {
                    let mut fresh = Value::Object(Map::new());
                    merge_patch(&mut fresh, item);
                    target.push(fresh);
                }
            }
        }
        drop_deleted(target, &deleted);
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// [`merge`] onto a base spec already read into the model: each service the overlay names goes
/// to JSON, takes the overlay's merge patch and comes back; the others are not touched. Gives
/// the same spec as [`merge`] followed by reading the result into the model.
///
/// # Errors
/// The first [`MergeError`] of the overlay (a [`MergeError::Refused`] when a merged service
/// does not fit the model); `chor` is then partly merged and should be dropped.
pub fn merge_typed(chor: &mut Choreography, overlay: &Value) -> Result<(), MergeError> {
    merge_list_typed(LISTS[0], &mut chor.deployable_service_specs, overlay.get(LISTS[0]), |s| &s.name)?;
    merge_list_typed(LISTS[1], &mut chor.legacy_service_specs, overlay.get(LISTS[1]), |s| &s.name)
}

/// One list of [`merge_typed`].
fn merge_list_typed<T: Serialize + DeserializeOwned>(
    list: &'static str,
    services: &mut Vec<T>,
    items: Option<&Value>,
    name_of: fn(&T) -> &str,
) -> Result<(), MergeError> {
    let Some(Value::Array(items)) = items else {
        return Ok(());
    };
    if items.is_empty() {
        return Ok(());
    }
    let (steps, errors) = plan_list(list, services.iter().map(|s| Some(name_of(s))), items);
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    let refused = |index: usize, item: &Value, source| MergeError::Refused {
        list,
        name: item.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        index,
        source,
    };
    let mut deleted = vec![false; services.len()];
    for (index, item, step) in steps {
        match step {
            Step::Delete(i) => deleted[i] = true,
            Step::Into(i) => {
                let mut value = serde_json::to_value(&services[i]).map_err(|e| refused(index, item, e))?;
                merge_patch(&mut value, item);
                services[i] = serde_json::from_value(value).map_err(|e| refused(index, item, e))?;
            }
            Step::Append => {
                let mut value = Value::Object(Map::new());
                merge_patch(&mut value, item);
                services.push(serde_json::from_value(value).map_err(|e| refused(index, item, e))?);
            }
        }
    }
    drop_deleted(services, &deleted);
    Ok(())
}

/// RFC 7396 JSON merge patch of `patch` onto `target`: objects merge recursively, `null`
/// removes a key, anything else replaces. Keys starting with `$` (overlay directives such as
/// `$delete`) are not merged.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src() -> SourceFile {
        SourceFile::new("envs/dev.json", String::new())
    }

    /// The merge of `overlay` into `base` both ways: as JSON, and typed (then back to JSON).
    fn both(base: &Value, overlay: &Value) -> (Value, Value) {
        let mut merged = base.clone();
        merge(&mut merged, overlay, &src()).unwrap();
        let mut chor: Choreography = serde_json::from_value(base.clone()).unwrap();
        merge_typed(&mut chor, overlay).unwrap();
        (merged, serde_json::to_value(&chor).unwrap())
    }

    #[test]
    fn services_merge_by_name_and_nested_objects_merge_by_key() {
        let base = json!({"deployableServiceSpecs": [
            {"name": "a", "port": 1, "roles": ["x", "y"], "resourceImpact": {"memory": "SMALL", "cpu": "1"}},
            {"name": "b", "port": 2}
        ]});
        let overlay = json!({"deployableServiceSpecs": [
            {"name": "a", "roles": ["z"], "resourceImpact": {"memory": "LARGE", "cpu": null}},
            {"name": "c", "port": 3, "version": null}
        ]});
        let expected = json!({"deployableServiceSpecs": [
            {"name": "a", "port": 1, "roles": ["z"], "resourceImpact": {"memory": "LARGE"}},
            {"name": "b", "port": 2},
            {"name": "c", "port": 3}
        ]});
        let (merged, typed) = both(&base, &overlay);
        assert_eq!(merged, expected);
        assert_eq!(typed, expected);
    }

    #[test]
    fn delete_removes_a_service_and_null_removes_a_field_or_keeps_a_list() {
        let base = json!({"deployableServiceSpecs": [{"name": "a", "version": "1"}, {"name": "b"}],
                          "legacyServiceSpecs": [{"name": "w", "nativeURIs": ["http://h/"]}]});
        let overlay = json!({"deployableServiceSpecs": [{"name": "b", "$delete": true}, {"name": "a", "version": null}],
                             "legacyServiceSpecs": null});
        let (merged, typed) = both(&base, &overlay);
        let expected = json!({"deployableServiceSpecs": [{"name": "a"}],
                              "legacyServiceSpecs": [{"name": "w", "nativeURIs": ["http://h/"]}]});
        assert_eq!(merged, expected);
        assert_eq!(typed, expected);
    }

    #[test]
    fn duplicate_names_and_deleting_unknown_services_are_errors() {
        let mut base = json!({"deployableServiceSpecs": [{"name": "a"}]});
        let overlay = json!({"deployableServiceSpecs": [{"name": "a"}, {"name": "a"}, {"name": "q", "$delete": true}]});
        let mut chor: Choreography = serde_json::from_value(base.clone()).unwrap();
        let typed = merge_typed(&mut chor, &overlay).unwrap_err();
        assert!(matches!(typed, MergeError::Duplicate { index: 1, first: 0, .. }), "{typed:?}");
        let errors = merge(&mut base, &overlay, &src()).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.contains("appears twice"));
        assert!(errors[1].message.contains("`$delete` of service `q`"));
        assert_eq!(errors[1].service.as_deref(), Some("q"));
    }

    #[test]
    fn a_merged_service_the_model_refuses_stops_the_typed_merge() {
        let mut chor: Choreography =
            serde_json::from_value(json!({"deployableServiceSpecs": [{"name": "a"}]})).unwrap();
        let overlay = json!({"deployableServiceSpecs": [{"name": "a", "port": "x"}]});
        let e = merge_typed(&mut chor, &overlay).unwrap_err();
        assert!(matches!(&e, MergeError::Refused { name, index: 0, .. } if name == "a"), "{e:?}");
        let overlay = json!({"deployableServiceSpecs": [{"name": "z", "$delete": true}]});
        assert!(matches!(merge_typed(&mut chor, &overlay), Err(MergeError::DeleteUnknown { .. })));
    }
}
