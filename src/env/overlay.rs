//! Overlay merge: RFC 7396 merge patch, except that the service lists merge by `name`.
//!
//! Objects merge key by key and the overlay wins; `null` removes a key; an overlay service with
//! `"$delete": true` removes the service; other arrays are replaced whole. Shapes and directives
//! were checked when the files were parsed ([`crate::spec::parse`]).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Segment, SourceFile};
use crate::spec::parse::LISTS;

/// Merges `overlay` into `base` (both already shape-checked spec files).
pub fn merge(base: &mut Value, overlay: &Value, source: &SourceFile) -> Result<(), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let Value::Object(overlay) = overlay else {
        return Ok(());
    };
    let Value::Object(base) = base else {
        return Ok(());
    };
    for list in LISTS {
        let Some(Value::Array(items)) = overlay.get(list) else {
            continue;
        };
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let target = base.entry(list.to_string()).or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(target) = target else {
            continue;
        };
        let mut positions: HashMap<String, usize> =
            target.iter().enumerate().filter_map(|(i, s)| Some((s.get("name")?.as_str()?.to_string(), i))).collect();
        let mut deleted = vec![false; target.len()];
        for (index, item) in items.iter().enumerate() {
            let at = [Segment::Key(list.to_string()), Segment::Index(index)];
            let Some(name) = item.get("name").and_then(Value::as_str) else {
                continue;
            };
            if let Some(first) = seen.insert(name, index) {
                errors.push(
                    Diagnostic::new(format!(
                        "service `{name}` appears twice in this overlay (also at {list}[{first}])"
                    ))
                    .at(Some(source.locate(&at, false)))
                    .hint("merge the two entries into one"),
                );
                continue;
            }
            let delete = item.get("$delete") == Some(&Value::Bool(true));
            match positions.get(name) {
                Some(&i) if delete => deleted[i] = true,
                Some(&i) => merge_patch(&mut target[i], item),
                None if delete => errors.push(
                    Diagnostic::new(format!("`$delete` of service `{name}`, which the base spec does not have"))
                        .at(Some(source.locate(&at, false)))
                        .service(name)
                        .hint("remove this entry, or check the service's name in chor.json"),
                ),
                None => {
                    let mut fresh = Value::Object(Map::new());
                    merge_patch(&mut fresh, item);
                    positions.insert(name.to_string(), target.len());
                    target.push(fresh);
                    deleted.push(false);
                }
            }
        }
        let mut i = 0;
        target.retain(|_| {
            i += 1;
            !deleted[i - 1]
        });
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// RFC 7396: objects merge recursively, `null` removes, anything else replaces.
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

    #[test]
    fn services_merge_by_name_and_nested_objects_merge_by_key() {
        let mut base = json!({"deployableServiceSpecs": [
            {"name": "a", "port": 1, "roles": ["x", "y"], "resourceImpact": {"memory": "SMALL", "cpu": "1"}},
            {"name": "b", "port": 2}
        ]});
        let overlay = json!({"deployableServiceSpecs": [
            {"name": "a", "roles": ["z"], "resourceImpact": {"memory": "LARGE", "cpu": null}},
            {"name": "c", "port": 3, "version": null}
        ]});
        merge(&mut base, &overlay, &src()).unwrap();
        assert_eq!(
            base,
            json!({"deployableServiceSpecs": [
                {"name": "a", "port": 1, "roles": ["z"], "resourceImpact": {"memory": "LARGE"}},
                {"name": "b", "port": 2},
                {"name": "c", "port": 3}
            ]})
        );
    }

    #[test]
    fn delete_removes_a_service_and_null_removes_a_field() {
        let mut base = json!({"deployableServiceSpecs": [{"name": "a", "version": "1"}, {"name": "b"}]});
        let overlay =
            json!({"deployableServiceSpecs": [{"name": "b", "$delete": true}, {"name": "a", "version": null}]});
        merge(&mut base, &overlay, &src()).unwrap();
        assert_eq!(base, json!({"deployableServiceSpecs": [{"name": "a"}]}));
    }

    #[test]
    fn duplicate_names_and_deleting_unknown_services_are_errors() {
        let mut base = json!({"deployableServiceSpecs": [{"name": "a"}]});
        let overlay = json!({"deployableServiceSpecs": [{"name": "a"}, {"name": "a"}, {"name": "q", "$delete": true}]});
        let errors = merge(&mut base, &overlay, &src()).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.contains("appears twice"));
        assert!(errors[1].message.contains("`$delete` of service `q`"));
    }
}
