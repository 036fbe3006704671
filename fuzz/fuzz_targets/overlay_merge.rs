//! A base spec and an environment's overlay (the input split at its first NUL byte), merged as
//! `ConfigRepo::load` merges them: the fast typed path and the located JSON path, which must
//! give the same spec wherever the fast one takes the input.
#![no_main]

use std::path::PathBuf;

use enact::repo::{ConfigRepo, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (base, overlay) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(base) = std::str::from_utf8(base) else {
        return;
    };
    let overlay = match overlay.map(std::str::from_utf8) {
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => return,
        None => None,
    };
    let repo = ConfigRepo { root: PathBuf::from("."), settings: Settings::default() };
    let located = repo.load_texts_located("dev", base, overlay);
    if let Ok(Some(fast)) = repo.load_texts_fast("dev", base, overlay) {
        match &located {
            Ok(located) => assert_eq!(fast.choreography, located.choreography, "fast and located paths differ"),
            Err(e) => panic!("the fast path took a merge the located path refuses: {e}"),
        }
    }
    match located {
        Ok(effective) => {
            for service in effective.choreography.services() {
                let _ = effective.locate(service.name(), &[]);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
