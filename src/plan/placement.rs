//! Placement: which node every instance runs on, written once for every provider.
//!
//! Node selection per account: `ALWAYS_CREATE` (a node per instance), `ROUND_ROBIN` (the
//! least-loaded fitting node, else a new one), `LIMITED_ROUND_ROBIN` (new nodes up to `vmLimit`,
//! then round robin). SSH accounts have a fixed set of hosts and never create nodes. Two instances
//! that need the same port never share a node; a placement that cannot work is refused here, at
//! plan time, before anything runs. The result is pure data, the same for the same inputs.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt as _};

use crate::diagnostic::Diagnostic;
use crate::repo::settings::{Account, EnvView, Policy};
use crate::spec::{DeployableServiceSpec, Memory};
use crate::state::{AppliedSpec, State};

/// Where one instance goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedInstance {
    pub service: String,
    pub id: String,
    pub node: String,
    /// An old instance that must stop before this one starts, because no other node could
    /// take it (new-before-old needs a spare slot; a fixed set of hosts may have none).
    pub after_stopping: Option<String>,
}

/// A node the plan creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    pub id: String,
    pub account: String,
    pub provider: &'static str,
    pub memory: Memory,
    pub size: String,
    /// For fixed hosts (ssh) the host's address; made up by the provider otherwise.
    pub address: Option<String>,
    /// Whether it costs anything to create (false for an ssh host used the first time).
    pub provisioned: bool,
}

/// What changes in placement for a set of services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// New instances, per service in index order.
    pub started: Vec<PlacedInstance>,
    /// Instance ids that stop, per service.
    pub stopped: BTreeMap<String, Vec<String>>,
    pub new_nodes: Vec<NewNode>,
    /// Existing nodes left empty by the plan, which are freed.
    pub freed_nodes: Vec<String>,
}

/// What a changed service needs from placement.
#[derive(Debug, Clone)]
pub struct Demand<'a> {
    pub service: &'a str,
    /// The desired spec; `None` when the service is destroyed.
    pub spec: Option<&'a DeployableServiceSpec>,
    /// Whether every current instance is replaced (redeploy, resize, account move).
    pub replace_all: bool,
}

#[derive(Debug, Clone)]
struct NodeSlot<'a> {
    id: Cow<'a, str>,
    account: Cow<'a, str>,
    memory: Option<Memory>,
    /// The ports in use on the node (a node rarely runs more than a few instances).
    ports: Vec<u16>,
    instances: usize,
    /// Existing nodes that lost an instance in this plan, to free them if they end up empty.
    touched: bool,
    existing: bool,
    fixed: bool,
}

/// Every node placement knows of, in the order they came to be (the state's in id order, then
/// the new ones), with an index by id and, for the round-robin policies, by load.
#[derive(Debug, Default)]
struct Slots<'a> {
    slots: Vec<NodeSlot<'a>>,
    index: HashMap<Cow<'a, str>, usize>,
    /// `None` under `ALWAYS_CREATE`, which never looks for a node with room.
    load: Option<LoadIndex<'a>>,
}

/// Slot indices ordered by (instances, index): the least loaded first, ties to the oldest.
type ByLoad = BTreeSet<(usize, usize)>;

/// What the round-robin policies ask of every new instance, answered without a scan of all
/// nodes (which made a plan quadratic in the number of nodes).
#[derive(Debug, Default)]
struct LoadIndex<'a> {
    /// Whether a node this plan emptied may take an instance again (not under
    /// `LIMITED_ROUND_ROBIN`, which counts it as gone).
    reuse_emptied: bool,
    /// The nodes that may take an instance, per account and memory size, by (instances, order).
    by_load: HashMap<(Cow<'a, str>, Memory), ByLoad>,
    /// How many of those nodes run an instance on a port, per account, memory size and port.
    busy: HashMap<(Cow<'a, str>, Memory, u16), usize>,
    /// Nodes per account that run an instance or were not emptied by this plan.
    live: HashMap<Cow<'a, str>, usize>,
}

impl LoadIndex<'_> {
    fn is_live(slot: &NodeSlot<'_>) -> bool {
        slot.instances > 0 || !slot.touched
    }
}

impl<'a> Slots<'a> {
    fn new(capacity: usize, policy: Policy) -> Slots<'a> {
        let load = match policy {
            Policy::AlwaysCreate => None,
            Policy::RoundRobin => Some(LoadIndex { reuse_emptied: true, ..LoadIndex::default() }),
            Policy::LimitedRoundRobin => Some(LoadIndex::default()),
        };
        Slots { slots: Vec::with_capacity(capacity), index: HashMap::with_capacity(capacity), load }
    }

    fn get(&self, id: &str) -> Option<&NodeSlot<'a>> {
        self.index.get(id).map(|&i| &self.slots[i])
    }

    fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    fn insert(&mut self, slot: NodeSlot<'a>) {
        let i = self.slots.len();
        self.index.insert(slot.id.clone(), i);
        self.slots.push(slot);
        self.count(i, true);
    }

    /// Changes the slot of `node`, keeping the load index in step.
    fn update(&mut self, node: &str, change: impl FnOnce(&mut NodeSlot<'a>)) {
        let Some(&i) = self.index.get(node) else {
            return;
        };
        self.count(i, false);
        change(&mut self.slots[i]);
        self.count(i, true);
    }

    /// Adds slot `i` to the load index (`add`) or takes it out.
    fn count(&mut self, i: usize, add: bool) {
        let Some(load) = &mut self.load else {
            return;
        };
        let slot = &self.slots[i];
        let step = |n: &mut usize| *n = if add { *n + 1 } else { n.saturating_sub(1) };
        if LoadIndex::is_live(slot) {
            step(load.live.entry(slot.account.clone()).or_default());
        }
        let Some(memory) = slot.memory else {
            return;
        };
        if !load.reuse_emptied && !LoadIndex::is_live(slot) {
            return;
        }
        let nodes = load.by_load.entry((slot.account.clone(), memory)).or_default();
        if add {
            nodes.insert((slot.instances, i));
        } else {
            nodes.remove(&(slot.instances, i));
        }
        for &port in &slot.ports {
            step(load.busy.entry((slot.account.clone(), memory, port)).or_default());
        }
    }

    /// One instance fewer on `node`, which frees `port` there.
    fn free(&mut self, node: &str, port: Option<u16>) {
        self.update(node, |slot| {
            slot.instances = slot.instances.saturating_sub(1);
            if let Some(port) = port {
                slot.ports.retain(|p| *p != port);
            }
            slot.touched = true;
        });
    }

    /// One instance more on `node`, listening on `port`.
    fn take(&mut self, node: &str, port: u16) {
        self.update(node, |slot| {
            slot.instances += 1;
            if !slot.ports.contains(&port) {
                slot.ports.push(port);
            }
        });
    }

    /// The least-loaded node of `account` and `memory` with `port` free (ties go to the oldest
    /// node); `None` when there is none, or under `ALWAYS_CREATE`.
    fn least_loaded(&self, account: &'a str, memory: Memory, port: u16) -> Option<String> {
        let load = self.load.as_ref()?;
        let found = load.by_load.get(&(Cow::Borrowed(account), memory)).and_then(|nodes| {
            if load.busy.get(&(Cow::Borrowed(account), memory, port)).is_some_and(|&n| n >= nodes.len()) {
                return None;
            }
            nodes.iter().map(|&(_, i)| &self.slots[i]).find(|s| !s.ports.contains(&port))
        });
        // Debug builds (and so every test) check the index against a scan of all nodes.
        debug_assert_eq!(
            found.map(|s| &s.id),
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.account == account
                    && s.memory == Some(memory)
                    && !s.ports.contains(&port)
                    && (load.reuse_emptied || LoadIndex::is_live(s)))
                .min_by_key(|(order, s)| (s.instances, *order))
                .map(|(_, s)| &s.id),
            "the load index disagrees with a scan of the nodes"
        );
        found.map(|s| s.id.to_string())
    }

    /// Nodes of `account` that run an instance or were not emptied by this plan.
    fn live(&self, account: &'a str) -> usize {
        let live = self.load.as_ref().and_then(|l| l.live.get(&Cow::Borrowed(account)).copied()).unwrap_or(0);
        debug_assert_eq!(
            live,
            self.slots.iter().filter(|s| s.account == account && LoadIndex::is_live(s)).count(),
            "the count of live nodes disagrees with a scan of the nodes"
        );
        live
    }
}

/// An old instance a rolling replacement stops: (id, node, port).
type Leaving = (String, String, Option<u16>);

/// The port an instance of `spec` listens on.
pub fn port_of(spec: &DeployableServiceSpec) -> u16 {
    spec.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(if spec.package_type() == "TOMCAT" { 8080 } else { 0 })
}

/// The number at the end of an id like `airline-12` or `local-3`.
pub fn id_number(id: &str) -> u64 {
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Places the instances `demands` need, starting from what `state` records.
pub fn place(view: &EnvView<'_>, state: &State, demands: &[Demand<'_>]) -> Result<Placement, Vec<Diagnostic>> {
    let settings = view.settings;
    let mut slots = Slots::new(state.nodes.len(), view.node_selector.policy);
    for (id, node) in &state.nodes {
        slots.insert(NodeSlot {
            id: Cow::Borrowed(id),
            account: Cow::Borrowed(&node.account),
            memory: node.memory,
            ports: Vec::new(),
            instances: 0,
            touched: false,
            existing: true,
            fixed: node.provider == "ssh",
        });
    }
    for service in state.services.values() {
        let AppliedSpec::Deployable(spec) = &service.spec else {
            continue;
        };
        for instance in &service.instances {
            slots.take(&instance.node, port_of(spec));
        }
    }
    // Next free node number per account.
    let mut next_node: HashMap<&str, u64> = HashMap::new();
    for (id, node) in &state.nodes {
        let n = next_node.entry(node.account.as_str()).or_insert(1);
        *n = (*n).max(id_number(id) + 1);
    }

    let mut placement = Placement::default();
    let mut errors = Vec::new();

    // First every leaving instance frees its slot, so new ones can use it.
    let mut keep_count: HashMap<&str, usize> = HashMap::new();
    let mut pending_old: HashMap<&str, std::collections::VecDeque<Leaving>> = HashMap::new();
    for demand in demands {
        let recorded = state.services.get(demand.service);
        let instances = recorded.map(|s| s.instances.as_slice()).unwrap_or_default();
        let recorded_port = match recorded.map(|s| &s.spec) {
            Some(AppliedSpec::Deployable(s)) => Some(port_of(s)),
            _ => None,
        };
        let keep = match demand.spec {
            Some(spec) if !demand.replace_all => (spec.instances() as usize).min(instances.len()),
            _ => 0,
        };
        keep_count.insert(demand.service, keep);
        let mut sorted: Vec<&crate::state::InstanceState> = instances.iter().collect();
        sorted.sort_by_key(|i| id_number(&i.id));
        // A rolling replacement keeps its old instances running while new ones start, so
        // their slots stay taken until placement has to stop one first.
        let rolling = demand.replace_all && demand.spec.is_some();
        for leaving in &sorted[keep..] {
            placement.stopped.entry(demand.service.to_string()).or_default().push(leaving.id.clone());
            if rolling {
                pending_old.entry(demand.service).or_default().push_back((
                    leaving.id.clone(),
                    leaving.node.clone(),
                    recorded_port,
                ));
                continue;
            }
            slots.free(&leaving.node, recorded_port);
        }
    }

    // Then new instances, service by service in name order.
    let mut sorted_demands: Vec<&Demand<'_>> = demands.iter().collect();
    sorted_demands.sort_by_key(|d| d.service);
    for demand in sorted_demands {
        let Some(spec) = demand.spec else {
            continue;
        };
        let account_name: &str = spec.cloud_account.as_deref().unwrap_or(&view.default_account);
        let Some(account) = settings.account(account_name) else {
            errors.push(
                Diagnostic::new(format!("account `{account_name}` is not defined in enact.json"))
                    .service(demand.service),
            );
            continue;
        };
        let recorded = state.services.get(demand.service);
        let mut next_instance =
            recorded.map(|s| s.instances.iter().map(|i| id_number(&i.id)).max().unwrap_or(0)).unwrap_or(0) + 1;
        let keep = keep_count.get(demand.service).copied().unwrap_or(0);
        let wanted = spec.instances() as usize;
        let port = port_of(spec);
        let memory = spec.memory();
        #[allow(clippy::explicit_counter_loop, reason = "instance numbers continue from the recorded ones")]
        for _ in keep..wanted {
            let mut after_stopping = None;
            let mut choice = choose_node(view, account, account_name, &slots, memory, port, wanted);
            if choice.is_err()
                && let Some((old, old_node, old_port)) = pending_old.get_mut(demand.service).and_then(|q| q.pop_front())
            {
                // No spare slot for new-before-old: this one replaces an old one in place.
                slots.free(&old_node, old_port);
                after_stopping = Some(old);
                choice = choose_node(view, account, account_name, &slots, memory, port, wanted);
            }
            let node = match choice {
                Ok(Some(node)) => node,
                Ok(None) => {
                    let number = next_node.entry(account_name).or_insert(1);
                    let id = format!("{account_name}-{number}");
                    *number += 1;
                    placement.new_nodes.push(NewNode {
                        id: id.clone(),
                        account: account_name.to_string(),
                        provider: account.provider(),
                        memory,
                        size: account.node_size(memory),
                        address: None,
                        provisioned: true,
                    });
                    slots.insert(NodeSlot {
                        id: Cow::Owned(id.clone()),
                        account: Cow::Borrowed(account_name),
                        memory: Some(memory),
                        ports: Vec::new(),
                        instances: 0,
                        touched: false,
                        existing: false,
                        fixed: false,
                    });
                    id
                }
                Err(d) => {
                    errors.push(d.service(demand.service));
                    break;
                }
            };
            if let Account::Ssh(ssh) = account
                && !slots.contains(&node)
            {
                // A fixed host used for the first time becomes a node of the state.
                let host = ssh.hosts.iter().find(|h| host_node_id(account_name, &h.address) == node);
                placement.new_nodes.push(NewNode {
                    id: node.clone(),
                    account: account_name.to_string(),
                    provider: "ssh",
                    memory: host.and_then(|h| h.memory).unwrap_or(memory),
                    size: host.and_then(|h| h.memory).unwrap_or(memory).to_string(),
                    address: host.map(|h| h.address.clone()),
                    provisioned: false,
                });
                slots.insert(NodeSlot {
                    id: Cow::Owned(node.clone()),
                    account: Cow::Borrowed(account_name),
                    memory: host.and_then(|h| h.memory),
                    ports: Vec::new(),
                    instances: 0,
                    touched: false,
                    existing: false,
                    fixed: true,
                });
            }
            slots.take(&node, port);
            placement.started.push(PlacedInstance {
                service: demand.service.to_string(),
                id: format!("{}-{next_instance}", demand.service),
                node,
                after_stopping,
            });
            next_instance += 1;
        }
        // The old instances left stop after their replacements: their slots free up now.
        for (_, old_node, old_port) in pending_old.remove(demand.service).unwrap_or_default() {
            slots.free(&old_node, old_port);
        }
    }

    // The state's nodes come first, in id order.
    placement.freed_nodes = slots
        .slots
        .iter()
        .filter(|s| s.existing && s.touched && s.instances == 0 && !s.fixed)
        .map(|s| s.id.to_string())
        .collect();
    if errors.is_empty() { Ok(placement) } else { Err(errors) }
}

/// The node id of a fixed host.
pub fn host_node_id(account: &str, address: &str) -> String {
    format!("{account}-{address}")
}

/// Picks an existing node for an instance, `Ok(None)` to create one, or explains why none fits.
fn choose_node(
    view: &EnvView<'_>,
    account: &Account,
    account_name: &str,
    slots: &Slots<'_>,
    memory: Memory,
    port: u16,
    wanted: usize,
) -> Result<Option<String>, Diagnostic> {
    if let Account::Ssh(ssh) = account {
        // Fixed hosts: the nodes are the hosts; make sure every host has a slot.
        let mut candidates: Vec<(usize, usize, String)> = Vec::new();
        for (order, host) in ssh.hosts.iter().enumerate() {
            if host.memory.is_some_and(|m| m < memory) {
                continue;
            }
            let id = host_node_id(account_name, &host.address);
            let (busy, load) = slots.get(&id).map_or((false, 0), |s| (s.ports.contains(&port), s.instances));
            if !busy {
                candidates.push((load, order, id));
            }
        }
        return candidates.into_iter().min().map(|(_, _, id)| Some(id)).ok_or_else(|| {
            let fitting = ssh.hosts.iter().filter(|h| h.memory.is_none_or(|m| m >= memory)).count();
            Diagnostic::new(format!(
                "cannot place another {memory} instance on port {port} in ssh account `{account_name}`: \
                 {fitting} of its {} hosts take {memory} instances and each already runs one on that port; the service wants {wanted} instances",
                ssh.hosts.len()
            ))
            .hint("add hosts to the account, lower `numberOfInstances`, or give the service another port")
        });
    }
    match view.node_selector.policy {
        Policy::AlwaysCreate => Ok(None),
        Policy::RoundRobin => Ok(slots.least_loaded(account_name, memory, port)),
        Policy::LimitedRoundRobin => {
            let limit = view.node_selector.vm_limit.unwrap_or(1) as usize;
            if slots.live(account_name) < limit {
                return Ok(None);
            }
            slots
                .least_loaded(account_name, memory, port)
                .map(Some)
                .ok_or_else(|| {
                    Diagnostic::new(format!(
                        "cannot place another {memory} instance on port {port} in account `{account_name}`: \
                         `vmLimit` {limit} is reached and every {memory} node already runs an instance on that port; the service wants {wanted} instances"
                    ))
                    .hint("raise `nodeSelector.vmLimit` in enact.json, lower `numberOfInstances`, or use another port")
                })
        }
    }
}
