//! Happy paths of the command line, driven through the built binary in temporary config
//! repositories. Outputs are snapshots (`tests/snapshots/cli__*.snap`) with the temporary
//! directory shown as `[REPO]`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers
// ---------------------------------------------------------------------------------------------

/// A small choreography: two deployable services (one consuming the other and a legacy
/// service) and a legacy service.
const CHOR: &str = r#"{
  "deployableServiceSpecs": [
    {
      "name": "airline",
      "roles": ["airline"],
      "serviceType": "SOAP",
      "packageType": "COMMAND_LINE",
      "packageUri": "services/airline.py",
      "endpointName": "airline",
      "port": 1234,
      "numberOfInstances": 2,
      "resourceImpact": { "memory": "SMALL" },
      "version": "1.0"
    },
    {
      "name": "travelagency",
      "roles": ["travelagency"],
      "dependencies": [
        { "serviceSpecName": "airline", "serviceSpecRole": "airline" },
        { "serviceSpecName": "weather", "serviceSpecRole": "weather" }
      ],
      "serviceType": "REST",
      "packageUri": "services/travel.py",
      "port": 1235,
      "resourceImpact": { "memory": "MEDIUM" },
      "version": "1.0"
    }
  ],
  "legacyServiceSpecs": [
    {
      "name": "weather",
      "roles": ["weather"],
      "nativeURIs": ["http://10.0.0.5:8192/weather"]
    }
  ]
}
"#;

/// The same choreography with services and keys in another order, and other whitespace.
const CHOR_SHUFFLED: &str = r#"{"legacyServiceSpecs": [{"nativeURIs": ["http://10.0.0.5:8192/weather"], "roles": ["weather"], "name": "weather"}],
 "deployableServiceSpecs": [
  {"version": "1.0", "resourceImpact": {"memory": "MEDIUM"}, "port": 1235, "packageUri": "services/travel.py",
   "serviceType": "REST",
   "dependencies": [{"serviceSpecRole": "weather", "serviceSpecName": "weather"},
                    {"serviceSpecRole": "airline", "serviceSpecName": "airline"}],
   "roles": ["travelagency"], "name": "travelagency"},
  {"version": "1.0", "resourceImpact": {"memory": "SMALL"}, "numberOfInstances": 2, "port": 1234,
   "endpointName": "airline", "packageUri": "services/airline.py", "packageType": "COMMAND_LINE",
   "serviceType": "SOAP", "roles": ["airline"], "name": "airline"}]}
"#;

const DEV_OVERLAY: &str = r#"{
  "deployableServiceSpecs": [
    { "name": "airline", "numberOfInstances": 1 }
  ]
}
"#;

const PROD_OVERLAY: &str = r#"{
  "deployableServiceSpecs": [
    { "name": "airline", "numberOfInstances": 3, "resourceImpact": { "memory": "LARGE" } },
    { "name": "travelagency", "version": "1.1" }
  ]
}
"#;

const SETTINGS: &str = r#"{
  "defaultEnv": "dev",
  "defaultAccount": "local",
  "accounts": {
    "local": { "provider": "local" }
  }
}
"#;

/// One deployable service, and a state recording exactly it.
const ONE_SERVICE: &str = r#"{
  "deployableServiceSpecs": [
    {
      "name": "airline",
      "roles": ["airline"],
      "packageUri": "services/airline.py",
      "port": 1234,
      "version": "1.0"
    }
  ]
}
"#;

const ONE_SERVICE_STATE: &str = r#"{
  "formatVersion": 1,
  "lineage": "3f2c0000-0000-4000-8000-000000000001",
  "serial": 7,
  "env": "dev",
  "services": {
    "airline": {
      "kind": "deployable",
      "spec": {
        "name": "airline",
        "roles": ["airline"],
        "packageUri": "services/airline.py",
        "port": 1234,
        "version": "1.0"
      },
      "instances": [
        {
          "id": "airline-1",
          "node": "local-1",
          "status": "running",
          "nativeUri": "http://127.0.0.2:1234/airline",
          "pid": 41234
        }
      ]
    }
  },
  "nodes": {
    "local-1": { "account": "local", "provider": "local", "address": "127.0.0.2", "memory": "SMALL" }
  }
}
"#;

/// A temporary config repository.
struct Repo {
    dir: TempDir,
}

impl Repo {
    fn empty() -> Repo {
        Repo { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A repository of `files`, with the packages the fixtures name (plan checks that they
    /// exist).
    fn with(files: &[(&str, &str)]) -> Repo {
        let repo = Repo::empty();
        for package in ["services/airline.py", "services/travel.py"] {
            repo.write(package, "#!/bin/sh\n");
        }
        for (path, text) in files {
            repo.write(path, text);
        }
        repo
    }

    /// The travel choreography with dev and prod overlays.
    fn travel() -> Repo {
        Repo::with(&[
            ("chor.json", CHOR),
            ("enact.json", SETTINGS),
            ("envs/dev.json", DEV_OVERLAY),
            ("envs/prod.json", PROD_OVERLAY),
        ])
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, path: &str) -> PathBuf {
        self.path().join(path)
    }

    fn write(&self, path: &str, text: &str) {
        let full = self.file(path);
        fs::create_dir_all(full.parent().expect("parent")).expect("create dirs");
        fs::write(full, text).expect("write file");
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.file(path)).expect("read file")
    }

    /// `enact ARGS` run inside the repository, stdout and stderr piped, `NO_COLOR` unset.
    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("enact").expect("the enact binary");
        cmd.current_dir(self.path()).env_remove("NO_COLOR");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run enact")
    }

    /// Replaces the repository's path by `[REPO]`.
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        let mut paths = vec![self.path().to_string_lossy().into_owned()];
        if let Ok(canonical) = self.path().canonicalize() {
            paths.push(canonical.to_string_lossy().into_owned());
        }
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in paths {
            text = text.replace(&p, "[REPO]");
        }
        text
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn has_ansi(text: &str) -> bool {
    text.contains('\u{1b}')
}

// ---------------------------------------------------------------------------------------------
// init
// ---------------------------------------------------------------------------------------------

#[test]
fn init_creates_a_repository_and_refuses_a_second_time() {
    let repo = Repo::empty();
    let output = repo.run(&["init"]);
    assert_code(&output, 0);
    for file in ["chor.json", "enact.json", "envs/dev.json", "envs/test.json", "envs/prod.json", ".gitignore"] {
        assert!(repo.file(file).is_file(), "init did not create {file}");
    }
    assert!(repo.file("state").is_dir(), "init did not create state/");
    assert_eq!(stdout(&output), "", "init prints its report on stderr");
    insta::assert_snapshot!("init_stderr", repo.redact(&stderr(&output)));
    insta::assert_snapshot!("init_chor_json", repo.read("chor.json"));
    insta::assert_snapshot!("init_enact_json", repo.read("enact.json"));
    insta::assert_snapshot!("init_gitignore", repo.read(".gitignore"));
    assert_eq!(repo.read("envs/dev.json"), "{}\n");

    // The new repository is valid and plans nothing.
    assert_code(&repo.run(&["validate"]), 0);
    assert_code(&repo.run(&["plan", "--detailed-exitcode"]), 0);

    // A second init is refused and changes nothing.
    let before = repo.read("chor.json");
    repo.write("chor.json", CHOR);
    let again = repo.run(&["init"]);
    assert_code(&again, 1);
    assert_eq!(repo.read("chor.json"), CHOR);
    assert_ne!(before, CHOR);
    insta::assert_snapshot!("init_again_stderr", repo.redact(&stderr(&again)));
}

#[test]
fn init_with_dash_c_creates_the_repository_there() {
    let outer = Repo::empty();
    let output = outer.run(&["-C", "sub", "init"]);
    assert_code(&output, 0);
    assert!(outer.file("sub/chor.json").is_file());
    assert!(!outer.file("chor.json").exists());
}

// ---------------------------------------------------------------------------------------------
// validate
// ---------------------------------------------------------------------------------------------

#[test]
fn a_misspelt_service_name_in_an_overlay_is_named_with_the_one_meant() {
    let repo = Repo::travel();
    repo.write("envs/prod.json", r#"{"deployableServiceSpecs": [{"name": "airlne", "numberOfInstances": 3}]}"#);
    let output = repo.run(&["validate", "-e", "prod"]);
    assert_code(&output, 1);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("service `airlne`: has no `port`")
            && err.contains(
                "chor.json has no service `airlne`, so the overlay adds it as a new one; did you mean `airline`?"
            ),
        "{err}"
    );
    // Everything the misspelt service lacks follows from the one misspelling: one problem.
    assert!(err.contains("has no `port`; has no `packageUri`"), "{err}");
    assert_eq!(err.matches("did you mean").count(), 1, "{err}");
    assert_eq!(err.matches("error: ").count(), 1, "{err}");
    // A new service with a name of its own gets no such hint.
    repo.write("envs/prod.json", r#"{"deployableServiceSpecs": [{"name": "hotel", "numberOfInstances": 3}]}"#);
    let err = String::from_utf8_lossy(&repo.run(&["validate", "-e", "prod"]).stderr).into_owned();
    assert!(err.contains("service `hotel`: has no `port`") && !err.contains("did you mean"), "{err}");
}

#[test]
fn a_misspelt_provider_of_an_account_is_pointed_at_with_the_field_meant() {
    let repo = Repo::travel();
    let settings = repo.read("enact.json");
    repo.write("enact.json", &settings.replacen("\"provider\": \"local\"", "\"provder\": \"local\"", 1));
    let output = repo.run(&["validate"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    let line = repo.read("enact.json").lines().position(|l| l.contains("provder")).expect("the typo is there") + 1;
    assert!(
        err.contains(&format!("enact.json:{line}:"))
            && err.contains("account `local`: missing field `provider`; `provder` is no field of an account")
            && err.contains("help: did you mean `provider`?"),
        "{err}"
    );
    // With no field close to it, the account itself is named.
    repo.write("enact.json", &settings.replacen("\"provider\": \"local\"", "\"kind\": \"local\"", 1));
    let err = stderr(&repo.run(&["validate"]));
    assert!(err.contains("account `local`: missing field `provider`\n") && !err.contains("did you mean"), "{err}");
}

#[test]
fn outside_a_config_repository_the_help_names_the_init_that_makes_one_there() {
    let repo = Repo::empty();
    for (dir, shown) in [("fresh", "[REPO]/fresh"), ("with space's", r"'[REPO]/with space'\''s'")] {
        let output = repo.run(&["-C", dir, "plan"]);
        assert_code(&output, 1);
        let err = stderr(&output);
        let redacted = repo.redact(&err);
        assert!(redacted.contains(&format!("no config repository: neither [REPO]/{dir} nor")), "{redacted}");
        assert!(redacted.contains(&format!("help: `enact -C {shown} init` makes one there")), "{redacted}");
        // The command the help gives, as a shell runs it, makes one where plan looked.
        let command = err.split("help: `enact ").nth(1).and_then(|rest| rest.split('`').next()).expect("a command");
        let init = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("\"$0\" {command}"))
            .arg(env!("CARGO_BIN_EXE_enact"))
            .output()
            .expect("sh runs");
        assert_code(&init, 0);
        assert_code(&repo.run(&["-C", dir, "plan", "--refresh=false"]), 0);
    }
}

#[test]
fn a_mistyped_account_field_is_helped_by_its_provider_s_schema() {
    let repo = Repo::travel();
    let settings = repo.read("enact.json").replacen(
        "\"local\": { \"provider\": \"local\" }",
        "\"local\": { \"provider\": \"local\" },\n    \"rehearsal\": { \"provider\": \"simulated\", \"latencyMs\": \"fast\" }",
        1,
    );
    assert!(settings.contains("rehearsal"), "{settings}");
    repo.write("enact.json", &settings);
    let output = repo.run(&["validate"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(
        err.contains(
            "account `rehearsal`: /latencyMs: invalid type: string \"fast\", expected a whole number, 0 or more"
        ) && err.contains(
            "help: write `latencyMs` as a whole number, 0 or more; `enact schema enact.json` lists the fields of a `simulated` account"
        ),
        "{err}"
    );
    // What the help names exists and has the field.
    let schema = repo.run(&["schema", "enact.json"]);
    assert_code(&schema, 0);
    assert!(stdout(&schema).contains("\"latencyMs\""));
}

#[test]
fn state_adopt_says_why_there_is_nothing_to_adopt() {
    let repo = Repo::travel();
    let output = repo.run(&["state", "adopt", "--yes"]);
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "Nothing to adopt: `state adopt` takes in EC2 instances, and enact.json has no ec2 account.\n"
    );
}

#[test]
fn validate_checks_every_environment() {
    let repo = Repo::travel();
    let output = repo.run(&["validate"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("validate_all_envs", stdout(&output));

    let output = repo.run(&["validate", "-e", "prod"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("validate_prod", stdout(&output));
    // --quiet: only errors; a valid configuration prints nothing.
    let output = repo.run(&["-q", "validate"]);
    assert_code(&output, 0);
    assert_eq!((stdout(&output).as_str(), String::from_utf8_lossy(&output.stderr).as_ref()), ("", ""));
}

#[test]
fn a_state_dir_outside_the_repository_and_its_git_work_tree_is_warned_about() {
    // The config repository is `cfg/` inside the temporary directory.
    let repo = Repo::empty();
    let settings = |dir: &str| SETTINGS.replacen('{', &format!("{{\n  \"stateDir\": \"{dir}\","), 1);
    repo.write("cfg/chor.json", ONE_SERVICE);
    repo.write("cfg/services/airline.py", "#!/bin/sh\n");
    let validate = || repo.cmd().current_dir(repo.file("cfg")).args(["--no-color", "validate"]).output().expect("run");
    let outside = repo.file("outside").display().to_string();

    for (dir, warned) in
        [("../outside", true), ("./deep/../../outside", true), ("deep/state", false), ("state/../st", false)]
    {
        repo.write("cfg/enact.json", &settings(dir));
        let output = validate();
        assert_code(&output, 0);
        let err = stderr(&output);
        assert_eq!(err.contains("warning: `stateDir`"), warned, "{dir}: {err}");
        if warned {
            assert!(err.contains(&format!("(\"{dir}\") is {outside}, outside this repository")), "{err}");
            assert!(err.contains("point `stateDir` inside the repository, or remove it to use state/"), "{err}");
        }
    }
    // Beside the config repository but inside the git repository around it: versioned with it.
    let git = std::process::Command::new("git").arg("init").arg("-q").arg(repo.path()).status().expect("git");
    assert!(git.success());
    repo.write("cfg/enact.json", &settings("../outside"));
    let output = validate();
    assert_code(&output, 0);
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    // Out of the git work tree too: warned, naming both.
    repo.write("cfg/enact.json", &settings("../../elsewhere"));
    let err = stderr(&validate());
    assert!(err.contains("outside this repository") && err.contains("and its git work tree"), "{err}");
}

#[test]
fn logs_of_a_service_declared_but_never_applied_say_so() {
    let repo = Repo::travel();
    let output = repo.run(&["-e", "prod", "logs", "airline"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("env `prod` declares `airline`, but records no instance of it (not applied yet"), "{err}");
    assert!(err.contains("`enact -e prod apply` starts it"), "{err}");
    // A name the spec does not have is still said not to exist, with the names it has.
    let output = repo.run(&["-e", "prod", "logs", "airlin"]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains("env `prod` has no service `airlin`"), "{}", stderr(&output));
}

#[test]
fn logs_of_a_legacy_service_say_why_there_are_none() {
    let repo = Repo::travel();
    let state = serde_json::json!({
        "formatVersion": 1, "lineage": "l", "serial": 1, "env": "dev",
        "services": { "weather": { "kind": "legacy",
            "spec": { "name": "weather", "roles": ["weather"], "nativeURIs": ["http://127.0.0.1:9/weather"] },
            "instances": [] } },
        "nodes": {}
    });
    repo.write("state/dev.json", &serde_json::to_string_pretty(&state).expect("json"));
    let output = repo.run(&["-e", "dev", "logs", "weather"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("`weather` is a legacy service: it runs elsewhere, and enact keeps no output of it"), "{err}");
}

#[test]
fn validate_reports_the_spec_files_beside_an_invalid_enact_json() {
    let repo = Repo::travel();
    let settings = repo.read("enact.json").replacen('{', "{\n  \"bogus\": 1,", 1);
    repo.write("enact.json", &settings);
    let chor = repo.read("chor.json").replacen("\"port\"", "\"prot\"", 1);
    repo.write("chor.json", &chor);
    repo.write(
        "envs/dev.json",
        "{\"deployableServiceSpecs\": [{\"name\": \"airline\", \"numberOfInstances\": \"two\"}]}",
    );
    let output = repo.run(&["validate"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    // One run names every file's problem, enact.json's first.
    let at = |what: &str| err.find(what).unwrap_or_else(|| panic!("{what} not in {err}"));
    assert!(at("enact.json:2:3: unknown field `bogus`") < at("chor.json:"), "{err}");
    assert!(err.contains("unknown field `prot`") && err.contains("envs/dev.json:1:"), "{err}");
    assert!(err.contains("3 problems found; nothing was changed"), "{err}");

    // Files of the right shape: what the spec says wrong is reported too, whatever the
    // settings are (a dependency on no service, an overlay's misspelt service).
    repo.write("chor.json", &CHOR.replacen("\"serviceSpecName\": \"weather\"", "\"serviceSpecName\": \"wether\"", 1));
    repo.write("envs/dev.json", "{\"deployableServiceSpecs\": [{\"name\": \"airlin\", \"numberOfInstances\": 1}]}");
    let output = repo.run(&["validate"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("enact.json:2:3: unknown field `bogus`"), "{err}");
    assert!(err.contains("wether"), "the unknown dependency: {err}");
    assert!(err.contains("airlin") && err.contains("did you mean `airline`"), "the misspelt service: {err}");
    // The base's problem once, though every environment's merge shows it.
    assert_eq!(err.lines().filter(|l| l.contains("depends on service `wether`")).count(), 1, "{err}");
}

// ---------------------------------------------------------------------------------------------
// plan
// ---------------------------------------------------------------------------------------------

#[test]
fn plan_against_no_state_creates_everything() {
    let repo = Repo::travel();
    let output = repo.run(&["plan"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("plan_dev_no_state", stdout(&output));

    let output = repo.run(&["plan", "-e", "prod"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("plan_prod_no_state", stdout(&output));
}

#[test]
fn plan_json_has_the_machine_form_of_design_5() {
    let repo = Repo::travel();
    let output = repo.run(&["plan", "--json"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let plan = parse_json(&text);
    assert_eq!(plan["formatVersion"], 1);
    assert_eq!(plan["env"], "dev");
    assert_eq!(plan["priorState"]["lineage"], Value::Null);
    assert_eq!(plan["priorState"]["serial"], 0);
    let changes = plan["changes"].as_array().expect("changes is a list");
    assert_eq!(changes.len(), 3, "{text}");
    for change in changes {
        assert_eq!(change["action"], "create", "{change}");
        assert!(change["service"].is_string());
        assert!(change["fields"].is_array());
        assert!(change["rewire"].is_array());
    }
    let airline = changes.iter().find(|c| c["service"] == "airline").expect("airline is planned");
    assert_eq!(airline["instances"]["from"], 0);
    assert_eq!(airline["instances"]["to"], 1, "dev overlay sets 1 instance");
    assert_eq!(plan["summary"]["create"], 3);
    for key in ["update", "replace", "destroy"] {
        assert_eq!(plan["summary"][key], 0, "summary.{key}");
    }
    assert!(plan["nodes"].is_object());
    assert!(text.ends_with("}\n"), "final newline");
    insta::assert_snapshot!("plan_dev_no_state_json", text);

    // Pure: the same inputs give the same bytes.
    assert_eq!(stdout(&repo.run(&["plan", "--json"])), text);
}

#[test]
fn plan_detailed_exitcode_is_2_with_changes_and_0_without() {
    let repo = Repo::with(&[("chor.json", ONE_SERVICE)]);
    let output = repo.run(&["plan", "--detailed-exitcode"]);
    assert_code(&output, 2);
    // Without the flag, changes are not an exit code.
    assert_code(&repo.run(&["plan"]), 0);

    repo.write("state/dev.json", ONE_SERVICE_STATE);
    // The fixture state records an instance nothing runs: plan it offline.
    let output = repo.run(&["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("plan_no_changes", stdout(&output));
    let plan = parse_json(&stdout(&repo.run(&["plan", "--refresh=false", "--json"])));
    assert_eq!(plan["changes"], Value::Array(Vec::new()));
    assert_eq!(plan["priorState"]["lineage"], "3f2c0000-0000-4000-8000-000000000001");
    assert_eq!(plan["priorState"]["serial"], 7);

    // A version bump is a redeploy: changes again.
    repo.write("chor.json", &ONE_SERVICE.replace("\"1.0\"", "\"1.1\""));
    let output = repo.run(&["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_code(&output, 2);
    insta::assert_snapshot!("plan_version_bump", stdout(&output));
    let plan = parse_json(&stdout(&repo.run(&["plan", "--refresh=false", "--json"])));
    assert_eq!(plan["changes"][0]["action"], "replace");
    assert_eq!(plan["changes"][0]["fields"][0]["path"], "/version");
    assert_eq!(plan["summary"]["replace"], 1);
    assert_eq!(
        plan["changes"][0]["rollout"],
        serde_json::json!({
            "order": "new-before-old", "reason": "a spare slot for each new instance", "oldFirst": [], "emptyWindows": 0
        })
    );
}

#[test]
fn plan_says_when_a_replacement_stops_the_old_instance_first() {
    let repo = Repo::with(&[
        ("chor.json", &ONE_SERVICE.replace("\"1.0\"", "\"1.1\"")),
        ("state/dev.json", ONE_SERVICE_STATE),
        ("enact.json", r#"{"nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 1}}"#),
    ]);
    let output = repo.run(&["plan", "--refresh=false"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("plan_version_bump_old_before_new", stdout(&output));
    let plan = parse_json(&stdout(&repo.run(&["plan", "--refresh=false", "--json"])));
    assert_eq!(
        plan["changes"][0]["rollout"],
        serde_json::json!({
            "order": "old-before-new",
            "reason": "`vmLimit` 1 of account `local` is reached and each SMALL node already runs an instance on port 1234",
            "oldFirst": ["airline-1"],
            "emptyWindows": 1
        })
    );
    assert_eq!(plan["nodes"], serde_json::json!({}), "the replacement takes the node its old instance leaves");

    // Refusing to drop traffic refuses the plan, and says what to do.
    repo.write(
        "enact.json",
        r#"{"nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 1}, "rollout": {"maxUnavailable": 0}}"#,
    );
    let output = repo.run(&["plan", "--refresh=false"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("service `airline`") && err.contains("airline-1 would stop"), "{err}");
    assert!(err.contains("`rollout.maxUnavailable` ≥ 1"), "{err}");
}

#[test]
fn fmt_keeps_the_rollout_settings_of_enact_json() {
    let settings = r#"{"rollout": {"maxUnavailable": 1}, "envs": {"prod": {"rollout": {"maxUnavailable": 0}}},
        "services": {"airline": {"rollout": {"maxUnavailable": 0}}}}"#;
    let repo = Repo::with(&[("chor.json", ONE_SERVICE), ("enact.json", settings)]);
    assert_code(&repo.run(&["fmt"]), 0);
    let formatted = parse_json(&repo.read("enact.json"));
    assert_eq!(formatted, parse_json(settings));
    assert_code(&repo.run(&["validate"]), 0);
}

#[test]
fn plan_target_limits_the_plan_to_a_service_and_its_providers() {
    let repo = Repo::travel();
    let output = repo.run(&["plan", "--json", "--target", "airline"]);
    assert_code(&output, 0);
    let plan = parse_json(&stdout(&output));
    let services: Vec<&str> =
        plan["changes"].as_array().expect("changes").iter().map(|c| c["service"].as_str().expect("service")).collect();
    assert_eq!(services, ["airline"]);

    let output = repo.run(&["plan", "--json", "--target", "travelagency"]);
    let plan = parse_json(&stdout(&output));
    assert_eq!(plan["summary"]["create"], 3, "travelagency needs both providers");
}

#[test]
fn plan_out_then_show_and_show_json() {
    let repo = Repo::travel();
    let planned = repo.run(&["plan", "--out", "dev.plan.json"]);
    assert_code(&planned, 0);
    insta::assert_snapshot!("plan_out_stderr", repo.redact(&stderr(&planned)));
    let saved = repo.read("dev.plan.json");
    assert_eq!(saved, stdout(&repo.run(&["plan", "--json"])), "the saved plan is the machine form");

    let shown = repo.run(&["show", "dev.plan.json"]);
    assert_code(&shown, 0);
    assert_eq!(stdout(&shown), stdout(&planned), "show prints the plan as plan did");
    insta::assert_snapshot!("show_plan", stdout(&shown));

    let shown_json = repo.run(&["show", "--json", "dev.plan.json"]);
    assert_code(&shown_json, 0);
    assert_eq!(stdout(&shown_json), saved, "show --json is byte-equal to the file");

    // -C and a plan path relative to the repository.
    let elsewhere = Repo::empty();
    let output = elsewhere
        .cmd()
        .arg("-C")
        .arg(repo.path())
        .args(["show", "--json", "dev.plan.json"])
        .output()
        .expect("run enact");
    assert_code(&output, 0);
    assert_eq!(stdout(&output), saved);
}

#[test]
fn show_prints_the_recorded_state() {
    let repo = Repo::with(&[("chor.json", ONE_SERVICE)]);
    let output = repo.run(&["show"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("show_never_applied", stdout(&output));

    repo.write("state/dev.json", ONE_SERVICE_STATE);
    let output = repo.run(&["show"]);
    assert_code(&output, 0);
    insta::assert_snapshot!("show_state", stdout(&output));
    let output = repo.run(&["show", "--json"]);
    assert_code(&output, 0);
    let state = parse_json(&stdout(&output));
    assert_eq!(state["serial"], 7);
    assert_eq!(state["env"], "dev");
}

// ---------------------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------------------

#[test]
fn export_is_deterministic_and_ignores_service_and_key_order() {
    let repo = Repo::travel();
    let first = repo.run(&["export"]);
    assert_code(&first, 0);
    let second = repo.run(&["export"]);
    assert_eq!(first.stdout, second.stdout, "two runs, same bytes");
    insta::assert_snapshot!("export_dev", stdout(&first));

    let shuffled = Repo::with(&[
        ("chor.json", CHOR_SHUFFLED),
        ("enact.json", SETTINGS),
        ("envs/dev.json", DEV_OVERLAY),
        ("envs/prod.json", PROD_OVERLAY),
    ]);
    let other = shuffled.run(&["export"]);
    assert_code(&other, 0);
    assert_eq!(stdout(&first), stdout(&other), "service and key order do not matter");

    for env in ["dev", "prod"] {
        let a = repo.run(&["export", "-e", env]);
        let b = shuffled.run(&["export", "-e", env]);
        assert_code(&a, 0);
        assert_eq!(a.stdout, b.stdout, "env {env}");
    }
    // An environment with no overlay, no settings and no state does not exist.
    let missing = repo.run(&["export", "-e", "test"]);
    assert_code(&missing, 1);
    assert!(stderr(&missing).contains("env `test` does not exist"), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("the known environments are: dev, prod"), "{}", stderr(&missing));
    insta::assert_snapshot!("export_prod", stdout(&repo.run(&["export", "-e", "prod"])));
}

#[test]
fn export_from_state_rebuilds_the_spec() {
    let repo = Repo::with(&[("chor.json", ONE_SERVICE), ("state/dev.json", ONE_SERVICE_STATE)]);
    let from_state = repo.run(&["export", "--from-state"]);
    assert_code(&from_state, 0);
    assert_eq!(from_state.stdout, repo.run(&["export"]).stdout, "the state records exactly the spec");
}

// ---------------------------------------------------------------------------------------------
// fmt
// ---------------------------------------------------------------------------------------------

#[test]
fn fmt_check_fails_on_an_unformatted_repository_and_passes_after_fmt() {
    let repo = Repo::with(&[
        ("chor.json", CHOR_SHUFFLED),
        ("enact.json", "{\"accounts\": {\"local\": {\"provider\": \"local\"}}, \"defaultEnv\": \"dev\"}"),
        ("envs/dev.json", DEV_OVERLAY),
    ]);
    let check = repo.run(&["fmt", "--check"]);
    assert_code(&check, 1);
    assert_eq!(repo.read("chor.json"), CHOR_SHUFFLED, "--check writes nothing");
    insta::assert_snapshot!("fmt_check_stdout", stdout(&check));
    insta::assert_snapshot!("fmt_check_stderr", repo.redact(&stderr(&check)));

    let export_before = repo.run(&["export"]).stdout;
    let fmt = repo.run(&["fmt"]);
    assert_code(&fmt, 0);
    insta::assert_snapshot!("fmt_stdout", stdout(&fmt));
    insta::assert_snapshot!("fmt_chor_json", repo.read("chor.json"));
    insta::assert_snapshot!("fmt_enact_json", repo.read("enact.json"));

    let check = repo.run(&["fmt", "--check"]);
    assert_code(&check, 0);
    assert_eq!(stdout(&check), "");
    assert_eq!(repo.run(&["export"]).stdout, export_before, "fmt does not change the meaning");

    // fmt is idempotent.
    let again = repo.run(&["fmt"]);
    assert_code(&again, 0);
    assert_eq!(stdout(&again), "");
}

// ---------------------------------------------------------------------------------------------
// graph, schema, completions
// ---------------------------------------------------------------------------------------------

#[test]
fn graph_in_every_format() {
    let repo = Repo::travel();
    let text = repo.run(&["graph"]);
    assert_code(&text, 0);
    assert_eq!(text.stdout, repo.run(&["graph", "--format", "text"]).stdout, "text is the default");
    insta::assert_snapshot!("graph_text", stdout(&text));

    let dot = repo.run(&["graph", "--format", "dot"]);
    assert_code(&dot, 0);
    let dot = stdout(&dot);
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    insta::assert_snapshot!("graph_dot", dot);

    let svg = repo.run(&["graph", "--format", "svg"]);
    assert_code(&svg, 0);
    let svg = stdout(&svg);
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    for name in ["airline", "travelagency", "weather"] {
        assert!(svg.contains(name), "the svg names {name}");
    }
    assert_eq!(stdout(&repo.run(&["graph", "--format", "svg"])), svg, "deterministic");
}

#[test]
fn schema_is_json_describing_chor_json() {
    let repo = Repo::empty();
    let output = repo.run(&["schema"]);
    assert_code(&output, 0);
    let schema = parse_json(&stdout(&output));
    let properties = &schema["properties"];
    assert!(properties["deployableServiceSpecs"].is_object(), "{schema}");
    assert!(properties["legacyServiceSpecs"].is_object(), "{schema}");
    assert_eq!(schema["additionalProperties"], false, "unknown fields are errors");

    let output = repo.run(&["schema", "enact.json"]);
    assert_code(&output, 0);
    let schema = parse_json(&stdout(&output));
    assert!(schema["properties"]["rollout"].is_object(), "{schema}");
    assert!(schema["properties"]["services"].is_object(), "{schema}");
    assert!(stdout(&output).contains("\"maxUnavailable\""), "{schema}");
    assert_eq!(schema["additionalProperties"], false, "unknown fields are errors");
}

#[test]
fn completions_for_bash() {
    let repo = Repo::empty();
    let output = repo.run(&["completions", "bash"]);
    assert_code(&output, 0);
    let script = stdout(&output);
    assert!(!script.trim().is_empty());
    assert!(script.contains("enact"), "{script}");
    for command in ["plan", "validate", "export", "completions"] {
        assert!(script.contains(command), "completes {command}");
    }
}

// ---------------------------------------------------------------------------------------------
// colour
// ---------------------------------------------------------------------------------------------

#[test]
fn no_colour_when_piped() {
    let repo = Repo::travel();
    for args in [&["plan"][..], &["validate"], &["plan", "-e", "prod"], &["graph"]] {
        let output = repo.run(args);
        assert_code(&output, 0);
        assert!(!has_ansi(&stdout(&output)), "{args:?}: {}", stdout(&output));
        assert!(!has_ansi(&stderr(&output)), "{args:?}: {}", stderr(&output));
    }
    // An error on a pipe has no colour either.
    repo.write("envs/dev.json", "{\"deployableServiceSpecs\": [{\"name\": \"airline\", \"port\": 0}]}");
    let output = repo.run(&["plan"]);
    assert_code(&output, 1);
    assert!(stderr(&output).starts_with("error: "), "{}", stderr(&output));
    assert!(!has_ansi(&stderr(&output)), "{}", stderr(&output));
}

/// Runs `enact ARGS` on a pseudo-terminal (through util-linux `script`), returning what the
/// terminal showed; `None` when `script` is not available.
fn on_terminal(repo: &Repo, args: &str, no_color: Option<&str>) -> Option<String> {
    let binary = assert_cmd::cargo::cargo_bin("enact");
    let mut cmd = std::process::Command::new("script");
    cmd.current_dir(repo.path())
        .args(["-q", "-e", "-c"])
        .arg(format!("{} {args}", binary.display()))
        .arg("/dev/null")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    if let Some(value) = no_color {
        cmd.env("NO_COLOR", value);
    }
    let output = cmd.output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
#[allow(clippy::print_stderr, reason = "says why the test is skipped where no terminal can be made")]
fn colour_on_a_terminal_unless_no_color_or_the_flag() {
    let repo = Repo::travel();
    let Some(coloured) = on_terminal(&repo, "plan", None) else {
        eprintln!("skipped: util-linux `script` is not available to make a terminal");
        return;
    };
    assert!(has_ansi(&coloured), "a terminal gets colour:\n{coloured}");

    let plain = on_terminal(&repo, "plan", Some("1")).expect("script ran before");
    assert!(!has_ansi(&plain), "NO_COLOR=1 is honoured:\n{plain}");

    let plain = on_terminal(&repo, "--no-color plan", None).expect("script ran before");
    assert!(!has_ansi(&plain), "--no-color is honoured:\n{plain}");

    // An empty NO_COLOR does not count (no-color.org).
    let coloured = on_terminal(&repo, "plan", Some("")).expect("script ran before");
    assert!(has_ansi(&coloured), "an empty NO_COLOR is ignored:\n{coloured}");
}

#[test]
fn no_color_env_is_honoured_when_piped() {
    let repo = Repo::travel();
    let output = repo.cmd().env("NO_COLOR", "1").arg("plan").output().expect("run");
    assert_code(&output, 0);
    assert!(!has_ansi(&stdout(&output)));
    assert_eq!(stdout(&output), stdout(&repo.run(&["--no-color", "plan"])), "NO_COLOR and --no-color print the same");
}

// ---------------------------------------------------------------------------------------------
// environments
// ---------------------------------------------------------------------------------------------

#[test]
fn env_new_creates_an_environment_that_then_plans_and_env_list_shows_it() {
    let repo = Repo::travel();
    let refused = repo.run(&["-e", "staging", "plan"]);
    assert_code(&refused, 1);
    assert!(stderr(&refused).contains("enact env new staging"), "{}", stderr(&refused));
    assert!(!repo.file("envs/staging.json").exists());

    let created = repo.run(&["env", "new", "staging"]);
    assert_code(&created, 0);
    assert_eq!(repo.read("envs/staging.json"), "{}\n");
    assert!(stderr(&created).contains("Created env `staging`"), "{}", stderr(&created));
    assert_code(&repo.run(&["-e", "staging", "plan"]), 0);
    assert_code(&repo.run(&["env", "new", "staging"]), 1);

    let list = repo.run(&["env", "list"]);
    assert_code(&list, 0);
    let out = stdout(&list);
    for env in ["* dev", "  prod", "  staging"] {
        assert!(out.contains(env), "{out}");
    }
    assert!(out.contains("never applied"), "{out}");

    // A repository of a lone chor.json plans its default environment.
    let lone = Repo::with(&[("chor.json", ONE_SERVICE)]);
    assert_code(&lone.run(&["plan"]), 0);
    assert!(stdout(&lone.run(&["env", "list"])).contains("no overlay: the base spec alone"));
}

#[test]
fn a_byte_order_mark_is_read_and_an_error_after_it_keeps_its_line_and_column() {
    let repo = Repo::travel();
    repo.write("chor.json", &format!("\u{feff}{CHOR}"));
    repo.write("envs/dev.json", "\u{feff}{\r\n  \"deployableServiceSpecs\": [\r\n    { \"name\": \"airline\", \"numberOfInstances\": 1 }\r\n  ]\r\n}\r\n");
    repo.write("enact.json", &format!("\u{feff}{SETTINGS}"));
    assert_code(&repo.run(&["validate"]), 0);
    let with_bom = stdout(&repo.run(&["plan"]));
    let plain = Repo::travel();
    assert_eq!(with_bom, stdout(&plain.run(&["plan"])), "a BOM changes nothing");

    repo.write(
        "envs/dev.json",
        "\u{feff}{\r\n  \"deployableServiceSpecs\": [\r\n    { \"name\": \"airline\", \"prot\": 1 }\r\n  ]\r\n}\r\n",
    );
    let output = repo.run(&["plan"]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains("envs/dev.json:3:26:"), "{}", stderr(&output));
    assert!(stderr(&output).contains("did you mean `port`?"), "{}", stderr(&output));

    // fmt drops the mark (enact never writes one).
    assert_code(&repo.run(&["fmt", "--check"]), 1);
}

// ---------------------------------------------------------------------------------------------
// confirmation
// ---------------------------------------------------------------------------------------------

#[test]
fn without_a_terminal_a_change_is_refused_naming_the_flag_that_confirms_it() {
    let repo = Repo::travel();
    // apply has changes to make (nothing was ever applied): it asks, and there is no terminal.
    let output = repo.cmd().args(["apply", "--refresh=false"]).write_stdin("").output().expect("run");
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("refusing to change the environment without confirmation"), "{err}");
    assert!(err.contains("pass `--auto-approve` to confirm in advance"), "{err}");
    assert!(!repo.file("state/dev.json").exists(), "nothing was applied");

    // merge writes an overlay: it asks too, naming the file and `--yes`.
    let exported = stdout(&repo.run(&["-e", "prod", "export"]));
    repo.write("exported.json", &exported);
    let before = repo.read("envs/dev.json");
    let output = repo.cmd().args(["merge", "exported.json"]).write_stdin("").output().expect("run");
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("not writing envs/dev.json without confirmation"), "{err}");
    assert!(err.contains("pass `--yes` to write it"), "{err}");
    assert_eq!(repo.read("envs/dev.json"), before, "nothing was written");
}

#[test]
#[allow(clippy::print_stderr, reason = "says why the test is skipped where no terminal can be made")]
fn on_a_terminal_an_answer_other_than_yes_cancels() {
    let repo = Repo::travel();
    let exported = stdout(&repo.run(&["-e", "prod", "export"]));
    repo.write("exported.json", &exported);
    let before = repo.read("envs/dev.json");
    let binary = assert_cmd::cargo::cargo_bin("enact");
    let answered = std::process::Command::new("script")
        .current_dir(repo.path())
        .args(["-q", "-e", "-c"])
        .arg(format!("{} --no-color merge exported.json", binary.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().expect("stdin").write_all(b"no\n")?;
            child.wait_with_output()
        });
    let Ok(output) = answered else {
        eprintln!("skipped: util-linux `script` is not available to make a terminal");
        return;
    };
    let shown = String::from_utf8_lossy(&output.stdout);
    if !shown.contains("Only 'yes' will be accepted") {
        eprintln!("skipped: `script` did not give enact a terminal:\n{shown}");
        return;
    }
    assert!(shown.contains("Write envs/dev.json? Only 'yes' will be accepted: "), "{shown}");
    assert!(shown.contains("cancelled; nothing was written"), "{shown}");
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert_eq!(repo.read("envs/dev.json"), before, "nothing was written");
}
