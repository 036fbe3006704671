//! The model of an apply: the state a plan leads to when every step succeeds. Apply records
//! exactly this shape; the property tests check that it plans to nothing.

use std::collections::BTreeSet;

use super::diff::Planned;
use super::model::Action;
use crate::spec::endpoint::native_uri;
use crate::spec::{Choreography, Service};
use crate::state::{AppliedSpec, InstanceState, InstanceStatus, NodeState, ServiceState, State};

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

/// Applies `planned` to `prior` in the model: specs recorded, instances started and stopped as
/// placed, nodes created and freed. Serial and lineage are left to the state store.
pub fn apply_model(prior: &State, spec: &Choreography, planned: &Planned) -> State {
    let mut state = prior.clone();
    let placement = &planned.placement;
    for node in &placement.new_nodes {
        let address =
            node.address.clone().unwrap_or_else(|| model_address(node.provider, super::placement::id_number(&node.id)));
        state.nodes.insert(
            node.id.clone(),
            NodeState {
                account: node.account.clone(),
                provider: node.provider.to_string(),
                address,
                memory: Some(node.memory),
                size: Some(node.size.clone()),
                provider_id: None,
            },
        );
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
            spec: AppliedSpec::from_service(*service),
            instances: Vec::new(),
            paused: false,
            incomplete: false,
        });
        entry.spec = AppliedSpec::from_service(*service);
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
        let address = state.nodes.get(&started.node).map(|n| n.address.clone()).unwrap_or_default();
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
    state
}
