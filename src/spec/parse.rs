//! Reading spec files (`chor.json`, `envs/*.json`): JSON syntax, then the shape of every service
//! element, each problem located at file:line:column and all of them collected.

use serde_json::{Map, Value};

use super::model::{Choreography, DeployableServiceSpec, LegacyServiceSpec};
use crate::diagnostic::{Diagnostic, Segment, SourceFile, from_object_located};

/// Where `enact promote` records what it promoted into an overlay (the base of the next
/// three-way merge).
pub const PROMOTIONS: &str = "$promotions";

/// The two service lists of a spec file, by their JSON key.
pub const LISTS: [&str; 2] = ["deployableServiceSpecs", "legacyServiceSpecs"];

/// Whether a file is the base spec or an overlay: an overlay may remove keys with `null` and
/// services with `"$delete": true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `chor.json`: no `null`, no directive.
    Base,
    /// `envs/<env>.json`: `null` removes a field, `"$delete": true` a service, and
    /// `$promotions` records what `enact promote` promoted.
    Overlay,
}

/// Parses a spec file into a JSON value whose shape has been checked: an object of the two
/// service lists, each service an object with a string `name` and the fields of its kind
/// (`docs/formats.md` §2, §3), no key twice.
///
/// # Errors
/// Every problem of the file, located at file:line:column: JSON syntax (alone, first), a
/// duplicate key, an unknown field or directive, a wrong type, a service without `name`.
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
            if let Err(found) = check_service(source, kind, key, item, &at) {
                errors.extend(found);
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

/// The `name` of a service of a spec file and its fields, less directives and (in an overlay)
/// nulls.
///
/// # Errors
/// The service is not an object, has no string `name`, an unknown or wrong directive, a `null`
/// where the file may not hold one.
fn service_fields(
    source: &SourceFile,
    kind: FileKind,
    item: &Value,
    at: &[Segment],
) -> Result<(String, Map<String, Value>), Diagnostic> {
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
    Ok((name, stripped))
}

/// Checks one service of a spec file; every problem found, located (one, when the service is
/// not even an object with a `name`).
fn check_service(
    source: &SourceFile,
    kind: FileKind,
    list: &str,
    item: &Value,
    at: &[Segment],
) -> Result<(), Vec<Diagnostic>> {
    let (name, stripped) = service_fields(source, kind, item, at).map_err(|d| vec![d])?;
    // Every unknown field of the service is reported, not only the first.
    let checked = if list == LISTS[0] {
        from_object_located::<DeployableServiceSpec>(&stripped, source, at).map(drop)
    } else {
        from_object_located::<LegacyServiceSpec>(&stripped, source, at).map(drop)
    };
    checked.map_err(|found| found.into_iter().map(|d| d.service(name.clone())).collect())
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

/// The base spec read straight into the model, the fast way: `Some` only when `text` is a
/// base spec that [`parse_spec_file`] would take as it is (every check of shape there holds),
/// `None` for anything that path must explain (it then gives the same spec where this one
/// succeeds). Typed reading refuses unknown and duplicate fields just as the located checks do,
/// but takes `null` for a missing field, which the base spec must refuse: a text holding a JSON
/// `null` is left to the located path (a `null` inside a string is not one).
pub fn read_base_fast(text: &str) -> Option<Choreography> {
    if holds_null(text) {
        return None;
    }
    let mut reader = serde_json::Deserializer::from_str(text);
    let spec = serde::de::DeserializeSeed::deserialize(FastSpecSeed { text_bytes: text.len() }, &mut reader).ok()?;
    reader.end().ok()?;
    Some(Choreography {
        deployable_service_specs: spec.deployable_service_specs.unwrap_or_default().into_iter().map(|s| s.0).collect(),
        legacy_service_specs: spec.legacy_service_specs.unwrap_or_default().into_iter().map(|s| s.0).collect(),
    })
}

/// Reads a [`FastSpec`] whose lists start with room for as many services as a text of
/// `text_bytes` bytes can hold (one per [`MIN_SERVICE_BYTES`]): a list grown one doubling at
/// a time writes every service several times, where room reserved and never used costs only
/// address space.
struct FastSpecSeed {
    text_bytes: usize,
}

/// The fewest bytes a service of a real spec takes, `{"name": "…", …}` with its neighbours'
/// indentation: a bound for reserving room, not a limit.
const MIN_SERVICE_BYTES: usize = 128;

impl<'de> serde::de::DeserializeSeed<'de> for FastSpecSeed {
    type Value = FastSpec;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<FastSpec, D::Error> {
        use serde::de::{Error as _, MapAccess, Visitor};
        struct Fields(usize);
        impl<'de> Visitor<'de> for Fields {
            type Value = FastSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FastSpec, A::Error> {
                let mut spec = FastSpec { deployable_service_specs: None, legacy_service_specs: None };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "deployableServiceSpecs" if spec.deployable_service_specs.is_none() => {
                            spec.deployable_service_specs = Some(map.next_value_seed(Presized::new(self.0))?);
                        }
                        "legacyServiceSpecs" if spec.legacy_service_specs.is_none() => {
                            spec.legacy_service_specs = Some(map.next_value()?);
                        }
                        other => return Err(A::Error::custom(format_args!("unknown or repeated field `{other}`"))),
                    }
                }
                Ok(spec)
            }
        }
        let capacity = self.text_bytes / MIN_SERVICE_BYTES;
        deserializer.deserialize_map(Fields(capacity))
    }
}

/// A list of objects read into a vector with room for `capacity` of them from the start.
struct Presized<T> {
    capacity: usize,
    item: std::marker::PhantomData<T>,
}

impl<T> Presized<T> {
    fn new(capacity: usize) -> Self {
        Presized { capacity, item: std::marker::PhantomData }
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for Presized<T> {
    type Value = Vec<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Presized<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(self.capacity);
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// Whether a JSON text holds a `null` outside its strings (or is not JSON where it looks for
/// one). Outside strings the letter `n` of valid JSON starts a `null` and nothing else, so one
/// pass that skips strings answers; texts without the word at all are not scanned.
fn holds_null(text: &str) -> bool {
    if memchr::memmem::find(text.as_bytes(), b"null").is_none() {
        return false;
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = bytes.get(i..).and_then(|rest| memchr::memchr2(b'"', b'n', rest)) {
        i += at;
        if bytes[i] == b'n' {
            return true;
        }
        // A string: skip to its closing quote, over escaped characters.
        i += 1;
        loop {
            let Some(at) = bytes.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) else {
                return false;
            };
            i += at;
            if bytes[i] == b'\\' {
                i += 2;
                continue;
            }
            i += 1;
            break;
        }
    }
    false
}

/// The base spec as [`read_base_fast`] reads it ([`FastSpecSeed`]): a [`Choreography`], except
/// that the file and each of its services must be JSON objects, as the located checks require
/// (serde alone also takes a struct written as an array of its fields, so `[]` would be an
/// empty spec). A list left out is empty; any other key, or a key twice, is refused.
struct FastSpec {
    deployable_service_specs: Option<Vec<ObjectOnly<DeployableServiceSpec>>>,
    legacy_service_specs: Option<Vec<ObjectOnly<LegacyServiceSpec>>>,
}

/// A `T` that deserializes from a JSON object only, never from an array.
struct ObjectOnly<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object(std::marker::PhantomData)).map(ObjectOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, kind: FileKind) -> Result<Value, Vec<Diagnostic>> {
        parse_spec_file(&SourceFile::new("chor.json", text.to_string()), kind)
    }

    #[test]
    fn every_refused_field_of_a_service_is_reported_in_file_order_and_none_reported_missing() {
        let text = r#"{"deployableServiceSpecs": [
  {"name": "a", "prot": 8080, "numberOfInstances": "two", "resourceImpact": {"memroy": "SMALL"}, "versoin": "1"},
  {"name": "b", "roles": 5}
]}"#;
        let errors = parse(text, FileKind::Base).unwrap_err();
        let found: Vec<(usize, &str)> = errors
            .iter()
            .map(|d| (d.location.as_ref().map_or(0, |l| l.column), d.message.split(':').next().unwrap_or_default()))
            .collect();
        assert_eq!(
            found,
            [
                (17, "unknown field `prot`"),
                (52, "/numberOfInstances"),
                (78, "unknown field `memroy`"),
                (98, "unknown field `versoin`"),
                (26, "/roles"),
            ],
            "{errors:#?}"
        );
        assert!(errors[..4].iter().all(|d| d.service.as_deref() == Some("a")));
        // A mistyped required field is reported once, not again as missing.
        let errors = parse(r#"{"legacyServiceSpecs": [{"name": "l", "nativeURIs": 5}]}"#, FileKind::Base).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
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

    #[test]
    fn the_fast_read_leaves_a_json_null_to_the_located_path_but_not_the_word_in_a_string() {
        assert!(!holds_null(r#"{"a": "null", "b": "x\"null\"", "nullable": 1}"#));
        assert!(holds_null(r#"{"a": "\\", "b": null}"#));
        assert!(holds_null(r#"{"a": "null", "b": [1, null]}"#));
        let spec = r#"{"deployableServiceSpecs": [{"name": "nullsvc", "version": "null", "port": 1}]}"#;
        let chor = read_base_fast(spec).unwrap();
        assert_eq!(chor.deployable_service_specs[0].name, "nullsvc");
        assert!(read_base_fast(r#"{"deployableServiceSpecs": [{"name": "a", "version": null}]}"#).is_none());
        assert!(read_base_fast("[]").is_none());
        assert!(read_base_fast(r#"{"deployableServiceSpecs": [["a"]]}"#).is_none());
    }

    #[test]
    fn the_fast_read_refuses_what_the_located_path_must_explain_and_reads_the_rest_alike() {
        // A key it does not know, a key twice, a list that is not one, trailing text: each is
        // left to the located path, which names the problem.
        for text in [
            r#"{"deployableServiceSpecs": [], "legacyServiceSpec": []}"#,
            r#"{"deployableServiceSpecs": [{"name": "a"}], "deployableServiceSpecs": []}"#,
            r#"{"legacyServiceSpecs": [], "legacyServiceSpecs": []}"#,
            r#"{"deployableServiceSpecs": {"name": "a"}}"#,
            r#"{"deployableServiceSpecs": []} {}"#,
        ] {
            assert!(read_base_fast(text).is_none(), "{text}");
            assert!(parse(text, FileKind::Base).is_err(), "{text}");
        }
        // Lists left out are empty; services come in file order, however many the text holds.
        assert_eq!(read_base_fast("{}").unwrap(), Choreography::default());
        let names: Vec<String> = (0..300).rev().map(|i| format!("s{i:03}")).collect();
        let services: Vec<String> = names.iter().map(|n| format!(r#"{{"name":"{n}"}}"#)).collect();
        let text = format!(r#"{{"deployableServiceSpecs":[{}]}}"#, services.join(","));
        let chor = read_base_fast(&text).unwrap();
        let read: Vec<&str> = chor.deployable_service_specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(read, names);
    }
}
