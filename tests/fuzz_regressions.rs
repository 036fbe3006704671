//! Every input the fuzz targets (`fuzz/`, see fuzz/README.md) found a crash with, minimised, fed
//! through the same public entry point as the target, with the error or result it must give now.

use std::path::PathBuf;

use enact::apply::journal::{self, Record};
use enact::repo::{ConfigRepo, Settings};

fn repo() -> ConfigRepo {
    ConfigRepo { root: PathBuf::from("."), settings: Settings::default() }
}

/// Both paths of the spec loader: the fast one must leave the input to the located one, which
/// must refuse it with `message`, located at `at` (file:line:column).
fn assert_refused(base: &str, overlay: Option<&str>, message: &str, at: &str) {
    let repo = repo();
    let fast = repo.load_texts_fast("dev", base, overlay).expect("the fast path never fails");
    assert!(fast.is_none(), "the fast path took {base:?} / {overlay:?}: {:?}", fast.map(|f| f.choreography));
    let err = repo.load_texts("dev", base, overlay).expect_err("refused").to_string();
    assert!(err.contains(message), "{err}");
    assert!(err.contains(at), "{err}");
}

/// spec_parse, overlay_merge: `chor.json` of `[]` was an empty spec to the fast path (serde reads
/// a struct from an array of its fields), so `plan` would have destroyed every service, while the
/// located path refused it.
#[test]
fn a_spec_that_is_a_json_array_is_refused_by_both_paths() {
    assert_refused("[]\n", None, "a spec file must hold a JSON object", "chor.json:1:1");
    assert_refused("  []", Some("{}"), "a spec file must hold a JSON object", "chor.json:1:3");
    assert_refused("[[], []]", None, "a spec file must hold a JSON object", "chor.json:1:1");
}

/// The same for one service written as an array of its fields (`name` first).
#[test]
fn a_service_that_is_a_json_array_is_refused_by_both_paths() {
    let base = r#"{"deployableServiceSpecs": [["a"]]}"#;
    assert_refused(base, None, "a service must be a JSON object", "chor.json:1:29");
    let base = "{\"legacyServiceSpecs\": [\n  [\"w\", [\"weather\"]]\n]}";
    assert_refused(base, None, "a service must be a JSON object", "chor.json:2:3");
}

/// The fast path still takes what it took before: an object with objects in it.
#[test]
fn a_spec_of_objects_still_loads() {
    let base = r#"{"deployableServiceSpecs": [{"name": "a", "packageUri": "a.py", "port": 8001}]}"#;
    let fast = repo().load_texts_fast("dev", base, None).unwrap().expect("fast");
    let located = repo().load_texts_located("dev", base, None).unwrap();
    assert_eq!(fast.choreography, located.choreography);
    assert_eq!(fast.choreography.deployable_service_specs[0].name, "a");
}

/// journal_read's seed journal is read whole: every record kind, no damaged line, and the start
/// whose outcome never came is left open.
#[test]
fn the_seed_journal_reads_whole() {
    let bytes = include_bytes!("../fuzz/seeds/journal_read/interrupted.journal");
    let replay = journal::parse(bytes);
    assert!(replay.torn.is_empty(), "{:?}", replay.torn);
    assert_eq!(replay.records.len(), 14);
    assert_eq!(replay.begin, Some(("3f2c0000-0000-4000-8000-000000000001".to_string(), 3)));
    assert_eq!(replay.open.len(), 1, "{:?}", replay.open);
    assert!(matches!(replay.records[13], Record::ServiceRemoved { .. }));
    let torn = journal::parse(include_bytes!("../fuzz/seeds/journal_read/torn.journal"));
    assert_eq!((torn.records.len(), torn.torn.as_slice()), (5, &[6][..]));
}
