//! Reading spec files (`chor.json`, `envs/*.json`): JSON syntax, then the shape of every service
//! element, each problem located at file:line:column and all of them collected.

use serde_json::{Map, Value};

use super::model::{DeployableServiceSpec, LegacyServiceSpec};
use crate::diagnostic::{Diagnostic, Segment, SourceFile, from_value_located};

/// Where `enact promote` records what it promoted into an overlay (the base of the next
/// three-way merge).
pub const PROMOTIONS: &str = "$promotions";

/// The two service lists of a spec file, by their JSON key.
pub const LISTS: [&str; 2] = ["deployableServiceSpecs", "legacyServiceSpecs"];

/// Whether a file is the base spec or an overlay: an overlay may remove keys with `null` and
/// services with `"$delete": true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Base,
    Overlay,
}

/// Parses a spec file into a JSON value whose shape has been checked.
pub fn parse_spec_file(source: &SourceFile, kind: FileKind) -> Result<Value, Vec<Diagnostic>> {
    let value: Value = serde_json::from_str(&source.text).map_err(|e| vec![source.syntax_error(&e)])?;
    let mut errors = duplicate_key_errors(source, &value);
    let Value::Object(top) = &value else {
        return Err(vec![
            Diagnostic::new("a spec file must hold a JSON object")
                .at(Some(source.locate(&[], false)))
                .hint("start from `{ \"deployableServiceSpecs\": [], \"legacyServiceSpecs\": [] }`"),
        ]);
    };
    for (key, list) in top {
        let here = [Segment::Key(key.clone())];
        if kind == FileKind::Overlay && key == PROMOTIONS {
            if !list.is_object() {
                errors.push(
                    Diagnostic::new(format!("`{PROMOTIONS}` must be an object (enact promote writes it)"))
                        .at(Some(source.locate(&here, false))),
                );
            }
            continue;
        }
        if !LISTS.contains(&key.as_str()) {
            let what = if key.starts_with('$') { "unknown directive" } else { "unknown field" };
            let message = match crate::suggest::closest(key, LISTS) {
                Some(meant) => format!("{what} `{key}`: did you mean `{meant}`?"),
                None => format!("{what} `{key}`, expected `deployableServiceSpecs` or `legacyServiceSpecs`"),
            };
            errors.push(
                Diagnostic::new(message).at(Some(source.locate(&here, true))).hint("fix its spelling, or remove it"),
            );
            continue;
        }
        let Value::Array(items) = list else {
            if kind == FileKind::Overlay && list.is_null() {
                continue;
            }
            errors.push(
                Diagnostic::new(format!("`{key}` must be a list of services")).at(Some(source.locate(&here, false))),
            );
            continue;
        };
        for (index, item) in items.iter().enumerate() {
            let at = [Segment::Key(key.clone()), Segment::Index(index)];
            if let Err(d) = check_service(source, kind, key, item, &at) {
                errors.push(d);
            }
        }
    }
    if errors.is_empty() { Ok(value) } else { Err(errors) }
}

/// JSON allows a key twice and keeps the last; in a spec that silently loses data, so it is an
/// error, located at the second key.
pub fn duplicate_key_errors(source: &SourceFile, value: &Value) -> Vec<Diagnostic> {
    source
        .duplicate_keys()
        .into_iter()
        .map(|(path, location)| {
            let key = match path.last() {
                Some(Segment::Key(k)) => k.clone(),
                _ => String::new(),
            };
            let mut d = Diagnostic::new(format!("duplicate field `{key}`"))
                .at(Some(location))
                .hint("JSON keeps only the last of the two; remove one");
            if let [Segment::Key(list), Segment::Index(i), _, ..] = path.as_slice()
                && let Some(name) =
                    value.get(list).and_then(|l| l.get(*i)).and_then(|s| s.get("name")).and_then(Value::as_str)
            {
                d = d.service(name);
            }
            d
        })
        .collect()
}

fn check_service(
    source: &SourceFile,
    kind: FileKind,
    list: &str,
    item: &Value,
    at: &[Segment],
) -> Result<(), Diagnostic> {
    let Value::Object(fields) = item else {
        return Err(Diagnostic::new("a service must be a JSON object").at(Some(source.locate(at, false))));
    };
    let name = match fields.get("name") {
        Some(Value::String(name)) => name.clone(),
        Some(_) => {
            let mut here = at.to_vec();
            here.push(Segment::Key("name".into()));
            return Err(Diagnostic::new("`name` must be a string").at(Some(source.locate(&here, false))));
        }
        None => {
            return Err(Diagnostic::new("a service has no `name`")
                .at(Some(source.locate(at, false)))
                .hint("every service needs a unique `name`: it is how services are matched across files and applies"));
        }
    };
    let mut stripped = Map::new();
    for (key, value) in fields {
        let mut here = at.to_vec();
        here.push(Segment::Key(key.clone()));
        if let Some(directive) = key.strip_prefix('$') {
            if kind == FileKind::Overlay && directive == "delete" {
                if *value != Value::Bool(true) {
                    return Err(Diagnostic::new("`$delete` must be `true`")
                        .at(Some(source.locate(&here, false)))
                        .service(name));
                }
                continue;
            }
            return Err(Diagnostic::new(format!("unknown directive `{key}`"))
                .at(Some(source.locate(&here, true)))
                .service(name)
                .hint(if kind == FileKind::Overlay {
                    "the only directive an overlay service takes is `\"$delete\": true`"
                } else {
                    "directives belong in overlays (`envs/ENV.json`), not in the base spec"
                }));
        }
        if value.is_null() {
            if kind == FileKind::Overlay && key != "name" {
                continue;
            }
            return Err(Diagnostic::new(format!("`{key}` is null"))
                .at(Some(source.locate(&here, false)))
                .service(name)
                .hint("leave the field out instead; `null` removes a field only in an overlay"));
        }
        stripped.insert(key.clone(), strip_nulls(value, kind));
    }
    let stripped = Value::Object(stripped);
    let checked = if list == LISTS[0] {
        from_value_located::<DeployableServiceSpec>(&stripped, source, at).map(drop)
    } else {
        from_value_located::<LegacyServiceSpec>(&stripped, source, at).map(drop)
    };
    checked.map_err(|d| d.service(name))
}

/// Overlays remove nested keys with `null` too; for the shape check they are simply absent.
fn strip_nulls(value: &Value, kind: FileKind) -> Value {
    match (value, kind) {
        (Value::Object(map), FileKind::Overlay) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v, kind))).collect(),
        ),
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, kind: FileKind) -> Result<Value, Vec<Diagnostic>> {
        parse_spec_file(&SourceFile::new("chor.json", text.to_string()), kind)
    }

    #[test]
    fn unknown_field_is_located_at_its_key() {
        let errs = parse("{\"deployableServiceSpecs\": [\n  {\"name\": \"a\",\n   \"prot\": 1}]}", FileKind::Base)
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        let d = &errs[0];
        let at = d.location.as_ref().map(|l| (l.line, l.column));
        assert_eq!(at, Some((3, 4)), "{d}");
        assert!(d.message.contains("unknown field `prot`"), "{d}");
        assert_eq!(d.service.as_deref(), Some("a"));
    }

    #[test]
    fn every_bad_service_is_reported() {
        let errs = parse(
            r#"{"deployableServiceSpecs": [{"name": "a", "port": "x"}, {"name": "b", "resourceImpact": {"memory": "HUGE"}}]}"#,
            FileKind::Base,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[1].message.contains("/resourceImpact/memory"), "{}", errs[1]);
    }

    #[test]
    fn overlays_take_null_and_delete_but_not_other_directives() {
        assert!(
            parse(
                r#"{"deployableServiceSpecs": [{"name": "a", "version": null}, {"name": "b", "$delete": true}]}"#,
                FileKind::Overlay
            )
            .is_ok()
        );
        let errs =
            parse(r#"{"deployableServiceSpecs": [{"name": "a", "$remove": true}]}"#, FileKind::Overlay).unwrap_err();
        assert!(errs[0].message.contains("unknown directive `$remove`"));
        let errs =
            parse(r#"{"deployableServiceSpecs": [{"name": "a", "version": null}]}"#, FileKind::Base).unwrap_err();
        assert!(errs[0].message.contains("is null"));
    }
}
