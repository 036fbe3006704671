//! The repository tests itself: every example validates, plans in every environment and is
//! formatted; every command the README shows runs (on the simulated provider where it would
//! start processes); the changelog follows Keep a Changelog.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn enact(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::cargo_bin("enact")
        .expect("the enact binary")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("run enact");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_example_validates_plans_every_environment_and_is_formatted() {
    let mut examples: Vec<PathBuf> = fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("chor.json").is_file())
        .collect();
    examples.sort();
    assert!(examples.len() >= 2, "{examples:?}");
    for example in &examples {
        let (code, out, err) = enact(example, &["validate"]);
        assert_eq!(code, 0, "{}: validate\n{out}{err}", example.display());
        let (code, out, err) = enact(example, &["fmt", "--check"]);
        assert_eq!(code, 0, "{}: fmt --check\n{out}{err}", example.display());
        let mut envs: BTreeSet<String> = fs::read_dir(example.join("envs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
            .collect();
        envs.insert("dev".to_string());
        for env in &envs {
            let (code, out, err) = enact(example, &["-e", env, "plan"]);
            assert_eq!(code, 0, "{}: plan -e {env}\n{out}{err}", example.display());
            assert!(out.contains("Plan: ") || out.contains("No changes"), "{out}");
        }
    }
}

/// The section names Keep a Changelog 1.1.0 defines, in its order.
const SECTIONS: [&str; 6] = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"];

/// Whether a `## ` heading is `[Unreleased]` or `[x.y.z] - YYYY-MM-DD`.
fn is_version_heading(heading: &str) -> bool {
    if heading == "[Unreleased]" {
        return true;
    }
    let Some((version, date)) = heading.split_once(" - ") else { return false };
    let version_ok = version.strip_prefix('[').and_then(|v| v.strip_suffix(']')).is_some_and(|v| {
        let parts: Vec<&str> = v.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    });
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let date_parts: Vec<&str> = date.split('-').collect();
    let date_ok = date_parts.len() == 3
        && date_parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [4, 2, 2]
        && date_parts.iter().all(|p| digits(p));
    version_ok && date_ok
}

/// Problems of a changelog against Keep a Changelog: one `## ` per version, only the standard
/// `### ` sections, each at most once per version, entries as list items.
fn changelog_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut lines = text.lines();
    if lines.next() != Some("# Changelog") {
        problems.push("the first line is not `# Changelog`".to_string());
    }
    let mut versions: Vec<String> = Vec::new();
    let mut sections: Vec<String> = Vec::new();
    let mut in_section = false;
    for (i, line) in text.lines().enumerate().skip(1) {
        let at = i + 1;
        if let Some(heading) = line.strip_prefix("## ") {
            if !is_version_heading(heading) {
                problems.push(format!("line {at}: `## {heading}` is neither `[Unreleased]` nor `[x.y.z] - date`"));
            }
            if versions.iter().any(|v| v == heading) {
                problems.push(format!("line {at}: version `{heading}` appears twice"));
            }
            if heading == "[Unreleased]" && !versions.is_empty() {
                problems.push(format!("line {at}: `[Unreleased]` must come first"));
            }
            versions.push(heading.to_string());
            sections.clear();
            in_section = false;
        } else if let Some(name) = line.strip_prefix("### ") {
            if versions.is_empty() {
                problems.push(format!("line {at}: `### {name}` before any version"));
            }
            if !SECTIONS.contains(&name) {
                problems.push(format!("line {at}: `### {name}` is not one of {SECTIONS:?}"));
            }
            if sections.iter().any(|s| s == name) {
                problems.push(format!("line {at}: a second `### {name}` in one version; merge them"));
            }
            sections.push(name.to_string());
            in_section = true;
        } else if line.starts_with('#') {
            problems.push(format!("line {at}: `{line}` is not a heading Keep a Changelog uses"));
        } else if in_section && !line.is_empty() && !line.starts_with("- ") && !line.starts_with("  ") {
            problems.push(format!("line {at}: an entry is a list item (`- …`): {line}"));
        }
    }
    if versions.is_empty() {
        problems.push("no version".to_string());
    }
    problems
}

#[test]
fn the_changelog_follows_keep_a_changelog() {
    let text = fs::read_to_string(root().join("CHANGELOG.md")).expect("CHANGELOG.md");
    let problems = changelog_problems(&text);
    assert!(problems.is_empty(), "{problems:#?}");
    // The checker catches what it is for.
    let bad = "# Changelog\n\n## [Unreleased]\n\n### Added\n- a\n\n### Added\n- b\n\n### Improved\n- c\n\n## 1.0\n";
    let found = changelog_problems(bad);
    assert_eq!(found.len(), 3, "{found:#?}");
}

/// README commands that are not run here, and why.
const NOT_RUN: [(&str, &str); 9] = [
    ("./scripts/travel.sh", "starts real processes and a legacy service; the apply tests cover it"),
    ("./scripts/test.sh", "it is the whole test run, this test included"),
    ("cargo install", "installs into ~/.cargo/bin"),
    ("cargo build", "the tests run on the binary cargo built for them"),
    ("cargo bench", "benchmarks take minutes (benches/README.md)"),
    ("benches/ssh_vs_ansible.sh", "installs Ansible and starts sshd"),
    ("benches/scale.sh", "starts thousands of processes for minutes (benches/README.md)"),
    ("git clone", "needs the network"),
    ("enact hosts trust", "needs the ssh hosts of an ssh account"),
];

/// One command of a README code block: the words after `enact` (or `cargo run … --`), where
/// its stdout goes, and whether an error is what it shows.
#[derive(Debug)]
struct ReadmeCommand {
    line: String,
    args: Vec<String>,
    stdout_to: Option<String>,
    cwd: Option<String>,
    /// The output a transcript (`$ ` block) shows under the command.
    shown: Vec<String>,
}

/// The commands of the README's code blocks: in a block with `$ ` prompts only the prompted
/// lines (the rest is output), elsewhere every line; a `  # comment` is not part of it.
fn readme_commands(text: &str) -> (Vec<ReadmeCommand>, Vec<String>) {
    let (mut commands, mut skipped) = (Vec::new(), Vec::new());
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None if line == "```" => current = Some(Vec::new()),
                // A block in another language (```json) is not commands.
                None => current = Some(vec!["\u{0}"]),
            }
            continue;
        }
        if let Some(block) = current.as_mut() {
            block.push(line);
        }
    }
    let mut cwd: Option<String> = None;
    for block in blocks {
        if block.first() == Some(&"\u{0}") {
            continue;
        }
        let prompted = block.iter().any(|l| l.starts_with("$ "));
        for (index, raw) in block.iter().enumerate() {
            let line = if prompted {
                match raw.strip_prefix("$ ") {
                    Some(l) => l,
                    None => continue,
                }
            } else {
                raw
            };
            let shown: Vec<String> = if prompted {
                block[index + 1..].iter().take_while(|l| !l.starts_with("$ ")).map(|l| (*l).to_string()).collect()
            } else {
                Vec::new()
            };
            let comment = line.split_once(" # ").map(|(_, c)| c.trim().to_string());
            let line = line.split(" # ").next().unwrap_or_default().trim();
            // An error shown under a condition the comment states ("with a typo in chor.json")
            // is not the copy's: not run.
            if shown.first().is_some_and(|l| l.starts_with("error:")) && comment.is_some() {
                skipped.push(format!("{line} (shows an error {})", comment.unwrap_or_default()));
                continue;
            }
            if line.is_empty() {
                continue;
            }
            if let Some(dir) = line.strip_prefix("cd ") {
                cwd = Some(dir.to_string());
                continue;
            }
            if let Some((prefix, _)) = NOT_RUN.iter().find(|(p, _)| line.starts_with(p)) {
                skipped.push(format!("{line} ({prefix})"));
                continue;
            }
            let (command, stdout_to) = match line.split_once(" > ") {
                Some((c, f)) => (c.trim(), Some(f.trim().to_string())),
                None => (line, None),
            };
            let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
            let args = if words.first().map(String::as_str) == Some("enact") {
                words[1..].to_vec()
            } else if command.starts_with("cargo run") {
                let at = words.iter().position(|w| w == "--").expect("cargo run … -- ARGS");
                words[at + 1..].to_vec()
            } else {
                panic!("a README command this test does not know how to run: {line}");
            };
            commands.push(ReadmeCommand { line: line.to_string(), args, stdout_to, cwd: cwd.clone(), shown });
        }
    }
    (commands, skipped)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).expect("read directory").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
#[allow(clippy::print_stderr, reason = "lists the README commands that are not run, and why")]
fn every_command_of_the_readme_runs() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let (commands, skipped) = readme_commands(&readme);
    assert!(commands.len() >= 25, "{commands:#?}");
    // A scratch copy of the repository's examples and recorded state; every service goes to
    // the example's simulated account, so nothing is started.
    let scratch = tempfile::tempdir().expect("tempdir");
    // A git work tree, as a clone of this repository is: the travel example's `stateDir`
    // (`../../state`) stays inside it, which enact does not warn about.
    let git = std::process::Command::new("git").args(["init", "-q"]).arg(scratch.path()).status().expect("git");
    assert!(git.success(), "git init");
    copy_dir(&root().join("examples"), &scratch.path().join("examples"));
    copy_dir(&root().join("state"), &scratch.path().join("state"));
    fs::copy(root().join("tests/fixtures/xml/listing-2-1-chorspec.xml"), scratch.path().join("chorspec.xml"))
        .expect("a ChorSpec for import-xml");
    let travel = scratch.path().join("examples/travel");
    fs::copy(root().join("tests/fixtures/xml/listing-2-1-chorspec.xml"), travel.join("chorspec.xml")).expect("copy");
    fs::copy(root().join("tests/fixtures/xml/listing-2-2-choreography.xml"), travel.join("choreography.xml"))
        .expect("copy");
    let settings_path = travel.join("enact.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&settings_path).expect("enact.json")).expect("JSON");
    settings["defaultAccount"] = serde_json::json!("rehearsal");
    settings["accounts"]["rehearsal"]["latencyMs"] = serde_json::json!(0);
    fs::write(&settings_path, serde_json::to_string_pretty(&settings).expect("JSON") + "\n").expect("write");
    for command in &commands {
        let dir = match &command.cwd {
            Some(dir) => scratch.path().join(dir),
            None => scratch.path().to_path_buf(),
        };
        let args: Vec<&str> = command.args.iter().map(String::as_str).collect();
        let (code, out, err) = enact(&dir, &args);
        let shows_error = command.shown.first().is_some_and(|l| l.starts_with("error:"));
        let allowed: &[i32] = if shows_error {
            &[1]
        } else if args.contains(&"--detailed-exitcode") {
            &[0, 2]
        } else {
            &[0]
        };
        assert!(
            allowed.contains(&code),
            "README: `{}` exited {code}\n--- stdout\n{out}\n--- stderr\n{err}",
            command.line
        );
        // A transcript shown in full (nothing elided with `…`) is what the command prints.
        let shown = command.shown.iter().map(|l| l.trim_end()).filter(|l| !l.is_empty()).collect::<Vec<_>>();
        if !shown.is_empty() && !shown.iter().any(|l| l.contains('…')) {
            let printed = if shows_error { &err } else { &out };
            let printed: Vec<&str> = printed.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
            assert_eq!(printed, shown, "README: `{}` prints what the README shows", command.line);
        }
        if let Some(file) = &command.stdout_to {
            fs::write(dir.join(file), out).expect("redirect");
        }
    }
    eprintln!("ran {} README commands; not run:\n  {}", commands.len(), skipped.join("\n  "));
}
