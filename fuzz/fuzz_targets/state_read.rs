//! `state/dev.json` as `FileStore::read` reads it. A state that reads must write back to text
//! that reads as the same state, and answer what the planner and `show` ask of it.
#![no_main]

use std::path::Path;

use enact::state::store::parse_state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let display = Path::new("state/dev.json");
    match parse_state(display, text, "dev") {
        Ok(state) => {
            let json = state.to_json();
            match parse_state(display, &json, "dev") {
                Ok(again) => assert_eq!(again, state, "write then read changed the state:\n{json}"),
                Err(e) => panic!("the written state does not read back: {e}\n{json}"),
            }
            let chor = state.choreography();
            for service in chor.services() {
                let _ = state.endpoints(service.name());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
