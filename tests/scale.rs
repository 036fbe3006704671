//! Scale, without a stopwatch: an apply of many instances starts, waits for and stops them with
//! a bounded number of threads, and writes the intents of a batch of side effects with one
//! journal sync. (The time these take is measured by `benches/scale.sh`; here only the work is
//! counted, so a regression to one thread or one sync per instance fails a test.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use enact::apply::events::Silent;
use enact::apply::executor::{Executor, INSTANCES_AT_ONCE, Options};
use enact::apply::journal::Journal;
use enact::plan::{PlanInput, plan};
use enact::provider::{Provider, ProviderResult, StartRequest, Started};
use enact::repo::settings::{Account, NodeSelector, Policy, Settings, SimulatedAccount};
use enact::spec::{Choreography, DeployableServiceSpec};
use enact::state::NewNode;
use enact::state::{InstanceState, NodeState, State};

const INSTANCES: usize = 300;

/// Counts starts, health waits and stops, and the most of each in flight at once.
#[derive(Debug, Default)]
struct Counts {
    starts: AtomicUsize,
    stops: AtomicUsize,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    /// Wiring calls, and the most in flight at once.
    wires: AtomicUsize,
    wires_in_flight: AtomicUsize,
    wires_most: AtomicUsize,
}

impl Counts {
    fn busy(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // Long enough for the others to overlap, if they may.
        std::thread::sleep(Duration::from_millis(1));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A provider that counts; `instant` says its operations return at once (as a simulation at
/// 0 ms does).
#[derive(Debug)]
struct Counting(Arc<Counts>, bool);

impl Provider for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }
    fn is_instant(&self) -> bool {
        self.1
    }

    fn create_nodes(&self, nodes: &[NewNode], _: &enact::provider::NodeRequest<'_>) -> ProviderResult<Vec<NodeState>> {
        Ok(nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeState {
                account: n.account.clone(),
                provider: "counting".into(),
                address: format!("node-{i}"),
                memory: Some(n.memory),
                size: Some(n.size.clone()),
                provider_id: None,
                spare: false,
            })
            .collect())
    }

    fn destroy_node(&self, _: &str, _: &NodeState) -> ProviderResult<()> {
        Ok(())
    }

    fn start(&self, _: &StartRequest<'_>) -> ProviderResult<Started> {
        self.0.starts.fetch_add(1, Ordering::SeqCst);
        Ok(Started::default())
    }

    fn wait_healthy(&self, _: &InstanceState, _: &NodeState, _: u16, _: Duration) -> ProviderResult<()> {
        self.0.busy();
        Ok(())
    }

    fn stop(&self, _: &InstanceState, _: &NodeState, _: Duration) -> ProviderResult<()> {
        self.0.stops.fetch_add(1, Ordering::SeqCst);
        self.0.busy();
        Ok(())
    }

    fn alive(&self, _: &InstanceState, _: &NodeState) -> bool {
        true
    }
    fn wire(&self, _: &enact::provider::wire::WireCall<'_>) -> Result<(), enact::provider::wire::WireError> {
        let counts = &self.0;
        counts.wires.fetch_add(1, Ordering::SeqCst);
        let now = counts.wires_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counts.wires_most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1));
        counts.wires_in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    fn logs(
        &self,
        _: &InstanceState,
        _: &NodeState,
        _: enact::provider::LogPlace<'_>,
        _: usize,
    ) -> ProviderResult<String> {
        Ok(String::new())
    }

    fn find(&self, _: &NodeState, _: &str) -> Option<Started> {
        None
    }
}

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

/// Applies `spec` over `state` with the counting provider and a durable journal: the state, and
/// how many times the journal was synced.
fn apply(
    dir: &std::path::Path,
    name: &str,
    spec: &Choreography,
    state: State,
    counts: &Arc<Counts>,
    instant: bool,
) -> (State, usize) {
    let settings = settings();
    let input = PlanInput { env: "dev", spec, state: &state, settings: &settings, targets: &[], observed: None };
    let planned = plan(input).expect("a plan");
    let journal = Journal::create(&dir.join(format!("{name}.journal")), true).expect("a journal");
    let mut executor =
        Executor::new(dir, dir, "dev", &settings, spec, &planned, state, &journal, &Silent, Options::default())
            .expect("an executor");
    executor.use_provider("sim", Box::new(Counting(Arc::clone(counts), instant)));
    let report = executor.run();
    assert!(report.succeeded(), "{name}: {:?} {:?}", report.failed, report.node_errors);
    (report.state, journal.syncs())
}

/// One service of [`INSTANCES`] instances, its package written in `dir`.
fn big_service(dir: &std::path::Path) -> Choreography {
    std::fs::write(dir.join("big.py"), "").expect("a package");
    let mut spec = Choreography::default();
    spec.deployable_service_specs.push(DeployableServiceSpec {
        name: "big".into(),
        roles: vec!["big".into()],
        package_uri: Some("big.py".into()),
        port: Some(8000),
        number_of_instances: Some(INSTANCES as i64),
        ..Default::default()
    });
    spec.normalize();
    spec
}

#[test]
fn many_instances_start_and_stop_on_a_bounded_number_of_threads_with_batched_intents() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spec = big_service(dir.path());
    let created = Arc::new(Counts::default());
    let mut state = State::empty("dev");
    state.lineage = "scale".into();
    let (state, _) = apply(dir.path(), "create", &spec, state, &created, false);
    assert_eq!(created.starts.load(Ordering::SeqCst), INSTANCES);
    assert_eq!(state.services["big"].instances.len(), INSTANCES);
    assert_eq!(state.nodes.len(), INSTANCES);
    let most = created.most.load(Ordering::SeqCst);
    assert!(most <= INSTANCES_AT_ONCE, "{most} health waits at once (at most {INSTANCES_AT_ONCE})");
    assert!(most > 1, "health waits that may block overlap");

    let destroyed = Arc::new(Counts::default());
    let (state, syncs) = apply(dir.path(), "destroy", &Choreography::default(), state, &destroyed, false);
    assert_eq!(destroyed.stops.load(Ordering::SeqCst), INSTANCES);
    assert!(state.services.is_empty() && state.nodes.is_empty(), "{state:?}");
    let most = destroyed.most.load(Ordering::SeqCst);
    assert!(most <= INSTANCES_AT_ONCE, "{most} stops at once (at most {INSTANCES_AT_ONCE})");
    // The start of the apply, the stop intents, the node intents, the final flush: not one per
    // instance or node.
    assert!(syncs <= 4, "{syncs} journal syncs to destroy {INSTANCES} instances on {INSTANCES} nodes");
}

/// A provider `p` of one instance and a consumer `big` of [`INSTANCES`] instances calling it.
fn consumer_of_one(dir: &std::path::Path) -> Choreography {
    let mut spec = big_service(dir);
    spec.deployable_service_specs[0].dependencies =
        vec![enact::spec::ServiceDependency { service_spec_name: "p".into(), service_spec_role: "p".into() }];
    spec.deployable_service_specs.push(DeployableServiceSpec {
        name: "p".into(),
        roles: vec!["p".into()],
        package_uri: Some("big.py".into()),
        port: Some(9000),
        number_of_instances: Some(1),
        ..Default::default()
    });
    spec.normalize();
    spec
}

#[test]
fn the_instances_of_a_consumer_are_wired_side_by_side_when_calls_may_block() {
    for instant in [false, true] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let spec = consumer_of_one(dir.path());
        let counts = Arc::new(Counts::default());
        let mut state = State::empty("dev");
        state.lineage = "wires".into();
        let (state, _) = apply(dir.path(), "create", &spec, state, &counts, instant);
        assert_eq!(state.services["big"].instances.len(), INSTANCES);
        // Every instance of the consumer is told the provider's endpoint once.
        assert_eq!(counts.wires.load(Ordering::SeqCst), INSTANCES, "instant: {instant}");
        let most = counts.wires_most.load(Ordering::SeqCst);
        if instant {
            assert_eq!(most, 1, "an instant provider's calls one after another");
        } else {
            assert!((2..=INSTANCES_AT_ONCE).contains(&most), "{most} wiring calls at once");
        }
    }
}
