//! The reservoir of spare nodes (`reservoir` of enact.json) on the simulated provider, through
//! the built binary: the first apply makes `initialSize` spares besides the nodes the services
//! need, a scale-out takes them and the apply refills the reservoir, `plan`, `status` and
//! `show` name the spares, destroy frees them with the rest, and `vmLimit` counts them.

mod common;

use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};

struct Repo {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Repo {
    /// A repository of one SMALL service, `airline`, in the simulated account `sim`, with
    /// `settings` merged into enact.json.
    fn new(settings: &Value) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("services")).expect("services");
        fs::write(root.join("services/airline.py"), "print('airline')\n").expect("package");
        let mut enact = json!({ "accounts": { "sim": { "provider": "simulated" } }, "defaultAccount": "sim" });
        if let (Some(base), Some(extra)) = (enact.as_object_mut(), settings.as_object()) {
            base.extend(extra.clone());
        }
        let repo = Repo { root, _dir: dir };
        repo.write("enact.json", &enact);
        repo.airlines(1);
        repo
    }

    fn write(&self, path: &str, value: &Value) {
        fs::write(self.root.join(path), format!("{}\n", serde_json::to_string_pretty(value).expect("json")))
            .expect("write");
    }

    /// `chor.json` with `n` instances of `airline`.
    fn airlines(&self, n: u32) {
        self.write(
            "chor.json",
            &json!({ "deployableServiceSpecs": [{
                "name": "airline", "roles": ["airline"], "packageUri": "services/airline.py", "port": 8080,
                "numberOfInstances": n, "version": "1.0"
            }] }),
        );
    }

    fn enact(&self, args: &[&str]) -> (i32, String, String) {
        common::enact_in(&self.root, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.enact(args);
        assert_eq!(code, 0, "enact {args:?}\n{out}\n{err}");
        out
    }

    fn state(&self) -> Value {
        serde_json::from_str(&fs::read_to_string(self.root.join("state/dev.json")).expect("state")).expect("json")
    }

    /// The recorded nodes: (id, spare).
    fn nodes(&self) -> Vec<(String, bool)> {
        let state = self.state();
        state["nodes"]
            .as_object()
            .expect("nodes")
            .iter()
            .map(|(id, n)| (id.clone(), n["spare"].as_bool().unwrap_or(false)))
            .collect()
    }

    /// The spare nodes, by id.
    fn spares(&self) -> Vec<String> {
        self.nodes().into_iter().filter(|(_, spare)| *spare).map(|(id, _)| id).collect()
    }

    /// The node of each airline instance, by instance id.
    fn placed(&self) -> Vec<(String, String)> {
        let state = self.state();
        let mut placed: Vec<(String, String)> = state["services"]["airline"]["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| (i["id"].as_str().expect("id").to_string(), i["node"].as_str().expect("node").to_string()))
            .collect();
        placed.sort();
        placed
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_string(), (*b).to_string())).collect()
}

#[test]
fn the_reservoir_is_made_handed_out_refilled_shown_and_destroyed() {
    let repo = Repo::new(&json!({ "reservoir": { "initialSize": 2, "threshold": 0 } }));
    let out = repo.ok(&["plan"]);
    assert!(out.contains("Nodes in account `sim`: +1 SMALL, +2 spare"), "{out}");

    // The first apply: a node for the airline and two spares.
    repo.ok(&["apply", "--auto-approve"]);
    assert_eq!(repo.spares(), vec!["sim-2", "sim-3"]);
    assert_eq!(repo.nodes().len(), 3);
    let text = fs::read_to_string(repo.root.join("state/dev.json")).expect("state");
    assert_eq!(text.matches("\"spare\"").count(), 2, "only spares carry the flag:\n{text}");
    let out = repo.ok(&["plan"]);
    assert!(out.starts_with("No changes."), "a kept reservoir plans to nothing:\n{out}");
    let out = repo.ok(&["status"]);
    assert!(out.contains("reservoir of account `sim`: 2 spare nodes (sim-2, sim-3)"), "{out}");
    let status: Value = serde_json::from_str(&repo.ok(&["status", "--json"])).expect("json");
    assert_eq!(status["spares"], json!({ "sim": 2 }));
    let out = repo.ok(&["show"]);
    assert_eq!(out.lines().filter(|l| l.trim_end().ends_with("spare")).count(), 2, "{out}");

    // A scale-out takes both spares; none is left (at most `threshold`), so the apply makes two.
    repo.airlines(3);
    let out = repo.ok(&["plan"]);
    assert!(out.contains("Nodes in account `sim`: +2 spare, 2 spare taken by new instances"), "{out}");
    repo.ok(&["apply", "--auto-approve"]);
    assert_eq!(repo.placed(), pairs(&[("airline-1", "sim-1"), ("airline-2", "sim-2"), ("airline-3", "sim-3")]));
    assert_eq!(repo.spares(), vec!["sim-4", "sim-5"]);
    assert_eq!(repo.nodes().len(), 5);

    // A scale-in frees the emptied nodes, never the spares.
    repo.airlines(1);
    repo.ok(&["apply", "--auto-approve"]);
    assert_eq!(repo.nodes(), vec![("sim-1".into(), false), ("sim-4".into(), true), ("sim-5".into(), true)]);

    // Destroy frees the spares with the rest.
    let out = repo.ok(&["destroy", "--auto-approve"]);
    assert!(out.contains("-2 spare"), "{out}");
    assert_eq!(repo.state()["nodes"], json!({}));
    let out = repo.ok(&["destroy", "--auto-approve"]);
    assert!(out.contains("Nothing to destroy"), "{out}");
}

#[test]
fn limited_round_robin_counts_spares_against_its_vm_limit() {
    let repo = Repo::new(&json!({
        "nodeSelector": { "policy": "LIMITED_ROUND_ROBIN", "vmLimit": 2 },
        "reservoir": { "initialSize": 2 }
    }));
    // One node for the airline leaves room for one spare of two; the plan says so.
    let out = repo.ok(&["plan"]);
    assert!(out.contains("+1 spare"), "{out}");
    assert!(out.contains("The reservoir of account `sim` keeps 1 spare node, not 2: `vmLimit`"), "{out}");
    repo.ok(&["apply", "--auto-approve"]);
    assert_eq!(repo.nodes(), vec![("sim-1".into(), false), ("sim-2".into(), true)]);

    // A second airline takes the spare: still two nodes, no room for another spare.
    repo.airlines(2);
    repo.ok(&["apply", "--auto-approve"]);
    assert_eq!(repo.nodes(), vec![("sim-1".into(), false), ("sim-2".into(), false)]);
    let out = repo.ok(&["plan"]);
    assert!(out.starts_with("No changes.") && out.contains("keeps 0 spare nodes, not 2"), "{out}");

    // A third needs a third node (the port is taken on both): refused, nothing changes.
    repo.airlines(3);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("`vmLimit` 2 is reached"), "{err}");
    assert_eq!(repo.nodes().len(), 2);

    // Back to one airline: the emptied node goes at the end, and the reservoir refills to the
    // limit after it.
    repo.airlines(1);
    repo.ok(&["apply", "--auto-approve"]);
    assert_eq!(repo.nodes(), vec![("sim-1".into(), false), ("sim-3".into(), true)]);
    repo.ok(&["destroy", "--auto-approve"]);
    assert_eq!(repo.state()["nodes"], json!({}));
}
