//! A damaged state is never a dead end: `history` still answers and marks what is damaged, and
//! `state restore SERIAL` makes a backup current again as a new serial, keeping the damaged file.
//! (The simulated provider: nothing runs, the state is the whole story.)

mod common;

use common::local::*;
use serde_json::json;

#[test]
fn a_damaged_state_is_restored_from_a_backup_as_a_new_serial() {
    let settings = json!({
        "defaultEnv": "dev",
        "defaultAccount": "sim",
        "accounts": { "sim": { "provider": "simulated" } }
    });
    let spec = |n: u32| json!({ "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", 24600, n)] });
    let repo = Repo::new(&spec(1), Some(&settings));
    repo.apply();
    repo.write_chor(&spec(2));
    repo.apply();
    assert_eq!(repo.state()["serial"], 2);

    // Damaged: every command that needs the state says so and where to look.
    std::fs::write(repo.path("state/dev.json"), "{ \"formatVersion\": 1, \"lineage\": ").expect("damage the state");
    let err = stderr(&repo.enact_ok(&["plan"], 1));
    assert!(err.contains("the state file is damaged") && err.contains("enact history"), "{err}");
    // history answers, and marks the damaged one.
    let output = repo.enact_ok(&["history"], 0);
    let out = stdout(&output);
    assert!(out.contains("current  DAMAGED"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("1 ")), "serial 1 is listed: {out}");
    assert!(stderr(&output).contains("state restore"), "{}", stderr(&output));
    // A damaged backup is listed as damaged too, never skipped.
    std::fs::write(repo.path("state/.backups/dev/0000000000.json"), "not json").expect("a damaged backup");
    let out = stdout(&repo.enact_ok(&["history"], 0));
    assert!(out.contains("      0  DAMAGED"), "{out}");

    // Without a terminal and without --yes, nothing happens.
    repo.enact_ok(&["state", "restore", "1"], 1);
    let out = stdout(&repo.enact_ok(&["state", "restore", "1", "--yes"], 0));
    assert!(out.contains("from the backup of serial 1 as serial 3"), "{out}");
    let state = repo.state();
    assert_eq!(state["serial"], 3, "a new serial, never one used before");
    assert_eq!(instances(&state, "airline").len(), 1);
    let kept = std::fs::read_to_string(repo.path("state/.backups/dev/damaged-0000000003.json")).expect("kept");
    assert!(kept.starts_with("{ \"formatVersion\": 1, \"lineage\": "), "the damaged file is kept as it was");
    // A damaged backup cannot be restored; a missing one is named.
    let err = stderr(&repo.enact_ok(&["state", "restore", "0", "--yes"], 1));
    assert!(err.contains("damaged"), "{err}");
    let err = stderr(&repo.enact_ok(&["state", "restore", "9", "--yes"], 1));
    assert!(err.contains("no backup of serial 9"), "{err}");
    // And the environment converges from there.
    repo.apply();
    assert_eq!(instances(&repo.state(), "airline").len(), 2);
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}
