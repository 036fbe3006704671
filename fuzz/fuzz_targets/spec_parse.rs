//! `chor.json` alone, as `ConfigRepo::load` reads it: JSON syntax, the shape of every service,
//! the typed model and validation. The fast path and the located one must agree, and every
//! error must render (its location computed in the text).
#![no_main]

use std::path::PathBuf;

use enact::graph::ServiceGraph;
use enact::repo::{ConfigRepo, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let repo = ConfigRepo { root: PathBuf::from("."), settings: Settings::default() };
    let located = repo.load_texts_located("dev", text, None);
    if let Ok(Some(fast)) = repo.load_texts_fast("dev", text, None) {
        match &located {
            Ok(located) => assert_eq!(fast.choreography, located.choreography, "fast and located paths differ"),
            Err(e) => panic!("the fast path took a spec the located path refuses: {e}"),
        }
    }
    match located {
        Ok(effective) => {
            let graph = ServiceGraph::build(&effective.choreography);
            let _ = graph.groups();
            let _ = graph.to_text();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
