//! The plan as plain data: its machine form (`plan --json`, `plan --out`; `docs/formats.md`).
//! Computing it lives in [`super::diff`], showing it in [`super::render`].
//!
//! Plain data: depends on [`crate::spec`] (the specs a change carries) and
//! [`crate::state::observed`] (why an instance is down) only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{DeployableServiceSpec, LegacyServiceSpec, Memory, Service};
use crate::state::observed::DownReason;

/// The `formatVersion` of a plan; a saved plan of another version is refused.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// From this many changes on, [`Plan::write_json`] writes half of them on another thread.
const PARALLEL_JSON_CHANGES: usize = 1_000;

/// Writes the items of a list of the plan's top level as pretty JSON writes them between `[`
/// and the line of `]`: each on a new line, at the indentation of a list inside the plan
/// object, the first without a comma before it when `first` is set.
fn write_items<T: Serialize>(out: &mut impl std::io::Write, items: &[T], first: bool) -> std::io::Result<()> {
    use serde_json::ser::Formatter as _;
    for (i, item) in items.iter().enumerate() {
        out.write_all(if i == 0 && first { b"\n    " } else { b",\n    " })?;
        // A formatter two levels deep: inside the plan object and inside the list.
        let mut formatter = serde_json::ser::PrettyFormatter::new();
        let mut sink = std::io::sink();
        formatter.begin_object(&mut sink)?;
        formatter.begin_array(&mut sink)?;
        item.serialize(&mut serde_json::Serializer::with_formatter(&mut *out, formatter))?;
    }
    Ok(())
}

/// What apply would change in one environment, and in which order: the machine form of
/// `plan --json` and `plan --out` (docs/formats.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// [`PLAN_FORMAT_VERSION`].
    pub format_version: u32,
    /// The environment planned.
    pub env: String,
    /// The state planned against: a saved plan applies only to it.
    pub prior_state: PriorState,
    /// SHA-256 of the canonical effective spec the plan was made from.
    pub spec_digest: String,
    /// One change per service that changes, by service name.
    pub changes: Vec<Change>,
    /// The order apply follows: each step starts once the steps it is `after` are done.
    pub steps: Vec<Step>,
    /// Per account: nodes to create and destroy, by size (on EC2, the instance type).
    pub nodes: BTreeMap<String, NodeChanges>,
    /// How many services each action touches.
    pub summary: Summary,
    /// Paused services: apply leaves them (and any change to them) alone until `enact resume`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<String>,
    /// The `--target`s the plan was limited to, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Whether the recorded instances were looked at before planning (a refresh); `false` for
    /// `--refresh=false`, which takes the state at its word.
    #[serde(default)]
    pub refreshed: bool,
    /// Recorded instances the refresh found not healthy, with why; `replaced` says whether the
    /// plan replaces each (it does when the instance itself is gone or broken, not when its node
    /// cannot be reached or trusted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<DownInstance>,
    /// What the refresh found carrying the environment's lineage that no record names (a
    /// journal that lost it, a state edited by hand): once the plan is approved, apply stops
    /// these processes and terminates these EC2 instances before its steps. Left out when there
    /// are none or without a refresh.
    #[serde(default, skip_serializing_if = "UntrackedSummary::is_empty")]
    pub untracked: UntrackedSummary,
}

/// What a plan's refresh found that carries the environment's lineage but no record names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntrackedSummary {
    /// Processes (local or on ssh hosts), a count.
    pub processes: usize,
    /// EC2 instances, a count.
    pub ec2_instances: usize,
    /// The first few of them in words (`pid 4242 on 127.0.0.2 (airline-1)`, …), for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub described: String,
    /// Every one of them, for programs: the same objects as `status --json` lists.
    #[serde(default, skip_serializing_if = "UntrackedFound::is_empty")]
    pub found: UntrackedFound,
}

impl UntrackedSummary {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.processes == 0 && self.ec2_instances == 0
    }
}

/// What carries an environment's lineage but no record names, one by one
/// ([`UntrackedSummary::found`], and `untracked` / `untrackedNodes` of `status --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntrackedFound {
    /// The processes, in node then pid order.
    #[serde(default)]
    pub processes: Vec<UntrackedProcess>,
    /// The EC2 instances, in account then id order.
    #[serde(default)]
    pub ec2_instances: Vec<UntrackedMachine>,
}

impl UntrackedFound {
    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.ec2_instances.is_empty()
    }
}

/// A process that carries an environment's lineage but is no recorded instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntrackedProcess {
    /// Its process id on its node.
    pub pid: u32,
    /// The instance id its environment names (empty when it names none).
    pub instance: String,
    /// The service its environment names (empty when it names none).
    pub service: String,
    /// The address of the node it runs on.
    pub address: String,
    /// The account of that node.
    pub account: String,
}

/// A machine (an EC2 instance) made for an environment's lineage that no recorded node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntrackedMachine {
    /// The provider's id of it (an EC2 instance id).
    pub provider_id: String,
    /// The node id it was made for, when its tags say.
    pub node: Option<String>,
    /// The account it was made in.
    pub account: String,
    /// The address enact would reach it on.
    pub address: String,
    /// Its size (an EC2 instance type).
    pub size: String,
}

/// A recorded instance a refresh found down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownInstance {
    /// Its service.
    pub service: String,
    /// Its id.
    pub instance: String,
    /// Why it is down.
    pub reason: DownReason,
    /// The provider's own words, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Whether the plan replaces it with a new instance (when the instance itself is gone or
    /// broken; not when its node cannot be reached or trusted).
    pub replaced: bool,
}

/// The lineage and serial of the state a plan was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriorState {
    /// `null` when the environment was never applied.
    pub lineage: Option<String>,
    /// The state's serial (0 when never applied).
    pub serial: u64,
}

/// What a plan does to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A new service: its instances start and its consumers are told.
    Create,
    /// Changed in place: instances added or removed, consumers rewired, dead instances
    /// replaced, a resize or an account move (rolling).
    Update,
    /// Every instance redeployed (a field of [`crate::plan::diff::REDEPLOY_FIELDS`] changed,
    /// the kind changed, or an apply left the service incomplete).
    Replace,
    /// The service goes: its consumers are unwired, its instances stop.
    Destroy,
}

impl Action {
    /// The name in the plan's machine form: `create`, `update`, `replace`, `destroy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Destroy => "destroy",
        }
    }
}

/// How one service changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The service's name.
    pub service: String,
    /// What happens to it.
    pub action: Action,
    /// Present when the instance count changes (`from` 0 on create, `to` 0 on destroy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<FromTo<u32>>,
    /// Present when the memory size changes (`from` null on create, `to` null on destroy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<FromTo<Option<Memory>>>,
    /// Every changed spec field, by JSON pointer.
    pub fields: Vec<FieldChange>,
    /// Dependencies whose endpoint lists this service must be told again.
    pub rewire: Vec<String>,
    /// For `replace`: the pointers of the fields that force it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced_by: Vec<String>,
    /// Whether the service is a legacy service (nothing deployed, only wired).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy: bool,
    /// The service spec before (null on create) and after (null on destroy).
    pub before: Option<SpecValue>,
    /// The service spec after (null on destroy).
    pub after: Option<SpecValue>,
    /// How apply replaces the running instances, present for every rolling replacement: a
    /// `replace`, or an `update` that moves the instances (memory size or `cloudAccount`),
    /// when there are both instances to stop and instances to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Recorded instances a refresh found not running: each leaves every consumer's list, stops
    /// and is replaced by a new instance (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
}

/// A service spec as a change carries it (`before`, `after`): the typed spec a plan was made
/// from, or the JSON a saved plan file holds. Both write the same JSON: the spec's fields in
/// the model's order, defaults left out.
#[derive(Debug, Clone)]
pub enum SpecValue {
    /// A deployable service's spec, as planned (shared: a change that only rewires has the
    /// same spec before and after).
    Deployable(std::sync::Arc<DeployableServiceSpec>),
    /// A legacy service's spec, as planned.
    Legacy(std::sync::Arc<LegacyServiceSpec>),
    /// As read from a saved plan.
    Json(Value),
}

impl SpecValue {
    /// A copy of `service`'s spec.
    pub fn of(service: Service<'_>) -> SpecValue {
        match service {
            Service::Deployable(s) => SpecValue::Deployable(std::sync::Arc::new(s.clone())),
            Service::Legacy(s) => SpecValue::Legacy(std::sync::Arc::new(s.clone())),
        }
    }

    /// The JSON value of the spec (`null` if it cannot be one).
    pub fn to_value(&self) -> Value {
        match self {
            SpecValue::Json(value) => value.clone(),
            typed => serde_json::to_value(typed).unwrap_or(Value::Null),
        }
    }
}

impl PartialEq for SpecValue {
    /// Equal when they write the same JSON.
    fn eq(&self, other: &SpecValue) -> bool {
        match (self, other) {
            (SpecValue::Deployable(a), SpecValue::Deployable(b)) => a == b,
            (SpecValue::Legacy(a), SpecValue::Legacy(b)) => a == b,
            (SpecValue::Json(a), SpecValue::Json(b)) => a == b,
            (a, b) => a.to_value() == b.to_value(),
        }
    }
}

impl Serialize for SpecValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SpecValue::Deployable(s) => s.serialize(serializer),
            SpecValue::Legacy(s) => s.serialize(serializer),
            SpecValue::Json(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SpecValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(SpecValue::Json)
    }
}

/// How a rolling replacement runs, in the order apply follows: for each new instance in turn,
/// the old instance it waits for (if any) stops, the new one starts and is health-checked and
/// wired, then one more old instance stops; the old ones left stop at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Whether new instances start before old ones stop (`new-before-old`, `old-before-new`,
    /// `mixed`).
    pub order: RolloutOrder,
    /// Why, in a short sentence: what leaves no spare slot for old-before-new, or
    /// "a spare slot for each new instance".
    pub reason: String,
    /// Ids of the old instances that stop before their replacement is ready, in the order
    /// they stop.
    pub old_first: Vec<String>,
    /// How many times the service has no serving instance at all during the replacement: an
    /// old instance stops while none other serves and a replacement is still to start.
    pub empty_windows: u32,
}

/// Whether new instances start before the old ones stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutOrder {
    /// Every new instance starts while the old ones still serve (a spare slot for each).
    NewBeforeOld,
    /// Every new instance waits for an old one to stop first (no spare slot at all).
    OldBeforeNew,
    /// Some new instances wait for an old one to stop, others do not.
    Mixed,
}

impl RolloutOrder {
    /// The name in the plan's machine form: `new-before-old`, `old-before-new`, `mixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutOrder::NewBeforeOld => "new-before-old",
            RolloutOrder::OldBeforeNew => "old-before-new",
            RolloutOrder::Mixed => "mixed",
        }
    }
}

/// A value before and after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromTo<T> {
    /// The recorded value.
    pub from: T,
    /// The desired value.
    pub to: T,
}

/// One changed leaf of a service spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// A JSON pointer (RFC 6901) into the service spec, like `/resourceImpact/memory`; lists
    /// compare whole.
    pub path: String,
    /// The recorded value; `null` when absent.
    pub from: Value,
    /// The desired value; `null` when absent.
    pub to: Value,
}

/// One step of the apply: a service's change, once the steps it waits for are done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The service.
    pub service: String,
    /// Its change's action.
    pub action: Action,
    /// Services whose steps must finish first.
    pub after: Vec<String>,
}

/// The nodes one account gains and loses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChanges {
    /// Nodes created for new instances, by size label (the memory size; on EC2 the instance
    /// type) → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub create: BTreeMap<String, u32>,
    /// Nodes freed (left empty by the plan), by size label → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub destroy: BTreeMap<String, u32>,
    /// What happens to the account's reservoir of spare nodes; absent when it has none and
    /// gets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spares: Option<SpareChanges>,
}

impl NodeChanges {
    /// Whether apply would change any node (a reservoir that `vmLimit` keeps below
    /// `initialSize` is no change by itself).
    pub fn changes_something(&self) -> bool {
        !self.create.is_empty()
            || !self.destroy.is_empty()
            || self.spares.is_some_and(|s| s.create > 0 || s.destroy > 0 || s.handed_out > 0)
    }
}

/// What a plan does to the reservoir of one account (`reservoir` of enact.json): counts of
/// spare nodes, all of the SMALL size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpareChanges {
    /// Spare nodes made to refill the reservoir (at the end of the apply).
    #[serde(default)]
    pub create: u32,
    /// Spare nodes freed (before any node is made): beyond what the reservoir keeps, or in the
    /// way of `vmLimit`.
    #[serde(default)]
    pub destroy: u32,
    /// Spare nodes new instances take: they become ordinary nodes.
    #[serde(default)]
    pub handed_out: u32,
    /// Spare nodes the account holds once the apply is done.
    #[serde(default)]
    pub after: u32,
    /// What the reservoir would hold but for `vmLimit`, when the limit keeps it lower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited_from: Option<u32>,
}

/// How many services each action touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Services created.
    pub create: usize,
    /// Services updated in place.
    pub update: usize,
    /// Services redeployed.
    pub replace: usize,
    /// Services destroyed.
    pub destroy: usize,
}

impl Summary {
    /// How many services change.
    pub fn total(&self) -> usize {
        self.create + self.update + self.replace + self.destroy
    }
}

impl Plan {
    /// Whether the plan changes anything: a service, or a node (a reservoir's spares included).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
            || self.nodes.values().any(NodeChanges::changes_something)
            || !self.untracked.is_empty()
    }

    /// The machine form: pretty JSON with a final newline, the same bytes for the same plan.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// [`Self::to_json`] written out as it is made (a plan of 100,000 services is 40 MB of JSON);
    /// from 1,000 changes on, half of them are made on another thread meanwhile.
    ///
    /// # Errors
    /// What writing to `out` returns.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        self.write_json_with(out, self.changes.len() >= PARALLEL_JSON_CHANGES)
    }

    /// [`Self::write_json`]; with `parallel`, half the changes are written on another thread
    /// and spliced into the rest (the same bytes).
    fn write_json_with(&self, out: &mut impl std::io::Write, parallel: bool) -> std::io::Result<()> {
        use std::io::Write as _;
        // The formatter writes a few bytes at a time: a buffer of its own keeps each write a copy.
        let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, out);
        if !parallel || self.changes.is_empty() {
            serde_json::to_writer_pretty(&mut buffered, self)?;
            buffered.write_all(b"\n")?;
            return buffered.flush();
        }
        let (first, second) = self.changes.split_at(self.changes.len() / 2);
        // Everything else, with both lists empty, to splice them into.
        let Plan {
            format_version,
            env,
            prior_state,
            spec_digest,
            changes: _,
            steps: _,
            nodes,
            summary,
            paused,
            targets,
            refreshed,
            down,
            untracked,
        } = self;
        let rest = Plan {
            format_version: *format_version,
            env: env.clone(),
            prior_state: prior_state.clone(),
            spec_digest: spec_digest.clone(),
            changes: Vec::new(),
            steps: Vec::new(),
            nodes: nodes.clone(),
            summary: *summary,
            paused: paused.clone(),
            targets: targets.clone(),
            refreshed: *refreshed,
            down: down.clone(),
            untracked: untracked.clone(),
        };
        let rest = serde_json::to_vec_pretty(&rest)?;
        // No string holds a raw newline: these are the two top-level keys.
        const CHANGES: &[u8] = b"\n  \"changes\": []";
        const STEPS: &[u8] = b"\n  \"steps\": []";
        let at = |needle: &[u8]| {
            memchr::memmem::find(&rest, needle)
                .map(|i| i + needle.len() - 1)
                .ok_or_else(|| std::io::Error::other("the plan's JSON has no list to fill"))
        };
        let (changes_at, steps_at) = (at(CHANGES)?, at(STEPS)?);
        let render = |items: &[Change], first: bool| {
            // A change with both specs takes 2–3 KiB; room never written costs only address
            // space, where growing copies the text written so far.
            let mut out = Vec::with_capacity(items.len() * 4096);
            write_items(&mut out, items, first).map(|()| out)
        };
        std::thread::scope(|scope| {
            // The second half of the changes is made meanwhile; the first goes out as it is made.
            let second_first = first.is_empty();
            let later = std::thread::Builder::new().spawn_scoped(scope, move || render(second, second_first)).ok();
            buffered.write_all(&rest[..changes_at])?;
            write_items(&mut buffered, first, true)?;
            let later = match later.and_then(|t| t.join().ok()) {
                Some(later) => later?,
                None => render(second, second_first)?,
            };
            buffered.write_all(&later)?;
            buffered.write_all(b"\n  ")?;
            buffered.write_all(&rest[changes_at..steps_at])?;
            if !self.steps.is_empty() {
                write_items(&mut buffered, &self.steps, true)?;
                buffered.write_all(b"\n  ")?;
            }
            buffered.write_all(&rest[steps_at..])?;
            buffered.write_all(b"\n")?;
            buffered.flush()
        })
    }

    /// The change of `service`, if it changes.
    pub fn change(&self, service: &str) -> Option<&Change> {
        self.changes.iter().find(|c| c.service == service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(i: usize) -> Change {
        let spec = DeployableServiceSpec { name: format!("s{i}"), port: Some(80), ..Default::default() };
        Change {
            service: format!("s{i}"),
            action: if i.is_multiple_of(2) { Action::Update } else { Action::Create },
            instances: Some(FromTo { from: 1, to: 2 }),
            memory: None,
            fields: vec![FieldChange { path: "/port".into(), from: Value::Null, to: 80.into() }],
            rewire: vec!["p".into()],
            forced_by: Vec::new(),
            legacy: false,
            before: i.is_multiple_of(2).then(|| SpecValue::Json(serde_json::to_value(&spec).unwrap())),
            after: Some(SpecValue::Deployable(std::sync::Arc::new(spec))),
            rollout: None,
            restart: Vec::new(),
        }
    }

    /// A plan with every list filled, or with `changes` changes and nothing else.
    fn plan(changes: usize, full: bool) -> Plan {
        let mut plan = Plan {
            format_version: PLAN_FORMAT_VERSION,
            env: "dev".into(),
            prior_state: PriorState { lineage: Some("l".into()), serial: 3 },
            spec_digest: "d".into(),
            changes: (0..changes).map(change).collect(),
            steps: Vec::new(),
            nodes: BTreeMap::new(),
            summary: Summary::default(),
            paused: Vec::new(),
            targets: Vec::new(),
            refreshed: false,
            down: Vec::new(),
            untracked: UntrackedSummary::default(),
        };
        if full {
            plan.steps = (0..changes)
                .map(|i| Step { service: format!("s{i}"), action: Action::Update, after: vec!["p".into()] })
                .collect();
            plan.nodes.insert("local".into(), NodeChanges::default());
            plan.paused = vec!["q".into()];
            plan.targets = vec!["t".into()];
            plan.refreshed = true;
            plan.down = vec![DownInstance {
                service: "s0".into(),
                instance: "s0-1".into(),
                reason: DownReason::ProcessGone,
                detail: String::new(),
                replaced: true,
            }];
            plan.untracked = UntrackedSummary {
                processes: 2,
                ec2_instances: 1,
                described: "pid 1 on h".into(),
                ..Default::default()
            };
        }
        plan
    }

    #[test]
    fn the_json_written_in_parallel_is_the_json_written_at_once() {
        for (changes, full) in [(1, false), (2, true), (7, true), (40, false), (41, true)] {
            let plan = plan(changes, full);
            let mut parallel = Vec::new();
            plan.write_json_with(&mut parallel, true).unwrap();
            assert_eq!(String::from_utf8(parallel).unwrap(), plan.to_json(), "{changes} changes, full: {full}");
            // And it reads back as the same plan.
            let back: Plan = serde_json::from_str(&plan.to_json()).unwrap();
            assert_eq!(back, plan);
        }
    }
}
