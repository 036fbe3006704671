//! The planner on a (spec, state) pair: the input split at its first NUL byte into `chor.json`
//! and `state/dev.json`, each read as enact reads it; only a valid pair is planned, then
//! rendered (text and JSON) and applied to the model, as `enact plan` and `apply` do.
#![no_main]

use std::path::{Path, PathBuf};

use enact::paint::Painter;
use enact::plan::converge::apply_model;
use enact::plan::render::render;
use enact::plan::{PlanInput, plan};
use enact::repo::{ConfigRepo, Settings};
use enact::state::store::parse_state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(at) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(spec), Ok(state)) = (std::str::from_utf8(&data[..at]), std::str::from_utf8(&data[at + 1..])) else {
        return;
    };
    let repo = ConfigRepo { root: PathBuf::from("."), settings: Settings::default() };
    let Ok(effective) = repo.load_texts("dev", spec, None) else {
        return;
    };
    let Ok(state) = parse_state(Path::new("state/dev.json"), state, "dev") else {
        return;
    };
    let input = PlanInput {
        env: "dev",
        spec: &effective.choreography,
        state: &state,
        settings: &repo.settings,
        targets: &[],
        observed: None,
    };
    match plan(input) {
        Ok(planned) => {
            let _ = render(&planned.plan, Painter::new(false));
            let _ = serde_json::to_string(&planned.plan);
            let _ = apply_model(&state, &effective.choreography, &planned);
        }
        Err(errors) => {
            for d in errors {
                let _ = d.to_string();
            }
        }
    }
});
