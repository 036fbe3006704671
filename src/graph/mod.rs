//! The service graph: petgraph nodes are services, an edge runs from provider to consumer.
//!
//! Cycles are legal (callbacks): strongly connected components are condensed into groups that
//! are deployed together and wired once all members are up. [`ServiceGraph::groups`] gives the
//! groups in a deterministic topological order, providers first. [`walk`] runs work over such
//! an order in parallel; [`svg`] draws the graph.
//!
//! Depends on the spec and the leaves only.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use foldhash::{HashMap, HashMapExt as _};
use petgraph::Direction;

pub mod svg;
pub mod walk;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::spec::{Choreography, Service};

/// A service in the graph.
#[derive(Debug, Clone, Copy)]
pub struct Vertex<'a> {
    /// The service's name.
    pub name: &'a str,
    /// Whether it is a legacy service (running elsewhere, never deployed).
    pub legacy: bool,
}

/// The services of a choreography and who calls whom, borrowed from the specs it was built from.
///
/// Nodes are numbered in name order, so comparing two [`NodeIndex`]es compares the names.
#[derive(Debug, Clone)]
pub struct ServiceGraph<'a> {
    graph: DiGraph<Vertex<'a>, &'a str>,
    index: HashMap<&'a str, NodeIndex>,
}

/// The groups of [`ServiceGraph::condensed`]: strongly connected components in deployment order.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Each group's members, in name order; the groups in topological order, providers first.
    pub order: Vec<Vec<NodeIndex>>,
    /// The position in `order` of every node's group, by node index.
    pub group_of: Vec<usize>,
}

impl<'a> ServiceGraph<'a> {
    /// Builds the graph of a choreography; dependencies on unknown services are skipped
    /// (validation reports them).
    pub fn build(chor: &'a Choreography) -> ServiceGraph<'a> {
        Self::from_services(chor.services())
    }

    /// The graph of any set of services (names must be unique).
    pub fn from_services(services: impl Iterator<Item = Service<'a>>) -> ServiceGraph<'a> {
        let mut services: Vec<Service<'a>> = services.collect();
        // Specs are normally in name order already, which this sort only checks.
        services.sort_by(|a, b| a.name().cmp(b.name()));
        let edges = services.iter().map(|s| s.dependencies().len()).sum();
        let mut graph = DiGraph::with_capacity(services.len(), edges);
        let mut index = HashMap::with_capacity(services.len());
        for s in &services {
            let i = graph.add_node(Vertex { name: s.name(), legacy: s.is_legacy() });
            index.insert(s.name(), i);
        }
        for (consumer, s) in services.iter().enumerate() {
            for dep in s.dependencies() {
                if let Some(&provider) = index.get(dep.service_spec_name.as_str()) {
                    graph.add_edge(provider, NodeIndex::new(consumer), dep.service_spec_role.as_str());
                }
            }
        }
        ServiceGraph { graph, index }
    }

    /// How many services.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether there is no service.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a service of that name is in the graph.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The node of a service.
    pub fn node(&self, name: &str) -> Option<NodeIndex> {
        self.index.get(name).copied()
    }

    /// The name of a node.
    pub fn name(&self, node: NodeIndex) -> &'a str {
        self.graph[node].name
    }

    /// The services `name` depends on.
    pub fn providers(&self, name: &str) -> BTreeSet<&'a str> {
        self.neighbors(name, Direction::Incoming)
    }

    /// The services that depend on `name`.
    pub fn consumers(&self, name: &str) -> BTreeSet<&'a str> {
        self.neighbors(name, Direction::Outgoing)
    }

    /// The nodes `node` depends on (`Incoming`) or that depend on it (`Outgoing`), in no order.
    pub fn neighbor_nodes(&self, node: NodeIndex, direction: Direction) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(node, direction)
    }

    fn neighbors(&self, name: &str, direction: Direction) -> BTreeSet<&'a str> {
        self.node(name)
            .map(|i| self.graph.neighbors_directed(i, direction).map(|n| self.graph[n].name).collect())
            .unwrap_or_default()
    }

    /// Strongly connected components in topological order (providers first); members sorted;
    /// among groups ready at the same time, the one with the smallest name comes first.
    pub fn groups(&self) -> Vec<Vec<&'a str>> {
        self.condensed().order.into_iter().map(|g| g.into_iter().map(|n| self.graph[n].name).collect()).collect()
    }

    /// [`Self::groups`] as node indices, with the group of every node.
    pub fn condensed(&self) -> Groups {
        let sccs = tarjan_scc(&self.graph);
        let mut scc_of = vec![0usize; self.graph.node_count()];
        let mut members: Vec<Vec<NodeIndex>> = Vec::with_capacity(sccs.len());
        for (g, mut scc) in sccs.into_iter().enumerate() {
            for &n in &scc {
                scc_of[n.index()] = g;
            }
            // Node order is name order.
            scc.sort_unstable();
            members.push(scc);
        }
        // Kahn's algorithm on the condensation, smallest first name first.
        let mut indegree = vec![0usize; members.len()];
        let mut successors: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
        for edge in self.graph.edge_references() {
            let (from, to) = (scc_of[edge.source().index()], scc_of[edge.target().index()]);
            if from != to {
                successors[from].push(to);
                indegree[to] += 1;
            }
        }
        let mut ready: BinaryHeap<Reverse<(NodeIndex, usize)>> =
            (0..members.len()).filter(|&g| indegree[g] == 0).map(|g| Reverse((members[g][0], g))).collect();
        let mut position = vec![0usize; members.len()];
        let mut order = Vec::with_capacity(members.len());
        while let Some(Reverse((_, g))) = ready.pop() {
            position[g] = order.len();
            order.push(g);
            for &next in &successors[g] {
                indegree[next] -= 1;
                if indegree[next] == 0 {
                    ready.push(Reverse((members[next][0], next)));
                }
            }
        }
        let group_of = scc_of.into_iter().map(|g| position[g]).collect();
        let mut by_index: Vec<Vec<NodeIndex>> = members;
        let order = order.into_iter().map(|g| std::mem::take(&mut by_index[g])).collect();
        Groups { order, group_of }
    }

    /// Edges as (provider, consumer, role), sorted.
    pub fn edges(&self) -> Vec<(&'a str, &'a str, &'a str)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| (self.graph[e.source()].name, self.graph[e.target()].name, *e.weight()))
            .collect();
        edges.sort_unstable();
        edges
    }

    fn vertex(&self, name: &str) -> Option<&Vertex<'a>> {
        self.index.get(name).map(|&i| &self.graph[i])
    }

    /// Graphviz DOT, edges from provider to consumer labelled with the role, legacy services dashed, cycles boxed together.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph choreography {\n  node [shape=box, style=rounded];\n");
        for (g, group) in self.groups().iter().enumerate() {
            let cluster = group.len() > 1;
            if cluster {
                let _ = writeln!(out, "  subgraph cluster_{g} {{\n    label=\"cycle\";\n    style=dashed;");
            }
            for name in group {
                let legacy = self.vertex(name).is_some_and(|v| v.legacy);
                let indent = if cluster { "    " } else { "  " };
                let style = if legacy { " [style=\"rounded,dashed\", xlabel=\"legacy\"]" } else { "" };
                let _ = writeln!(out, "{indent}{}{style};", dot_id(name));
            }
            if cluster {
                out.push_str("  }\n");
            }
        }
        for (provider, consumer, role) in self.edges() {
            let _ = writeln!(out, "  {} -> {} [label={}];", dot_id(provider), dot_id(consumer), dot_id(role));
        }
        out.push_str("}\n");
        out
    }

    /// A text view: one line per service in deployment order, with what it calls.
    pub fn to_text(&self) -> String {
        let mut calls_of: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
        for (provider, consumer, role) in self.edges() {
            calls_of.entry(consumer).or_default().push((provider, role));
        }
        let mut out = String::new();
        for (step, group) in self.groups().iter().enumerate() {
            let cycle = group.len() > 1;
            for name in group {
                let vertex = self.vertex(name);
                let mut line = format!("{:>4}  {name}", step + 1);
                if vertex.is_some_and(|v| v.legacy) {
                    line.push_str(" (legacy)");
                }
                let calls: Vec<String> = calls_of
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|(p, role)| if p == role { (*p).to_string() } else { format!("{p} as {role}") })
                    .collect();
                if !calls.is_empty() {
                    let _ = write!(line, "  → calls {}", calls.join(", "));
                }
                if cycle {
                    line.push_str("  [cycle: deployed together]");
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// An SVG drawing, laid out in-process (no Graphviz needed), in time linear in services and
    /// dependencies: see [`svg`].
    pub fn to_svg(&self) -> String {
        svg::render(self)
    }
}

/// A DOT identifier, always quoted.
fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chor(edges: &[(&str, &str)], names: &[&str]) -> Choreography {
        let mut c = Choreography::default();
        for n in names {
            c.deployable_service_specs.push(crate::spec::DeployableServiceSpec {
                name: (*n).to_string(),
                roles: vec![(*n).to_string()],
                dependencies: edges
                    .iter()
                    .filter(|(_, consumer)| consumer == n)
                    .map(|(p, _)| crate::spec::ServiceDependency {
                        service_spec_name: (*p).to_string(),
                        service_spec_role: (*p).to_string(),
                    })
                    .collect(),
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn groups_put_providers_first_and_condense_cycles() {
        let c = chor(&[("a", "b"), ("b", "c"), ("c", "b"), ("c", "d"), ("z", "a")], &["d", "c", "b", "a", "z", "e"]);
        let g = ServiceGraph::build(&c);
        assert_eq!(g.groups(), vec![vec!["e"], vec!["z"], vec!["a"], vec!["b", "c"], vec!["d"]]);
        assert_eq!(g.providers("b").into_iter().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(g.consumers("c").into_iter().collect::<Vec<_>>(), vec!["b", "d"]);
    }

    #[test]
    fn renderings_name_every_service_and_edge() {
        let c = chor(&[("airline", "travel")], &["travel", "airline"]);
        let g = ServiceGraph::build(&c);
        let dot = g.to_dot();
        assert!(dot.contains("\"airline\" -> \"travel\" [label=\"airline\"]"), "{dot}");
        assert_eq!(g.to_text(), "   1  airline\n   2  travel  → calls airline\n");
        let svg = g.to_svg();
        assert!(svg.contains("<svg") && svg.contains("airline") && svg.contains("travel"), "{svg}");
    }
}
