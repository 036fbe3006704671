//! Placement: which node every instance runs on, written once for every provider.
//!
//! Node selection per account: `ALWAYS_CREATE` (a node per instance), `ROUND_ROBIN` (the
//! least-loaded fitting node, else a new one), `LIMITED_ROUND_ROBIN` (a new node while the
//! account has fewer than `vmLimit` nodes, else round robin). Under `LIMITED_ROUND_ROBIN` every
//! node that exists at some moment of the apply counts: apply creates the new nodes first and
//! frees the emptied ones last, so a node this plan empties still counts, and may take an
//! instance again (it is then not freed). SSH accounts have a fixed set of hosts and never create
//! nodes. Two instances that need the same port never share a node; a placement that cannot work
//! is refused here, at plan time, before anything runs. The result is pure data, the same for the
//! same inputs.
//!
//! Depends on the settings of [`crate::repo`], the spec and the state.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use foldhash::{HashMap, HashMapExt as _};

use crate::diagnostic::Diagnostic;
use crate::repo::settings::{Account, EnvView, Policy, SshAccount};
use crate::spec::endpoint::port_of;
use crate::spec::{DeployableServiceSpec, Memory};
use crate::state::{AppliedSpec, InstanceState, NewNode, State};

/// Where one instance goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedInstance {
    /// Its service.
    pub service: String,
    /// Its id, `<service>-<n>`: numbers continue after the largest the state records.
    pub id: String,
    /// The node it runs on: one of the state's, or of [`Placement::new_nodes`].
    pub node: String,
    /// An old instance of the same service that must stop before this one starts, because no
    /// node has a spare slot for it (new-before-old needs one; a fixed set of hosts, or a
    /// reached `vmLimit`, may have none). It is the first old instance (by id) that no earlier new
    /// instance of the service waits for, and this instance goes to the node it leaves.
    pub after_stopping: Option<String>,
}

/// What changes in placement for a set of services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// New instances, per service in index order.
    pub started: Vec<PlacedInstance>,
    /// Instance ids that stop, per service.
    pub stopped: BTreeMap<String, Vec<String>>,
    /// Nodes the plan creates (or ssh hosts it uses the first time), in the order they are
    /// needed.
    pub new_nodes: Vec<NewNode>,
    /// Existing nodes left empty by the plan, which are freed.
    pub freed_nodes: Vec<String>,
}

/// What a changed service needs from placement.
#[derive(Debug, Clone)]
pub struct Demand<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The desired spec; `None` when the service is destroyed.
    pub spec: Option<&'a DeployableServiceSpec>,
    /// Whether every current instance is replaced (redeploy, resize, account move).
    pub replace_all: bool,
    /// Recorded instances a refresh found not running: each stops (it serves nothing) before a
    /// new instance takes its place, and a scale-in stops them first.
    pub dead: Vec<&'a str>,
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
    /// The nodes that may take an instance, per account and memory size, by (instances, order).
    by_load: HashMap<(Cow<'a, str>, Memory), ByLoad>,
    /// How many of those nodes run an instance on a port, per account, memory size and port.
    busy: HashMap<(Cow<'a, str>, Memory, u16), usize>,
    /// Nodes per account: the state's (emptied ones included) and the new ones.
    nodes: HashMap<Cow<'a, str>, usize>,
}

impl<'a> Slots<'a> {
    fn new(capacity: usize, policy: Policy) -> Slots<'a> {
        let load = match policy {
            Policy::AlwaysCreate => None,
            Policy::RoundRobin | Policy::LimitedRoundRobin => Some(LoadIndex::default()),
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
        if let Some(load) = &mut self.load {
            *load.nodes.entry(slot.account.clone()).or_default() += 1;
        }
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
        let Some(memory) = slot.memory else {
            return;
        };
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
                .filter(|(_, s)| s.account == account && s.memory == Some(memory) && !s.ports.contains(&port))
                .min_by_key(|(order, s)| (s.instances, *order))
                .map(|(_, s)| &s.id),
            "the load index disagrees with a scan of the nodes"
        );
        found.map(|s| s.id.to_string())
    }

    /// Nodes of `account` that exist at some moment of the apply: the state's, those this plan
    /// empties included (apply frees them last), and the new ones.
    fn nodes(&self, account: &'a str) -> usize {
        let nodes = self.load.as_ref().and_then(|l| l.nodes.get(&Cow::Borrowed(account)).copied()).unwrap_or(0);
        debug_assert_eq!(
            nodes,
            self.slots.iter().filter(|s| s.account == account).count(),
            "the count of nodes disagrees with a scan of the nodes"
        );
        nodes
    }

    /// Whether `account` has a node of `memory` (whatever it runs).
    fn has_size(&self, account: &'a str, memory: Memory) -> bool {
        let found = self
            .load
            .as_ref()
            .and_then(|l| l.by_load.get(&(Cow::Borrowed(account), memory)))
            .is_some_and(|nodes| !nodes.is_empty());
        debug_assert!(
            self.load.is_none() || found == self.slots.iter().any(|s| s.account == account && s.memory == Some(memory)),
            "the load index disagrees with a scan of the nodes"
        );
        found
    }
}

/// An old instance a rolling replacement stops: (id, node, port).
type Leaving = (String, String, Option<u16>);

/// The number at the end of an id like `airline-12` or `local-3`.
pub fn id_number(id: &str) -> u64 {
    let digits = id.rsplit_once('-').map_or(id, |(_, n)| n);
    // The common case without the parser: a few ASCII digits that fit.
    if (1..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        return digits.bytes().fold(0, |n, b| n * 10 + u64::from(b - b'0'));
    }
    digits.parse().unwrap_or(0)
}

/// Places the instances `demands` need, starting from what `state` records.
///
/// # Errors
/// Every instance that cannot be placed (an account enact.json does not define, a reached
/// `vmLimit`, ssh hosts whose port is taken, node or instance numbers used up), each a
/// [`Diagnostic`] naming its service and what to do.
pub fn place(view: &EnvView<'_>, state: &State, demands: &[Demand<'_>]) -> Result<Placement, Vec<Diagnostic>> {
    place_from(view, state, demands, Start::of(view.node_selector.policy, state))
}

/// What placement starts from: every node of a state with what runs on it, and the next free
/// node number of each account. It depends on the state and the node selection policy alone,
/// so a plan works it out while it compares the services.
#[derive(Debug)]
pub struct Start<'a> {
    slots: Slots<'a>,
    next_node: HashMap<&'a str, u128>,
}

impl<'a> Start<'a> {
    /// The start of placing in `state` under `policy`.
    pub fn of(policy: Policy, state: &'a State) -> Start<'a> {
        let mut slots = Slots::new(state.nodes.len(), policy);
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
        // Counted in u128 so that the number after a recorded u64::MAX exists, and is refused.
        let mut next_node: HashMap<&str, u128> = HashMap::new();
        for (id, node) in &state.nodes {
            let n = next_node.entry(node.account.as_str()).or_insert(1);
            *n = (*n).max(u128::from(id_number(id)) + 1);
        }
        Start { slots, next_node }
    }
}

/// [`place`] from a [`Start`] of the same state, under the policy of `view`.
///
/// # Errors
/// As [`place`]: every instance that cannot be placed, named with its service.
pub fn place_from(
    view: &EnvView<'_>,
    state: &State,
    demands: &[Demand<'_>],
    start: Start<'_>,
) -> Result<Placement, Vec<Diagnostic>> {
    let Start { slots, next_node } = start;
    let mut placer = Placer { view, slots, next_node, placement: Placement::default(), errors: Vec::new() };
    // First every leaving instance frees its slot, so new ones can use it.
    let mut released = placer.release(state, demands);
    // Then new instances, service by service in name order.
    let mut sorted_demands: Vec<&Demand<'_>> = demands.iter().collect();
    sorted_demands.sort_by_key(|d| d.service);
    for demand in sorted_demands {
        placer.place_service(state, demand, &mut released);
    }
    let Placer { slots, mut placement, errors, .. } = placer;
    add_ports(&mut placement, demands);
    // The state's nodes come first, in id order.
    placement.freed_nodes = slots
        .slots
        .iter()
        .filter(|s| s.existing && s.touched && s.instances == 0 && !s.fixed)
        .map(|s| s.id.to_string())
        .collect();
    if errors.is_empty() { Ok(placement) } else { Err(errors) }
}

/// What the first phase of placement ([`Placer::release`]) leaves the second, per service.
#[derive(Debug, Default)]
struct Released<'a> {
    /// How many recorded instances keep running.
    keep_count: HashMap<&'a str, usize>,
    /// Old instances of a rolling replacement: they run until a new one has to take the place
    /// of one (no spare slot), else stop after their replacements.
    pending_old: HashMap<&'a str, VecDeque<Leaving>>,
    /// Dead instances to replace: each new instance takes one's place first.
    dead_old: HashMap<&'a str, VecDeque<Leaving>>,
}

/// Placement under way: the nodes with what runs on them, the next free node number of each
/// account, and what is decided so far.
struct Placer<'a> {
    view: &'a EnvView<'a>,
    slots: Slots<'a>,
    next_node: HashMap<&'a str, u128>,
    placement: Placement,
    errors: Vec<Diagnostic>,
}

impl<'a> Placer<'a> {
    /// The first phase: every recorded instance that leaves (scale-in, destroy, a dead one, a
    /// replaced one) is listed in [`Placement::stopped`] and frees its slot, or waits in
    /// [`Released`] for the new instance that takes its place.
    fn release(&mut self, state: &'a State, demands: &[Demand<'a>]) -> Released<'a> {
        let mut released = Released::default();
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
            let is_dead = |id: &str| demand.dead.contains(&id);
            let mut sorted: Vec<&InstanceState> = instances.iter().collect();
            // The dead go last, so a scale-in stops them first.
            sorted.sort_by_key(|i| (is_dead(&i.id), id_number(&i.id)));
            // A dead instance that would be kept is replaced instead.
            let (kept, leaving) = sorted.split_at(keep);
            let mut stopped: Vec<String> = Vec::new();
            let mut revived = 0;
            for dead in kept.iter().filter(|i| is_dead(&i.id)) {
                stopped.push(dead.id.clone());
                released.dead_old.entry(demand.service).or_default().push_back((
                    dead.id.clone(),
                    dead.node.clone(),
                    recorded_port,
                ));
                revived += 1;
            }
            released.keep_count.insert(demand.service, keep - revived);
            // A rolling replacement keeps its old instances running while new ones start, so
            // their slots stay taken until placement has to stop one first.
            let rolling = demand.replace_all && demand.spec.is_some();
            for leaving in leaving {
                stopped.push(leaving.id.clone());
                let queue = match (rolling, is_dead(&leaving.id)) {
                    // It serves nothing: it goes first, and its replacement may take its place.
                    (true, true) => &mut released.dead_old,
                    (true, false) => &mut released.pending_old,
                    (false, _) => {
                        // The port stays taken on that node for the whole plan: the instance
                        // stops in its own step, which another service's start does not wait for.
                        self.slots.free(&leaving.node, None);
                        continue;
                    }
                };
                queue.entry(demand.service).or_default().push_back((
                    leaving.id.clone(),
                    leaving.node.clone(),
                    recorded_port,
                ));
            }
            if !stopped.is_empty() {
                self.placement.stopped.entry(demand.service.to_string()).or_default().extend(stopped);
            }
        }
        released
    }

    /// The second phase, for one service: its new instances, each on a node with a free slot
    /// (an old instance stopping first when there is none), or on a new node.
    fn place_service(&mut self, state: &State, demand: &Demand<'a>, released: &mut Released<'a>) {
        let Some(spec) = demand.spec else {
            return;
        };
        let view = self.view;
        let account_name: &'a str = spec.cloud_account.as_deref().unwrap_or(&view.default_account);
        let Some(account) = view.settings.account(account_name) else {
            self.errors.push(
                Diagnostic::new(format!("account `{account_name}` is not defined in enact.json"))
                    .service(demand.service),
            );
            return;
        };
        let recorded = state.services.get(demand.service);
        let mut next_instance =
            u128::from(recorded.map(|s| s.instances.iter().map(|i| id_number(&i.id)).max().unwrap_or(0)).unwrap_or(0))
                + 1;
        let keep = released.keep_count.get(demand.service).copied().unwrap_or(0);
        let wanted = spec.instances() as usize;
        let (port, memory) = (port_of(spec), spec.memory());
        let recorded_memory = match recorded.map(|s| &s.spec) {
            Some(AppliedSpec::Deployable(s)) => Some(s.memory()),
            _ => None,
        };
        let mut dead_old = released.dead_old.remove(demand.service).unwrap_or_default();
        let mut pending_old = released.pending_old.remove(demand.service).unwrap_or_default();
        #[allow(clippy::explicit_counter_loop, reason = "instance numbers continue from the recorded ones")]
        for _ in keep..wanted {
            let mut after_stopping = None;
            if let Some((old, old_node, old_port)) = dead_old.pop_front() {
                // A dead instance's slot, port included, is free: its process is gone (or is
                // stopped before this one starts).
                self.slots.free(&old_node, old_port);
                after_stopping = Some(old);
            }
            let mut choice = choose_node(view, account, account_name, &self.slots, memory, port, wanted);
            if choice.is_err()
                && let Some((old, old_node, old_port)) = pending_old.pop_front()
            {
                // No spare slot for new-before-old: this one replaces an old one in place.
                self.slots.free(&old_node, old_port);
                after_stopping = Some(old);
                choice = choose_node(view, account, account_name, &self.slots, memory, port, wanted);
            }
            let node = match choice {
                Ok(Some(node)) => node,
                Ok(None) => match self.new_node(account, account_name, memory) {
                    Some(id) => id,
                    None => {
                        let error = exhausted("node", &format!("account `{account_name}`"));
                        self.errors.push(error.service(demand.service));
                        break;
                    }
                },
                Err(d) => {
                    let limited = view.node_selector.policy == Policy::LimitedRoundRobin && account.creates_nodes();
                    let d = if limited && !self.slots.has_size(account_name, memory) {
                        no_node_of_size(view, account_name, self.slots.nodes(account_name), memory, recorded_memory)
                    } else {
                        d
                    };
                    self.errors.push(d.service(demand.service));
                    break;
                }
            };
            if let Account::Ssh(ssh) = account
                && !self.slots.contains(&node)
            {
                self.first_use_of_host(ssh, account_name, &node, memory);
            }
            if next_instance > u128::from(u64::MAX) {
                let error = exhausted("instance", &format!("service `{}`", demand.service));
                self.errors.push(error.service(demand.service));
                break;
            }
            self.slots.take(&node, port);
            self.placement.started.push(PlacedInstance {
                service: demand.service.to_string(),
                id: format!("{}-{next_instance}", demand.service),
                node,
                after_stopping,
            });
            next_instance += 1;
        }
        // The old instances left stop after their replacements: their slots free up now, but
        // not their ports (another service's start does not wait for those stops).
        for (_, old_node, _) in pending_old {
            self.slots.free(&old_node, None);
        }
        // Dead instances no new one replaced (the service shrinks): they only stop.
        for (_, old_node, _) in dead_old {
            self.slots.free(&old_node, None);
        }
    }

    /// A new node of `account` for an instance of `memory`, with the account's next free
    /// number; `None` when the numbers are used up.
    fn new_node(&mut self, account: &Account, account_name: &'a str, memory: Memory) -> Option<String> {
        let number = self.next_node.entry(account_name).or_insert(1);
        if *number > u128::from(u64::MAX) {
            return None;
        }
        let id = format!("{account_name}-{number}");
        *number += 1;
        self.placement.new_nodes.push(NewNode {
            id: id.clone(),
            account: account_name.to_string(),
            provider: account.provider(),
            memory,
            size: account.node_size(memory),
            address: None,
            provisioned: true,
            ports: Vec::new(),
        });
        self.slots.insert(NodeSlot {
            id: Cow::Owned(id.clone()),
            account: Cow::Borrowed(account_name),
            memory: Some(memory),
            ports: Vec::new(),
            instances: 0,
            touched: false,
            existing: false,
            fixed: false,
        });
        Some(id)
    }

    /// A fixed host of an ssh account used for the first time becomes a node of the state.
    fn first_use_of_host(&mut self, ssh: &SshAccount, account_name: &'a str, node: &str, memory: Memory) {
        let host = ssh.hosts.iter().find(|h| host_node_id(account_name, &h.address) == node);
        self.placement.new_nodes.push(NewNode {
            id: node.to_string(),
            account: account_name.to_string(),
            provider: "ssh",
            memory: host.and_then(|h| h.memory).unwrap_or(memory),
            size: host.and_then(|h| h.memory).unwrap_or(memory).to_string(),
            address: host.map(|h| h.address.clone()),
            provisioned: false,
            ports: Vec::new(),
        });
        self.slots.insert(NodeSlot {
            id: Cow::Owned(node.to_string()),
            account: Cow::Borrowed(account_name),
            memory: host.and_then(|h| h.memory),
            ports: Vec::new(),
            instances: 0,
            touched: false,
            existing: false,
            fixed: true,
        });
    }
}

/// Fills in the ports of every new node, from the instances placed on it.
fn add_ports(placement: &mut Placement, demands: &[Demand<'_>]) {
    let new_index: HashMap<&str, usize> =
        placement.new_nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let port_of_service: HashMap<&str, u16> =
        demands.iter().filter_map(|d| d.spec.map(|spec| (d.service, port_of(spec)))).collect();
    let mut ports: Vec<(usize, u16)> = Vec::new();
    for placed in &placement.started {
        if let (Some(&i), Some(&port)) =
            (new_index.get(placed.node.as_str()), port_of_service.get(placed.service.as_str()))
        {
            ports.push((i, port));
        }
    }
    for (i, port) in ports {
        let node = &mut placement.new_nodes[i];
        if !node.ports.contains(&port) {
            node.ports.push(port);
        }
    }
}

/// A new node or instance would need a number after 18446744073709551615 (2^64 − 1), the
/// largest a recorded id holds: refused rather than wrapped onto an id in use.
fn exhausted(what: &str, of: &str) -> Diagnostic {
    Diagnostic::new(format!(
        "cannot number a new {what} of {of}: the state's {what} ids already reach {}",
        u64::MAX
    ))
    .hint("the state was edited or damaged: renumber its ids (`enact -e ENV state show` prints it), or restore it from git")
}

/// Why a `LIMITED_ROUND_ROBIN` account at its `vmLimit` cannot take an instance of `memory`: no
/// node of that size exists, and a new one would break the limit. `from` is the size the
/// service's instances have now, when it changes (a resize).
fn no_node_of_size(
    view: &EnvView<'_>,
    account: &str,
    nodes: usize,
    memory: Memory,
    from: Option<Memory>,
) -> Diagnostic {
    let limit = view.node_selector.vm_limit.unwrap_or(1);
    let why = format!(
        "`vmLimit` {limit} of account `{account}` is reached (it has {nodes} node{}, counting those this plan \
         would free only after apply) and none of them is {memory}, so a {memory} instance needs a node the limit does not allow",
        if nodes == 1 { "" } else { "s" }
    );
    match from {
        Some(from) if from != memory => {
            Diagnostic::new(format!("cannot resize from {from} to {memory}: {why}")).hint(format!(
                "raise `nodeSelector.vmLimit` in enact.json (a resize starts its instances on new nodes), \
                 or keep `resourceImpact.memory` at {from}"
            ))
        }
        _ => Diagnostic::new(format!("cannot place a {memory} instance: {why}")).hint(
            "raise `nodeSelector.vmLimit` in enact.json, or give the service the memory size of an existing node",
        ),
    }
}

/// Why a rolling replacement of `spec` must stop an old instance before its replacement starts,
/// in a short sentence: the account's nodes (a reached `vmLimit`, or a fixed set of ssh hosts)
/// have no free slot on the service's port. Pure: made from the settings alone.
pub fn old_first_reason(view: &EnvView<'_>, spec: &DeployableServiceSpec) -> String {
    let account_name: &str = spec.cloud_account.as_deref().unwrap_or(&view.default_account);
    let (port, memory) = (port_of(spec), spec.memory());
    match view.settings.account(account_name) {
        Some(Account::Ssh(ssh)) => {
            let fitting = ssh.hosts.iter().filter(|h| h.memory.is_none_or(|m| m >= memory)).count();
            let all = fitting == ssh.hosts.len();
            let hosts = match (fitting, all) {
                (1, true) => format!("the only host of ssh account `{account_name}`"),
                (1, false) => format!("the only host of ssh account `{account_name}` that takes {memory} instances"),
                (_, true) => format!("each of the {fitting} hosts of ssh account `{account_name}`"),
                (_, false) => {
                    format!("each of the {fitting} hosts of ssh account `{account_name}` that take {memory} instances")
                }
            };
            format!("{hosts} already runs an instance on port {port}")
        }
        _ if view.node_selector.policy == Policy::LimitedRoundRobin => format!(
            "`vmLimit` {} of account `{account_name}` is reached and each {memory} node already runs an instance on port {port}",
            view.node_selector.vm_limit.unwrap_or(1)
        ),
        _ => format!("no node of account `{account_name}` has a free slot on port {port}"),
    }
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
            if slots.nodes(account_name) < limit {
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

#[cfg(test)]
mod tests;
