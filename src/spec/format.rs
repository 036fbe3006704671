//! Canonical layout of spec files for `enact fmt`: services sorted by name, keys in the order
//! of the spec model, 2-space indent, final newline. Content is kept as written (defaults,
//! `null`s and `$delete` included): formatting never changes meaning.

use serde_json::{Map, Value};

/// The order keys appear in: the spec model's, directives last, anything else alphabetical.
/// The plan lists a service's changed fields in this order too ([`field_rank`]).
const ORDER: [&str; 25] = [
    "deployableServiceSpecs",
    "legacyServiceSpecs",
    "name",
    "roles",
    "dependencies",
    "serviceSpecName",
    "serviceSpecRole",
    "serviceType",
    "packageType",
    "packageUri",
    "endpointName",
    "port",
    "numberOfInstances",
    "resourceImpact",
    "memory",
    "cpu",
    "storage",
    "network",
    "version",
    "cloudAccount",
    "desiredQoS",
    "responseTimeMetric",
    "acceptablePercentage",
    "maxDesiredResponseTime",
    "nativeURIs",
];

fn rank(key: &str) -> (usize, &str) {
    match ORDER.iter().position(|k| *k == key) {
        Some(i) => (i, ""),
        None if key.starts_with('$') => (ORDER.len() + 1, key),
        None => (ORDER.len(), key),
    }
}

/// Reorders a parsed spec file into its canonical layout.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)));
            let mut out = Map::new();
            for key in keys {
                let mut child = canonical(&map[key]);
                if (key == "deployableServiceSpecs" || key == "legacyServiceSpecs")
                    && let Value::Array(items) = &mut child
                {
                    items.sort_by(|a, b| {
                        let name = |v: &Value| v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                        name(a).cmp(&name(b))
                    });
                }
                out.insert(key.clone(), child);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Pretty JSON with a final newline.
pub fn to_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// A choreography as a spec file in canonical layout, every field kept as it is set (a
/// default value written out stays: `import-xml` keeps what the XML states), unlike
/// [`crate::spec::Choreography::to_canonical_json`], which leaves defaults out.
pub fn as_written(chor: &crate::spec::Choreography) -> String {
    to_text(&canonical(&serde_json::to_value(chor).unwrap_or_default()))
}

/// Where `key` stands in the spec model's order of fields (the order `enact fmt` writes); keys it does not
/// know come after every known one.
pub fn field_rank(key: &str) -> usize {
    ORDER.iter().position(|k| *k == key).unwrap_or(ORDER.len())
}
