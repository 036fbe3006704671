//! Every input the fuzz targets (`fuzz/`, see fuzz/README.md) found a crash with, minimised, fed
//! through the same public entry point as the target, with the error or result it must give now.

use std::path::{Path, PathBuf};

use enact::apply::journal::{self, Record};
use enact::repo::import::{import_choreography, import_choreography_spec};
use enact::repo::{ConfigRepo, Settings};
use enact::spec::xml::{export_chorspec, import_chorspec};

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

/// xml_import: a raw NUL byte in text was imported, and the spec exported from it held `&#0;`,
/// which no XML reader takes (so `export` wrote a file `import` refuses). XML allows U+0000 in no
/// form: the importer refuses it, located at the byte.
#[test]
fn a_nul_character_in_xml_text_is_refused_where_it_is() {
    let xml = "<choreography><choreographySpec><legacyServiceSpecs><dependencies><serviceSpecName>\0\
               </serviceSpecName><serviceSpecRole></serviceSpecRole></dependencies><name></name>\
               </legacyServiceSpecs></choreographySpec></choreography>";
    let file = Path::new("import.xml");
    for errors in [
        import_choreography_spec(xml, file).expect_err("refused"),
        import_choreography(xml, file, "dev").expect_err("refused"),
    ] {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:#?}");
        assert!(text[0].starts_with("import.xml:1:84: malformed XML: a NUL character (U+0000)"), "{text:#?}");
    }
    let chorspec = "<choreographySpec><legacyServiceSpecs><name>w<![CDATA[a\0]]></name></legacyServiceSpecs>\
                    </choreographySpec>";
    let errors = import_chorspec(chorspec, file).expect_err("refused");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].to_string().starts_with("import.xml:1:56: malformed XML: a NUL character"), "{errors:#?}");
}

/// Other control characters still import, and export to character references that import again.
#[test]
fn other_control_characters_still_round_trip_through_xml() {
    let xml = "<choreographySpec><legacyServiceSpecs><name>w</name><roles>a&#1;b\u{2}</roles>\
               <nativeURIs>http://h/w</nativeURIs></legacyServiceSpecs></choreographySpec>";
    let chor = import_chorspec(xml, Path::new("import.xml")).expect("imports");
    assert_eq!(chor.legacy_service_specs[0].roles, ["a\u{1}b\u{2}"]);
    let again = import_chorspec(&export_chorspec(&chor), Path::new("exported.xml")).expect("imports again");
    assert_eq!(again, chor);
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
