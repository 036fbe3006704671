//! The plan as a pure function of effective spec × recorded state × settings: no network, no
//! clock, no randomness; the same inputs give the same bytes. Linear in the number of services.
//!
//! [`plan`] compares every service (`compare`), rewires consumers, places what starts and
//! stops ([`super::placement`]), works out the rollouts ([`rollout()`]) and orders the steps
//! (`steps`). Depends on the spec, the state, the service graph and the settings of
//! [`crate::repo`].

mod compare;
mod rollout;
mod steps;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashSet, HashSetExt as _};
use sha2::{Digest, Sha256};

use super::model::{
    Action, Change, DownInstance, NodeChanges, PLAN_FORMAT_VERSION, Plan, PriorState, Rollout, SpareChanges, Step,
    Summary, UntrackedSummary,
};
use super::placement::{Demand, Placement, Start, place_from, reservoir_accounts};
use crate::diagnostic::Diagnostic;
use crate::repo::settings::Settings;
use crate::spec::{Choreography, Service};
use crate::state::observed::{Health, Observations};
use crate::state::{AppliedSpec, ServiceState, State};
pub use compare::REDEPLOY_FIELDS;
use compare::{compare, dependency_pairs, unchanged};
use rollout::rollouts;
pub use rollout::{SPARE_SLOT_REASON, rollout};
use steps::steps;

/// What a plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The environment planned.
    pub env: &'a str,
    /// The effective spec, normalized.
    pub spec: &'a Choreography,
    /// The recorded state of the environment (empty when never applied).
    pub state: &'a State,
    /// enact.json: accounts, node selection, rollout settings.
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
    /// The plan, as shown and saved.
    pub plan: Plan,
    /// Where every new instance goes, and which nodes are created and freed.
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
                untracked: UntrackedSummary::default(),
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
///
/// # Errors
/// Every problem at once, each a [`Diagnostic`]: a `--target` that names no service, an
/// instance that cannot be placed, a rolling replacement `rollout.maxUnavailable` 0 forbids.
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
    let entries = crate::timing::phase("plan: services listed", || entries(input.spec, input.state));

    // The set of services the plan may touch.
    let scope = scope(input, &entries)?;
    let in_scope = |name: &str| scope.as_ref().is_none_or(|s| s.contains(name));
    let mut compared = crate::timing::phase("plan: services compared", || compare_entries(input, &entries, &in_scope));
    crate::timing::phase("plan: consumers to rewire found", || rewire(&entries, &in_scope, &mut compared));
    let Compared { mut changes, paused, down, dead, .. } = compared;
    // In entry order (pass 2 appended its own after pass 1's).
    changes.sort_unstable_by_key(|(i, _)| *i);
    let mut changed: Vec<(&Entry<'_>, Change)> = changes.into_iter().map(|(i, c)| (&entries[i], c)).collect();

    // Placement of the instances that start and stop.
    let demands = demands(&changed, &dead);
    let (placed, steps) =
        crate::timing::phase("plan: placement and step order", || place_and_order(input, &changed, &demands, start));
    let (rollouts, placement) = placed?;
    for (service, rollout) in rollouts {
        if let Ok(i) = changed.binary_search_by(|(entry, _)| entry.name.cmp(service)) {
            changed[i].1.rollout = Some(rollout);
        }
    }
    let nodes = crate::timing::phase("plan: node changes counted", || node_changes(input.state, &placement));
    let changes: Vec<Change> = changed.into_iter().map(|(_, c)| c).collect();
    let summary = summarize(&changes);
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        env: input.env.to_string(),
        prior_state: PriorState {
            lineage: (!input.state.lineage.is_empty()).then(|| input.state.lineage.clone()),
            serial: input.state.serial,
        },
        spec_digest: crate::timing::phase("plan: spec digest (another thread) waited for", digest),
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
        untracked: UntrackedSummary::default(),
    };
    Ok(Planned { plan, placement })
}

/// No change yet for an entry (in [`Compared::change_at`]).
const NONE: u32 = u32::MAX;

/// What comparing every entry finds (pass 1, [`compare_entries`]), and rewiring adds to
/// (pass 2, [`rewire`]).
#[derive(Debug, Default)]
struct Compared<'a> {
    /// Per-service changes, with the index of each one's entry.
    changes: Vec<(usize, Change)>,
    /// For every entry, the position of its change in `changes`, or [`NONE`].
    change_at: Vec<u32>,
    /// Paused services, left alone until `enact resume`.
    paused: Vec<String>,
    /// Services whose instances (so their endpoints) change: their consumers are rewired.
    endpoints_change: HashSet<&'a str>,
    /// Recorded instances a refresh found down.
    down: Vec<DownInstance>,
    /// Per service, the dead instances a new one replaces.
    dead: HashMap<&'a str, Vec<&'a str>>,
}

/// Pass 1: per-service changes, without rewiring, with the entry of each.
fn compare_entries<'a>(input: PlanInput<'a>, entries: &[Entry<'a>], in_scope: &impl Fn(&str) -> bool) -> Compared<'a> {
    let mut compared = Compared { change_at: vec![NONE; entries.len()], ..Compared::default() };
    for (i, entry) in entries.iter().enumerate() {
        if !in_scope(entry.name) {
            continue;
        }
        if entry.recorded.is_some_and(|s| s.paused) {
            // Held until `enact resume`: apply leaves a paused service alone.
            compared.paused.push(entry.name.to_string());
            continue;
        }
        let mut change = compare(entry.name, entry.recorded, entry.desired);
        // A service being destroyed stops anyway, whatever its instances are doing.
        if let (Some(observed), Some(recorded), Some(_)) = (input.observed, entry.recorded, entry.desired) {
            let replaced = observe_service(entry, recorded, observed, &mut compared.down);
            if !replaced.is_empty() && entry.desired.is_some_and(|d| !d.is_legacy()) {
                let change = change.get_or_insert_with(|| unchanged(entry.name, recorded, entry.desired));
                change.restart = replaced.iter().map(|id| (*id).to_string()).collect();
                compared.dead.insert(entry.name, replaced);
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
                compared.endpoints_change.insert(entry.name);
            }
            compared.change_at[i] = u32::try_from(compared.changes.len()).unwrap_or(NONE);
            compared.changes.push((i, change));
        }
    }
    compared
}

/// Pass 2: consumers told again about providers whose endpoints change, and about
/// dependencies added or removed.
fn rewire<'a>(entries: &[Entry<'a>], in_scope: &impl Fn(&str) -> bool, compared: &mut Compared<'a>) {
    let Compared { changes, change_at, endpoints_change, .. } = compared;
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
}

/// What every changed deployable service needs from placement: instances that start, stop, or
/// move (a replace, a resize, another account, dead instances replaced).
fn demands<'a>(changed: &[(&Entry<'a>, Change)], dead: &HashMap<&'a str, Vec<&'a str>>) -> Vec<Demand<'a>> {
    changed
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
            if spec.is_none() && !matches!(entry.recorded.map(|s| &*s.spec), Some(AppliedSpec::Deployable(_))) {
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
        .collect()
}

/// What placement and the rollouts of `demands` give (or why they are refused).
type Placed<'d> = Result<(Vec<(&'d str, Rollout)>, Placement), Vec<Diagnostic>>;

/// Places `demands` and works out their rollouts, and orders the steps of `changed`: the order
/// needs only who changes how, so from [`DIGEST_THREAD_SERVICES`] services on another core
/// works it out meanwhile.
fn place_and_order<'a, 'd>(
    input: PlanInput<'a>,
    changed: &[(&Entry<'_>, Change)],
    demands: &[Demand<'d>],
    start: impl FnOnce() -> Start<'a>,
) -> (Placed<'d>, Vec<Step>) {
    let actions: Vec<(&str, Action)> = changed.iter().map(|(entry, c)| (entry.name, c.action)).collect();
    let parallel = input.spec.len() >= DIGEST_THREAD_SERVICES;
    std::thread::scope(|scope| {
        let steps_thread =
            parallel.then(|| std::thread::Builder::new().spawn_scoped(scope, || steps(input, &actions)).ok()).flatten();
        let view = input.settings.env_view(input.env);
        // A plan limited by `--target` leaves the reservoirs alone (but for the spares its new
        // instances take); otherwise every account the spec places services in keeps one.
        let reserve = input.targets.is_empty().then(|| {
            let accounts = input
                .spec
                .deployable_service_specs
                .iter()
                .map(|s| s.cloud_account.as_deref().unwrap_or(&view.default_account));
            reservoir_accounts(&view, accounts)
        });
        let start = crate::timing::phase("plan: placement start (another thread) waited for", start);
        let placed = crate::timing::phase("plan: instances placed", || {
            place_from(&view, input.state, demands, start, reserve.as_ref())
        })
        .and_then(|placement| Ok((rollouts(input, &view, demands, &placement)?, placement)));
        let steps = crate::timing::phase("plan: step order (another thread) waited for", || {
            steps_thread.and_then(|t| t.join().ok()).unwrap_or_else(|| steps(input, &actions))
        });
        (placed, steps)
    })
}

/// Per account, the nodes `placement` creates and frees, by size, and what happens to its
/// reservoir of spares.
fn node_changes(state: &State, placement: &Placement) -> BTreeMap<String, NodeChanges> {
    let mut nodes: BTreeMap<String, NodeChanges> = BTreeMap::new();
    for node in placement.new_nodes.iter().filter(|n| n.provisioned) {
        *nodes.entry(node.account.clone()).or_default().create.entry(node.size.clone()).or_default() += 1;
    }
    for id in &placement.freed_nodes {
        if let Some(node) = state.nodes.get(id) {
            let size = node.size.clone().or_else(|| node.memory.map(|m| m.to_string())).unwrap_or_default();
            *nodes.entry(node.account.clone()).or_default().destroy.entry(size).or_default() += 1;
        }
    }
    let mut spares: BTreeMap<&str, SpareChanges> = BTreeMap::new();
    // `after` starts from the state's spares, less those handed out or freed, plus the new ones.
    for node in state.nodes.values().filter(|n| n.spare) {
        spares.entry(&node.account).or_default().after += 1;
    }
    let account_of = |id: &String| state.nodes.get(id).map(|n| n.account.as_str());
    for account in placement.handed_out.iter().filter_map(account_of) {
        let entry = spares.entry(account).or_default();
        entry.handed_out += 1;
        entry.after = entry.after.saturating_sub(1);
    }
    for account in placement.freed_spares.iter().filter_map(account_of) {
        let entry = spares.entry(account).or_default();
        entry.destroy += 1;
        entry.after = entry.after.saturating_sub(1);
    }
    for node in &placement.new_spares {
        let entry = spares.entry(&node.account).or_default();
        entry.create += 1;
        entry.after += 1;
    }
    for (account, reservoir) in &placement.reservoirs {
        spares.entry(account).or_default().limited_from = reservoir.limited_from;
    }
    for (account, changes) in spares {
        if changes.create + changes.destroy + changes.handed_out > 0 || changes.limited_from.is_some() {
            nodes.entry(account.to_string()).or_default().spares = Some(changes);
        }
    }
    nodes
}

/// How many services each action touches.
fn summarize(changes: &[Change]) -> Summary {
    let mut summary = Summary::default();
    for change in changes {
        match change.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Destroy => summary.destroy += 1,
        }
    }
    summary
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

#[cfg(test)]
mod tests;
