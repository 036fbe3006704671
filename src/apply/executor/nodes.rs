//! Nodes during an apply: the spares the reservoirs give up are freed first; the nodes the
//! placement needs are created next, one batch per account; the reservoirs are refilled (one
//! more batch per account) while the steps run, or after the nodes the plan leaves empty are
//! freed when `vmLimit` needs them gone first.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Executor, StepError};
use crate::apply::journal::Record;
use crate::provider::{NodeRequest, Provider};
use crate::repo::settings::Policy;
use crate::state::NewNode;
use crate::state::{NodeState, State};

impl Executor<'_> {
    /// Creates every node the placement needs, one batch per account; the errors, each naming
    /// its account or node.
    pub(super) fn create_nodes(&self) -> Vec<StepError> {
        let mut errors = Vec::new();
        let mut by_account: HashMap<&str, Vec<&NewNode>> = HashMap::new();
        for node in &self.planned.placement.new_nodes {
            by_account.entry(&node.account).or_default().push(node);
        }
        let mut accounts: Vec<&str> = by_account.keys().copied().collect();
        accounts.sort_unstable();
        for account in accounts {
            let Some(provider) = self.providers.get(account) else {
                errors.push(StepError::NoProvider { account: account.to_string() });
                continue;
            };
            let (fixed, made): (Vec<&NewNode>, Vec<&NewNode>) =
                by_account[account].iter().copied().partition(|n| n.address.is_some());
            for node in fixed {
                let state = NodeState {
                    account: node.account.clone(),
                    provider: node.provider.to_string(),
                    address: node.address.clone().unwrap_or_default(),
                    memory: Some(node.memory),
                    size: Some(node.size.clone()),
                    provider_id: None,
                    spare: false,
                };
                if let Err(e) = self.record(Record::NodeCreated { node: node.id.clone(), state }) {
                    errors.push(e);
                }
            }
            if !made.is_empty() {
                errors.extend(self.make_nodes(account, provider.as_ref(), &made, false));
            }
        }
        errors
    }

    /// Whether the reservoirs can be refilled while the steps run, before the nodes this apply
    /// frees are gone: there are spares to make, and no account that gets them keeps a
    /// `vmLimit` (`LIMITED_ROUND_ROBIN`) that its nodes now and the new spares would pass.
    pub(super) fn refill_fits_now(&self) -> bool {
        let spares = &self.planned.placement.new_spares;
        if spares.is_empty() {
            return false;
        }
        let selector = self.settings.env_view(self.env).node_selector;
        if selector.policy != Policy::LimitedRoundRobin {
            return true;
        }
        let limit = selector.vm_limit.unwrap_or(1) as usize;
        let mut wanted: HashMap<&str, usize> = HashMap::new();
        for node in spares {
            *wanted.entry(node.account.as_str()).or_default() += 1;
        }
        let live = self.live();
        wanted.into_iter().all(|(account, n)| live.nodes.values().filter(|x| x.account == account).count() + n <= limit)
    }

    /// Makes the spare nodes that refill the reservoirs, one batch per account, recorded as
    /// spares; the errors, each naming its account. Nothing is made once the apply was asked to
    /// stop (the next apply refills them).
    pub(super) fn refill_reservoirs(&self) -> Vec<StepError> {
        let cancelled = self.options.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst));
        if cancelled {
            return Vec::new();
        }
        let mut errors = Vec::new();
        let mut by_account: std::collections::BTreeMap<&str, Vec<&NewNode>> = std::collections::BTreeMap::new();
        for node in &self.planned.placement.new_spares {
            by_account.entry(&node.account).or_default().push(node);
        }
        for (account, spares) in by_account {
            match self.providers.get(account) {
                Some(provider) => errors.extend(self.make_nodes(account, provider.as_ref(), &spares, true)),
                None => errors.push(StepError::NoProvider { account: account.to_string() }),
            }
        }
        errors
    }

    /// Makes one account's batch of nodes with its provider: the intent, the call, each node's
    /// outcome (recorded as a spare of the reservoir when `spare` is set).
    fn make_nodes(&self, account: &str, provider: &dyn Provider, made: &[&NewNode], spare: bool) -> Vec<StepError> {
        let mut errors = Vec::new();
        let ids: Vec<String> = made.iter().map(|n| n.id.clone()).collect();
        // The request's id is on disk before the call: whatever the provider made for it is
        // found by it after a crash.
        let request = crate::state::store::new_lineage();
        if let Err(e) = self.record(Record::NodeCreateIntent {
            nodes: ids.clone(),
            account: account.to_string(),
            request: request.clone(),
        }) {
            errors.push(e);
            return errors;
        }
        let taken: BTreeSet<String> = self.taken_addresses();
        let batch: Vec<NewNode> = made.iter().map(|n| (*n).clone()).collect();
        match provider.create_nodes(&batch, &NodeRequest { id: &request, taken: &taken }) {
            Ok(states) => {
                for (id, mut state) in ids.into_iter().zip(states) {
                    state.spare = spare;
                    if let Err(e) = self.record(Record::NodeCreated { node: id, state }) {
                        errors.push(e);
                    }
                }
            }
            Err(source) => {
                errors.push(StepError::NodeCreate { account: account.to_string(), count: batch.len(), source });
            }
        }
        errors
    }

    /// Addresses of nodes of every environment of this repository, so two environments applied
    /// on one machine never share a loopback address.
    fn taken_addresses(&self) -> BTreeSet<String> {
        let mut taken: BTreeSet<String> = self.live().nodes.values().map(|n| n.address.clone()).collect();
        if let Ok(entries) = std::fs::read_dir(self.state_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(env) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                if env == self.env {
                    continue;
                }
                if let Ok(text) = std::fs::read_to_string(entry.path())
                    && let Ok(state) = serde_json::from_str::<State>(&text)
                {
                    taken.extend(state.nodes.into_values().map(|n| n.address));
                }
            }
        }
        taken
    }

    /// The nodes to free: those the placement frees, those made for this apply that a failed
    /// or skipped step left empty, and those an interrupted apply made but never used (fixed
    /// ssh hosts are never freed); none that an instance still uses, and no spare of a
    /// reservoir (a spare runs nothing on purpose).
    fn doomed_nodes(&self) -> Vec<String> {
        let made = self.planned.placement.new_nodes.iter().filter(|n| n.address.is_none()).map(|n| &n.id);
        let live = self.live();
        let in_use: HashSet<&str> =
            live.services.values().flat_map(|s| s.instances.iter().map(|i| i.node.as_str())).collect();
        let orphans =
            live.nodes.iter().filter(|(id, n)| n.provider != "ssh" && !in_use.contains(id.as_str())).map(|(id, _)| id);
        let mut seen: HashSet<&str> = HashSet::new();
        self.planned
            .placement
            .freed_nodes
            .iter()
            .chain(made)
            .chain(orphans)
            .filter(|id| {
                !in_use.contains(id.as_str())
                    && !live.nodes.get(id.as_str()).is_some_and(|n| n.spare)
                    && seen.insert(id.as_str())
            })
            .cloned()
            .collect()
    }

    /// Frees the spares the reservoirs give up, before any node is made; the errors, each
    /// naming its node.
    pub(super) fn free_spares(&self) -> Vec<StepError> {
        let spares: Vec<String> = {
            let live = self.live();
            self.planned
                .placement
                .freed_spares
                .iter()
                .filter(|id| live.nodes.get(id.as_str()).is_some_and(|n| n.spare))
                .cloned()
                .collect()
        };
        self.free(spares)
    }

    /// Frees the nodes the plan leaves empty; the errors, each naming its node.
    pub(super) fn free_nodes(&self) -> Vec<StepError> {
        self.free(self.doomed_nodes())
    }

    /// Frees the nodes `ids` (each account's together); the errors, each naming its node.
    fn free(&self, ids: Vec<String>) -> Vec<StepError> {
        if ids.is_empty() {
            return Vec::new();
        }
        let mut errors = Vec::new();
        let mut doomed: Vec<(String, NodeState, &dyn Provider)> = Vec::new();
        for id in ids {
            let Some(node) = self.live().nodes.get(&id).cloned() else { continue };
            match self.provider_of_node(&node) {
                Ok(provider) => doomed.push((id, *node, provider)),
                Err(e) => errors.push(StepError::NodeFree { node: id, cause: Box::new(e) }),
            }
        }
        // Every intent on disk with one sync, then the nodes of each account go together (one
        // call where the provider can: ec2's TerminateInstances).
        let intents: Vec<Record> =
            doomed.iter().map(|(id, _, _)| Record::NodeDestroyIntent { node: id.clone() }).collect();
        if let Err(cause) = self.record_all(&intents) {
            errors.push(StepError::FreeIntents { count: doomed.len(), cause });
            return errors;
        }
        let mut by_account: std::collections::BTreeMap<&str, Vec<&(String, NodeState, &dyn Provider)>> =
            std::collections::BTreeMap::new();
        for entry in &doomed {
            by_account.entry(entry.1.account.as_str()).or_default().push(entry);
        }
        for entries in by_account.values() {
            let provider = entries[0].2;
            let nodes: Vec<(&str, &NodeState)> = entries.iter().map(|(id, node, _)| (id.as_str(), node)).collect();
            for ((id, _, _), outcome) in entries.iter().zip(provider.destroy_nodes(&nodes)) {
                let result = outcome
                    .map_err(|source| StepError::Destroy { node: id.clone(), source })
                    .and_then(|()| self.record(Record::NodeDestroyed { node: id.clone() }));
                if let Err(e) = result {
                    errors.push(StepError::NodeFree { node: id.clone(), cause: Box::new(e) });
                }
            }
        }
        errors
    }
}
