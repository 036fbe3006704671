//! Wiring during an apply: which list every consumer instance must hold for each role it calls,
//! what it was last told, and the `setInvocationAddress` calls that close the gap.
//!
//! A consumer keeps **one endpoint list per role** (the CHOReOS services do): each call replaces
//! the list of its role. So the list a consumer must hold for role R is the union of the serving
//! endpoints of every provider it depends on in R, and it is always sent whole: a call never
//! wipes what another dependency of the same role contributed, and moving a consumer from one
//! provider of a role to another is one call from the old list to the new one, never through an
//! empty list.
//!
//! The executor keeps a ledger of what every consumer instance was told. An instance recorded by
//! the prior state is taken to hold what that state implies (the lists its last apply sent); an
//! instance started by this apply holds nothing. A call is sent only when the list a consumer
//! must hold differs from what it was told, so each consumer learns each list once, whichever
//! step (the provider's, the consumer's, a dependency's) notices the change first.
//!
//! Who counts:
//! - an **endpoint** is an instance that runs, passed its health (and readiness) check, was
//!   wired to its own dependencies and announced; never one starting, leaving or paused;
//! - a **target** (a consumer instance that is told) is an instance that runs and passed its
//!   checks; never one starting or leaving, nor any instance of a service this apply destroys.
//!
//! Every (consumer, role) list is computed and sent under one lock, so two steps changing
//! providers of one role at once cannot leave a consumer with the older of two lists.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::at_once::at_once_if;
use super::{Executor, StepError, StepResult};
use crate::provider::wire::WireCall;
use crate::spec::{Service, ServiceDependency, ServiceType};
use crate::state::{AppliedSpec, InstanceStatus, ServiceState, State};

/// Where an instance is in its life during this apply; an instance with no phase runs normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Started, not yet healthy and ready: neither told anything nor an endpoint.
    Starting,
    /// Healthy and ready, being wired to its dependencies: told, but not yet an endpoint.
    Unannounced,
    /// About to stop: neither told anything nor an endpoint.
    Leaving,
}

/// One place a consumer is told its lists: an instance of a deployable service, or one URI of a
/// legacy service.
#[derive(Debug, Clone)]
struct Target {
    /// The instance id, or the legacy URI.
    key: String,
    uri: String,
    /// The account whose provider makes the call (none for a legacy service).
    account: Option<String>,
    service_type: ServiceType,
}

/// What a consumer instance holds for a role, as far as enact knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    List(Vec<String>),
    /// A call failed midway: the next sync tells it again whatever it holds.
    Unknown,
}

/// One lock per (consumer, role).
type RoleLocks = HashMap<(String, String), Arc<Mutex<()>>>;

/// Consumer instance (service, key) → role → what it was told.
type Ledger = HashMap<(String, String), HashMap<String, Known>>;

/// The executor's wiring bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Wiring {
    /// (consumer, role) of every dependency on a provider, recorded or desired, by provider:
    /// the providers the apply changes are indexed at the start ([`Wiring::new`]), any other
    /// when first asked ([`Executor::index_consumers`]), so the cost follows the change.
    consumers: Mutex<HashMap<String, BTreeSet<(String, String)>>>,
    phases: Mutex<HashMap<String, Phase>>,
    ledger: Mutex<Ledger>,
    /// One lock per (consumer, role): a list is computed and sent under it.
    locks: Mutex<RoleLocks>,
    /// Services this apply destroys: their instances are told nothing.
    retiring: BTreeSet<String>,
    /// What the state the apply started from says of the consumers it may tell anything.
    prior: Mutex<PriorView>,
}

/// The part of the prior state wiring needs, for the consumers an apply may tell anything: only
/// those, so the cost follows the change, not the environment.
#[derive(Debug, Default)]
struct PriorView {
    /// Recorded dependencies, by consumer.
    dependencies: HashMap<String, Vec<ServiceDependency>>,
    /// (consumer, role) → the list the recorded state implies its instances hold.
    held: HashMap<(String, String), Vec<String>>,
    /// (consumer, instance id or legacy URI) of every recorded, running consumer instance.
    known: HashSet<(String, String)>,
}

impl PriorView {
    /// Records what `state` says of `consumer`, unless it was recorded already.
    fn capture(&mut self, state: &State, consumer: &str) {
        if self.dependencies.contains_key(consumer) {
            return;
        }
        let Some(recorded) = state.services.get(consumer) else {
            self.dependencies.insert(consumer.to_string(), Vec::new());
            return;
        };
        let deps = recorded.spec.as_service().dependencies();
        self.dependencies.insert(consumer.to_string(), deps.to_vec());
        match &*recorded.spec {
            AppliedSpec::Legacy(l) => {
                self.known.extend(l.native_uris.iter().map(|u| (consumer.to_string(), u.clone())));
            }
            AppliedSpec::Deployable(_) if !recorded.paused => {
                self.known.extend(recorded.instances.iter().map(|i| (consumer.to_string(), i.id.clone())));
            }
            AppliedSpec::Deployable(_) => {}
        }
        let roles: BTreeSet<&str> = deps.iter().map(|d| d.service_spec_role.as_str()).collect();
        for role in roles {
            let list = union(
                deps.iter()
                    .filter(|d| d.service_spec_role == role)
                    .map(|d| served(state, &d.service_spec_name, None, |_| true)),
            );
            self.held.insert((consumer.to_string(), role.to_string()), list);
        }
    }
}

/// Adds to `consumers` the dependencies of `services` on the providers it has a key for.
fn add_consumers<'a>(
    consumers: &mut HashMap<String, BTreeSet<(String, String)>>,
    services: impl Iterator<Item = Service<'a>>,
) {
    for service in services {
        for dep in service.dependencies() {
            if let Some(of) = consumers.get_mut(&dep.service_spec_name) {
                of.insert((service.name().to_string(), dep.service_spec_role.clone()));
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Wiring {
    /// The bookkeeping for an apply from `prior` toward `desired` that changes `changed` and
    /// destroys `retiring`.
    pub(super) fn new<'a>(
        prior: &'a State,
        desired: impl Iterator<Item = Service<'a>>,
        changed: impl Iterator<Item = &'a str>,
        retiring: BTreeSet<String>,
    ) -> Wiring {
        let changed: Vec<&str> = changed.collect();
        let mut consumers: HashMap<String, BTreeSet<(String, String)>> =
            changed.iter().map(|c| (c.to_string(), BTreeSet::new())).collect();
        let recorded = prior.services.values().map(|s| s.spec.as_service());
        add_consumers(&mut consumers, recorded.chain(desired));
        let wiring = Wiring { consumers: Mutex::new(consumers), retiring, ..Wiring::default() };
        for service in changed {
            wiring.capture(prior, service);
        }
        wiring
    }

    /// The (consumer, role) pairs that depend on `provider`, if it is indexed.
    fn consumers_of(&self, provider: &str) -> Vec<(String, String)> {
        lock(&self.consumers).get(provider).map(|c| c.iter().cloned().collect()).unwrap_or_default()
    }

    /// Records what `state` says of `service` and of its consumers, before anything changes
    /// them: the lists they hold.
    pub(super) fn capture(&self, state: &State, service: &str) {
        let consumers = self.consumers_of(service);
        let mut prior = lock(&self.prior);
        prior.capture(state, service);
        for (consumer, _) in &consumers {
            prior.capture(state, consumer);
        }
    }

    pub(super) fn set_phase(&self, ids: &[String], phase: Phase) {
        let mut phases = lock(&self.phases);
        for id in ids {
            phases.insert(id.clone(), phase);
        }
    }

    /// A freshly started instance: starting, and holding nothing yet.
    pub(super) fn starting(&self, service: &str, id: &str) {
        lock(&self.phases).insert(id.to_string(), Phase::Starting);
        lock(&self.ledger).insert((service.to_string(), id.to_string()), HashMap::new());
    }

    /// Announces every unannounced instance of `ids` (they become endpoints) and marks
    /// `leaving` as leaving, at one moment: a list computed by another step in between would
    /// hold neither the new endpoints nor the leaving ones, and could be empty while the
    /// service serves.
    fn hand_over(&self, ids: impl Iterator<Item = String>, leaving: &[String]) {
        let mut phases = lock(&self.phases);
        for id in ids {
            if phases.get(&id) == Some(&Phase::Unannounced) {
                phases.remove(&id);
            }
        }
        for id in leaving {
            phases.insert(id.clone(), Phase::Leaving);
        }
    }

    fn role_lock(&self, consumer: &str, role: &str) -> Arc<Mutex<()>> {
        let mut locks = lock(&self.locks);
        Arc::clone(locks.entry((consumer.to_string(), role.to_string())).or_default())
    }
}

/// The endpoints `provider` serves in `state`: its running instances that pass `serving`, or a
/// legacy service's URIs (`legacy_uris` when given: the desired ones).
fn served(
    state: &State,
    provider: &str,
    legacy_uris: Option<&[String]>,
    serving: impl Fn(&str) -> bool,
) -> Vec<String> {
    match state.services.get(provider) {
        Some(ServiceState { spec, .. }) if let AppliedSpec::Legacy(s) = &**spec => {
            legacy_uris.map_or_else(|| s.native_uris.clone(), <[String]>::to_vec)
        }
        Some(s) if s.paused => Vec::new(),
        Some(s) => s
            .instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running && serving(&i.id))
            .map(|i| i.native_uri.clone())
            .collect(),
        None => legacy_uris.map(<[String]>::to_vec).unwrap_or_default(),
    }
}

/// The list for one role: the union of every provider's endpoints, sorted, without repeats.
fn union(lists: impl Iterator<Item = Vec<String>>) -> Vec<String> {
    let all: BTreeSet<String> = lists.flatten().collect();
    all.into_iter().collect()
}

impl Executor<'_> {
    /// Indexes the consumers of `provider` if the start did not (it is not one the plan
    /// changes: a service paused or resumed): from `live` (whose dependencies are still the
    /// recorded ones: only steps of changed services change them) and the desired spec.
    pub(super) fn index_consumers(&self, live: &State, provider: &str) {
        let mut consumers = lock(&self.wiring.consumers);
        if consumers.contains_key(provider) {
            return;
        }
        let mut found = HashMap::from([(provider.to_string(), BTreeSet::new())]);
        add_consumers(&mut found, live.services.values().map(|s| s.spec.as_service()).chain(self.spec.services()));
        consumers.extend(found);
    }

    /// The URIs of a legacy service as desired, if it is one.
    fn desired_legacy_uris(&self, service: &str) -> Option<&[String]> {
        match self.desired.get(service) {
            Some(Service::Legacy(l)) => Some(&l.native_uris),
            _ => None,
        }
    }

    /// What `consumer` must hold for `role` now, and the provider names it is told with.
    pub(super) fn must_hold(&self, live: &State, consumer: Service<'_>, role: &str) -> (Vec<String>, Vec<String>) {
        let phases = lock(&self.wiring.phases);
        let providers: BTreeSet<&str> = consumer
            .dependencies()
            .iter()
            .filter(|d| d.service_spec_role == role)
            .map(|d| d.service_spec_name.as_str())
            .collect();
        let list = union(
            providers.iter().map(|p| served(live, p, self.desired_legacy_uris(p), |id| !phases.contains_key(id))),
        );
        (list, providers.into_iter().map(str::to_string).collect())
    }

    /// What a consumer instance recorded by the prior state holds for `role`: what that state
    /// implies its last apply told it.
    fn held_before(&self, consumer: &str, key: &str, role: &str) -> Vec<String> {
        let prior = lock(&self.wiring.prior);
        if !prior.known.contains(&(consumer.to_string(), key.to_string())) {
            return Vec::new();
        }
        prior.held.get(&(consumer.to_string(), role.to_string())).cloned().unwrap_or_default()
    }

    /// The dependencies `consumer` had in the prior state.
    fn recorded_dependencies(&self, consumer: &str) -> Vec<ServiceDependency> {
        lock(&self.wiring.prior).dependencies.get(consumer).cloned().unwrap_or_default()
    }

    /// The instances (or legacy URIs) of `consumer` that are told their lists now.
    fn targets(&self, live: &State, consumer: &str) -> Vec<Target> {
        if self.wiring.retiring.contains(consumer) {
            return Vec::new();
        }
        let Some(spec) = self.desired.get(consumer).copied() else {
            return Vec::new();
        };
        match spec {
            Service::Legacy(l) => l
                .native_uris
                .iter()
                .map(|u| Target { key: u.clone(), uri: u.clone(), account: None, service_type: l.service_type() })
                .collect(),
            Service::Deployable(d) => {
                let phases = lock(&self.wiring.phases);
                let Some(service) = live.services.get(consumer).filter(|s| !s.paused) else {
                    return Vec::new();
                };
                service
                    .instances
                    .iter()
                    .filter(|i| {
                        i.status == InstanceStatus::Running
                            && matches!(phases.get(&i.id), None | Some(Phase::Unannounced))
                    })
                    .map(|i| Target {
                        key: i.id.clone(),
                        uri: i.native_uri.clone(),
                        account: live.nodes.get(&i.node).map(|n| n.account.clone()),
                        service_type: d.service_type(),
                    })
                    .collect()
            }
        }
    }

    /// Whether `consumer` may have an instance (or a legacy URI) to tell anything now: a cheap
    /// test that spares a sync of consumers not yet started.
    fn may_have_targets(&self, live: &State, consumer: &str) -> bool {
        match self.desired.get(consumer) {
            Some(Service::Legacy(_)) => !self.wiring.retiring.contains(consumer),
            Some(Service::Deployable(_)) => live
                .services
                .get(consumer)
                .is_some_and(|s| !s.paused && s.instances.iter().any(|i| i.status == InstanceStatus::Running)),
            None => false,
        }
    }

    /// Brings every target of `consumer` (or only those in `only`) to the list it must hold for
    /// `role`: one call per target whose knowledge differs, none otherwise.
    fn sync(&self, consumer: &str, role: &str, only: Option<&[String]>) -> StepResult {
        let Some(spec) = self.desired.get(consumer).copied() else {
            // Destroyed by this apply: told nothing.
            return Ok(());
        };
        let role_lock = self.wiring.role_lock(consumer, role);
        let _held = lock(&role_lock);
        let (list, providers, targets) = {
            let live = self.live();
            let (list, mut providers) = self.must_hold(&live, spec, role);
            if providers.is_empty() {
                // No dependency in this role any more: named after the ones it had.
                let recorded = self.recorded_dependencies(consumer);
                let names: BTreeSet<&str> = recorded
                    .iter()
                    .filter(|d| d.service_spec_role == role)
                    .map(|d| d.service_spec_name.as_str())
                    .collect();
                providers = names.into_iter().map(str::to_string).collect();
            }
            let mut targets = self.targets(&live, consumer);
            if let Some(only) = only {
                // A set: a service of N new instances wires them in one pass, not N × N.
                let only: HashSet<&str> = only.iter().map(String::as_str).collect();
                targets.retain(|t| only.contains(t.key.as_str()));
            }
            (list, providers.join(","), targets)
        };
        // Each instance of the consumer is told on its own: side by side when calls may block
        // (500 instances of a consumer behind a 200 ms provider: one call's time, not 100 s).
        let tell = |target: &Target| -> StepResult<bool> {
            let key = (consumer.to_string(), target.key.clone());
            let known = lock(&self.wiring.ledger).get(&key).and_then(|roles| roles.get(role).cloned());
            let known = known.unwrap_or_else(|| Known::List(self.held_before(consumer, &target.key, role)));
            if known == Known::List(list.clone()) {
                return Ok(false);
            }
            let call = WireCall {
                service_type: target.service_type,
                consumer: &target.uri,
                role,
                provider: &providers,
                endpoints: &list,
                retry: self.wiring_settings_of(consumer),
            };
            let outcome = self.call(target.account.as_deref(), &call);
            let now = if outcome.is_ok() { Known::List(list.clone()) } else { Known::Unknown };
            lock(&self.wiring.ledger).entry(key).or_default().insert(role.to_string(), now);
            outcome.map(|()| true)
        };
        let mut errors = Vec::new();
        let mut told = 0usize;
        for outcome in at_once_if(targets.len() > 1 && self.calls_block(), &targets, tell) {
            match outcome {
                Ok(true) => told += 1,
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        if told > 0 {
            self.progress(
                consumer,
                format!("told {told} instance(s) role `{role}`: {} endpoint(s) of {providers}", list.len()),
            );
        }
        StepError::from_all(errors)
    }

    /// Sends one call through the provider of the consumer's account, or (a legacy consumer)
    /// over HTTP or through the fake that stands for it.
    fn call(&self, account: Option<&str>, call: &WireCall<'_>) -> StepResult {
        let result = match account.and_then(|a| self.providers.get(a)) {
            Some(provider) => provider.wire(call),
            None => match &self.legacy_wiring {
                Some(fake) => fake.wire(call),
                None => crate::provider::wire::send(call),
            },
        };
        result.map_err(|source| StepError::Wire { consumer: call.consumer.to_string(), source })
    }

    /// How `consumer` is told its lists.
    fn wiring_settings_of(&self, consumer: &str) -> crate::repo::settings::WiringSettings {
        self.settings.wiring_of(consumer)
    }

    /// Announces the ready instances of `service` and tells every consumer of it, in every role
    /// it calls `service` in, the list it must now hold.
    pub(super) fn push(&self, service: &str) -> StepResult {
        self.push_leaving(service, &[])
    }

    /// [`Executor::push`], with the instances `leaving` (ids of `service`) taken out of every
    /// list at the moment the ready ones are announced: from then on they are neither endpoints
    /// nor told anything. Both at once, never one after the other: a consumer whose list
    /// another step computes in between would be told an empty list while `service` serves
    /// (a rolling replacement in a dependency cycle).
    pub(super) fn push_leaving(&self, service: &str, leaving: &[String]) -> StepResult {
        self.wiring.hand_over(self.instance_ids(service).into_iter(), leaving);
        // Only consumers with something to tell (after the announce: a consumer instance that
        // becomes a target later computes its own list after it, and sees the new endpoints).
        let pairs: Vec<(String, String)> = {
            let live = self.live();
            self.index_consumers(&live, service);
            self.wiring
                .consumers_of(service)
                .into_iter()
                .filter(|(consumer, _)| self.may_have_targets(&live, consumer))
                .collect()
        };
        self.sync_all(&pairs, None)
    }

    /// Whether a wiring call may wait on the network (a real provider, or a legacy consumer told
    /// over HTTP): only then are calls worth a thread each.
    fn calls_block(&self) -> bool {
        self.providers.values().any(|p| !p.is_instant())
            || (self.legacy_wiring.is_none()
                && self.desired.values().any(|s| s.is_legacy() && !s.dependencies().is_empty()))
    }

    /// Syncs every (consumer, role) pair: in parallel when calls may block.
    fn sync_all(&self, pairs: &[(String, String)], only: Option<&[String]>) -> StepResult {
        let results: Vec<StepResult> = if pairs.len() <= 1 || !self.calls_block() {
            pairs.iter().map(|(consumer, role)| self.sync(consumer, role, only)).collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> =
                    pairs.iter().map(|(consumer, role)| scope.spawn(move || self.sync(consumer, role, only))).collect();
                handles.into_iter().map(|h| h.join().unwrap_or(Err(StepError::Panicked { what: "wiring" }))).collect()
            })
        };
        StepError::from_all(results.into_iter().filter_map(Result::err).collect())
    }

    /// The roles `consumer` calls `provider` in, by its desired and its recorded spec.
    fn roles_toward(&self, consumer: &str, provider: &str) -> BTreeSet<String> {
        let desired = self.desired.get(consumer).map(|s| s.dependencies()).unwrap_or_default();
        let recorded = self.recorded_dependencies(consumer);
        desired
            .iter()
            .chain(&recorded)
            .filter(|d| d.service_spec_name == provider)
            .map(|d| d.service_spec_role.clone())
            .collect()
    }

    /// Wires the ready `instances` of `service` (ids) to every role it depends on.
    pub(super) fn wire_instances(&self, service: &str, instances: &[String]) -> StepResult {
        let Some(spec) = self.desired.get(service).copied() else {
            return Ok(());
        };
        self.wiring.set_phase(instances, Phase::Unannounced);
        let roles: BTreeSet<String> = spec.dependencies().iter().map(|d| d.service_spec_role.clone()).collect();
        let pairs: Vec<(String, String)> = roles.into_iter().map(|r| (service.to_string(), r)).collect();
        self.sync_all(&pairs, Some(instances))
    }

    /// Wires every target of `service` to the roles it calls `providers` in (every role it has,
    /// desired or recorded, when `providers` is `None`).
    pub(super) fn wire_service(&self, service: &str, providers: Option<&[String]>) -> StepResult {
        let roles: BTreeSet<String> = match providers {
            Some(providers) => providers.iter().flat_map(|p| self.roles_toward(service, p)).collect(),
            None => {
                let desired = self.desired.get(service).map(|s| s.dependencies()).unwrap_or_default();
                let recorded = self.recorded_dependencies(service);
                desired.iter().chain(&recorded).map(|d| d.service_spec_role.clone()).collect()
            }
        };
        for role in roles {
            self.sync(service, &role, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_list_is_the_sorted_union_of_its_providers() {
        let list = union(
            [vec!["http://b/2".to_string(), "http://a/1".into()], vec!["http://a/1".into(), "http://c/3".into()]]
                .into_iter(),
        );
        assert_eq!(list, vec!["http://a/1", "http://b/2", "http://c/3"]);
    }
}
