//! The executor's ordering rules and failure isolation, on the recording fake provider, an
//! in-memory journal and a fixed clock: no files, no processes. Each test plans a change with
//! the real planner, carries it out, and reads what the fake recorded (the order of starts,
//! health checks, wiring calls and stops) and what the report and the live state say.
//!
//! The property test `tests/wiring_model.rs` checks the wiring invariant on random sequences of
//! changes; these pin each rule down on one small case, with the failure that breaks it.

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};

use super::*;
use crate::apply::events::{Event, Subscriber};
use crate::apply::journal::MemoryJournal;
use crate::plan::{PlanInput, plan};
use crate::provider::recording::{Call, Operation, RecordingProvider};
use crate::repo::settings::{Account, NodeSelector, Policy, SimulatedAccount};
use crate::spec::model::ResourceImpact;
use crate::spec::{DeployableServiceSpec, Memory, ServiceDependency};
use crate::state::InstanceStatus;
use crate::time::FixedClock;

/// A deployable service of `instances` instances at `version`, depending on `deps` (each a
/// provider whose name is also the role).
fn service(name: &str, instances: i64, version: u32, deps: &[&str]) -> DeployableServiceSpec {
    DeployableServiceSpec {
        name: name.to_string(),
        roles: vec![name.to_string()],
        dependencies: deps
            .iter()
            .map(|d| ServiceDependency { service_spec_name: d.to_string(), service_spec_role: d.to_string() })
            .collect(),
        package_uri: Some(format!("services/{name}.py")),
        port: Some(8000),
        number_of_instances: Some(instances),
        resource_impact: Some(ResourceImpact { memory: Some(Memory::Small), ..Default::default() }),
        version: Some(format!("1.{version}")),
        ..Default::default()
    }
}

fn choreography(services: Vec<DeployableServiceSpec>) -> Choreography {
    let mut chor = Choreography { deployable_service_specs: services, ..Default::default() };
    chor.normalize();
    chor
}

/// One simulated account, `sim`; every instance on a node of its own (so a replacement always
/// has a spare slot: new before old).
fn settings() -> Settings {
    let mut settings = Settings {
        default_account: Some("sim".into()),
        node_selector: Some(NodeSelector { policy: Policy::AlwaysCreate, vm_limit: None }),
        ..Default::default()
    };
    settings
        .accounts
        .insert("sim".into(), Account::Simulated(SimulatedAccount { latency_ms: 0, ..Default::default() }));
    settings
}

/// Records the events of an apply.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl Subscriber for Events {
    fn on(&self, event: &Event<'_>) {
        let line = match event {
            Event::StepDone { service, elapsed, .. } => format!("done {service} in {} ms", elapsed.as_millis()),
            Event::StepFailed { service, .. } => format!("failed {service}"),
            Event::StepSkipped { service } => format!("skipped {service}"),
            _ => return,
        };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

/// An environment applied with the fake: what the fake records, the state so far.
struct World {
    fake: RecordingProvider,
    settings: Settings,
    state: State,
    clock: FixedClock,
    cancel: Option<&'static AtomicBool>,
}

/// What one apply did.
struct Applied {
    report: Report,
    calls: Vec<Call>,
    journal: Vec<Record>,
    events: Vec<String>,
}

impl World {
    fn new() -> World {
        let mut state = State::empty("dev");
        state.lineage = "test-lineage".into();
        World { fake: RecordingProvider::new(), settings: settings(), state, clock: FixedClock::at(0), cancel: None }
    }

    /// Plans `spec` against the state so far and carries it out; the state moves on.
    fn apply(&mut self, spec: &Choreography) -> Applied {
        self.apply_with(spec, &MemoryJournal::new())
    }

    fn apply_with(&mut self, spec: &Choreography, journal: &MemoryJournal) -> Applied {
        let input =
            PlanInput { env: "dev", spec, state: &self.state, settings: &self.settings, targets: &[], observed: None };
        let planned = plan(input).expect("a plan");
        let events = Events::default();
        let options = Options { cancel: self.cancel, ..Options::default() };
        // A directory that does not exist: the executor reads no file of it.
        let nowhere = Path::new("/nonexistent/enact-executor-tests");
        let prior = std::mem::replace(&mut self.state, State::empty("dev"));
        let mut executor =
            Executor::new(nowhere, nowhere, "dev", &self.settings, spec, &planned, prior, journal, &events, options)
                .expect("an executor");
        executor.use_provider("sim", Box::new(self.fake.clone()));
        executor.use_legacy_wiring(Box::new(self.fake.clone()));
        executor.use_clock(&self.clock);
        let report = executor.run();
        self.state = report.state.clone();
        let events = events.0.into_inner().unwrap_or_else(PoisonError::into_inner);
        Applied { report, calls: self.fake.take(), journal: journal.records(), events }
    }
}

/// The `nativeUri` of every instance the calls started, by instance id.
fn uri_of(calls: &[Call], instance: &str) -> String {
    calls
        .iter()
        .find_map(|c| match c {
            Call::Started { instance: i, uri, .. } if i == instance => Some(uri.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{instance} was not started: {calls:#?}"))
}

/// The position of the first call that `matches`.
fn first(calls: &[Call], what: &str, matches: impl Fn(&Call) -> bool) -> usize {
    calls.iter().position(matches).unwrap_or_else(|| panic!("no call {what}: {calls:#?}"))
}

fn healthy(instance: &str) -> impl Fn(&Call) -> bool + '_ {
    move |c| matches!(c, Call::Healthy { instance: i } if i == instance)
}

fn stopped(instance: &str) -> impl Fn(&Call) -> bool + '_ {
    move |c| matches!(c, Call::Stopped { instance: i, .. } if i == instance)
}

/// A call telling a consumer a list of `role` that holds `uri` (or not, when `holds` is false).
fn wired(role: &str, uri: &str, holds: bool) -> impl Fn(&Call) -> bool {
    let (role, uri) = (role.to_string(), uri.to_string());
    move |c| matches!(c, Call::Wired { role: r, endpoints, .. } if *r == role && endpoints.contains(&uri) == holds)
}

/// The recorded instances of `service`, by id.
fn instances(state: &State, service: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        state.services.get(service).map(|s| s.instances.iter().map(|i| i.id.clone()).collect()).unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn a_consumer_is_told_of_an_instance_only_after_its_health_check_passed() {
    let mut world = World::new();
    let first_apply = world.apply(&choreography(vec![service("p", 1, 0, &[]), service("c", 1, 0, &["p"])]));
    assert!(first_apply.report.succeeded(), "{:?}", first_apply.report.failed);
    let calls = &first_apply.calls;
    let uri = uri_of(calls, "p-1");
    assert!(first(calls, "p-1 healthy", healthy("p-1")) < first(calls, "c told of p-1", wired("p", &uri, true)));

    // Scaling out: the new instance too is announced after its check.
    let scaled = world.apply(&choreography(vec![service("p", 2, 0, &[]), service("c", 1, 0, &["p"])]));
    assert!(scaled.report.succeeded(), "{:?}", scaled.report.failed);
    let calls = &scaled.calls;
    let uri = uri_of(calls, "p-2");
    assert!(first(calls, "p-2 healthy", healthy("p-2")) < first(calls, "c told of p-2", wired("p", &uri, true)));
    assert_eq!(instances(&world.state, "p"), ["p-1", "p-2"]);
}

#[test]
fn an_instance_that_never_gets_healthy_is_never_announced_and_is_stopped() {
    let mut world = World::new();
    world.apply(&choreography(vec![service("p", 1, 0, &[]), service("c", 1, 0, &["p"])]));
    world.fake.fail(Operation::Health, "p-2");
    let scaled = world.apply(&choreography(vec![service("p", 2, 0, &[]), service("c", 1, 0, &["p"])]));
    let calls = &scaled.calls;
    let uri = uri_of(calls, "p-2");
    assert!(!calls.iter().any(healthy("p-2")), "{calls:#?}");
    assert!(!calls.iter().any(wired("p", &uri, true)), "no consumer hears of p-2: {calls:#?}");
    first(calls, "p-2 stopped", stopped("p-2"));
    let [(service, error)] = scaled.report.failed.as_slice() else { panic!("one failure: {:?}", scaled.report.failed) };
    assert_eq!(service, "p");
    assert!(
        matches!(error, StepError::Unready { instance, check: Check::Health(_), .. } if instance == "p-2"),
        "{error:?}"
    );
    assert_eq!(instances(&world.state, "p"), ["p-1"], "the unhealthy instance is not recorded");
}

#[test]
fn consumers_drop_an_instance_before_it_is_stopped() {
    let mut world = World::new();
    let created = world.apply(&choreography(vec![service("p", 2, 0, &[]), service("c", 2, 0, &["p"])]));
    let leaving = uri_of(&created.calls, "p-2");
    let scaled = world.apply(&choreography(vec![service("p", 1, 0, &[]), service("c", 2, 0, &["p"])]));
    assert!(scaled.report.succeeded(), "{:?}", scaled.report.failed);
    let calls = &scaled.calls;
    let stop = first(calls, "p-2 stopped", stopped("p-2"));
    let told: Vec<usize> =
        calls.iter().enumerate().filter(|(_, c)| wired("p", &leaving, false)(c)).map(|(i, _)| i).collect();
    assert_eq!(told.len(), 2, "both consumer instances are told once: {calls:#?}");
    assert!(told.iter().all(|&i| i < stop), "every consumer dropped p-2 before it stopped: {calls:#?}");
    assert_eq!(instances(&world.state, "p"), ["p-1"]);
}

#[test]
fn pausing_unwires_before_it_stops_and_resuming_checks_health_before_it_announces() {
    let mut world = World::new();
    let spec = choreography(vec![service("p", 1, 0, &[]), service("c", 1, 0, &["p"])]);
    let created = world.apply(&spec);
    let uri = uri_of(&created.calls, "p-1");
    let planned = Planned::empty("dev", &world.state);
    let nowhere = Path::new("/nonexistent/enact-executor-tests");
    let journal = MemoryJournal::new();
    let recorded = world.state.choreography();
    let mut executor = Executor::new(
        nowhere,
        nowhere,
        "dev",
        &world.settings,
        &recorded,
        &planned,
        world.state.clone(),
        &journal,
        &crate::apply::events::Silent,
        Options::default(),
    )
    .expect("an executor");
    executor.use_provider("sim", Box::new(world.fake.clone()));
    executor.begin("enact pause").expect("begun");
    executor.pause("p").expect("paused");
    let calls = world.fake.take();
    assert!(first(&calls, "c told p is gone", wired("p", &uri, false)) < first(&calls, "p-1 stopped", stopped("p-1")));
    executor.resume("p").expect("resumed");
    let calls = world.fake.take();
    assert!(first(&calls, "p-1 healthy", healthy("p-1")) < first(&calls, "c told of p-1", wired("p", &uri, true)));
    let report = executor.finish(Vec::new());
    assert!(report.succeeded());
    assert!(!report.state.services["p"].paused);
    assert_eq!(report.state.services["p"].instances[0].status, InstanceStatus::Running);
}

#[test]
fn a_replacement_is_up_and_announced_before_the_instance_it_replaces_stops() {
    let mut world = World::new();
    let created = world.apply(&choreography(vec![service("p", 1, 0, &[]), service("c", 1, 0, &["p"])]));
    let old = uri_of(&created.calls, "p-1");
    let redeployed = world.apply(&choreography(vec![service("p", 1, 1, &[]), service("c", 1, 0, &["p"])]));
    assert!(redeployed.report.succeeded(), "{:?}", redeployed.report.failed);
    let calls = &redeployed.calls;
    let new = instances(&world.state, "p").pop().expect("a new instance");
    assert_ne!(new, "p-1");
    let fresh = uri_of(calls, &new);
    let up = first(calls, "the new one healthy", healthy(&new));
    let announced = first(calls, "c told of the new one", wired("p", &fresh, true));
    let dropped = first(calls, "c told the old one is gone", wired("p", &old, false));
    let stop = first(calls, "the old one stopped", stopped("p-1"));
    assert!(up < announced && announced <= dropped && dropped < stop, "{calls:#?}");
    // The consumer never held an empty list.
    for call in calls {
        if let Call::Wired { endpoints, .. } = call {
            assert!(!endpoints.is_empty(), "{calls:#?}");
        }
    }
}

#[test]
fn each_consumer_is_told_each_list_once() {
    let mut world = World::new();
    let created = world.apply(&choreography(vec![
        service("p", 2, 0, &[]),
        service("q", 1, 0, &[]),
        service("c", 2, 0, &["p", "q"]),
    ]));
    assert!(created.report.succeeded(), "{:?}", created.report.failed);
    let mut told: Vec<(String, String)> = created
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Wired { consumer, role, .. } => Some((consumer.clone(), role.clone())),
            _ => None,
        })
        .collect();
    let calls = told.len();
    told.sort();
    told.dedup();
    assert_eq!(calls, told.len(), "a (consumer, role) was told twice: {:#?}", created.calls);
    assert_eq!(calls, 4, "2 consumer instances × 2 roles: {:#?}", created.calls);

    // Nothing changes: nobody is told anything.
    let again = world.apply(&choreography(vec![
        service("p", 2, 0, &[]),
        service("q", 1, 0, &[]),
        service("c", 2, 0, &["p", "q"]),
    ]));
    assert!(!again.calls.iter().any(|c| matches!(c, Call::Wired { .. })), "{:#?}", again.calls);
}

#[test]
fn a_failing_service_skips_its_dependents_only_and_the_state_says_so() {
    let mut world = World::new();
    world.fake.fail(Operation::Start, "a");
    let applied = world.apply(&choreography(vec![
        service("a", 1, 0, &[]),
        service("b", 1, 0, &["a"]),
        service("c", 1, 0, &[]),
        service("d", 1, 0, &["c"]),
    ]));
    let report = &applied.report;
    assert!(!report.succeeded());
    let [(failed, error)] = report.failed.as_slice() else { panic!("one failure: {:?}", report.failed) };
    assert_eq!(failed, "a");
    assert!(matches!(error, StepError::Start { instance, .. } if instance == "a-1"), "{error:?}");
    assert_eq!(report.skipped, ["b"]);
    let mut done = report.done.clone();
    done.sort();
    assert_eq!(done, ["c", "d"]);
    assert!(applied.events.contains(&"failed a".to_string()) && applied.events.contains(&"skipped b".to_string()));
    // The state: the failed service recorded as incomplete with no instance, its dependent not
    // at all, the independent ones applied.
    let state = &report.state;
    assert!(state.services["a"].incomplete && state.services["a"].instances.is_empty());
    assert!(!state.services.contains_key("b"));
    for name in ["c", "d"] {
        assert!(!state.services[name].incomplete, "{name}");
        assert_eq!(instances(state, name), [format!("{name}-1")]);
    }
    // The node made for the instance that never started is freed again.
    assert!(applied.calls.iter().any(|c| matches!(c, Call::NodeDestroyed(_))), "{:#?}", applied.calls);
    assert_eq!(state.nodes.len(), 2, "{:?}", state.nodes.keys());
}

#[test]
fn an_instance_that_cannot_be_stopped_stays_recorded_and_others_still_apply() {
    let mut world = World::new();
    world.apply(&choreography(vec![service("p", 2, 0, &[]), service("q", 1, 0, &[])]));
    world.fake.fail(Operation::Stop, "p-2");
    let applied = world.apply(&choreography(vec![service("p", 1, 0, &[]), service("q", 2, 0, &[])]));
    let report = &applied.report;
    let [(failed, error)] = report.failed.as_slice() else { panic!("one failure: {:?}", report.failed) };
    assert_eq!(failed, "p");
    assert!(matches!(error, StepError::Stop { instance, .. } if instance == "p-2"), "{error:?}");
    assert_eq!(report.done, ["q"]);
    assert_eq!(instances(&report.state, "p"), ["p-1", "p-2"], "what still runs stays recorded");
    assert!(report.state.services["p"].incomplete, "the next apply converges it");
    assert_eq!(instances(&report.state, "q"), ["q-1", "q-2"]);
}

#[test]
fn nothing_happens_without_its_intent_in_the_journal() {
    let mut world = World::new();
    let journal = MemoryJournal::new();
    journal.fill_at(0);
    let applied = world.apply_with(&choreography(vec![service("p", 1, 0, &[])]), &journal);
    assert!(applied.calls.is_empty(), "{:#?}", applied.calls);
    assert!(matches!(
        applied.report.node_errors.as_slice(),
        [StepError::Journal(crate::apply::journal::JournalError::Write { .. })]
    ));
    assert!(applied.journal.is_empty());
}

#[test]
fn every_side_effect_is_journaled_intent_first() {
    let mut world = World::new();
    let applied = world.apply(&choreography(vec![service("p", 1, 0, &[])]));
    let ops: Vec<&str> = applied
        .journal
        .iter()
        .map(|r| match r {
            Record::Begin { .. } => "begin",
            Record::NodeCreateIntent { .. } => "node intent",
            Record::NodeCreated { .. } => "node",
            Record::StepBegun { .. } => "step",
            Record::StartIntent { .. } => "start intent",
            Record::Started { .. } => "started",
            Record::ServiceApplied { .. } => "applied",
            _ => "other",
        })
        .collect();
    assert_eq!(ops, ["begin", "node intent", "node", "step", "start intent", "started", "applied"]);
    assert_eq!(applied.events, ["done p in 0 ms"], "durations come from the fixed clock");
}

static STOP_NOW: AtomicBool = AtomicBool::new(true);

#[test]
fn an_apply_asked_to_stop_starts_no_step() {
    let mut world = World::new();
    world.cancel = Some(&STOP_NOW);
    let applied = world.apply(&choreography(vec![service("p", 1, 0, &[]), service("c", 1, 0, &["p"])]));
    let report = &applied.report;
    assert!(report.failed.is_empty());
    assert_eq!(report.interrupted, ["p"], "the first step never starts; its dependent is skipped");
    let mut skipped = report.skipped.clone();
    skipped.sort();
    assert_eq!(skipped, ["c", "p"]);
    assert!(!applied.calls.iter().any(|c| matches!(c, Call::Started { .. })), "{:#?}", applied.calls);
}

/// The spare nodes of `state`, by id.
fn spare_nodes(state: &State) -> Vec<&str> {
    state.nodes.iter().filter(|(_, n)| n.spare).map(|(id, _)| id.as_str()).collect()
}

/// A batch of nodes made with exactly `ids`.
fn batch(ids: &[&str]) -> impl Fn(&Call) -> bool {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_string()).collect();
    move |c: &Call| matches!(c, Call::NodesCreated(made) if *made == ids)
}

#[test]
fn the_reservoir_is_refilled_while_the_steps_run_and_a_spare_that_failed_its_instance_is_replaced() {
    let mut world = World::new();
    world.settings.reservoir = Some(crate::repo::settings::Reservoir { initial_size: 1, threshold: 0 });
    // p-1's health check waits for the spare: a refill made only after the steps would come
    // after it.
    world.fake.hold_health_until_node("p-1", "sim-2");
    let made = world.apply(&choreography(vec![service("p", 1, 0, &[])]));
    assert!(made.report.succeeded(), "{:?}", made.report.failed);
    let calls = &made.calls;
    // The instance's node first, then the spare in a batch of its own, made while p's step runs.
    assert!(first(calls, "sim-1 made", batch(&["sim-1"])) < first(calls, "spare made", batch(&["sim-2"])));
    assert!(first(calls, "spare made", batch(&["sim-2"])) < first(calls, "p-1 healthy", healthy("p-1")));
    assert_eq!(spare_nodes(&world.state), ["sim-2"]);

    // p-2 takes the spare but never gets healthy: it stops, its emptied node goes, and the
    // reservoir (empty once the spare was handed out) gets a new spare.
    world.fake.fail(Operation::Health, "p-2");
    let failed = world.apply(&choreography(vec![service("p", 2, 0, &[])]));
    assert!(!failed.report.succeeded());
    let calls = &failed.calls;
    assert!(!calls.iter().any(|c| matches!(c, Call::NodesCreated(ids) if ids.contains(&"sim-2".to_string()))));
    first(calls, "sim-2 freed", |c| matches!(c, Call::NodeDestroyed(id) if id == "sim-2"));
    assert_eq!(spare_nodes(&world.state), ["sim-3"]);
    assert_eq!(world.state.nodes.keys().collect::<Vec<_>>(), ["sim-1", "sim-3"], "no empty node is left");

    // A spare is never freed as an empty node, and destroy frees it first.
    let destroyed = world.apply(&Choreography::default());
    assert!(destroyed.report.succeeded(), "{:?}", destroyed.report.failed);
    let calls = &destroyed.calls;
    assert!(
        first(calls, "sim-3 freed", |c| matches!(c, Call::NodeDestroyed(id) if id == "sim-3"))
            < first(calls, "p-1 stopped", stopped("p-1"))
    );
    assert!(world.state.nodes.is_empty());
}

#[test]
fn a_refill_the_vm_limit_leaves_no_room_for_yet_waits_for_the_nodes_the_apply_frees() {
    let mut world = World::new();
    world.settings.node_selector = Some(NodeSelector { policy: Policy::LimitedRoundRobin, vm_limit: Some(3) });
    world.settings.reservoir = Some(crate::repo::settings::Reservoir { initial_size: 1, threshold: 0 });
    // p and q, a node each, and the spare: three nodes, at the limit.
    let mut p = service("p", 1, 0, &[]);
    let mut q = service("q", 1, 0, &[]);
    p.port = Some(8001);
    q.port = Some(8002);
    let made = world.apply(&choreography(vec![p.clone(), q]));
    assert!(made.report.succeeded(), "{:?}", made.report.failed);
    assert_eq!(world.state.nodes.len(), 3, "{:?}", world.state.nodes.keys().collect::<Vec<_>>());
    let spare = spare_nodes(&world.state).into_iter().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(spare.len(), 1);
    // q goes (its node is freed last) and p's second instance takes the spare: the new spare
    // would be a fourth node until q's node is gone.
    p.number_of_instances = Some(2);
    let q_node = world.state.services["q"].instances[0].node.clone();
    let next = world.apply(&choreography(vec![p]));
    assert!(next.report.succeeded(), "{:?}", next.report.failed);
    let calls = &next.calls;
    let freed = first(calls, "q's node freed", |c| matches!(c, Call::NodeDestroyed(id) if *id == q_node));
    let refilled = first(calls, "a spare made", |c| matches!(c, Call::NodesCreated(_)));
    assert!(freed < refilled, "the refill waits for the freed node: {calls:#?}");
    assert_eq!(world.state.nodes.len(), 3, "never more than vmLimit");
    assert_eq!(spare_nodes(&world.state).len(), 1);
}

/// While a service rolls to a new version, new before old, the list another step computes for
/// its consumer at any moment holds every slot: each new instance is announced at the moment the
/// old one it replaces leaves, never after (one instance and a cycle made that an empty list).
#[test]
fn a_list_computed_during_a_rolling_replacement_never_misses_a_slot() {
    const N: usize = 64;
    let mut world = World::new();
    let created = world.apply(&choreography(vec![service("p", N as i64, 0, &[]), service("c", 1, 0, &["p"])]));
    assert!(created.report.succeeded(), "{:?}", created.report.failed);
    let spec = choreography(vec![service("p", N as i64, 1, &[]), service("c", 1, 0, &["p"])]);
    let input = PlanInput {
        env: "dev",
        spec: &spec,
        state: &world.state,
        settings: &world.settings,
        targets: &[],
        observed: None,
    };
    let planned = plan(input).expect("a plan");
    let change = planned.plan.changes.iter().find(|c| c.service == "p").expect("p changes");
    let nowhere = Path::new("/nonexistent/enact-executor-tests");
    let journal = MemoryJournal::new();
    let silent = crate::apply::events::Silent;
    let mut executor = Executor::new(
        nowhere,
        nowhere,
        "dev",
        &world.settings,
        &spec,
        &planned,
        world.state.clone(),
        &journal,
        &silent,
        Options::default(),
    )
    .expect("an executor");
    executor.use_provider("sim", Box::new(world.fake.clone()));
    assert!(executor.create_nodes().is_empty(), "the new nodes are made");
    let consumer = executor.desired["c"];
    let done = AtomicBool::new(false);
    let (shortest, looks) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let (mut shortest, mut looks) = (usize::MAX, 0u64);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let listed = executor.must_hold(&executor.live(), consumer, "p").0.len();
                shortest = shortest.min(listed);
                looks += 1;
                // Room for the roll to take the locks the look held.
                std::thread::sleep(Duration::from_micros(1));
            }
            (shortest, looks)
        });
        let rolled = executor.run_step(change);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        rolled.expect("p rolled");
        watcher.join().expect("the watcher")
    });
    assert!(looks > 0);
    assert_eq!(shortest, N, "a list of {shortest} endpoints was computed during the roll ({looks} looks)");
    let replaced = world.fake.take().iter().filter(|c| matches!(c, Call::Stopped { .. })).count();
    assert_eq!(replaced, N, "every old instance was replaced");
}
