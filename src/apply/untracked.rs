//! Processes an environment started that its state does not record. Every instance carries
//! the lineage of its environment's state (`ENACT_LINEAGE`), so whatever happened to the
//! journal — records overwritten, a torn line, the file gone — the processes of an interrupted
//! apply are found on their nodes and stopped: recovery stops them before it records the
//! recovered state, `destroy` stops them with the rest, and `status` and `plan` name them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use crate::provider::{self, Provider, ProviderOptions, Tagged, TaggedNode};
use crate::repo::settings::{Account, Settings};
use crate::spec::Memory;
use crate::state::{InstanceState, InstanceStatus, NodeState, State};

/// How many nodes are looked at at once.
const NODES_AT_ONCE: usize = 16;

/// A process carrying the environment's lineage that no recorded instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The account of the node it runs on.
    pub account: String,
    /// The node (for the local provider, the machine: its address is the loopback).
    pub node: NodeState,
    /// The process, with the instance and service its environment names.
    pub process: Tagged,
}

impl Orphan {
    /// `pid 4242 (instance web-3 of service web) on 10.0.0.5` (`on this machine` for the local
    /// provider).
    pub fn describe(&self) -> String {
        let what = match (self.process.instance.as_str(), self.process.service.as_str()) {
            ("", "") => String::new(),
            (instance, "") => format!(" (instance {instance})"),
            ("", service) => format!(" (service {service})"),
            (instance, service) => format!(" (instance {instance} of service {service})"),
        };
        if self.node.provider == "local" {
            format!("pid {}{what} on this machine", self.process.pid)
        } else {
            format!("pid {}{what} on {}", self.process.pid, self.node.address)
        }
    }
}

/// What a sweep found.
#[derive(Debug, Clone, Default)]
pub struct Untracked {
    /// Processes carrying the lineage that no recorded instance is, in node then pid order.
    pub orphans: Vec<Orphan>,
    /// Machines made for the lineage (EC2 instances tagged with it) that no recorded node is,
    /// in account then id order.
    pub nodes: Vec<TaggedNode>,
    /// Nodes that could not be asked, each with why (`host 10.0.0.5: connection refused`).
    pub unreachable: Vec<String>,
}

impl Untracked {
    /// Every process and machine found, one by one, as plans and `status --json` list them.
    pub fn found(&self) -> crate::plan::model::UntrackedFound {
        use crate::plan::model::{UntrackedMachine, UntrackedProcess};
        crate::plan::model::UntrackedFound {
            processes: self
                .orphans
                .iter()
                .map(|o| UntrackedProcess {
                    pid: o.process.pid,
                    instance: o.process.instance.clone(),
                    service: o.process.service.clone(),
                    address: o.node.address.clone(),
                    account: o.account.clone(),
                })
                .collect(),
            ec2_instances: self
                .nodes
                .iter()
                .map(|n| UntrackedMachine {
                    provider_id: n.provider_id.clone(),
                    node: n.node.clone(),
                    account: n.account.clone(),
                    address: n.address.clone(),
                    size: n.size.clone(),
                })
                .collect(),
        }
    }

    /// Whether the sweep found nothing to stop or free.
    pub fn is_empty(&self) -> bool {
        self.orphans.is_empty() && self.nodes.is_empty()
    }

    /// How much was found, in words: `3 process(es)`, `2 EC2 instance(s)`, or both joined by
    /// `and`.
    pub fn counted(&self) -> String {
        self.counted_as("")
    }

    /// As [`Untracked::counted`], each count followed by `word` (`untracked ` gives
    /// `3 untracked process(es)`).
    pub fn counted_as(&self, word: &str) -> String {
        match (self.orphans.len(), self.nodes.len()) {
            (p, 0) => format!("{p} {word}process(es)"),
            (0, n) => format!("{n} {word}EC2 instance(s)"),
            (p, n) => format!("{p} {word}process(es) and {n} {word}EC2 instance(s)"),
        }
    }

    /// What stopping all that was found did, in words: `stopped 3 untracked process(es)`,
    /// `terminated 2 untracked EC2 instance(s)`, or both joined by `and`.
    pub fn stopped_text(&self) -> String {
        match (self.orphans.len(), self.nodes.len()) {
            (p, 0) => format!("stopped {p} untracked process(es)"),
            (0, n) => format!("terminated {n} untracked EC2 instance(s)"),
            (p, n) => format!("stopped {p} untracked process(es) and terminated {n} untracked EC2 instance(s)"),
        }
    }

    /// Stops every process found and frees every machine found (the machines after the
    /// processes, one call per account). Returns the error of each that could not go, naming
    /// it.
    pub fn stop_all(&self, settings: &Settings, options: &ProviderOptions) -> Vec<String> {
        let mut errors = stop(settings, &self.orphans, options);
        errors.extend(free(settings, &self.nodes, options));
        errors
    }

    /// `; \`enact state adopt\` records the machines instead` when machines were found, else
    /// nothing: the end of a warning that says the next apply stops what was found.
    pub fn adopt_hint(&self) -> &'static str {
        if self.nodes.is_empty() { "" } else { "; `enact state adopt` records the machines instead" }
    }

    /// One line naming what was found (at most five of each, then a count).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.orphans.is_empty() {
            parts.push(summary(&self.orphans));
        }
        if !self.nodes.is_empty() {
            let mut named: Vec<String> = self.nodes.iter().take(5).map(describe_node).collect();
            if self.nodes.len() > 5 {
                named.push(format!("and {} more", self.nodes.len() - 5));
            }
            parts.push(named.join(", "));
        }
        parts.join(", ")
    }
}

/// `EC2 instance i-0abc (node aws-3, account aws)`.
pub fn describe_node(node: &TaggedNode) -> String {
    match &node.node {
        Some(id) => format!("EC2 instance {} (node {id}, account {})", node.provider_id, node.account),
        None => format!("EC2 instance {} (account {})", node.provider_id, node.account),
    }
}

/// The nodes to ask, by account: every node of the state whose account can run processes
/// (not a simulated one); every host of each ssh account the
/// state has nodes in (or of every ssh account, when the state has no nodes: an interrupted
/// first apply); and one node for the local machine when any local account is defined (the
/// local provider looks at the whole machine at once).
fn nodes_to_ask(settings: &Settings, state: &State) -> BTreeMap<String, Vec<NodeState>> {
    let mut by_account: BTreeMap<String, BTreeMap<String, NodeState>> = BTreeMap::new();
    let used: BTreeSet<&str> = state.nodes.values().map(|n| n.account.as_str()).collect();
    for (name, account) in settings.accounts() {
        match account {
            Account::Local(_) => {
                let machine = NodeState {
                    account: name.to_string(),
                    provider: "local".into(),
                    address: "127.0.0.1".into(),
                    memory: None,
                    size: None,
                    provider_id: None,
                    spare: false,
                };
                // One look covers every local account: they share the machine.
                if !by_account.values().flat_map(BTreeMap::values).any(|n| n.provider == "local") {
                    by_account.entry(name.to_string()).or_default().insert(machine.address.clone(), machine);
                }
            }
            Account::Ssh(ssh) if used.is_empty() || used.contains(name) => {
                for host in &ssh.hosts {
                    let node = NodeState {
                        account: name.to_string(),
                        provider: "ssh".into(),
                        address: host.address.clone(),
                        memory: None,
                        size: None,
                        provider_id: None,
                        spare: false,
                    };
                    by_account.entry(name.to_string()).or_default().insert(host.address.clone(), node);
                }
            }
            _ => {}
        }
    }
    // Nodes of simulated accounts (no processes) and of accounts enact.json lost (no provider)
    // are not asked: not even copied.
    let mut last: Option<(&str, bool)> = None;
    for node in state.nodes.values().filter(|n| n.provider != "local") {
        let asked = match last {
            Some((account, asked)) if account == node.account => asked,
            _ => {
                let asked = settings.account(&node.account).is_some_and(|a| !matches!(a, Account::Simulated(_)));
                last = Some((node.account.as_str(), asked));
                asked
            }
        };
        if asked {
            by_account
                .entry(node.account.clone())
                .or_default()
                .entry(node.address.clone())
                .or_insert_with(|| *node.clone());
        }
    }
    by_account.into_iter().map(|(account, nodes)| (account, nodes.into_values().collect())).collect()
}

/// Looks on every node the environment may have used for processes carrying `state`'s lineage
/// that `state` does not record (by node address and pid; on the local machine by pid). A state
/// without a lineage (never applied) finds nothing.
pub fn find(settings: &Settings, state: &State, options: &ProviderOptions) -> Untracked {
    let mut untracked = Untracked::default();
    if state.lineage.is_empty() {
        return untracked;
    }
    // The recorded processes, by (node address, pid). A process is looked for where it says it
    // was started (`HOST`, `ENACT_ACCOUNT`): nodes may share a machine, and one look at the
    // machine sees the processes of all of them.
    let mut recorded: HashSet<(&str, u32)> = HashSet::new();
    for instance in state.services.values().flat_map(|s| &s.instances) {
        let Some(pid) = instance.pid else { continue };
        let Some(node) = state.nodes.get(&instance.node) else { continue };
        recorded.insert((node.address.as_str(), pid));
    }
    let mut seen: HashSet<(String, u32)> = HashSet::new();
    let mut providers: Vec<(String, Box<dyn Provider>, Vec<NodeState>)> = Vec::new();
    for (account, nodes) in nodes_to_ask(settings, state) {
        // Only where processes can run: a simulated environment of 10,000 nodes is not asked
        // 10,000 times (a thread each) for processes that cannot exist.
        if let Some(provider) =
            settings.account(&account).and_then(|a| provider::for_account(&account, a, options).ok())
            && provider.starts_processes()
        {
            providers.push((account, provider, nodes));
        }
    }
    // Up to NODES_AT_ONCE nodes, of every account, are asked at once (one remote command each);
    // the answers are read in account and node order.
    let asks: Vec<(&str, &dyn Provider, &NodeState)> = providers
        .iter()
        .flat_map(|(account, provider, nodes)| {
            nodes.iter().map(move |node| (account.as_str(), provider.as_ref(), node))
        })
        .collect();
    let mut answers = Vec::with_capacity(asks.len());
    for chunk in asks.chunks(NODES_AT_ONCE) {
        std::thread::scope(|scope| {
            let running: Vec<_> =
                chunk.iter().map(|(_, provider, node)| scope.spawn(|| provider.tagged(node, &state.lineage))).collect();
            answers.extend(running.into_iter().map(|ask| {
                ask.join().unwrap_or_else(|_| Err(provider::ProviderError::new("looking at the node panicked")))
            }));
        });
    }
    for ((account, _, node), answer) in asks.into_iter().zip(answers) {
        match answer {
            Ok(processes) => {
                for process in processes {
                    let ours = if node.provider == "local" {
                        settings.account(&process.account).is_some_and(|a| matches!(a, Account::Local(_)))
                    } else {
                        process.account == account && process.host == node.address
                    };
                    if !ours
                        || recorded.contains(&(process.host.as_str(), process.pid))
                        || !seen.insert((process.host.clone(), process.pid))
                    {
                        continue;
                    }
                    let mut node = node.clone();
                    node.address.clone_from(&process.host);
                    untracked.orphans.push(Orphan { account: process.account.clone(), node, process });
                }
            }
            Err(e) => untracked.unreachable.push(format!("host {}: {e}", node.address)),
        }
    }
    untracked.nodes = machines(settings, state, options, &mut untracked.unreachable);
    untracked
}

/// The machines of every account that makes them (ec2) tagged with `state`'s lineage that no
/// recorded node is. An account whose API cannot be asked is added to `unreachable`.
fn machines(
    settings: &Settings,
    state: &State,
    options: &ProviderOptions,
    unreachable: &mut Vec<String>,
) -> Vec<TaggedNode> {
    if !settings.accounts().any(|(_, a)| matches!(a, Account::Ec2(_))) {
        return Vec::new();
    }
    let recorded: HashSet<&str> = state.nodes.values().filter_map(|n| n.provider_id.as_deref()).collect();
    let mut found = Vec::new();
    for (name, account) in settings.accounts() {
        if !matches!(account, Account::Ec2(_)) {
            continue;
        }
        let Ok(provider) = provider::for_account(name, account, options) else { continue };
        match provider.tagged_nodes(&state.lineage) {
            Ok(nodes) => found.extend(nodes.into_iter().filter(|n| !recorded.contains(n.provider_id.as_str()))),
            Err(e) => unreachable.push(format!("account {name}: {e}")),
        }
    }
    found
}

/// Records every machine of `nodes` in `state` as a spare node of its account (`enact state
/// adopt`): the id its tags name when `state` has no node of that id, else the account's next
/// free number; the memory size whose instance type (`instanceTypes`, else the default one) is
/// the machine's, SMALL when none is. Returns the ids given, in the order of `nodes`.
///
/// A spare is handed to the next instances that fit before any node is made, and one the
/// account's reservoir does not keep is freed by the next apply, as any spare is.
pub fn adopt(settings: &Settings, state: &mut State, nodes: &[TaggedNode]) -> Vec<String> {
    let mut ids = Vec::with_capacity(nodes.len());
    for node in nodes {
        let free = |id: &str| !state.nodes.contains_key(id);
        let id = match node.node.as_deref().filter(|id| free(id)) {
            Some(id) => id.to_string(),
            None => {
                let prefix = format!("{}-", node.account);
                let last = state
                    .nodes
                    .keys()
                    .filter_map(|id| id.strip_prefix(&prefix)?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0);
                format!("{prefix}{}", last + 1)
            }
        };
        let account = settings.account(&node.account);
        let memory = [Memory::Small, Memory::Medium, Memory::Large]
            .into_iter()
            .find(|m| account.is_some_and(|a| a.node_size(*m) == node.size))
            .unwrap_or(Memory::Small);
        state.nodes.insert(
            id.clone(),
            Box::new(NodeState {
                account: node.account.clone(),
                provider: account.map_or_else(|| "ec2".to_string(), |a| a.provider().to_string()),
                address: node.address.clone(),
                memory: Some(memory),
                size: Some(node.size.clone()),
                provider_id: Some(node.provider_id.clone()),
                spare: true,
            }),
        );
        ids.push(id);
    }
    ids
}

/// Frees every machine of `nodes` (one call per account). Returns the error of each account
/// that could not, naming its machines.
pub fn free(settings: &Settings, nodes: &[TaggedNode], options: &ProviderOptions) -> Vec<String> {
    let mut by_account: BTreeMap<&str, Vec<TaggedNode>> = BTreeMap::new();
    for node in nodes {
        by_account.entry(node.account.as_str()).or_default().push(node.clone());
    }
    let mut errors = Vec::new();
    for (name, nodes) in by_account {
        let named = nodes.iter().map(describe_node).collect::<Vec<_>>().join(", ");
        let freed = settings
            .account(name)
            .ok_or_else(|| format!("account `{name}` is not defined"))
            .and_then(|a| provider::for_account(name, a, options).map_err(|e| e.to_string()))
            .and_then(|p| p.destroy_untracked(&nodes).map_err(|e| e.to_string()));
        if let Err(e) = freed {
            errors.push(format!("{named}: {e}"));
        }
    }
    errors
}

/// Stops each orphan as any instance of its service is stopped (SIGTERM, then SIGKILL after the
/// service's `timeouts.stopGraceMs`). Returns the error of each that could not be stopped,
/// naming it.
pub fn stop(settings: &Settings, orphans: &[Orphan], options: &ProviderOptions) -> Vec<String> {
    let mut providers: BTreeMap<&str, Box<dyn Provider>> = BTreeMap::new();
    let mut errors = Vec::new();
    for orphan in orphans {
        if !providers.contains_key(orphan.account.as_str()) {
            match settings.account(&orphan.account).map(|a| provider::for_account(&orphan.account, a, options)) {
                Some(Ok(p)) => {
                    providers.insert(&orphan.account, p);
                }
                Some(Err(e)) => {
                    errors.push(format!("{}: {e}", orphan.describe()));
                    continue;
                }
                None => {
                    errors.push(format!("{}: account `{}` is not defined", orphan.describe(), orphan.account));
                    continue;
                }
            }
        }
        let Some(provider) = providers.get(orphan.account.as_str()) else { continue };
        let instance = InstanceState {
            id: orphan.process.instance.clone(),
            node: orphan.node.address.clone(),
            status: InstanceStatus::Running,
            native_uri: String::new(),
            pid: Some(orphan.process.pid),
            start_time: orphan.process.start_time,
            memory: None,
        };
        let grace = Duration::from_millis(settings.timeouts_of(&orphan.process.service, &orphan.account).1);
        if let Err(e) = provider.stop(&instance, &orphan.node, grace) {
            errors.push(format!("{}: {e}", orphan.describe()));
        }
    }
    errors
}

/// One line naming `orphans` (at most five, then a count).
pub fn summary(orphans: &[Orphan]) -> String {
    let mut named: Vec<String> = orphans.iter().take(5).map(Orphan::describe).collect();
    if orphans.len() > 5 {
        named.push(format!("and {} more", orphans.len() - 5));
    }
    named.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::SourceFile;

    fn tagged(id: &str, node: Option<&str>, size: &str) -> TaggedNode {
        TaggedNode {
            provider_id: id.into(),
            node: node.map(str::to_string),
            account: "aws".into(),
            address: format!("10.0.0.{}", id.len()),
            size: size.into(),
            request: None,
        }
    }

    #[test]
    fn adopted_machines_keep_a_free_tagged_id_else_take_the_next_number_and_their_memory_from_the_type() {
        let settings = Settings::parse(&SourceFile::new(
            "enact.json",
            r#"{"accounts": {"aws": {"provider": "ec2", "region": "us-east-1", "imageId": "ami-1",
                "instanceTypes": {"SMALL": "t3.micro"}}}}"#
                .to_string(),
        ))
        .unwrap();
        let mut state = State::empty("dev");
        let taken = NodeState {
            account: "aws".into(),
            provider: "ec2".into(),
            address: "10.0.0.1".into(),
            memory: Some(Memory::Small),
            size: Some("t3.micro".into()),
            provider_id: Some("i-0".into()),
            spare: false,
        };
        state.nodes.insert("aws-7".into(), Box::new(taken.clone()));
        let found = [
            tagged("i-1", Some("aws-3"), "t3.micro"),
            tagged("i-22", Some("aws-7"), "t3.medium"),
            tagged("i-333", None, "x9.huge"),
        ];
        let ids = adopt(&settings, &mut state, &found);
        assert_eq!(ids, ["aws-3", "aws-8", "aws-9"], "aws-7 is taken: the next numbers");
        let memory: Vec<Option<Memory>> = ids.iter().map(|id| state.nodes[id].memory).collect();
        assert_eq!(
            memory,
            [Some(Memory::Small), Some(Memory::Medium), Some(Memory::Small)],
            "by instance type; unknown: SMALL"
        );
        assert!(ids.iter().all(|id| state.nodes[id].spare && state.nodes[id].provider == "ec2"));
        assert_eq!(state.nodes["aws-9"].provider_id.as_deref(), Some("i-333"));
        assert_eq!(state.nodes["aws-7"], Box::new(taken), "the recorded node is untouched");
    }
}
