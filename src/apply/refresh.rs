//! Refresh: looking at every recorded instance before planning (like Terraform's refresh), so a
//! plan tells the truth about what runs. Each node is asked once, by its account's provider, and
//! nodes are asked in parallel; an account the settings no longer define, or a provider that
//! cannot be made, marks its instances down with the reason.

use std::collections::{BTreeMap, HashMap};

use crate::provider::{self, Provider, ProviderOptions};
use crate::repo::settings::Settings;
use crate::spec::endpoint::port_of;
use crate::state::observed::{DownReason, Health, Observations};
use crate::state::{AppliedSpec, InstanceState, InstanceStatus, NodeState, State};

/// The instances of one node to look at, with the port each listens on.
type NodeWork<'s> = (&'s NodeState, &'s dyn Provider, Vec<(&'s InstanceState, u16)>);

/// How many nodes are looked at at once.
const NODES_AT_ONCE: usize = 16;

/// The providers of every account the state has nodes in, by account; the error of each that
/// could not be made.
pub fn providers_for_state(
    settings: &Settings,
    state: &State,
    options: &ProviderOptions,
) -> (HashMap<String, Box<dyn Provider>>, HashMap<String, String>) {
    let mut providers = HashMap::new();
    let mut errors = HashMap::new();
    let accounts: std::collections::BTreeSet<&str> = state.nodes.values().map(|n| n.account.as_str()).collect();
    for account in accounts {
        match settings.account(account) {
            Some(a) => match provider::for_account(account, a, options) {
                Ok(p) => {
                    providers.insert(account.to_string(), p);
                }
                Err(e) => {
                    errors.insert(account.to_string(), e.message);
                }
            },
            None => {
                errors.insert(account.to_string(), format!("account `{account}` is no longer defined in enact.json"));
            }
        }
    }
    (providers, errors)
}

/// Looks at every running, recorded instance of `state` (paused ones are left out: they are
/// stopped on purpose). Returns the health of each, by instance id.
pub fn observe(settings: &Settings, state: &State, options: &ProviderOptions) -> Observations {
    let (providers, errors) = providers_for_state(settings, state, options);
    observe_with(&providers, &errors, state)
}

/// [`observe`] with providers already made.
pub fn observe_with(
    providers: &HashMap<String, Box<dyn Provider>>,
    errors: &HashMap<String, String>,
    state: &State,
) -> Observations {
    // The instances of every node, with the port each listens on.
    let mut by_node: BTreeMap<&str, Vec<(&InstanceState, u16)>> = BTreeMap::new();
    for service in state.services.values().filter(|s| !s.paused) {
        let AppliedSpec::Deployable(spec) = &*service.spec else { continue };
        for instance in service.instances.iter().filter(|i| i.status == InstanceStatus::Running) {
            by_node.entry(instance.node.as_str()).or_default().push((instance, port_of(spec)));
        }
    }
    let mut observations = Observations::new();
    let mut work: Vec<NodeWork<'_>> = Vec::new();
    for (node_id, instances) in by_node {
        let Some(node) = state.nodes.get(node_id) else {
            for (instance, _) in instances {
                observations.insert(
                    instance.id.clone(),
                    Health::down(DownReason::Unknown, format!("its node `{node_id}` is not in the state")),
                );
            }
            continue;
        };
        match providers.get(&node.account) {
            Some(provider) => work.push((node, provider.as_ref(), instances)),
            None => {
                let why = errors.get(&node.account).cloned().unwrap_or_default();
                for (instance, _) in instances {
                    observations.insert(instance.id.clone(), Health::down(DownReason::Unknown, why.clone()));
                }
            }
        }
    }
    // Instant providers answer from the state: no thread is worth it.
    let (instant, slow): (Vec<_>, Vec<_>) = work.into_iter().partition(|(_, p, _)| p.is_instant());
    for (node, provider, instances) in instant {
        let seen = provider.observe(node, &instances);
        observations.extend(instances.iter().map(|(i, _)| i.id.clone()).zip(seen));
    }
    for chunk in slow.chunks(NODES_AT_ONCE) {
        let results: Vec<Vec<(String, Health)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(node, provider, instances)| {
                    scope.spawn(move || {
                        let seen = provider.observe(node, instances);
                        instances.iter().map(|(i, _)| i.id.clone()).zip(seen).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        observations.extend(results.into_iter().flatten());
    }
    observations
}
