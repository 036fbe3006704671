//! The order of a plan's steps: providers before consumers for what starts or rewires,
//! consumers before providers for what is destroyed, a dependency cycle as one group.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt as _};
use petgraph::Direction;

use super::PlanInput;
use crate::graph::ServiceGraph;
use crate::plan::model::{Action, Step};

/// Orders the changes: providers before consumers for everything that starts or rewires,
/// consumers before providers for what is destroyed; cycles form one group.
pub(super) fn steps(input: PlanInput<'_>, changes: &[(&str, Action)]) -> Vec<Step> {
    if changes.is_empty() {
        return Vec::new();
    }
    // The graph of the spec plus the destroyed services with their recorded dependencies.
    let destroyed = changes
        .iter()
        .filter(|(_, action)| *action == Action::Destroy)
        .filter_map(|(service, _)| input.state.services.get(*service).map(|s| s.spec.as_service()));
    let graph = ServiceGraph::from_services(input.spec.services().chain(destroyed));
    let groups = graph.condensed();
    // The change of every node, by node index.
    let mut change_of: Vec<Option<Action>> = vec![None; graph.len()];
    for (service, action) in changes {
        if let Some(node) = graph.node(service) {
            change_of[node.index()] = Some(*action);
        }
    }
    // Recorded consumers of the destroyed services (the spec may no longer name them).
    let mut old_consumers: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    if changes.iter().any(|(_, action)| *action == Action::Destroy) {
        for (consumer, service) in &input.state.services {
            for dep in service.spec.as_service().dependencies() {
                let provider = dep.service_spec_name.as_str();
                if graph.node(provider).and_then(|p| change_of[p.index()]).is_some_and(|a| a == Action::Destroy) {
                    old_consumers.entry(provider).or_default().insert(consumer.as_str());
                }
            }
        }
    }
    let mut forward = Vec::new();
    let mut backward = Vec::new();
    for (g, group) in groups.order.iter().enumerate() {
        for &node in group {
            let Some(action) = change_of[node.index()] else {
                continue;
            };
            let name = graph.name(node);
            if action == Action::Destroy {
                // Every recorded consumer is unwired (or destroyed) first.
                let mut after: BTreeSet<&str> =
                    graph.neighbor_nodes(node, Direction::Outgoing).map(|n| graph.name(n)).collect();
                after.extend(old_consumers.get(name).into_iter().flatten().copied());
                let after: Vec<String> = after
                    .into_iter()
                    .filter(|c| {
                        *c != name
                            && graph
                                .node(c)
                                .is_some_and(|n| groups.group_of[n.index()] != g && change_of[n.index()].is_some())
                    })
                    .map(str::to_string)
                    .collect();
                backward.push(Step { service: name.to_string(), action, after });
            } else {
                let after: BTreeSet<&str> = graph
                    .neighbor_nodes(node, Direction::Incoming)
                    .filter(|p| {
                        groups.group_of[p.index()] != g && change_of[p.index()].is_some_and(|a| a != Action::Destroy)
                    })
                    .map(|p| graph.name(p))
                    .collect();
                let after = after.into_iter().map(str::to_string).collect();
                forward.push(Step { service: name.to_string(), action, after });
            }
        }
    }
    backward.reverse();
    forward.extend(backward);
    forward
}
