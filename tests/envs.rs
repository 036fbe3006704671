//! Environments as code, through the built binary: promotion (every case of the three-way merge), merge,
//! diff, scale, provenance, and every refused command leaving every file as it was.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

struct Repo {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

fn service(name: &str, deps: &[&str]) -> Value {
    json!({
        "name": name, "roles": [name], "packageUri": "services/x.py", "port": 9000,
        "version": "1.0",
        "dependencies": deps.iter().map(|d| json!({ "serviceSpecName": d, "serviceSpecRole": d })).collect::<Vec<_>>()
    })
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("envs")).expect("envs");
        let repo = Repo { root, _dir: dir };
        repo.write("chor.json", &json!({ "deployableServiceSpecs": [service("api", &[]), service("web", &["api"])] }));
        repo.write(
            "enact.json",
            &json!({ "accounts": { "sim": { "provider": "simulated" } }, "defaultAccount": "sim" }),
        );
        repo.write("envs/dev.json", &json!({}));
        repo.write(
            "envs/test.json",
            &json!({ "deployableServiceSpecs": [{ "name": "api", "numberOfInstances": 2, "resourceImpact": { "memory": "MEDIUM" } }] }),
        );
        repo.write(
            "envs/prod.json",
            &json!({ "deployableServiceSpecs": [{ "name": "api", "numberOfInstances": 4, "resourceImpact": { "memory": "LARGE" } }] }),
        );
        repo
    }

    fn write(&self, path: &str, value: &Value) {
        fs::write(self.root.join(path), format!("{}\n", serde_json::to_string_pretty(value).expect("json")))
            .expect("write");
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.root.join(path)).unwrap_or_default()
    }

    /// Every file of the repository and its contents.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &mut out);
        out
    }

    fn enact(&self, args: &[&str]) -> (i32, String, String) {
        common::enact_in(&self.root, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.enact(args);
        assert_eq!(code, 0, "enact {args:?}\n{out}\n{err}");
        out
    }

    /// A refused command: exit 1 and no file changed.
    fn refused(&self, args: &[&str]) -> String {
        let before = self.snapshot();
        let (code, out, err) = self.enact(args);
        assert_eq!(code, 1, "enact {args:?} should be refused\n{out}\n{err}");
        assert_eq!(self.snapshot(), before, "enact {args:?} changed files");
        format!("{out}{err}")
    }

    /// The effective spec of `env` as JSON.
    fn effective(&self, env: &str) -> Value {
        serde_json::from_str(&self.ok(&["-e", env, "export"])).expect("export is JSON")
    }

    fn field(&self, env: &str, service: &str, field: &str) -> Value {
        let spec = self.effective(env);
        let services = spec["deployableServiceSpecs"].as_array().cloned().unwrap_or_default();
        let found = services.into_iter().find(|s| s["name"] == service).unwrap_or(Value::Null);
        found[field].clone()
    }

    fn set_version(&self, env: &str, service: &str, version: &str) {
        let path = format!("envs/{env}.json");
        let mut overlay: Value = serde_json::from_str(&self.read(&path)).unwrap_or(json!({}));
        let list = overlay["deployableServiceSpecs"].as_array().cloned().unwrap_or_default();
        let mut list: Vec<Value> = list.into_iter().filter(|s| s["name"] != service).collect();
        let mut entry = self_entry(&overlay, service);
        entry["version"] = json!(version);
        list.push(entry);
        overlay["deployableServiceSpecs"] = Value::Array(list);
        self.write(&path, &overlay);
    }
}

fn self_entry(overlay: &Value, service: &str) -> Value {
    overlay["deployableServiceSpecs"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == service).cloned())
        .unwrap_or_else(|| json!({ "name": service }))
}

#[test]
fn a_version_bump_moves_dev_to_test_to_prod_keeping_each_environments_own_fields() {
    let repo = Repo::new();
    repo.set_version("dev", "api", "1.1");
    let out = repo.ok(&["promote", "dev", "test", "--yes"]);
    assert!(out.contains("~ api: updated version"), "{out}");
    repo.ok(&["promote", "test", "prod", "--yes"]);
    for (env, instances, memory) in [("test", 2, "MEDIUM"), ("prod", 4, "LARGE")] {
        assert_eq!(repo.field(env, "api", "version"), json!("1.1"), "{env}");
        assert_eq!(repo.field(env, "api", "numberOfInstances"), json!(instances), "{env}");
        assert_eq!(repo.field(env, "api", "resourceImpact"), json!({ "memory": memory }), "{env}");
    }
    // The promotion is recorded: source, digest and values.
    let overlay: Value = serde_json::from_str(&repo.read("envs/prod.json")).expect("json");
    assert_eq!(overlay["$promotions"]["api"]["from"], json!("test"));
    assert_eq!(overlay["$promotions"]["api"]["values"]["version"], json!("1.1"));
    assert!(overlay["$promotions"]["api"]["digest"].as_str().is_some_and(|d| d.starts_with("sha256:")));
    // Promoting again changes nothing.
    let before = repo.snapshot();
    let out = repo.ok(&["promote", "test", "prod", "--yes"]);
    assert!(out.contains("nothing to write"), "{out}");
    assert_eq!(repo.snapshot(), before);
}

#[test]
fn only_promotes_the_named_services() {
    let repo = Repo::new();
    repo.set_version("dev", "api", "2.0");
    repo.set_version("dev", "web", "2.0");
    repo.ok(&["promote", "dev", "test", "--only", "web", "--yes"]);
    assert_eq!(repo.field("test", "web", "version"), json!("2.0"));
    assert_eq!(repo.field("test", "api", "version"), json!("1.0"));
    let out = repo.refused(&["promote", "dev", "test", "--only", "nosuch", "--yes"]);
    assert!(out.contains("`--only` names no service") && out.contains("nosuch"), "{out}");
}

#[test]
fn a_field_changed_in_both_since_the_last_promotion_is_a_conflict_until_forced() {
    let repo = Repo::new();
    repo.set_version("dev", "api", "1.1");
    repo.ok(&["promote", "dev", "test", "--yes"]);
    // A hotfix in test, and a new version in dev.
    repo.set_version("test", "api", "1.1-hotfix");
    repo.set_version("dev", "api", "1.2");
    let out = repo.refused(&["promote", "dev", "test", "--yes"]);
    assert!(out.contains("/api/version"), "{out}");
    assert!(out.contains("base \"1.1\"") && out.contains("\"1.2\"") && out.contains("\"1.1-hotfix\""), "{out}");
    assert!(out.contains("--force"), "{out}");
    // Only test changed it (dev is back to what was promoted): test's is kept, no conflict.
    repo.set_version("dev", "api", "1.1");
    let out = repo.ok(&["promote", "dev", "test", "--yes"]);
    assert!(out.contains("kept this environment's own version"), "{out}");
    assert_eq!(repo.field("test", "api", "version"), json!("1.1-hotfix"));
    // --force takes dev's.
    repo.set_version("dev", "api", "1.3");
    repo.ok(&["promote", "dev", "test", "--yes", "--force"]);
    assert_eq!(repo.field("test", "api", "version"), json!("1.3"));
}

#[test]
fn a_service_new_in_dev_is_created_and_one_test_cannot_complete_is_refused() {
    let repo = Repo::new();
    let mut dev: Value = json!({ "deployableServiceSpecs": [service("cache", &[]), service("search", &["cache"])] });
    repo.write("envs/dev.json", &dev);
    // search alone cannot work in test: it calls cache, which test does not have.
    let out = repo.refused(&["promote", "dev", "test", "--only", "search", "--yes"]);
    assert!(out.contains("search") && out.contains("cannot be completed") && out.contains("cache"), "{out}");
    // Both together can.
    let out = repo.ok(&["promote", "dev", "test", "--yes"]);
    assert!(out.contains("+ cache: created") && out.contains("+ search: created"), "{out}");
    assert_eq!(repo.field("test", "search", "version"), json!("1.0"));
    // Environment-local fields are not copied: test's defaults apply.
    dev["deployableServiceSpecs"][0]["numberOfInstances"] = json!(7);
    repo.write("envs/dev.json", &dev);
    repo.ok(&["promote", "dev", "test", "--yes"]);
    assert_eq!(repo.field("test", "cache", "numberOfInstances"), Value::Null);
}

#[test]
fn a_service_removed_in_dev_is_reported_and_removed_only_with_prune() {
    let repo = Repo::new();
    repo.write("envs/dev.json", &json!({ "deployableServiceSpecs": [{ "name": "web", "$delete": true }] }));
    let out = repo.ok(&["promote", "dev", "test", "--yes"]);
    assert!(out.contains("web: not in the source; kept (pass --prune"), "{out}");
    assert!(!repo.field("test", "web", "name").is_null());
    let out = repo.ok(&["promote", "dev", "test", "--yes", "--prune"]);
    assert!(out.contains("- web: removed"), "{out}");
    assert!(repo.field("test", "web", "name").is_null());
    assert!(repo.read("envs/test.json").contains("\"$delete\": true"));
}

#[test]
fn refused_commands_change_no_file() {
    let repo = Repo::new();
    let out = repo.refused(&["promote", "dev", "staging", "--yes"]);
    assert!(out.contains("env `staging` does not exist") && out.contains("enact env new staging"), "{out}");
    let out = repo.refused(&["promote", "dev", "dev", "--yes"]);
    assert!(out.contains("into itself"), "{out}");
    repo.set_version("dev", "api", "9.9");
    let out = repo.refused(&["promote", "dev", "test"]);
    assert!(out.contains("--yes"), "no terminal, no --yes: {out}");
    fs::write(repo.root.join("bad.json"), "{ \"deployableServiceSpecs\": [ { \"name\": \"x\", \"prot\": 1 } ] }")
        .expect("write");
    let out = repo.refused(&["-e", "test", "merge", "bad.json", "--yes"]);
    assert!(out.contains("bad.json:1:") && out.contains("unknown field `prot`"), "{out}");
    let out = repo.refused(&["-e", "test", "merge", "missing.json", "--yes"]);
    assert!(out.contains("cannot read missing.json"), "{out}");
    let out = repo.refused(&["diff", "dev", "nowhere"]);
    assert!(out.contains("env `nowhere` does not exist"), "{out}");
    let out = repo.refused(&["-e", "test", "scale", "api=-1"]);
    assert!(out.contains("not a count"), "{out}");
    let out = repo.refused(&["-e", "test", "scale", "ghost=2"]);
    assert!(out.contains("no service `ghost`"), "{out}");
}

#[test]
fn merge_takes_an_exported_spec_into_an_environment() {
    let repo = Repo::new();
    repo.set_version("test", "api", "3.0");
    fs::write(repo.root.join("test-export.json"), repo.ok(&["-e", "test", "export"])).expect("write");
    let out = repo.ok(&["-e", "prod", "merge", "test-export.json", "--yes"]);
    assert!(out.contains("~ api: updated"), "{out}");
    assert!(out.contains("--- envs/prod.json"), "shows the diff: {out}");
    // prod now has test's api exactly (version, instances and memory alike).
    assert_eq!(repo.field("prod", "api", "version"), json!("3.0"));
    assert_eq!(repo.field("prod", "api", "numberOfInstances"), json!(2));
    // A file without `web`: kept unless --prune.
    let mut partial = repo.effective("test");
    partial["deployableServiceSpecs"] = Value::Array(
        partial["deployableServiceSpecs"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|s| s["name"] != "web")
            .cloned()
            .collect(),
    );
    repo.write("partial.json", &partial);
    let out = repo.ok(&["-e", "prod", "merge", "partial.json", "--yes"]);
    assert!(out.contains("web: not in the source; kept"), "{out}");
    repo.ok(&["-e", "prod", "merge", "partial.json", "--yes", "--prune"]);
    assert!(repo.field("prod", "web", "name").is_null());
}

#[test]
fn diff_shows_promotable_and_environment_local_differences_apart() {
    let repo = Repo::new();
    repo.set_version("test", "api", "1.5");
    let out = repo.ok(&["diff", "test", "prod"]);
    assert!(out.contains("--- env test") && out.contains("+++ env prod"), "{out}");
    let promotable = out.find("Promotable differences").expect("promotable section");
    let local = out.find("Environment-local differences").expect("local section");
    assert!(promotable < local);
    assert!(out[promotable..local].contains("api version: \"1.5\" → \"1.0\""), "{out}");
    assert!(out[local..].contains("api numberOfInstances: 2 → 4"), "{out}");
    // A field left out holds its default, and says so: never `null`.
    let out = repo.ok(&["diff", "test", "dev"]);
    assert!(out.contains("api numberOfInstances: 2 → 1 (default)"), "{out}");
    assert!(out.contains(r#"api resourceImpact: {"memory":"MEDIUM"} → {"memory":"SMALL"} (default)"#), "{out}");
    assert!(!out.contains("null"), "{out}");
    let json: Value = serde_json::from_str(&repo.ok(&["diff", "test", "prod", "--json"])).expect("json");
    assert_eq!(json["differences"]["promotable"][0]["field"], json!("version"));
    assert_eq!(json["differences"]["environmentLocal"].as_array().map(Vec::len), Some(2));
    // The machine form says the same: a field left out is `null`, with the default that holds.
    let json: Value = serde_json::from_str(&repo.ok(&["diff", "test", "dev", "--json"])).expect("json");
    let local = json["differences"]["environmentLocal"].as_array().cloned().unwrap_or_default();
    let field = |name: &str| local.iter().find(|d| d["field"] == json!(name)).cloned().unwrap_or_default();
    let instances = field("numberOfInstances");
    assert_eq!((&instances["a"], &instances["b"], &instances["bDefault"]), (&json!(2), &Value::Null, &json!(1)));
    assert!(instances.get("aDefault").is_none(), "a value that is set has no default beside it: {instances}");
    let memory = field("resourceImpact");
    assert_eq!(memory["bDefault"], json!({ "memory": "SMALL" }), "{memory}");
}

#[test]
fn scale_edits_the_overlay_and_shows_the_plan() {
    let repo = Repo::new();
    let (code, out, err) = repo.enact(&["-e", "test", "scale", "api=5", "web=3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("instances 0 → 5"), "{out}");
    // Quick: it says that it looked at nothing running, and where a full look is.
    assert!(
        err.contains("takes the recorded state at its word; `enact -e test plan` also looks at what runs"),
        "{err}"
    );
    assert_eq!(repo.field("test", "api", "numberOfInstances"), json!(5));
    assert_eq!(repo.field("test", "web", "numberOfInstances"), json!(3));
    // Memory, set in test's overlay, is untouched.
    assert_eq!(repo.field("test", "api", "resourceImpact"), json!({ "memory": "MEDIUM" }));
}

#[test]
fn every_serial_records_the_commit_it_was_applied_from() {
    let repo = Repo::new();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo.root)
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
        String::from_utf8_lossy(&status.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "spec"]);
    let head = git(&["rev-parse", "HEAD"]);
    repo.ok(&["apply", "--auto-approve"]);
    let state: Value = serde_json::from_str(&repo.read("state/dev.json")).expect("state");
    assert_eq!(state["provenance"], json!({ "commit": head, "dirty": false }));
    // An uncommitted change to the spec makes the next serial dirty.
    repo.ok(&["-e", "dev", "scale", "api=2"]);
    repo.ok(&["apply", "--auto-approve"]);
    let out = repo.ok(&["history"]);
    assert!(out.contains(&head[..12]) && out.contains("(dirty)"), "{out}");
}

#[test]
fn a_running_choreos_deployment_is_adopted_from_its_xml() {
    let repo = Repo::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xml");
    let choreography = fixtures.join("listing-2-2-choreography.xml");
    let choreography = choreography.to_string_lossy();
    // The ChorSpec of the listing becomes the spec; its deployment becomes the recorded state.
    let spec = repo.ok(&["import-xml", &fixtures.join("listing-2-1-chorspec.xml").to_string_lossy()]);
    fs::write(repo.root.join("chor.json"), &spec).expect("chor.json");
    fs::write(repo.root.join("envs/dev.json"), "{}\n").expect("overlay");
    let state = repo.ok(&["-e", "dev", "import-xml", &choreography]);
    fs::create_dir_all(repo.root.join("state")).expect("state dir");
    fs::write(repo.root.join("state/dev.json"), &state).expect("state");
    repo.ok(&["validate", "-e", "dev"]);
    // What runs is what the spec says: nothing to do.
    let (code, out, err) = repo.enact(&["-e", "dev", "plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("No changes."), "{out}");
    // A bad document is refused, naming the place.
    let out = repo.refused(&["import-xml", &fixtures.join("bad-memory-enum.xml").to_string_lossy()]);
    assert!(out.contains("bad-memory-enum.xml:") && out.contains("HUGE"), "{out}");
}
