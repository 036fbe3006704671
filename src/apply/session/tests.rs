//! The session on memory: a store, journals and locks in memory, a fixed clock, and simulated
//! accounts (nothing runs). What is recorded, what is kept, and what a left-over journal turns
//! into, without a file or a process.

use std::path::PathBuf;

use super::*;
use crate::apply::events::Silent;
use crate::apply::journal::{MemoryJournals, Record};
use crate::plan::{PlanInput, plan};
use crate::repo::settings::{Account, NodeSelector, Policy, Settings, SimulatedAccount};
use crate::spec::{DeployableServiceSpec, ServiceDependency};
use crate::state::{AppliedSpec, InstanceState, InstanceStatus, MemoryStore, NodeState, ServiceState, StateStore};
use crate::time::FixedClock;

/// 2026-11-22T23:04:05Z.
const NOW: u64 = 1_795_388_645;

fn repo() -> ConfigRepo {
    let mut settings = Settings {
        default_account: Some("sim".into()),
        node_selector: Some(NodeSelector { policy: Policy::AlwaysCreate, vm_limit: None }),
        ..Default::default()
    };
    settings
        .accounts
        .insert("sim".into(), Account::Simulated(SimulatedAccount { latency_ms: 0, ..Default::default() }));
    // A root that does not exist: the session reads no file of it.
    ConfigRepo { root: PathBuf::from("/nonexistent/enact-session-tests"), settings }
}

fn spec() -> Choreography {
    let service = |name: &str, deps: &[&str]| DeployableServiceSpec {
        name: name.to_string(),
        roles: vec![name.to_string()],
        dependencies: deps
            .iter()
            .map(|d| ServiceDependency { service_spec_name: d.to_string(), service_spec_role: d.to_string() })
            .collect(),
        package_uri: Some(format!("services/{name}.py")),
        port: Some(8000),
        number_of_instances: Some(1),
        ..Default::default()
    };
    let mut chor =
        Choreography { deployable_service_specs: vec![service("p", &[]), service("c", &["p"])], ..Default::default() };
    chor.normalize();
    chor
}

/// Memory, with handles on the journals and the locks.
fn backing<S: SessionStore>(store: S, journals: &MemoryJournals, locks: &MemoryLocks) -> Backing<S> {
    Backing {
        store,
        journals: Box::new(journals.clone()),
        locks: Box::new(locks.clone()),
        clock: Box::new(FixedClock::at(NOW)),
        provenance: |_, _| None,
    }
}

fn open<S: SessionStore>(repo: &ConfigRepo, backing: Backing<S>) -> Result<Session<'_, S>, SessionError> {
    Session::open_with(repo, "dev", "enact apply -e dev", &provider::ProviderOptions::default(), backing)
}

fn planned(session: &Session<'_, impl SessionStore>, spec: &Choreography) -> Planned {
    let input = PlanInput {
        env: "dev",
        spec,
        state: &session.state,
        settings: &session.repo.settings,
        targets: &[],
        observed: None,
    };
    plan(input).expect("a plan")
}

#[test]
fn an_apply_records_its_state_at_the_clocks_time_and_removes_its_journal() {
    let repo = repo();
    let (journals, locks) = (MemoryJournals::new(), MemoryLocks::new());
    let session = open(&repo, backing(MemoryStore::default(), &journals, &locks)).expect("a session");
    assert!(locks.is_held("dev"));
    let spec = spec();
    let planned = planned(&session, &spec);
    let report = session.apply(&spec, &planned, &Silent, Options::default()).expect("applied");
    assert!(report.succeeded(), "{:?}", report.failed);
    assert_eq!(report.state.serial, 1);
    assert!(!report.state.lineage.is_empty());
    assert_eq!(report.state.applied_at.as_deref(), Some("2026-11-22T23:04:05Z"));
    assert_eq!(report.state.services.len(), 2);
    assert!(journals.get("dev").is_none(), "the journal goes once the state is recorded");
    assert!(!locks.is_held("dev"), "the lock goes with the session");
}

#[test]
fn a_second_session_on_a_held_environment_is_refused() {
    let repo = repo();
    let (journals, locks) = (MemoryJournals::new(), MemoryLocks::new());
    let first = open(&repo, backing(MemoryStore::default(), &journals, &locks)).expect("a session");
    let second = open(&repo, backing(MemoryStore::default(), &journals, &locks)).unwrap_err();
    assert!(matches!(&second, SessionError::Locked { env, .. } if env == "dev"), "{second:?}");
    assert!(second.to_string().contains("env `dev` is locked by pid"), "{second}");
    drop(first);
    open(&repo, backing(MemoryStore::default(), &journals, &locks)).expect("free again");
}

fn instance(id: &str, node: &str) -> InstanceState {
    InstanceState {
        id: id.into(),
        node: node.into(),
        status: InstanceStatus::Running,
        native_uri: format!("http://{node}.invalid:8000/{id}"),
        pid: None,
        start_time: None,
        memory: None,
    }
}

#[test]
fn a_journal_left_by_a_killed_apply_is_replayed_and_recorded_when_the_next_session_opens() {
    let repo = repo();
    let (journals, locks) = (MemoryJournals::new(), MemoryLocks::new());
    let spec = spec();
    let p = spec.services().find(|s| s.name() == "p").expect("p");
    let entry = ServiceState {
        spec: Box::new(AppliedSpec::from_service(p)),
        instances: Vec::new(),
        paused: false,
        incomplete: false,
    };
    let node = NodeState {
        account: "sim".into(),
        provider: "simulated".into(),
        address: "10.0.0.1".into(),
        memory: None,
        size: None,
        provider_id: None,
        spare: false,
    };
    journals.leave(
        "dev",
        vec![
            Record::Begin { lineage: "killed".into(), serial: 0, command: "apply -e dev".into() },
            Record::NodeCreated { node: "n1".into(), state: node },
            Record::StepBegun { service: "p".into(), entry: Some(entry) },
            Record::StartIntent { service: "p".into(), instance: instance("p-1", "n1"), token: "t".into() },
            Record::Started { service: "p".into(), instance: instance("p-1", "n1") },
        ],
    );
    let session = open(&repo, backing(MemoryStore::default(), &journals, &locks)).expect("a session");
    assert_eq!(session.state.lineage, "killed", "a first apply's lineage comes from its journal");
    assert_eq!(session.state.serial, 1, "the recovered state is recorded at once");
    let p = &session.state.services["p"];
    assert!(p.incomplete, "the interrupted step is redone");
    assert_eq!(p.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["p-1"]);
    assert_eq!(session.store.read("dev").expect("read").expect("recorded").serial, 1);
    assert!(journals.get("dev").is_none(), "the replayed journal goes");
    assert!(
        session.notes.iter().any(|n| n.starts_with("recovered an interrupted apply from dev.journal: 5 record(s)")
            && n.contains("1 service(s) will be redeployed to converge: p")),
        "{:?}",
        session.notes
    );
}

#[test]
fn a_journal_of_an_apply_that_was_recorded_is_removed_and_nothing_changes() {
    let repo = repo();
    let (journals, locks) = (MemoryJournals::new(), MemoryLocks::new());
    journals.leave("dev", vec![Record::Begin { lineage: "old".into(), serial: 7, command: "apply -e dev".into() }]);
    let session = open(&repo, backing(MemoryStore::default(), &journals, &locks)).expect("a session");
    assert!(session.notes.is_empty(), "{:?}", session.notes);
    assert_eq!(session.state.serial, 0);
    assert!(journals.get("dev").is_none());
}

/// A store whose writes fail as on a full disk, after it took `room` of them.
#[derive(Debug, Default)]
struct FullDisk {
    inner: MemoryStore,
    room: std::cell::Cell<usize>,
}

impl StateStore for FullDisk {
    fn read(&self, env: &str) -> crate::error::Result<Option<State>> {
        self.inner.read(env)
    }

    fn write(&self, state: &State) -> crate::error::Result<State> {
        if self.room.get() == 0 {
            return Err(crate::Error::Io {
                action: "write",
                path: PathBuf::from("state/dev.json"),
                source: std::io::Error::other("No space left on device"),
            });
        }
        self.room.set(self.room.get() - 1);
        self.inner.write(state)
    }

    fn backups(&self, env: &str) -> crate::error::Result<Vec<crate::state::store::Backup>> {
        self.inner.backups(env)
    }

    fn read_serial(&self, env: &str, serial: u64) -> crate::error::Result<State> {
        self.inner.read_serial(env, serial)
    }
}

impl SessionStore for FullDisk {}

#[test]
fn a_state_that_cannot_be_recorded_keeps_the_journal_and_says_what_was_done() {
    let repo = repo();
    let (journals, locks) = (MemoryJournals::new(), MemoryLocks::new());
    let session = open(&repo, backing(FullDisk::default(), &journals, &locks)).expect("a session");
    let spec = spec();
    let planned = planned(&session, &spec);
    let error = session.apply(&spec, &planned, &Silent, Options::default()).unwrap_err();
    let SessionError::Unrecorded { env, done, started, failed, journal, .. } = &error else { panic!("{error:?}") };
    assert_eq!(env, "dev");
    assert_eq!(done, &["p", "c"]);
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(failed.is_empty());
    assert_eq!(journal, &PathBuf::from("memory/dev.journal"));
    let kept = journals.get("dev").expect("the journal stays for the next apply to replay");
    assert!(kept.records().iter().any(|r| matches!(r, Record::ServiceApplied { service, .. } if service == "c")));
    let text = crate::Error::from(error).to_string();
    assert!(text.contains("the apply on env `dev` ran, but its state could not be recorded"), "{text}");
    assert!(text.contains("No space left on device") && text.contains("done: p, c"), "{text}");
}
