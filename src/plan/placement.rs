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
//! The reservoir (`reservoir` of enact.json) keeps spare nodes of the SMALL size in each ec2 and
//! simulated account the environment places services in: where the policy asks for a new node,
//! a spare that fits is handed out first (it becomes an ordinary node); after every service is
//! placed, an account left with `threshold` spares or fewer gets new ones back up to
//! `initialSize`, made while the apply's steps run, and spares beyond what it keeps are freed before
//! any node is made. Spares count against `vmLimit`: the reservoir keeps fewer when the limit
//! leaves no room, and a spare that does not fit an instance is freed to make room for its node.
//!
//! Depends on the settings of [`crate::repo`], the spec and the state.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use foldhash::{HashMap, HashMapExt as _};

use crate::diagnostic::Diagnostic;
use crate::repo::settings::{Account, EnvView, Policy, SPARE_MEMORY, SshAccount, keeps_reservoir};
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
    /// Spare nodes of the state that new instances take (see [`PlacedInstance::node`]): each is
    /// an ordinary node once an instance runs on it.
    pub handed_out: Vec<String>,
    /// Spare nodes of the state the reservoir gives up, freed before any node is made: beyond
    /// what it keeps, in an account that keeps none, or in the way of `vmLimit`.
    pub freed_spares: Vec<String>,
    /// Spare nodes made to refill the reservoirs, while the apply's steps run (after the nodes
    /// it frees, when `vmLimit` needs them gone first).
    pub new_spares: Vec<NewNode>,
    /// Per account whose reservoir the plan looked at: the spares it holds once the apply is
    /// done, and what it would hold but for `vmLimit`.
    pub reservoirs: BTreeMap<String, Spares>,
}

/// The spares of one account's reservoir once an apply is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spares {
    /// Spare nodes it holds (a count).
    pub kept: u32,
    /// The count it would hold (`initialSize`, or the spares it has) when `vmLimit` keeps it
    /// lower; `None` when it does not.
    pub limited_from: Option<u32>,
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
    /// A spare node of the reservoir, not (yet) handed out: it takes no instance of the
    /// round-robin policies, only one that would otherwise need a new node.
    spare: bool,
    /// A spare the plan frees before any node is made: it no longer counts.
    retired: bool,
}

/// Every node placement knows of, in the order they came to be (the state's in id order, then
/// the new ones), with an index by id and, for the round-robin policies, by load.
#[derive(Debug, Default)]
struct Slots<'a> {
    slots: Vec<NodeSlot<'a>>,
    index: HashMap<Cow<'a, str>, usize>,
    /// `None` under `ALWAYS_CREATE`, which never looks for a node with room.
    load: Option<LoadIndex<'a>>,
    /// The spares not handed out, per account, by (memory, index): the smallest that fits
    /// first, ties to the oldest.
    spares: HashMap<Cow<'a, str>, BTreeSet<(Memory, usize)>>,
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
        Slots {
            // Room for as many new nodes as there are nodes: room never used costs only address
            // space, where growing copies every slot.
            slots: Vec::with_capacity(capacity * 2),
            index: HashMap::with_capacity(capacity),
            load,
            spares: HashMap::new(),
        }
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
        if slot.spare {
            let memory = slot.memory.unwrap_or(SPARE_MEMORY);
            self.spares.entry(slot.account.clone()).or_default().insert((memory, i));
        }
        self.index.insert(slot.id.clone(), i);
        self.slots.push(slot);
        self.count(i, true);
    }

    /// The spares of `account` not handed out or retired.
    fn spare_count(&self, account: &str) -> usize {
        self.spares.get(account).map_or(0, BTreeSet::len)
    }

    /// The spare of `account` an instance of `memory` takes: the smallest whose memory is at
    /// least the instance's, ties to the oldest.
    fn spare_for(&self, account: &str, memory: Memory) -> Option<usize> {
        self.spares.get(account)?.range((memory, 0)..).next().map(|&(_, i)| i)
    }

    /// Takes spare `i` out of the reservoir: handed out (`retire` false), it becomes an ordinary
    /// node that round robin may fill; retired, it no longer counts at all. Its id.
    fn unspare(&mut self, i: usize, retire: bool) -> String {
        let slot = &self.slots[i];
        let (account, memory, id) = (slot.account.clone(), slot.memory.unwrap_or(SPARE_MEMORY), slot.id.to_string());
        if let Some(set) = self.spares.get_mut(&account) {
            set.remove(&(memory, i));
        }
        if retire {
            self.slots[i].retired = true;
            if let Some(n) = self.load.as_mut().and_then(|l| l.nodes.get_mut(&account)) {
                *n = n.saturating_sub(1);
            }
        } else {
            self.update(&id, |slot| slot.spare = false);
        }
        id
    }

    /// The newest spare of `account` not handed out, if any.
    fn newest_spare(&self, account: &str) -> Option<usize> {
        self.spares.get(account)?.iter().map(|&(_, i)| i).max()
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
        if slot.spare || slot.retired {
            // Spares wait for an instance that needs a new node; round robin does not fill them.
            return;
        }
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
                .filter(|(_, s)| {
                    s.account == account
                        && s.memory == Some(memory)
                        && !s.ports.contains(&port)
                        && !s.spare
                        && !s.retired
                })
                .min_by_key(|(order, s)| (s.instances, *order))
                .map(|(_, s)| &s.id),
            "the load index disagrees with a scan of the nodes"
        );
        found.map(|s| s.id.to_string())
    }

    /// Nodes of `account` that exist at some moment of the apply: the state's, those this plan
    /// empties included (apply frees them last), its spares but those it frees first, and the
    /// new ones.
    fn nodes(&self, account: &'a str) -> usize {
        let nodes = self.load.as_ref().and_then(|l| l.nodes.get(&Cow::Borrowed(account)).copied()).unwrap_or(0);
        debug_assert_eq!(
            nodes,
            self.slots.iter().filter(|s| s.account == account && !s.retired).count(),
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
            self.load.is_none()
                || found
                    == self
                        .slots
                        .iter()
                        .any(|s| s.account == account && s.memory == Some(memory) && !s.spare && !s.retired),
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

/// Places the instances `demands` need, starting from what `state` records, and keeps the
/// reservoirs of the accounts in `reserve` (see [`place_from`]).
///
/// # Errors
/// Every instance that cannot be placed (an account enact.json does not define, a reached
/// `vmLimit`, ssh hosts whose port is taken, node or instance numbers used up), each a
/// [`Diagnostic`] naming its service and what to do.
pub fn place(
    view: &EnvView<'_>,
    state: &State,
    demands: &[Demand<'_>],
    reserve: Option<&BTreeSet<String>>,
) -> Result<Placement, Vec<Diagnostic>> {
    place_from(view, state, demands, Start::of(view.node_selector.policy, state), reserve)
}

/// The accounts that keep a reservoir of spare nodes for an environment whose spec places its
/// deployable services in `accounts` (each service's `cloudAccount`, else the environment's
/// default account): those of the ec2 and simulated providers, when the environment has a
/// `reservoir` of at least one node. Empty otherwise.
pub fn reservoir_accounts<'s>(view: &EnvView<'_>, accounts: impl IntoIterator<Item = &'s str>) -> BTreeSet<String> {
    if view.reservoir.is_none_or(|r| r.initial_size == 0) {
        return BTreeSet::new();
    }
    let accounts: BTreeSet<&str> = accounts.into_iter().collect();
    accounts
        .into_iter()
        .filter(|name| view.settings.account(name).is_some_and(keeps_reservoir))
        .map(str::to_string)
        .collect()
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
                spare: node.spare,
                retired: false,
            });
        }
        for service in state.services.values() {
            let AppliedSpec::Deployable(spec) = &*service.spec else {
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

/// [`place`] from a [`Start`] of the same state, under the policy of `view`. `reserve` names the
/// accounts that keep a reservoir ([`reservoir_accounts`]): their spares are refilled or cut
/// back to what `view.reservoir` says, and the spares of every other account are freed; with
/// `None` (a plan limited by `--target`) the reservoirs are left as they are, but for the
/// spares new instances take.
///
/// # Errors
/// As [`place`]: every instance that cannot be placed, named with its service.
pub fn place_from(
    view: &EnvView<'_>,
    state: &State,
    demands: &[Demand<'_>],
    start: Start<'_>,
    reserve: Option<&BTreeSet<String>>,
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
    add_ports(&mut placer.placement, demands);
    // The state's nodes come first, in id order.
    placer.placement.freed_nodes = placer
        .slots
        .slots
        .iter()
        .filter(|s| s.existing && s.touched && s.instances == 0 && !s.fixed && !s.spare && !s.retired)
        .map(|s| s.id.to_string())
        .collect();
    if let Some(reserve) = reserve {
        placer.keep_reservoirs(state, reserve);
    }
    let Placer { mut placement, errors, .. } = placer;
    placement.freed_spares.sort_by_key(|id| (state.nodes.get(id).map(|n| n.account.clone()), id_number(id)));
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
            let recorded_port = match recorded.map(|s| &*s.spec) {
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
        let recorded_memory = match recorded.map(|s| &*s.spec) {
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
                Ok(None) => match self.spare_or_new_node(account, account_name, memory) {
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

    /// The node for an instance of `memory` where the policy asks for a new one: a spare of the
    /// account's reservoir that fits, else a new node. Under `LIMITED_ROUND_ROBIN`, when the
    /// account's spares (none of which fits) leave no room under `vmLimit`, as many of them as
    /// it takes are freed first to make room. `None` when node numbers are used up.
    fn spare_or_new_node(&mut self, account: &Account, account_name: &'a str, memory: Memory) -> Option<String> {
        if let Some(i) = self.slots.spare_for(account_name, memory) {
            let id = self.slots.unspare(i, false);
            self.placement.handed_out.push(id.clone());
            return Some(id);
        }
        while self.view.node_selector.policy == Policy::LimitedRoundRobin
            && self.slots.nodes(account_name) >= self.view.node_selector.vm_limit.unwrap_or(1) as usize
            && let Some(i) = self.slots.newest_spare(account_name)
        {
            let id = self.slots.unspare(i, true);
            self.placement.freed_spares.push(id);
        }
        self.new_node(account, account_name, memory)
    }

    /// The next free id of a node of `account`; `None` when the numbers are used up.
    fn next_id(&mut self, account_name: &'a str) -> Option<String> {
        let number = self.next_node.entry(account_name).or_insert(1);
        if *number > u128::from(u64::MAX) {
            return None;
        }
        let id = format!("{account_name}-{number}");
        *number += 1;
        Some(id)
    }

    /// A new node of `account` for an instance of `memory`, with the account's next free
    /// number; `None` when the numbers are used up.
    fn new_node(&mut self, account: &Account, account_name: &'a str, memory: Memory) -> Option<String> {
        let id = self.next_id(account_name)?;
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
            spare: false,
            retired: false,
        });
        Some(id)
    }

    /// After every instance is placed (and [`Placement::freed_nodes`] is known): each account
    /// of `reserve`, and each account with spares left, keeps the spares its reservoir wants.
    /// An account left with `threshold` spares or fewer is refilled up to `initialSize`; one
    /// with more than it keeps (more than `initialSize`, or not in `reserve`) frees the newest
    /// first. Under `LIMITED_ROUND_ROBIN` the spares and the account's other nodes once the
    /// apply is done stay within `vmLimit`: the reservoir keeps fewer, and says so.
    fn keep_reservoirs(&mut self, state: &State, reserve: &BTreeSet<String>) {
        let view = self.view;
        let mut accounts: BTreeSet<&str> = reserve.iter().map(String::as_str).collect();
        accounts.extend(self.slots.spares.iter().filter(|(_, s)| !s.is_empty()).map(|(a, _)| a.as_ref()));
        let accounts: Vec<String> = accounts.into_iter().map(str::to_string).collect();
        let limited = view.node_selector.policy == Policy::LimitedRoundRobin;
        let limit = view.node_selector.vm_limit.unwrap_or(1) as usize;
        for name in accounts {
            let Some((account_name, account)) = view.settings.accounts().find(|(n, _)| *n == name) else {
                // An account enact.json no longer defines: its spares are freed.
                while let Some(i) = self.slots.newest_spare(&name) {
                    let id = self.slots.unspare(i, true);
                    self.placement.freed_spares.push(id);
                }
                continue;
            };
            let wanted = match view.reservoir {
                Some(r) if reserve.contains(account_name) && keeps_reservoir(account) => r.initial_size as usize,
                _ => 0,
            };
            let threshold = view.reservoir.map_or(0, |r| r.threshold() as usize);
            let left = self.slots.spare_count(account_name);
            let target = if left <= threshold { wanted } else { left.min(wanted) };
            let allowed = if limited && account.creates_nodes() {
                let freed = self
                    .placement
                    .freed_nodes
                    .iter()
                    .filter(|id| state.nodes.get(*id).is_some_and(|n| n.account == name));
                let others = self.slots.nodes(account_name).saturating_sub(left).saturating_sub(freed.count());
                limit.saturating_sub(others)
            } else {
                usize::MAX
            };
            let kept = target.min(allowed);
            for _ in kept..left {
                if let Some(i) = self.slots.newest_spare(account_name) {
                    let id = self.slots.unspare(i, true);
                    self.placement.freed_spares.push(id);
                }
            }
            let mut made = left;
            while made < kept {
                let Some(id) = self.next_id(account_name) else {
                    self.errors.push(exhausted("node", &format!("account `{account_name}`")));
                    break;
                };
                self.placement.new_spares.push(NewNode {
                    id,
                    account: account_name.to_string(),
                    provider: account.provider(),
                    memory: SPARE_MEMORY,
                    size: account.node_size(SPARE_MEMORY),
                    address: None,
                    provisioned: true,
                    ports: Vec::new(),
                });
                made += 1;
            }
            let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            let limited_from = (kept < target).then(|| count(target));
            self.placement.reservoirs.insert(name, Spares { kept: count(made.min(kept)), limited_from });
        }
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
            spare: false,
            retired: false,
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
            // A spare is a node the account may still fill: it counts against the limit, but
            // does not stop a new instance from getting a node of its own.
            if slots.nodes(account_name).saturating_sub(slots.spare_count(account_name)) < limit {
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
