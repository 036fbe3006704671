//! The plan as a pure function of effective spec × recorded state × settings: no network, no
//! clock, no randomness; the same inputs give the same bytes. Linear in the number of services.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use petgraph::Direction;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::{
    Action, Change, DownInstance, FieldChange, FromTo, NodeChanges, PLAN_FORMAT_VERSION, Plan, PriorState, Rollout,
    RolloutOrder, SpecValue, Step, Summary,
};
use super::placement::{Demand, PlacedInstance, Placement, Start, old_first_reason, place_from};
use crate::diagnostic::Diagnostic;
use crate::graph::ServiceGraph;
use crate::repo::settings::{Account, EnvView, Settings};
use crate::spec::{Choreography, Service};
use crate::state::observed::{Health, Observations};
use crate::state::{AppliedSpec, ServiceState, State};

/// Fields whose change replaces every instance (a redeploy).
pub const REDEPLOY_FIELDS: [&str; 6] = ["version", "packageUri", "packageType", "port", "endpointName", "serviceType"];

/// What a plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub env: &'a str,
    /// The effective spec, normalized.
    pub spec: &'a Choreography,
    pub state: &'a State,
    pub settings: &'a Settings,
    /// `--target`s: limit the plan to these services and what they depend on.
    pub targets: &'a [String],
    /// What a refresh saw of the recorded instances; `None` plans offline (`--refresh=false`),
    /// taking the state at its word.
    pub observed: Option<&'a Observations>,
}

/// A plan together with the placement it was computed with (apply needs both).
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: Plan,
    pub placement: Placement,
}

impl Planned {
    /// A plan that changes nothing (for operations outside a plan: pause, resume).
    pub fn empty(env: &str, state: &State) -> Planned {
        Planned {
            plan: Plan {
                format_version: PLAN_FORMAT_VERSION,
                env: env.to_string(),
                prior_state: PriorState {
                    lineage: (!state.lineage.is_empty()).then(|| state.lineage.clone()),
                    serial: state.serial,
                },
                spec_digest: String::new(),
                changes: Vec::new(),
                steps: Vec::new(),
                nodes: BTreeMap::new(),
                summary: Summary::default(),
                paused: Vec::new(),
                targets: Vec::new(),
                refreshed: false,
                down: Vec::new(),
            },
            placement: Placement::default(),
        }
    }
}

/// SHA-256 of the canonical JSON of a spec, which must be normalized (as [`PlanInput::spec`]).
pub fn spec_digest(spec: &Choreography) -> String {
    /// Hashes what serde_json writes, without holding the whole text.
    struct HashWriter(Sha256);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, HashWriter(Sha256::new()));
    // Writing to memory cannot fail, and a spec always serializes.
    let _ = serde_json::to_writer_pretty(&mut writer, spec);
    let _ = std::io::Write::write_all(&mut writer, b"\n");
    let _ = std::io::Write::flush(&mut writer);
    let (HashWriter(hasher), _) = writer.into_parts();
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One service name of the spec or the state, with what each side says about it.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    name: &'a str,
    recorded: Option<&'a ServiceState>,
    desired: Option<Service<'a>>,
}

/// Every service of the spec and of the state, in name order (a merge of two sorted lists).
fn entries<'a>(spec: &'a Choreography, state: &'a State) -> Vec<Entry<'a>> {
    let mut desired: Vec<Service<'a>> = spec.services().collect();
    // Normally sorted already; the sort only checks.
    desired.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::with_capacity(desired.len().max(state.services.len()) + 16);
    let mut desired = desired.into_iter().peekable();
    let mut recorded = state.services.iter().peekable();
    loop {
        let order = match (desired.peek(), recorded.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(d), Some((name, _))) => d.name().cmp(name.as_str()),
        };
        // The smaller name goes first; an equal one takes from both sides.
        let desired_now = if order.is_le() { desired.next() } else { None };
        let recorded_now = if order.is_ge() { recorded.next() } else { None };
        let name = desired_now.map(Service::name).or(recorded_now.map(|(n, _)| n.as_str())).unwrap_or_default();
        out.push(Entry { name, recorded: recorded_now.map(|(_, s)| s), desired: desired_now });
    }
    out
}

/// From this many services on, the spec digest is computed on a thread of its own.
const DIGEST_THREAD_SERVICES: usize = 2_000;

/// Computes the plan that takes `input.state` to `input.spec`.
pub fn plan(input: PlanInput<'_>) -> Result<Planned, Vec<Diagnostic>> {
    if input.spec.len() < DIGEST_THREAD_SERVICES {
        return plan_with(input, || spec_digest(input.spec));
    }
    // The digest reads the whole spec and nothing else: another core computes it meanwhile.
    std::thread::scope(|scope| {
        let digest = std::thread::Builder::new().spawn_scoped(scope, || spec_digest(input.spec)).ok();
        plan_with(input, || digest.and_then(|d| d.join().ok()).unwrap_or_else(|| spec_digest(input.spec)))
    })
}

/// [`plan`], with the digest of the spec from `digest`.
fn plan_with(input: PlanInput<'_>, digest: impl FnOnce() -> String) -> Result<Planned, Vec<Diagnostic>> {
    let policy = input.settings.env_view(input.env).node_selector.policy;
    if input.spec.len() < DIGEST_THREAD_SERVICES {
        return plan_from(input, digest, || Start::of(policy, input.state));
    }
    // Where placement starts depends on the state alone: another core works it out meanwhile.
    std::thread::scope(|scope| {
        let start = std::thread::Builder::new().spawn_scoped(scope, move || Start::of(policy, input.state)).ok();
        plan_from(input, digest, move || {
            start.and_then(|s| s.join().ok()).unwrap_or_else(|| Start::of(policy, input.state))
        })
    })
}

/// [`plan_with`], with the start of placement from `start`.
fn plan_from<'a>(
    input: PlanInput<'a>,
    digest: impl FnOnce() -> String,
    start: impl FnOnce() -> Start<'a>,
) -> Result<Planned, Vec<Diagnostic>> {
    let entries = entries(input.spec, input.state);

    // The set of services the plan may touch.
    let scope = scope(input, &entries)?;
    let in_scope = |name: &str| scope.as_ref().is_none_or(|s| s.contains(name));

    // Pass 1: per-service changes, without rewiring, with the entry of each; `change_at` is
    // the position in `changes` of every entry's change.
    const NONE: u32 = u32::MAX;
    let mut changes: Vec<(usize, Change)> = Vec::new();
    let mut change_at: Vec<u32> = vec![NONE; entries.len()];
    let mut paused: Vec<String> = Vec::new();
    let mut endpoints_change: HashSet<&str> = HashSet::new();
    let mut down: Vec<DownInstance> = Vec::new();
    let mut dead: HashMap<&str, Vec<&str>> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if !in_scope(entry.name) {
            continue;
        }
        if entry.recorded.is_some_and(|s| s.paused) {
            // Held until `enact resume`: apply leaves a paused service alone.
            paused.push(entry.name.to_string());
            continue;
        }
        let mut change = compare(entry.name, entry.recorded, entry.desired);
        // A service being destroyed stops anyway, whatever its instances are doing.
        if let (Some(observed), Some(recorded), Some(_)) = (input.observed, entry.recorded, entry.desired) {
            let replaced = observe_service(entry, recorded, observed, &mut down);
            if !replaced.is_empty() && entry.desired.is_some_and(|d| !d.is_legacy()) {
                let change = change.get_or_insert_with(|| unchanged(entry.name, recorded, entry.desired));
                change.restart = replaced.iter().map(|id| (*id).to_string()).collect();
                dead.insert(entry.name, replaced);
            }
        }
        if let Some(change) = change {
            let moves = change.action != Action::Create
                && (change.action == Action::Replace
                    || change.action == Action::Destroy
                    || change.instances.is_some()
                    || change.memory.is_some()
                    || !change.restart.is_empty()
                    || change.fields.iter().any(|f| f.path == "/nativeURIs" || f.path == "/cloudAccount"));
            if moves {
                endpoints_change.insert(entry.name);
            }
            change_at[i] = u32::try_from(changes.len()).unwrap_or(NONE);
            changes.push((i, change));
        }
    }

    // Pass 2: consumers told again about providers whose endpoints change, and about
    // dependencies added or removed.
    for (i, entry) in entries.iter().enumerate() {
        let name = entry.name;
        let (Some(before), Some(after)) = (entry.recorded, entry.desired) else {
            continue;
        };
        if !in_scope(name) || before.paused {
            // A paused service: `enact resume` wires it afresh.
            continue;
        }
        let old_deps = before.spec.as_service().dependencies();
        let new_deps = after.dependencies();
        let moved = |p: &str| endpoints_change.contains(p) && (p != name || endpoints_change.contains(name));
        if old_deps == new_deps && !new_deps.iter().any(|d| moved(&d.service_spec_name)) {
            // The common case, without building sets.
            continue;
        }
        // A dependency is a (provider, role) pair: the same provider in another role rewires too.
        let (old, new) = (dependency_pairs(old_deps), dependency_pairs(new_deps));
        let mut rewire: BTreeSet<&str> = new.symmetric_difference(&old).map(|(p, _)| *p).collect();
        rewire.extend(new.iter().map(|(p, _)| *p).filter(|p| endpoints_change.contains(*p)));
        rewire.retain(|p| *p != name || endpoints_change.contains(p));
        if rewire.is_empty() {
            continue;
        }
        let at = match change_at[i] {
            NONE => {
                change_at[i] = u32::try_from(changes.len()).unwrap_or(NONE);
                changes.push((i, unchanged(name, before, Some(after))));
                changes.len() - 1
            }
            at => at as usize,
        };
        changes[at].1.rewire = rewire.into_iter().map(str::to_string).collect();
    }
    // In entry order (pass 2 appended its own after pass 1's).
    changes.sort_by_key(|(i, _)| *i);
    let changed: Vec<(&Entry<'_>, Change)> = changes.into_iter().map(|(i, c)| (&entries[i], c)).collect();

    // Placement of the instances that start and stop.
    let demands: Vec<Demand<'_>> = changed
        .iter()
        .filter(|(_, c)| {
            !c.legacy
                && (c.instances.is_some()
                    || c.memory.is_some()
                    || !c.restart.is_empty()
                    || matches!(c.action, Action::Replace | Action::Create | Action::Destroy)
                    || c.fields.iter().any(|f| f.path == "/cloudAccount"))
        })
        .filter_map(|(entry, c)| {
            let spec = match entry.desired {
                Some(Service::Deployable(s)) => Some(s),
                _ => None,
            };
            if spec.is_none() && !matches!(entry.recorded.map(|s| &s.spec), Some(AppliedSpec::Deployable(_))) {
                return None;
            }
            Some(Demand {
                service: entry.name,
                spec,
                replace_all: c.action == Action::Replace
                    || c.memory.is_some()
                    || c.fields.iter().any(|f| f.path == "/cloudAccount"),
                dead: dead.get(entry.name).cloned().unwrap_or_default(),
            })
        })
        .collect();
    // The order of the steps needs only who changes how: another core works it out meanwhile.
    let actions: Vec<(&str, Action)> = changed.iter().map(|(entry, c)| (entry.name, c.action)).collect();
    let parallel = input.spec.len() >= DIGEST_THREAD_SERVICES;
    let (placed, steps) = std::thread::scope(|scope| {
        let steps_thread =
            parallel.then(|| std::thread::Builder::new().spawn_scoped(scope, || steps(input, &actions)).ok()).flatten();
        let view = input.settings.env_view(input.env);
        let placed = place_from(&view, input.state, &demands, start())
            .and_then(|placement| Ok((rollouts(input, &view, &demands, &placement)?, placement)));
        let steps = steps_thread.and_then(|t| t.join().ok()).unwrap_or_else(|| steps(input, &actions));
        (placed, steps)
    });
    let (rollouts, placement) = placed?;
    let mut changed = changed;
    for (service, rollout) in rollouts {
        if let Ok(i) = changed.binary_search_by(|(entry, _)| entry.name.cmp(service)) {
            changed[i].1.rollout = Some(rollout);
        }
    }

    let mut nodes: BTreeMap<String, NodeChanges> = BTreeMap::new();
    for node in placement.new_nodes.iter().filter(|n| n.provisioned) {
        *nodes.entry(node.account.clone()).or_default().create.entry(node.size.clone()).or_default() += 1;
    }
    for id in &placement.freed_nodes {
        if let Some(node) = input.state.nodes.get(id) {
            let size = node.size.clone().or_else(|| node.memory.map(|m| m.to_string())).unwrap_or_default();
            *nodes.entry(node.account.clone()).or_default().destroy.entry(size).or_default() += 1;
        }
    }

    let changes: Vec<Change> = changed.into_iter().map(|(_, c)| c).collect();
    let mut summary = Summary::default();
    for change in &changes {
        match change.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Destroy => summary.destroy += 1,
        }
    }
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        env: input.env.to_string(),
        prior_state: PriorState {
            lineage: (!input.state.lineage.is_empty()).then(|| input.state.lineage.clone()),
            serial: input.state.serial,
        },
        spec_digest: digest(),
        changes,
        steps,
        nodes,
        summary,
        paused,
        targets: {
            let mut t = input.targets.to_vec();
            t.sort();
            t.dedup();
            t
        },
        refreshed: input.observed.is_some(),
        down,
    };
    Ok(Planned { plan, placement })
}

/// An update of a service whose spec does not change (it is rewired, or dead instances of it
/// are replaced).
fn unchanged(name: &str, before: &ServiceState, after: Option<Service<'_>>) -> Change {
    Change {
        service: name.to_string(),
        action: Action::Update,
        instances: None,
        memory: None,
        fields: Vec::new(),
        rewire: Vec::new(),
        forced_by: Vec::new(),
        legacy: after.is_some_and(Service::is_legacy),
        before: Some(SpecValue::of(before.spec.as_service())),
        after: after.map(SpecValue::of),
        rollout: None,
        restart: Vec::new(),
    }
}

/// Notes every recorded instance of `entry` a refresh found down in `down`, and returns those
/// a new instance replaces (the instance itself is gone or broken, and the service stays).
fn observe_service<'s>(
    entry: &Entry<'_>,
    recorded: &'s ServiceState,
    observed: &Observations,
    down: &mut Vec<DownInstance>,
) -> Vec<&'s str> {
    let mut replaced = Vec::new();
    for instance in &recorded.instances {
        let Some(Health::Down { reason, detail }) = observed.get(&instance.id) else { continue };
        let replace = reason.replaceable() && entry.desired.is_some();
        down.push(DownInstance {
            service: entry.name.to_string(),
            instance: instance.id.clone(),
            reason: *reason,
            detail: detail.clone(),
            replaced: replace,
        });
        if replace {
            replaced.push(instance.id.as_str());
        }
    }
    replaced
}

/// Every (provider, role) a service depends on.
fn dependency_pairs(deps: &[crate::spec::ServiceDependency]) -> BTreeSet<(&str, &str)> {
    deps.iter().map(|d| (d.service_spec_name.as_str(), d.service_spec_role.as_str())).collect()
}

/// The reason of a rollout whose new instances all have a spare slot.
pub const SPARE_SLOT_REASON: &str = "a spare slot for each new instance";

/// The rollout of every rolling replacement among `demands` (a desired service whose instances
/// are all replaced), by service name; refused when one stops an old instance before its
/// replacement is ready and the service's `rollout.maxUnavailable` is 0.
fn rollouts<'d>(
    input: PlanInput<'_>,
    view: &EnvView<'_>,
    demands: &[Demand<'d>],
    placement: &Placement,
) -> Result<Vec<(&'d str, Rollout)>, Vec<Diagnostic>> {
    let rolling: Vec<&Demand<'d>> = demands
        .iter()
        .filter(|d| {
            d.replace_all && d.spec.is_some() && placement.stopped.get(d.service).is_some_and(|s| !s.is_empty())
        })
        .collect();
    if rolling.is_empty() {
        return Ok(Vec::new());
    }
    let names: HashSet<&str> = rolling.iter().map(|d| d.service).collect();
    let mut started: HashMap<&str, Vec<&PlacedInstance>> = HashMap::with_capacity(names.len());
    for placed in placement.started.iter().filter(|p| names.contains(p.service.as_str())) {
        started.entry(placed.service.as_str()).or_default().push(placed);
    }
    let mut out = Vec::with_capacity(rolling.len());
    let mut errors = Vec::new();
    for demand in rolling {
        let (Some(spec), Some(stopped)) = (demand.spec, placement.stopped.get(demand.service)) else {
            continue;
        };
        let recorded = input.state.services.get(demand.service).map_or(0, |s| s.instances.len());
        // Dead instances serve nothing: stopping them first takes nothing down, so the rollout
        // is that of the live ones.
        let is_dead = |id: &str| demand.dead.contains(&id);
        let stopped_live: Vec<String> = stopped.iter().filter(|id| !is_dead(id)).cloned().collect();
        let started_live: Vec<PlacedInstance> = started
            .get(demand.service)
            .into_iter()
            .flatten()
            .map(|p| {
                let mut p = (*p).clone();
                p.after_stopping = p.after_stopping.filter(|old| !is_dead(old));
                p
            })
            .collect();
        let started_live: Vec<&PlacedInstance> = started_live.iter().collect();
        let Some(rollout) = rollout(&started_live, &stopped_live, recorded.saturating_sub(stopped.len()), || {
            old_first_reason(view, spec)
        }) else {
            continue;
        };
        let max_unavailable = view.max_unavailable(demand.service);
        if max_unavailable.value == 0 && !rollout.old_first.is_empty() {
            let whose = if rollout.old_first.len() == 1 { "its replacement is" } else { "their replacements are" };
            let set_at = max_unavailable.set_at.map(|at| format!(" (enact.json `{at}`)")).unwrap_or_default();
            let account = spec.cloud_account.as_deref().unwrap_or(&view.default_account);
            let first = match input.settings.account(account) {
                Some(Account::Ssh(_)) => format!("add a host to ssh account `{account}`"),
                _ => "raise `nodeSelector.vmLimit`".to_string(),
            };
            errors.push(
                Diagnostic::new(format!(
                    "`rollout.maxUnavailable` is 0{set_at}, but {} would stop before {whose} ready: {}",
                    rollout.old_first.join(", "),
                    rollout.reason
                ))
                .service(demand.service)
                .hint(format!("{first}, give the service a free port, or allow it with `rollout.maxUnavailable` ≥ 1")),
            );
        }
        out.push((demand.service, rollout));
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// How one service's rolling replacement runs, following apply's sequence: with old instances
/// `stopped` (in order) and new ones `started` (in order), `remaining` is `stopped` without the
/// `after_stopping` ones; for each new instance its `after_stopping` instance stops first, the
/// new one starts, then the front of `remaining` stops; what remains stops at the end. `kept`
/// instances are not replaced and serve throughout. `None` when nothing rolls (no instance to
/// start or none to stop: apply then starts, or stops, them all at once). `reason` explains an
/// old-before-new stop; it is only called when there is one.
pub fn rollout(
    started: &[&PlacedInstance],
    stopped: &[String],
    kept: usize,
    reason: impl FnOnce() -> String,
) -> Option<Rollout> {
    if started.is_empty() || stopped.is_empty() {
        return None;
    }
    let old_first: Vec<String> = started.iter().filter_map(|p| p.after_stopping.clone()).collect();
    let order = match old_first.len() {
        0 => RolloutOrder::NewBeforeOld,
        n if n == started.len() => RolloutOrder::OldBeforeNew,
        _ => RolloutOrder::Mixed,
    };
    let mut remaining: std::collections::VecDeque<&String> =
        stopped.iter().filter(|id| !old_first.contains(id)).collect();
    let mut serving = kept + stopped.len();
    let mut empty_windows = 0;
    for placed in started {
        // Each stop here comes before this instance starts: a replacement is still to come.
        if placed.after_stopping.as_ref().is_some_and(|old| stopped.contains(old)) {
            serving = serving.saturating_sub(1);
            if serving == 0 {
                empty_windows += 1;
            }
        }
        serving += 1;
        if remaining.pop_front().is_some() {
            // The instance just started serves: this stop never empties the service.
            serving = serving.saturating_sub(1);
        }
    }
    let reason = if old_first.is_empty() { SPARE_SLOT_REASON.to_string() } else { reason() };
    Some(Rollout { order, reason, old_first, empty_windows })
}

/// `None` without targets; else the targets and, transitively, the services they depend on.
fn scope<'a>(input: PlanInput<'a>, entries: &[Entry<'a>]) -> Result<Option<HashSet<&'a str>>, Vec<Diagnostic>> {
    if input.targets.is_empty() {
        return Ok(None);
    }
    let find = |name: &str| entries.binary_search_by(|e| e.name.cmp(name)).ok().map(|i| entries[i]);
    let mut errors = Vec::new();
    let mut scope: HashSet<&str> = HashSet::new();
    let mut queue: Vec<&str> = Vec::new();
    for target in input.targets {
        match find(target) {
            Some(entry) => queue.push(entry.name),
            None => errors.push(
                Diagnostic::new(format!("`--target {target}` names no service of the spec or the state")).hint(
                    crate::suggest::hint(
                        target,
                        entries.iter().map(|e| e.name),
                        "`enact graph --format text` lists the services",
                    ),
                ),
            ),
        }
    }
    while let Some(name) = queue.pop() {
        if !scope.insert(name) {
            continue;
        }
        if let Some(service) = find(name).and_then(|e| e.desired) {
            queue.extend(service.dependencies().iter().map(|d| d.service_spec_name.as_str()));
        }
    }
    if errors.is_empty() { Ok(Some(scope)) } else { Err(errors) }
}

/// Compares one service's recorded and desired spec.
fn compare(name: &str, recorded: Option<&ServiceState>, after: Option<Service<'_>>) -> Option<Change> {
    let before = recorded.map(|s| s.spec.as_service());
    let incomplete = recorded.is_some_and(|s| s.incomplete);
    // What runs, not what the spec said: after a failure the two can differ.
    let recorded_instances = match recorded {
        Some(s) if !s.spec.as_service().is_legacy() => u32::try_from(s.instances.len()).unwrap_or(u32::MAX),
        _ => 0,
    };
    let instances_of = |s: Option<Service<'_>>| match s {
        Some(Service::Deployable(d)) => d.instances(),
        _ => 0,
    };
    let memory_of = |s: Option<Service<'_>>| match s {
        Some(Service::Deployable(d)) => Some(d.memory()),
        _ => None,
    };
    let action = match (before, after) {
        (None, None) => return None,
        (None, Some(_)) => Action::Create,
        (Some(_), None) => Action::Destroy,
        (Some(b), Some(a)) => {
            if same_spec(b, a) && !incomplete && recorded_instances == instances_of(after) {
                return None;
            }
            Action::Update
        }
    };
    let fields = field_changes(before, after);
    let kind_changes = matches!((before, after), (Some(b), Some(a)) if b.is_legacy() != a.is_legacy());
    let mut forced_by: Vec<String> = Vec::new();
    if action == Action::Update {
        if incomplete {
            forced_by.push("incomplete".to_string());
        }
        if kind_changes {
            forced_by.push("/kind".to_string());
        }
        forced_by.extend(
            fields
                .iter()
                .filter(|f| REDEPLOY_FIELDS.iter().any(|r| f.path.strip_prefix('/') == Some(*r)))
                .map(|f| f.path.clone()),
        );
    }
    let action = if forced_by.is_empty() { action } else { Action::Replace };
    let (from, to) = (recorded_instances, instances_of(after));
    let (memory_from, memory_to) = (memory_of(before), memory_of(after));
    Some(Change {
        service: name.to_string(),
        action,
        instances: (from != to).then_some(FromTo { from, to }),
        memory: (memory_from != memory_to).then_some(FromTo { from: memory_from, to: memory_to }),
        fields,
        rewire: Vec::new(),
        forced_by,
        legacy: after.or(before).is_some_and(Service::is_legacy),
        before: before.map(SpecValue::of),
        after: after.map(SpecValue::of),
        rollout: None,
        restart: Vec::new(),
    })
}

/// Every field that differs between two specs, by JSON pointer, as [`diff_values`] finds
/// between their JSON values; specs of one kind are compared field by field, and only the
/// fields that differ become JSON.
fn field_changes(before: Option<Service<'_>>, after: Option<Service<'_>>) -> Vec<FieldChange> {
    fn deployable(s: Option<Service<'_>>) -> Option<&crate::spec::DeployableServiceSpec> {
        match s {
            Some(Service::Deployable(d)) => Some(d),
            _ => None,
        }
    }
    fn legacy(s: Option<Service<'_>>) -> Option<&crate::spec::LegacyServiceSpec> {
        match s {
            Some(Service::Legacy(l)) => Some(l),
            _ => None,
        }
    }
    let mut out = Vec::new();
    match (before, after) {
        (None | Some(Service::Deployable(_)), None | Some(Service::Deployable(_))) => {
            deployable_changes(deployable(before), deployable(after), &mut out);
        }
        (None | Some(Service::Legacy(_)), None | Some(Service::Legacy(_))) => {
            legacy_changes(legacy(before), legacy(after), &mut out);
        }
        // The kind changes: whole values.
        _ => diff_values(
            "",
            &before.map_or(Value::Null, Service::to_value),
            &after.map_or(Value::Null, Service::to_value),
            &mut out,
        ),
    }
    out
}

/// Compares one field of two specs (either may be missing): when it differs, the JSON values
/// of the two sides (`null` where the field is left out) go to [`diff_values`] under `/key`.
macro_rules! compare_field {
    ($out:expr, $before:expr, $after:expr, $key:literal, $field:ident, $left_out:expr) => {{
        let (b, a) = ($before.map(|s| &s.$field), $after.map(|s| &s.$field));
        if b != a {
            let value = |side: Option<&_>| match side {
                Some(v) if !$left_out(v) => serde_json::to_value(v).unwrap_or(Value::Null),
                _ => Value::Null,
            };
            diff_values(concat!("/", $key), &value(b), &value(a), $out);
        }
    }};
}

/// [`field_changes`] of two deployable specs, in the order of [`field_rank`].
fn deployable_changes(
    before: Option<&crate::spec::DeployableServiceSpec>,
    after: Option<&crate::spec::DeployableServiceSpec>,
    out: &mut Vec<FieldChange>,
) {
    compare_field!(out, before, after, "name", name, |_: &String| false);
    compare_field!(out, before, after, "roles", roles, Vec::is_empty);
    compare_field!(out, before, after, "dependencies", dependencies, Vec::is_empty);
    compare_field!(out, before, after, "serviceType", service_type, Option::is_none);
    compare_field!(out, before, after, "packageType", package_type, Option::is_none);
    compare_field!(out, before, after, "packageUri", package_uri, Option::is_none);
    compare_field!(out, before, after, "endpointName", endpoint_name, Option::is_none);
    compare_field!(out, before, after, "port", port, Option::is_none);
    compare_field!(out, before, after, "numberOfInstances", number_of_instances, Option::is_none);
    compare_field!(out, before, after, "resourceImpact", resource_impact, Option::is_none);
    compare_field!(out, before, after, "version", version, Option::is_none);
    compare_field!(out, before, after, "cloudAccount", cloud_account, Option::is_none);
    compare_field!(out, before, after, "desiredQoS", desired_qos, Option::is_none);
}

/// [`field_changes`] of two legacy specs, in the order of [`field_rank`].
fn legacy_changes(
    before: Option<&crate::spec::LegacyServiceSpec>,
    after: Option<&crate::spec::LegacyServiceSpec>,
    out: &mut Vec<FieldChange>,
) {
    compare_field!(out, before, after, "name", name, |_: &String| false);
    compare_field!(out, before, after, "roles", roles, Vec::is_empty);
    compare_field!(out, before, after, "dependencies", dependencies, Vec::is_empty);
    compare_field!(out, before, after, "serviceType", service_type, Option::is_none);
    compare_field!(out, before, after, "nativeURIs", native_uris, Vec::is_empty);
}

fn same_spec(a: Service<'_>, b: Service<'_>) -> bool {
    match (a, b) {
        // Both sides are normally normalized already: equal as they are is equal.
        (Service::Deployable(a), Service::Deployable(b)) if a == b => true,
        (Service::Legacy(a), Service::Legacy(b)) if a == b => true,
        (Service::Deployable(a), Service::Deployable(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.normalize();
            b.normalize();
            a == b
        }
        (Service::Legacy(a), Service::Legacy(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.normalize();
            b.normalize();
            a == b
        }
        _ => false,
    }
}

/// Every leaf that differs, by JSON pointer; arrays compare whole.
fn diff_values(path: &str, before: &Value, after: &Value, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            // Key order of the spec model, not alphabetical, reads better: keep `name` first.
            let mut keys: Vec<&String> = keys.into_iter().collect();
            keys.sort_by_key(|k| (k.as_str() != "name", field_rank(k)));
            for key in keys {
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                diff_values(&child, b.get(key).unwrap_or(&Value::Null), a.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Object(b), Value::Null) if !path.is_empty() || !b.is_empty() => {
            diff_values(path, before, &Value::Object(serde_json::Map::new()), out);
        }
        (Value::Null, Value::Object(_)) => {
            diff_values(path, &Value::Object(serde_json::Map::new()), after, out);
        }
        (b, a) if b != a => out.push(FieldChange { path: path.to_string(), from: b.clone(), to: a.clone() }),
        _ => {}
    }
}

/// The position of a field in the spec model, so field lists follow the model's order.
fn field_rank(key: &str) -> usize {
    const ORDER: [&str; 21] = [
        "name",
        "roles",
        "dependencies",
        "serviceType",
        "packageType",
        "packageUri",
        "endpointName",
        "port",
        "numberOfInstances",
        "resourceImpact",
        "memory",
        "cpu",
        "storage",
        "network",
        "version",
        "cloudAccount",
        "desiredQoS",
        "responseTimeMetric",
        "acceptablePercentage",
        "maxDesiredResponseTime",
        "nativeURIs",
    ];
    ORDER.iter().position(|k| *k == key).unwrap_or(ORDER.len())
}

/// Orders the changes: providers before consumers for everything that starts or rewires,
/// consumers before providers for what is destroyed; cycles form one group.
fn steps(input: PlanInput<'_>, changes: &[(&str, Action)]) -> Vec<Step> {
    if changes.is_empty() {
        return Vec::new();
    }
    // The graph of the spec plus the destroyed services with their recorded dependencies.
    let destroyed = changes
        .iter()
        .filter(|(_, action)| *action == Action::Destroy)
        .filter_map(|(service, _)| input.state.services.get(*service).map(|s| s.spec.as_service()));
    let graph = ServiceGraph::from_services(input.spec.services().chain(destroyed));
    let groups = graph.condensed();
    // The change of every node, by node index.
    let mut change_of: Vec<Option<Action>> = vec![None; graph.len()];
    for (service, action) in changes {
        if let Some(node) = graph.node(service) {
            change_of[node.index()] = Some(*action);
        }
    }
    // Recorded consumers of the destroyed services (the spec may no longer name them).
    let mut old_consumers: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    if changes.iter().any(|(_, action)| *action == Action::Destroy) {
        for (consumer, service) in &input.state.services {
            for dep in service.spec.as_service().dependencies() {
                let provider = dep.service_spec_name.as_str();
                if graph.node(provider).and_then(|p| change_of[p.index()]).is_some_and(|a| a == Action::Destroy) {
                    old_consumers.entry(provider).or_default().insert(consumer.as_str());
                }
            }
        }
    }
    let mut forward = Vec::new();
    let mut backward = Vec::new();
    for (g, group) in groups.order.iter().enumerate() {
        for &node in group {
            let Some(action) = change_of[node.index()] else {
                continue;
            };
            let name = graph.name(node);
            if action == Action::Destroy {
                // Every recorded consumer is unwired (or destroyed) first.
                let mut after: BTreeSet<&str> =
                    graph.neighbor_nodes(node, Direction::Outgoing).map(|n| graph.name(n)).collect();
                after.extend(old_consumers.get(name).into_iter().flatten().copied());
                let after: Vec<String> = after
                    .into_iter()
                    .filter(|c| {
                        *c != name
                            && graph
                                .node(c)
                                .is_some_and(|n| groups.group_of[n.index()] != g && change_of[n.index()].is_some())
                    })
                    .map(str::to_string)
                    .collect();
                backward.push(Step { service: name.to_string(), action, after });
            } else {
                let after: BTreeSet<&str> = graph
                    .neighbor_nodes(node, Direction::Incoming)
                    .filter(|p| {
                        groups.group_of[p.index()] != g && change_of[p.index()].is_some_and(|a| a != Action::Destroy)
                    })
                    .map(|p| graph.name(p))
                    .collect();
                let after = after.into_iter().map(str::to_string).collect();
                forward.push(Step { service: name.to_string(), action, after });
            }
        }
    }
    backward.reverse();
    forward.extend(backward);
    forward
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::converge::apply_model;
    use crate::spec::model::ResourceImpact;
    use crate::spec::{DeployableServiceSpec, LegacyServiceSpec, ServiceDependency};
    use proptest::prelude::*;

    /// A spec of either kind, each field left out or one of a few values.
    fn any_service() -> impl Strategy<Value = AppliedSpec> {
        let text = || proptest::option::of(prop_oneof![Just("a".to_string()), Just("b".to_string())]);
        let list = || proptest::collection::vec(prop_oneof![Just("x".to_string()), Just("y".to_string())], 0..3);
        let deployable = (
            (text(), list(), 0..3usize, text(), text(), proptest::option::of(0..3i64)),
            (proptest::option::of(1..3i64), proptest::option::of((0..3u8, text())), text(), text()),
        )
            .prop_map(
                |((name, roles, deps, package_type, endpoint, port), (instances, impact, version, account))| {
                    AppliedSpec::Deployable(DeployableServiceSpec {
                        name: name.unwrap_or_default(),
                        roles,
                        dependencies: (0..deps)
                            .map(|d| ServiceDependency {
                                service_spec_name: format!("p{d}"),
                                service_spec_role: "r".into(),
                            })
                            .collect(),
                        package_type,
                        endpoint_name: endpoint,
                        port,
                        number_of_instances: instances,
                        resource_impact: impact.map(|(m, cpu)| ResourceImpact {
                            memory: [None, Some(crate::spec::Memory::Small), Some(crate::spec::Memory::Large)]
                                [usize::from(m)],
                            cpu,
                            ..ResourceImpact::default()
                        }),
                        version,
                        cloud_account: account,
                        ..DeployableServiceSpec::default()
                    })
                },
            );
        let legacy = (text(), list(), list()).prop_map(|(name, roles, uris)| {
            AppliedSpec::Legacy(LegacyServiceSpec {
                name: name.unwrap_or_default(),
                roles,
                native_uris: uris,
                ..Default::default()
            })
        });
        prop_oneof![3 => deployable, 1 => legacy]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Comparing field by field finds what comparing the two whole JSON values finds.
        #[test]
        fn typed_field_changes_are_those_of_the_json_values(
            before in proptest::option::of(any_service()),
            after in proptest::option::of(any_service()),
        ) {
            let (b, a) = (before.as_ref().map(AppliedSpec::as_service), after.as_ref().map(AppliedSpec::as_service));
            let mut whole = Vec::new();
            diff_values("", &b.map_or(Value::Null, Service::to_value), &a.map_or(Value::Null, Service::to_value), &mut whole);
            prop_assert_eq!(field_changes(b, a), whole);
            // And a change carries the specs as their JSON.
            prop_assert_eq!(b.map(|s| serde_json::to_value(SpecValue::of(s)).unwrap()), b.map(Service::to_value));
        }
    }

    /// One service `airline` on port 1234.
    fn airline(instances: u32, memory: &str, version: &str) -> Choreography {
        let mut chor: Choreography = serde_json::from_value(serde_json::json!({ "deployableServiceSpecs": [{
            "name": "airline", "roles": ["airline"], "packageUri": "services/airline.py", "port": 1234,
            "numberOfInstances": instances, "resourceImpact": { "memory": memory }, "version": version
        }]}))
        .unwrap();
        chor.normalize();
        chor
    }

    fn settings(text: &str) -> Settings {
        serde_json::from_str(text).unwrap()
    }

    fn plan_of(spec: &Choreography, state: &State, settings: &Settings) -> Result<Planned, Vec<Diagnostic>> {
        plan(PlanInput { env: "dev", spec, state, settings, targets: &[], observed: None })
    }

    /// The state after applying `spec` to an empty environment.
    fn applied(spec: &Choreography, settings: &Settings) -> State {
        let empty = State::empty("dev");
        apply_model(&empty, spec, &plan_of(spec, &empty, settings).unwrap())
    }

    fn placed(id: &str, after_stopping: Option<&str>) -> PlacedInstance {
        PlacedInstance {
            service: "airline".into(),
            id: id.into(),
            node: "n".into(),
            after_stopping: after_stopping.map(str::to_string),
        }
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn a_rollout_follows_the_executors_sequence() {
        let reason = || "no room".to_string();
        let (a, b) = (placed("airline-3", Some("airline-1")), placed("airline-4", Some("airline-2")));
        // One instance replaced old-before-new: nothing serves while it restarts.
        let one = rollout(&[&a], &ids(&["airline-1"]), 0, reason).unwrap();
        assert_eq!(
            one,
            Rollout {
                order: RolloutOrder::OldBeforeNew,
                reason: "no room".into(),
                old_first: ids(&["airline-1"]),
                empty_windows: 1
            }
        );
        // Two, each old-before-new: one always serves.
        let two = rollout(&[&a, &b], &ids(&["airline-1", "airline-2"]), 0, reason).unwrap();
        assert_eq!((two.order, two.empty_windows), (RolloutOrder::OldBeforeNew, 0));
        assert_eq!(two.old_first, ids(&["airline-1", "airline-2"]));
        // A kept instance serves throughout.
        assert_eq!(rollout(&[&a], &ids(&["airline-1"]), 1, reason).unwrap().empty_windows, 0);
        // New before old: the reason is the spare slot, and `reason` is not asked.
        let (c, d) = (placed("airline-3", None), placed("airline-4", None));
        let spare = rollout(&[&c, &d], &ids(&["airline-1", "airline-2"]), 0, || unreachable!()).unwrap();
        assert_eq!(
            (spare.order, spare.reason.as_str(), spare.empty_windows),
            (RolloutOrder::NewBeforeOld, SPARE_SLOT_REASON, 0)
        );
        let mixed = rollout(&[&c, &b], &ids(&["airline-1", "airline-2"]), 0, reason).unwrap();
        assert_eq!((mixed.order, mixed.old_first), (RolloutOrder::Mixed, ids(&["airline-2"])));
        // Nothing to stop, or nothing to start: not a rolling replacement.
        assert_eq!(rollout(&[&c], &[], 0, reason), None);
        assert_eq!(rollout(&[], &ids(&["airline-1"]), 0, reason), None);
    }

    #[test]
    fn a_redeploy_at_the_vm_limit_says_it_goes_old_before_new() {
        let settings = settings(r#"{"nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 1}}"#);
        let state = applied(&airline(1, "SMALL", "1.0"), &settings);
        let planned = plan_of(&airline(1, "SMALL", "1.1"), &state, &settings).unwrap();
        let rollout = planned.plan.change("airline").and_then(|c| c.rollout.clone()).unwrap();
        assert_eq!(rollout.order, RolloutOrder::OldBeforeNew);
        assert_eq!(rollout.old_first, ids(&["airline-1"]));
        assert_eq!(rollout.empty_windows, 1);
        assert!(rollout.reason.contains("`vmLimit` 1 of account `local` is reached"), "{}", rollout.reason);
        let json = planned.plan.to_json();
        assert!(json.contains(r#""order": "old-before-new""#) && json.contains(r#""emptyWindows": 1"#), "{json}");
    }

    #[test]
    fn a_redeploy_and_a_resize_with_spare_slots_go_new_before_old() {
        let settings = Settings::default();
        let state = applied(&airline(2, "SMALL", "1.0"), &settings);
        for spec in [airline(2, "SMALL", "1.1"), airline(2, "MEDIUM", "1.0")] {
            let planned = plan_of(&spec, &state, &settings).unwrap();
            let rollout = planned.plan.change("airline").and_then(|c| c.rollout.clone()).unwrap();
            assert_eq!(
                rollout,
                Rollout {
                    order: RolloutOrder::NewBeforeOld,
                    reason: SPARE_SLOT_REASON.into(),
                    old_first: Vec::new(),
                    empty_windows: 0
                }
            );
        }
        // Scaling and destroying replace nothing: no rollout.
        for spec in [airline(3, "SMALL", "1.0"), airline(1, "SMALL", "1.0"), Choreography::default()] {
            let planned = plan_of(&spec, &state, &settings).unwrap();
            assert!(planned.plan.changes.iter().all(|c| c.rollout.is_none()), "{}", planned.plan.to_json());
        }
    }

    #[test]
    fn max_unavailable_0_refuses_an_old_before_new_replacement() {
        let limited = r#""nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 2}"#;
        let state = applied(&airline(2, "SMALL", "1.0"), &settings(&format!("{{{limited}}}")));
        let strict =
            settings(&format!(r#"{{{limited}, "services": {{"airline": {{"rollout": {{"maxUnavailable": 0}}}}}}}}"#));
        let errors = plan_of(&airline(2, "SMALL", "1.1"), &state, &strict).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let text = errors[0].to_string();
        for part in [
            "service `airline`",
            "`rollout.maxUnavailable` is 0 (enact.json `services.airline.rollout`)",
            "airline-1, airline-2 would stop before their replacements are ready",
            "`vmLimit` 2 of account `local` is reached",
            "raise `nodeSelector.vmLimit`",
            "`rollout.maxUnavailable` ≥ 1",
        ] {
            assert!(text.contains(part), "{part:?} missing: {text}");
        }
        // The environment's 0 is overridden by the service's 1.
        let allowed = settings(&format!(
            r#"{{{limited}, "rollout": {{"maxUnavailable": 0}}, "services": {{"airline": {{"rollout": {{"maxUnavailable": 1}}}}}}}}"#
        ));
        assert!(plan_of(&airline(2, "SMALL", "1.1"), &state, &allowed).is_ok());
        // With a spare slot for each new instance, 0 is no obstacle.
        let roomy = settings(
            r#"{"nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 4}, "rollout": {"maxUnavailable": 0}}"#,
        );
        assert!(plan_of(&airline(2, "SMALL", "1.1"), &state, &roomy).is_ok());
    }
}
