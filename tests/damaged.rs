//! A damaged state is never a dead end: `history` still answers and marks what is damaged, and
//! `state restore SERIAL` makes a backup current again as a new serial, keeping the damaged file.
//! (The simulated provider: nothing runs, the state is the whole story.) A full disk while the
//! state is written says what was done and what is pending, and the next apply recovers it all.

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

/// Mounts a tmpfs of `kib` KiB on `dir`; `None` (with a note) where this test cannot mount
/// (not root, no mount): then it says so and passes, except under `CI=true`.
#[allow(clippy::print_stderr, reason = "says why the test is skipped where no tmpfs can be mounted")]
fn small_disk(dir: &std::path::Path, kib: u32) -> Option<()> {
    std::fs::create_dir_all(dir).expect("state dir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status();
    if status.is_ok_and(|s| s.success()) {
        return Some(());
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must be able to mount a tmpfs (run as root)");
    eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
    None
}

/// Fills the file system of `dir` until it is full.
fn fill(dir: &std::path::Path) {
    use std::io::Write as _;
    let mut filler = std::fs::File::create(dir.join("filler")).expect("filler");
    let block = vec![0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.sync_all();
}

#[test]
fn a_full_disk_when_the_state_is_written_says_what_was_done_and_loses_nothing() {
    let mut repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), None);
    let state_dir = repo.path("state");
    if small_disk(&state_dir, 2048).is_none() {
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state_dir.clone());
    // `fast` starts at once; `slow` (after it) takes 2 s to listen: the disk fills meanwhile.
    let airline = std::fs::read_to_string(repo.path("services/airline.py")).expect("airline.py");
    std::fs::write(repo.path("services/slow.py"), airline.replacen('\n', "\nimport time as _t\n_t.sleep(2)\n", 1))
        .expect("slow.py");
    make_executable(&repo.path("services/slow.py"));
    let mut fast = deployable("fast", "airline.py", "SOAP", 25700, 1);
    fast["roles"] = json!(["fast"]);
    let mut slow = deployable("slow", "slow.py", "SOAP", 25701, 1);
    slow["roles"] = json!(["slow"]);
    let slow = with_deps(slow, &[("fast", "fast")]);
    repo.write_chor(&json!({ "deployableServiceSpecs": [fast, slow] }));
    let pid = repo.spawn_enact(&["apply", "--auto-approve"], "apply");
    let journal = repo.path("state/dev.journal");
    wait_for("slow to start", std::time::Duration::from_secs(60), || {
        std::fs::read_to_string(&journal).unwrap_or_default().contains("\"op\":\"startIntent\",\"service\":\"slow\"")
    });
    fill(&state_dir);
    let exit = repo.wait_child(pid, std::time::Duration::from_secs(60));
    let err = std::fs::read_to_string(repo.path("apply.err")).unwrap_or_default();
    assert_eq!(exit.code(), Some(1), "{err}");
    assert!(err.contains("ran, but its state could not be recorded"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("instances started: fast-1 on http://"), "names the instance started: {err}");
    assert!(err.contains("free space on the disk"), "{err}");
    assert!(!repo.path("state/dev.json").exists(), "no half-written state");
    assert!(journal.exists(), "the journal is kept");

    // Space again: the next apply recovers and converges; nothing runs that the state does not know.
    std::fs::remove_file(state_dir.join("filler")).expect("filler removed");
    repo.apply();
    let (running, recorded) = repo.running_and_recorded(&["fast", "slow"]);
    assert_eq!(running, recorded, "{}", repo.state());
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    wait_dead(&running);
}

#[test]
fn a_damaged_compressed_backup_is_listed_and_refused_and_costs_only_what_was_made_against_it() {
    let settings = json!({
        "defaultEnv": "dev",
        "defaultAccount": "sim",
        "accounts": { "sim": { "provider": "simulated" } }
    });
    let spec = |n: u32| json!({ "deployableServiceSpecs": [deployable("airline", "airline.py", "SOAP", 24600, n)] });
    let repo = Repo::new(&spec(1), Some(&settings));
    for n in 1..=4 {
        repo.write_chor(&spec(n));
        repo.apply();
    }
    // Serials 1 to 3 are kept compressed: 1 whole, 2 and 3 as deltas against it.
    let backups = repo.path("state/.backups/dev");
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .expect("backups")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["0000000001.json.zst", "0000000002.json.zst", "0000000003.json.zst"]);
    let out = stdout(&repo.enact_ok(&["history"], 0));
    assert!(!out.contains("DAMAGED"), "{out}");
    assert_eq!(out.lines().count(), 5, "a title and serials 1 to 4: {out}");

    // The delta of serial 3 damaged: it alone is DAMAGED.
    let delta = backups.join("0000000003.json.zst");
    let good = std::fs::read(&delta).expect("read");
    let mut bytes = good.clone();
    let at = bytes.len() - 5;
    bytes[at] ^= 0xff;
    std::fs::write(&delta, &bytes).expect("damage");
    let output = repo.enact_ok(&["history"], 0);
    let out = stdout(&output);
    assert!(out.contains("      3  DAMAGED  state/.backups/dev/0000000003.json.zst: the backup is damaged"), "{out}");
    assert_eq!(out.matches("DAMAGED").count(), 1, "{out}");
    assert!(stderr(&output).contains("1 recorded state(s)"), "{}", stderr(&output));
    let err = stderr(&repo.enact_ok(&["rollback", "3", "--auto-approve"], 1));
    assert!(err.contains("0000000003.json.zst: the backup is damaged"), "{err}");
    std::fs::write(&delta, &good).expect("repair");

    // The full backup of serial 1 cut short: the deltas made against it cannot be read either,
    // and say so; rollback and restore refuse them and change nothing.
    let full = backups.join("0000000001.json.zst");
    let bytes = std::fs::read(&full).expect("read");
    std::fs::write(&full, &bytes[..bytes.len() / 2]).expect("damage");
    let out = stdout(&repo.enact_ok(&["history"], 0));
    assert_eq!(out.matches("DAMAGED").count(), 3, "{out}");
    assert!(out.contains("compressed against the backup of serial 1, which is damaged"), "{out}");
    let err = stderr(&repo.enact_ok(&["rollback", "2", "--auto-approve"], 1));
    assert!(err.contains("serial 1, which is damaged") && err.contains("enact history"), "{err}");
    let err = stderr(&repo.enact_ok(&["state", "restore", "2", "--yes"], 1));
    assert!(err.contains("serial 1, which is damaged"), "{err}");
    assert_eq!(repo.state()["serial"], 4);
    assert_eq!(instances(&repo.state(), "airline").len(), 4);
    // The next backup is whole again, not built on the damaged one; the current state is fine.
    repo.write_chor(&spec(2));
    repo.apply();
    assert!(backups.join("0000000004.json.zst").exists());
    let out = stdout(&repo.enact_ok(&["history"], 0));
    assert!(out.lines().any(|l| l.trim_start().starts_with("4 ") && !l.contains("DAMAGED")), "{out}");
    repo.enact_ok(&["plan", "--detailed-exitcode"], 0);
}
