//! The model of an apply: the state a plan leads to when every step succeeds. Apply records
//! exactly this shape; the property tests check that it plans to nothing.

use std::collections::BTreeSet;

use super::diff::Planned;
use super::model::Action;
use crate::spec::endpoint::native_uri;
use crate::spec::{Choreography, Service};
use crate::state::{AppliedSpec, InstanceState, InstanceStatus, NewNode, NodeState, ServiceState, State};

/// The address a new node of a provider gets in the model (providers assign real ones).
pub fn model_address(provider: &str, node_number: u64) -> String {
    match provider {
        // 127.0.0.2, 127.0.0.3, …: loopback addresses are the local provider's hosts.
        "local" => {
            let n = node_number + 1;
            format!("127.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
        }
        _ => format!("{provider}-node-{node_number}.invalid"),
    }
}

/// The node the model records for `node`.
fn model_node(node: &NewNode, spare: bool) -> NodeState {
    let address =
        node.address.clone().unwrap_or_else(|| model_address(node.provider, super::placement::id_number(&node.id)));
    NodeState {
        account: node.account.clone(),
        provider: node.provider.to_string(),
        address,
        memory: Some(node.memory),
        size: Some(node.size.clone()),
        provider_id: None,
        spare,
    }
}

/// Applies `planned` to `prior` in the model: spares given up freed first, specs recorded,
/// instances started and stopped as placed (a spare that takes one becomes an ordinary node),
/// nodes created and freed, the reservoirs refilled last. Serial and lineage are left to the
/// state store.
pub fn apply_model(prior: &State, spec: &Choreography, planned: &Planned) -> State {
    let mut state = prior.clone();
    let placement = &planned.placement;
    for id in &placement.freed_spares {
        state.nodes.remove(id);
    }
    for node in &placement.new_nodes {
        state.nodes.insert(node.id.clone(), Box::new(model_node(node, false)));
    }
    let desired: std::collections::HashMap<&str, Service<'_>> = spec.services().map(|s| (s.name(), s)).collect();
    for change in &planned.plan.changes {
        let name = change.service.as_str();
        if change.action == Action::Destroy {
            state.services.remove(name);
            continue;
        }
        let Some(service) = desired.get(name) else {
            continue;
        };
        let entry = state.services.entry(name.to_string()).or_insert_with(|| ServiceState {
            spec: Box::new(AppliedSpec::from_service(*service)),
            instances: Vec::new(),
            paused: false,
            incomplete: false,
        });
        *entry.spec = AppliedSpec::from_service(*service);
        if let Some(stopped) = placement.stopped.get(name) {
            let stopped: BTreeSet<&str> = stopped.iter().map(String::as_str).collect();
            entry.instances.retain(|i| !stopped.contains(i.id.as_str()));
        }
        if service.is_legacy() {
            entry.instances.clear();
        }
    }
    for started in &placement.started {
        let Some(Service::Deployable(spec)) = desired.get(started.service.as_str()) else {
            continue;
        };
        let address = match state.nodes.get_mut(&started.node) {
            Some(node) => {
                node.spare = false;
                node.address.clone()
            }
            None => String::new(),
        };
        if let Some(entry) = state.services.get_mut(&started.service) {
            entry.instances.push(InstanceState {
                id: started.id.clone(),
                node: started.node.clone(),
                status: InstanceStatus::Running,
                native_uri: native_uri(&address, spec),
                pid: None,
                start_time: None,
                memory: Some(spec.memory()),
            });
        }
    }
    for id in &placement.freed_nodes {
        state.nodes.remove(id);
    }
    for node in &placement.new_spares {
        state.nodes.insert(node.id.clone(), Box::new(model_node(node, true)));
    }
    state
}
