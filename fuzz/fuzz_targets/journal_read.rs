//! `state/dev.journal` as a killed apply leaves it: read line by line (damaged lines skipped
//! and counted), then replayed onto the state it began from, as recovery does before it asks
//! the providers anything. The recovered state is written, so it must read back.
#![no_main]

use std::path::Path;

use enact::apply::journal::{apply_record, parse};
use enact::state::State;
use enact::state::store::parse_state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let replay = parse(data);
    let mut state = State::empty("dev");
    if let Some((lineage, serial)) = &replay.begin {
        state.lineage.clone_from(lineage);
        state.serial = *serial;
    }
    for record in &replay.records {
        apply_record(&mut state, record);
    }
    let json = state.to_json();
    if let Err(e) = parse_state(Path::new("state/dev.json"), &json, "dev") {
        panic!("the replayed state does not read back: {e}\n{json}");
    }
});
