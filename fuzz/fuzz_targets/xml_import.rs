//! `enact import`'s XML readers: a ChorSpec (`<choreographySpec>`), the spec inside a
//! Choreography document, and a Choreography as a state. What imports must pass the located
//! checks without a panic, export again to XML that imports to the same spec, and give a state
//! that reads back as written.
#![no_main]

use std::path::Path;

use enact::repo::import::{import_choreography, import_choreography_spec};
use enact::spec::xml::{check_imported, export_chorspec, import_chorspec, root_name};
use enact::state::store::parse_state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("import.xml");
    let _ = root_name(xml);
    for imported in [import_chorspec(xml, file), import_choreography_spec(xml, file)] {
        match imported {
            Ok(chor) => {
                for d in check_imported(xml, file, &chor) {
                    let _ = d.to_string();
                }
                let exported = export_chorspec(&chor);
                match import_chorspec(&exported, Path::new("exported.xml")) {
                    Ok(again) => assert_eq!(again, chor, "export then import changed the spec:\n{exported}"),
                    Err(e) => panic!("the exported spec does not import: {e:?}\n{exported}"),
                }
            }
            Err(errors) => {
                for d in errors {
                    let _ = d.to_string();
                }
            }
        }
    }
    match import_choreography(xml, file, "dev") {
        Ok(state) => {
            let json = state.to_json();
            if let Err(e) = parse_state(Path::new("state/dev.json"), &json, "dev") {
                panic!("the imported state does not read back: {e}\n{json}");
            }
        }
        Err(errors) => {
            for d in errors {
                let _ = d.to_string();
            }
        }
    }
});
