//! The corpus of bad inputs: every case under `tests/bad/<NN-name>/` is a small config
//! repository plus a `case.json` saying which command to run and what stderr must contain.
//!
//! For every case, `enact -C <copy> --no-color ARGS...` must exit with exactly 1, print each
//! expected substring on stderr, never panic, and leave every file of the copy untouched (a
//! refused command changes nothing). All failing cases are reported together.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// At least this many cases must be present (a guard against the walk silently finding none).
const MIN_CASES: usize = 150;

/// The file of a case that describes it; it is not part of the config repository.
const CASE_FILE: &str = "case.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Arguments after `-C <copy> --no-color`.
    args: Vec<String>,
    /// Substrings stderr must contain.
    stderr: Vec<String>,
    /// Substrings (secrets) that must appear in neither stdout nor stderr.
    #[serde(default)]
    absent: Vec<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("bad")
}

/// Copies the case directory `from` into `to`, leaving out `case.json`.
fn copy_case(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create case copy");
    for entry in fs::read_dir(from).expect("read case directory") {
        let entry = entry.expect("read case entry");
        let name = entry.file_name();
        if name == CASE_FILE {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy case file");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("read entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Every file under `root` (relative path, with directories marked by a trailing `/`) and
/// the SHA-256 of its bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read directory") {
            let entry = entry.expect("read entry");
            let path = entry.path();
            let relative = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            if entry.file_type().expect("file type").is_dir() {
                out.insert(format!("{relative}/"), Vec::new());
                walk(root, &path, out);
            } else {
                let bytes = fs::read(&path).expect("read file");
                out.insert(relative, Sha256::digest(&bytes).to_vec());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What changed between two snapshots, one line per file.
fn changes(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, hash) in before {
        match after.get(path) {
            None => out.push(format!("removed {path}")),
            Some(h) if h != hash => out.push(format!("changed {path}")),
            Some(_) => {}
        }
    }
    for path in after.keys() {
        if !before.contains_key(path) {
            out.push(format!("created {path}"));
        }
    }
    out
}

/// Runs one case; `Err` holds every way it failed.
fn run_case(dir: &Path) -> Result<(), String> {
    let case_text = fs::read_to_string(dir.join(CASE_FILE)).map_err(|e| format!("cannot read {CASE_FILE}: {e}"))?;
    let case: Case = serde_json::from_str(&case_text).map_err(|e| format!("{CASE_FILE} is not a valid case: {e}"))?;
    if case.stderr.is_empty() {
        return Err(format!("{CASE_FILE} lists no expected stderr substrings"));
    }

    let temp = tempfile::tempdir().expect("temp dir");
    let repo = temp.path().join("repo");
    copy_case(dir, &repo);
    let before = snapshot(&repo);

    let output = Command::cargo_bin("enact")
        .expect("the enact binary")
        .current_dir(temp.path())
        .env_remove("NO_COLOR")
        .arg("-C")
        .arg(&repo)
        .arg("--no-color")
        .args(&case.args)
        .output()
        .expect("run enact");

    let stderr = String::from_utf8_lossy(&output.stderr).replace(&*repo.to_string_lossy(), "[REPO]");
    let mut problems = Vec::new();
    match output.status.code() {
        Some(1) => {}
        Some(code) => problems.push(format!("exit code {code}, expected 1")),
        None => problems.push("killed by a signal".to_string()),
    }
    for expected in &case.stderr {
        if !stderr.contains(expected.as_str()) {
            problems.push(format!("stderr lacks {expected:?}"));
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    for secret in &case.absent {
        if stderr.contains(secret.as_str()) || stdout.contains(secret.as_str()) {
            problems.push(format!("the output shows {secret:?}"));
        }
    }
    if stderr.contains("panicked") {
        problems.push("stderr shows a panic".to_string());
    }
    for change in changes(&before, &snapshot(&repo)) {
        problems.push(format!("the repository was modified: {change}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut report = String::new();
    for p in &problems {
        let _ = writeln!(report, "    - {p}");
    }
    let _ = writeln!(report, "    args: {:?}", case.args);
    let _ = writeln!(report, "    actual stderr:");
    for line in stderr.lines() {
        let _ = writeln!(report, "      | {line}");
    }
    Err(report)
}

#[test]
fn every_bad_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("tests/bad exists")
        .map(|e| e.expect("read tests/bad entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= MIN_CASES, "tests/bad holds {} cases, expected at least {MIN_CASES}", dirs.len());

    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().expect("case name").to_string_lossy().into_owned();
        if let Err(report) = run_case(dir) {
            failures.push(format!("  {name}:\n{report}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}
