//! `enact graph --format svg`: a layered drawing, laid out here in time that grows with the
//! number of services and dependencies, not faster.
//!
//! What is laid out is the condensation of the graph: every strongly connected component (a
//! dependency cycle, whose services are deployed together) is one block, a dashed box holding
//! its members on a grid in cycle order; every other service is a block of its own. Blocks go
//! into layers by the longest path from a service that calls nothing (providers above their
//! consumers), are ordered within each layer by [`SWEEPS`] barycenter sweeps, and a layer wider
//! than [`MAX_ROW_WIDTH`] pixels wraps onto more rows. A dependency is a straight arrow from
//! provider to consumer, labelled with the role when the role is not the provider's name.
//!
//! Every pass looks at each service and each dependency a bounded number of times (sorting the
//! layers adds a logarithm): [`Layout::work`] counts those steps, and the tests hold it under a
//! fixed multiple of services + dependencies, so a regression to a superlinear layout fails a
//! test rather than a stopwatch.

use std::fmt::Write as _;

use petgraph::visit::EdgeRef as _;

use super::ServiceGraph;

/// Barycenter sweeps over the layers (down, up, down, up).
pub const SWEEPS: usize = 4;
/// The widest a row of blocks gets before its layer wraps onto another row, px.
pub const MAX_ROW_WIDTH: f64 = 2400.0;

/// Height of a service's box, px.
const NODE_H: f64 = 32.0;
/// Width of one character of a label (13 px monospace), px.
const CHAR_W: f64 = 8.0;
/// Space left and right of a label inside its box, px.
const NODE_PAD: f64 = 12.0;
/// Space between two blocks of a row, px.
const H_GAP: f64 = 32.0;
/// Space between two rows, px (room for role labels).
const ROW_GAP: f64 = 56.0;
/// Space between the members of a cycle, px.
const IN_GAP: f64 = 24.0;
/// Space between a cycle's box and its members, px.
const CYCLE_PAD: f64 = 12.0;
/// Room for a cycle's caption at the top of its box, px.
const CYCLE_CAPTION: f64 = 20.0;
/// Space around the whole drawing, px.
const MARGIN: f64 = 16.0;

/// A rectangle: top-left corner, width and height, px.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    /// Left edge, px from the drawing's left.
    pub x: f64,
    /// Top edge, px from the drawing's top.
    pub y: f64,
    /// Width, px.
    pub w: f64,
    /// Height, px.
    pub h: f64,
}

impl Rect {
    fn center(&self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    /// Where the line from the center toward `(dx, dy)` leaves the rectangle.
    fn border_toward(&self, dx: f64, dy: f64) -> (f64, f64) {
        let (cx, cy) = self.center();
        let tx = if dx == 0.0 { f64::INFINITY } else { (self.w / 2.0) / dx.abs() };
        let ty = if dy == 0.0 { f64::INFINITY } else { (self.h / 2.0) / dy.abs() };
        let t = tx.min(ty);
        if t.is_finite() { (cx + dx * t, cy + dy * t) } else { (cx, cy) }
    }

    /// Whether two rectangles share any area.
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }

    /// Whether `other` lies inside this rectangle.
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.x + other.w <= self.x + self.w
            && other.y + other.h <= self.y + self.h
    }
}

/// Where everything goes in the drawing.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Every service's box, by node index.
    pub nodes: Vec<Rect>,
    /// Every cycle's box and how many services it holds.
    pub cycles: Vec<(Rect, usize)>,
    /// The layer of every service (its block's): 0 for services that call nothing.
    pub layer: Vec<usize>,
    /// Width of the whole drawing, px.
    pub width: f64,
    /// Height of the whole drawing, px.
    pub height: f64,
    /// Steps taken: services and dependencies visited, pass by pass.
    pub work: usize,
}

/// The label of a service's box.
fn label(g: &ServiceGraph<'_>, node: usize) -> String {
    let vertex = g.graph[petgraph::graph::NodeIndex::new(node)];
    if vertex.legacy { format!("{} (legacy)", vertex.name) } else { vertex.name.to_string() }
}

/// The caption of a cycle's box.
fn caption(members: usize) -> String {
    format!("cycle of {members} services")
}

fn label_width(label: &str) -> f64 {
    2.0 * NODE_PAD + CHAR_W * label.chars().count() as f64
}

/// Lays the graph out (see the module's documentation). Never fails: an empty graph is an
/// empty drawing of margins only.
pub fn layout(g: &ServiceGraph<'_>) -> Layout {
    let mut pass = Pass::new(g);
    let (size, inside) = pass.blocks(g);
    let layer_of = pass.layers();
    let layers = pass.order_layers(&layer_of);
    let rows = pass.rows(&layers, &size);
    let (blocks, widest, height) = pass.place(&rows, &size);

    let n = g.len();
    let group_of = &pass.groups.group_of;
    let mut nodes = Vec::with_capacity(n);
    let mut layer = Vec::with_capacity(n);
    for (i, rel) in inside.iter().enumerate() {
        pass.work += 1;
        let block = blocks[group_of[i]];
        nodes.push(Rect { x: block.x + rel.x, y: block.y + rel.y, w: rel.w, h: rel.h });
        layer.push(layer_of[group_of[i]]);
    }
    let cycles = pass
        .groups
        .order
        .iter()
        .enumerate()
        .filter(|(_, members)| members.len() > 1)
        .map(|(gi, members)| (blocks[gi], members.len()))
        .collect();
    Layout { nodes, cycles, layer, width: widest + 2.0 * MARGIN, height, work: pass.work }
}

/// A row of blocks: the groups in it, left to right, its width and its height, px.
type Row = (Vec<usize>, f64, f64);

/// What every step of [`layout`] looks at: the groups (strongly connected components) of the
/// graph, every service's successors (consumers) and predecessors (providers) by node index,
/// and the steps taken so far.
struct Pass {
    groups: super::Groups,
    succ: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    work: usize,
}

impl Pass {
    /// The groups and the adjacency lists of `g`.
    fn new(g: &ServiceGraph<'_>) -> Pass {
        let n = g.len();
        let mut work = 0usize;
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
        for edge in g.graph.edge_references() {
            let (from, to) = (edge.source().index(), edge.target().index());
            succ[from].push(to);
            pred[to].push(from);
            work += 1;
        }
        Pass { groups: g.condensed(), succ, pred, work }
    }

    /// Each block's size (width, height), by group, and where every service sits inside its
    /// block, by node index: a lone service is its box; a cycle is a grid of its members.
    fn blocks(&mut self, g: &ServiceGraph<'_>) -> (Vec<(f64, f64)>, Vec<Rect>) {
        let n = g.len();
        let widths: Vec<f64> = (0..n).map(|i| label_width(&label(g, i))).collect();
        self.work += n;
        let mut size: Vec<(f64, f64)> = Vec::with_capacity(self.groups.order.len());
        let mut inside: Vec<Rect> = vec![Rect { x: 0.0, y: 0.0, w: 0.0, h: NODE_H }; n];
        let mut visited = vec![false; n];
        for gi in 0..self.groups.order.len() {
            if let [only] = self.groups.order[gi].as_slice() {
                let i = only.index();
                inside[i] = Rect { x: 0.0, y: 0.0, w: widths[i], h: NODE_H };
                size.push((widths[i], NODE_H));
                self.work += 1;
                continue;
            }
            let order = self.cycle_order(gi, &mut visited);
            size.push(self.cycle_grid(&order, &widths, &mut inside));
        }
        (size, inside)
    }

    /// The members of the cycle `gi` in cycle order: depth first from its first member, along
    /// dependencies inside the cycle (every member is reached: each reaches every other).
    fn cycle_order(&mut self, gi: usize, visited: &mut [bool]) -> Vec<usize> {
        let members = &self.groups.order[gi];
        let mut order = Vec::with_capacity(members.len());
        let mut stack = vec![members[0].index()];
        while let Some(i) = stack.pop() {
            self.work += 1;
            if visited[i] {
                continue;
            }
            visited[i] = true;
            order.push(i);
            for &next in self.succ[i].iter().rev() {
                self.work += 1;
                if self.groups.group_of[next] == gi && !visited[next] {
                    stack.push(next);
                }
            }
        }
        order
    }

    /// Places the members of a cycle (in `order`) on a square-ish grid, snaking so neighbours
    /// in the cycle stay close; the size of the cycle's box.
    fn cycle_grid(&mut self, order: &[usize], widths: &[f64], inside: &mut [Rect]) -> (f64, f64) {
        let k = order.len();
        let cols = (k as f64).sqrt().ceil().max(1.0) as usize;
        let rows = k.div_ceil(cols);
        let cell = order.iter().map(|&i| widths[i]).fold(0.0, f64::max);
        for (at, &i) in order.iter().enumerate() {
            let (row, mut col) = (at / cols, at % cols);
            if row % 2 == 1 {
                // A snake: the next row runs back, so neighbours in the cycle stay close.
                col = cols - 1 - col;
            }
            inside[i] = Rect {
                x: CYCLE_PAD + col as f64 * (cell + IN_GAP) + (cell - widths[i]) / 2.0,
                y: CYCLE_CAPTION + CYCLE_PAD + row as f64 * (NODE_H + IN_GAP),
                w: widths[i],
                h: NODE_H,
            };
            self.work += 1;
        }
        let w = 2.0 * CYCLE_PAD + cols as f64 * cell + (cols - 1) as f64 * IN_GAP;
        let h = CYCLE_CAPTION + 2.0 * CYCLE_PAD + rows as f64 * NODE_H + (rows - 1) as f64 * IN_GAP;
        (w.max(label_width(&caption(k))), h)
    }

    /// Each block's layer, by group: the longest path from a block that calls nothing. Groups
    /// come providers first, so one pass finds it.
    fn layers(&mut self) -> Vec<usize> {
        let group_of = &self.groups.group_of;
        let mut layer_of = vec![0usize; self.groups.order.len()];
        for (gi, members) in self.groups.order.iter().enumerate() {
            for &m in members {
                for &p in &self.pred[m.index()] {
                    self.work += 1;
                    let pg = group_of[p];
                    if pg != gi {
                        layer_of[gi] = layer_of[gi].max(layer_of[pg] + 1);
                    }
                }
            }
        }
        layer_of
    }

    /// The blocks of every layer, ordered by [`SWEEPS`] barycenter sweeps: each block's key is
    /// the mean position of its neighbours in the layer before (down) or after (up).
    fn order_layers(&mut self, layer_of: &[usize]) -> Vec<Vec<usize>> {
        let count = self.groups.order.len();
        let layers_count = layer_of.iter().copied().max().map_or(0, |m| m + 1);
        let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layers_count];
        for (gi, &l) in layer_of.iter().enumerate() {
            layers[l].push(gi);
        }
        self.work += count;
        let mut position = vec![0usize; count];
        for layer in &layers {
            for (at, &gi) in layer.iter().enumerate() {
                position[gi] = at;
            }
        }
        let layer_len: Vec<usize> = layers.iter().map(Vec::len).collect();
        for sweep in 0..SWEEPS {
            let down = sweep % 2 == 0;
            let order: Vec<usize> =
                if down { (1..layers_count).collect() } else { (0..layers_count).rev().skip(1).collect() };
            for l in order {
                let mut keyed: Vec<(f64, usize)> = layers[l]
                    .iter()
                    .map(|&gi| (self.barycenter(gi, down, &position, layer_of, &layer_len), gi))
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                for (at, (_, gi)) in keyed.iter().enumerate() {
                    position[*gi] = at;
                }
                layers[l] = keyed.into_iter().map(|(_, gi)| gi).collect();
            }
        }
        layers
    }

    /// The sort key of block `gi` in a sweep: the mean normalized position of its neighbours
    /// in other blocks (providers going down, consumers going up), else its own.
    fn barycenter(
        &mut self,
        gi: usize,
        down: bool,
        position: &[usize],
        layer_of: &[usize],
        layer_len: &[usize],
    ) -> f64 {
        let normalized = |gi: usize| (position[gi] as f64 + 0.5) / layer_len[layer_of[gi]] as f64;
        let (mut sum, mut seen) = (0.0, 0usize);
        for &m in &self.groups.order[gi] {
            let neighbours = if down { &self.pred[m.index()] } else { &self.succ[m.index()] };
            for &other in neighbours {
                self.work += 1;
                let og = self.groups.group_of[other];
                if og != gi {
                    sum += normalized(og);
                    seen += 1;
                }
            }
        }
        self.work += 1;
        if seen == 0 { normalized(gi) } else { sum / seen as f64 }
    }

    /// The rows of the drawing: each layer in order, wrapped at [`MAX_ROW_WIDTH`].
    fn rows(&mut self, layers: &[Vec<usize>], size: &[(f64, f64)]) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        for layer in layers {
            let mut row: Row = (Vec::new(), 0.0, 0.0);
            for &gi in layer {
                self.work += 1;
                let (w, h) = size[gi];
                let wider = row.1 + H_GAP + w;
                if !row.0.is_empty() && wider > MAX_ROW_WIDTH {
                    rows.push(std::mem::take(&mut row));
                }
                row.1 = if row.0.is_empty() { w } else { row.1 + H_GAP + w };
                row.2 = row.2.max(h);
                row.0.push(gi);
            }
            if !row.0.is_empty() {
                rows.push(row);
            }
        }
        rows
    }

    /// Every block's box, by group (rows centred under the widest), the width of the widest
    /// row and the height of the drawing, px.
    fn place(&mut self, rows: &[Row], size: &[(f64, f64)]) -> (Vec<Rect>, f64, f64) {
        let widest = rows.iter().map(|r| r.1).fold(0.0, f64::max);
        let mut blocks = vec![Rect { x: 0.0, y: 0.0, w: 0.0, h: 0.0 }; size.len()];
        let mut y = MARGIN;
        for (members, width, height) in rows {
            let mut x = MARGIN + (widest - width) / 2.0;
            for &gi in members {
                self.work += 1;
                let (w, h) = size[gi];
                blocks[gi] = Rect { x, y, w, h };
                x += w + H_GAP;
            }
            y += height + ROW_GAP;
        }
        let height = if rows.is_empty() { 2.0 * MARGIN } else { y - ROW_GAP + MARGIN };
        (blocks, widest, height)
    }
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The drawing of `g` as an SVG document.
pub fn render(g: &ServiceGraph<'_>) -> String {
    let layout = layout(g);
    let mut out = String::with_capacity(256 * (g.len() + g.graph.edge_count()) + 1024);
    let (w, h) = (layout.width, layout.height);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"monospace\" font-size=\"13\">"
    );
    out.push_str(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#444\"/></marker></defs>\n",
    );
    let _ = writeln!(out, "<rect width=\"{w:.0}\" height=\"{h:.0}\" fill=\"white\"/>");
    for (rect, members) in &layout.cycles {
        let _ = writeln!(
            out,
            "<g class=\"cycle\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"10\" fill=\"#fff8e5\" stroke=\"#b08800\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#7a5c00\">{}</text></g>",
            rect.x,
            rect.y,
            rect.w,
            rect.h,
            rect.x + CYCLE_PAD,
            rect.y + CYCLE_CAPTION,
            caption(*members),
        );
    }
    for edge in g.graph.edge_references() {
        let (from, to) = (layout.nodes[edge.source().index()], layout.nodes[edge.target().index()]);
        let ((fx, fy), (tx, ty)) = (from.center(), to.center());
        let (dx, dy) = (tx - fx, ty - fy);
        let (x1, y1) = from.border_toward(dx, dy);
        let (x2, y2) = to.border_toward(-dx, -dy);
        let _ = writeln!(
            out,
            "<path class=\"dependency\" d=\"M{x1:.1},{y1:.1} L{x2:.1},{y2:.1}\" stroke=\"#444\" fill=\"none\" marker-end=\"url(#arrow)\"/>"
        );
        let role = *edge.weight();
        if role != g.graph[edge.source()].name {
            let _ = writeln!(
                out,
                "<text class=\"role\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#555\" text-anchor=\"middle\">{}</text>",
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0,
                escape(role)
            );
        }
    }
    for (i, rect) in layout.nodes.iter().enumerate() {
        let vertex = g.graph[petgraph::graph::NodeIndex::new(i)];
        let dash = if vertex.legacy { " stroke-dasharray=\"4 3\"" } else { "" };
        let (cx, cy) = rect.center();
        let _ = writeln!(
            out,
            "<g class=\"service\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"6\" fill=\"white\" stroke=\"#333\"{dash}/><text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>",
            rect.x,
            rect.y,
            rect.w,
            rect.h,
            cy + 4.5,
            escape(&label(g, i))
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Choreography, DeployableServiceSpec, ServiceDependency};

    /// A choreography of services `s0`…`s{n-1}`, `edges` as (provider, consumer) indices.
    fn chor(n: usize, edges: &[(usize, usize)]) -> Choreography {
        let mut deps: Vec<Vec<ServiceDependency>> = vec![Vec::new(); n];
        for &(p, c) in edges {
            deps[c].push(ServiceDependency { service_spec_name: format!("s{p}"), service_spec_role: format!("s{p}") });
        }
        let mut c = Choreography::default();
        for (i, dependencies) in deps.into_iter().enumerate() {
            c.deployable_service_specs.push(DeployableServiceSpec {
                name: format!("s{i}"),
                roles: vec![format!("s{i}")],
                dependencies,
                ..Default::default()
            });
        }
        c
    }

    fn cycle(n: usize) -> Vec<(usize, usize)> {
        (0..n).map(|i| (i, (i + 1) % n)).collect()
    }

    /// A seeded DAG: every service depends on up to 3 earlier ones.
    fn dag(n: usize) -> Vec<(usize, usize)> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut edges = Vec::new();
        for c in 1..n {
            let mut providers: Vec<usize> = (0..next() % 4).map(|_| (next() % c as u64) as usize).collect();
            providers.sort_unstable();
            providers.dedup();
            edges.extend(providers.into_iter().map(|p| (p, c)));
        }
        edges
    }

    /// A hub every other service depends on, and a chain through all of them.
    fn hub_and_chain(n: usize) -> Vec<(usize, usize)> {
        (1..n).map(|c| (0, c)).chain((1..n - 1).map(|c| (c, c + 1))).collect()
    }

    #[test]
    fn the_work_is_linear_in_services_and_dependencies() {
        type Edges = Vec<(usize, usize)>;
        let graphs: Vec<(&str, usize, Edges)> = vec![
            ("cycle", 3000, cycle(3000)),
            ("dag", 3000, dag(3000)),
            ("hub and chain", 3000, hub_and_chain(3000)),
            ("no dependencies", 3000, Vec::new()),
            ("cycles of 3", 3000, (0..3000).map(|i| (i, i - i % 3 + (i + 1) % 3)).collect()),
        ];
        for (name, n, edges) in graphs {
            let c = chor(n, &edges);
            let g = ServiceGraph::build(&c);
            let work = layout(&g).work;
            let bound = 2 * (SWEEPS + 4) * (n + edges.len());
            assert!(work >= n, "{name}: every service is counted ({work} steps)");
            assert!(
                work <= bound,
                "{name}: {work} steps for {n} services and {} dependencies (bound {bound})",
                edges.len()
            );
        }
    }

    #[test]
    fn boxes_never_overlap_and_providers_sit_above_consumers() {
        let mut edges = dag(300);
        // A cycle of 40 in the middle, and a two-service cycle.
        edges.extend((100..140).map(|i| (i, if i == 139 { 100 } else { i + 1 })));
        edges.extend([(200, 201), (201, 200)]);
        let c = chor(300, &edges);
        let g = ServiceGraph::build(&c);
        let l = layout(&g);
        assert_eq!(l.nodes.len(), 300);
        // Nodes are numbered in name order (s10 before s2): by service number here.
        let at = |i: usize| g.node(&format!("s{i}")).expect("a service").index();
        let nodes: Vec<Rect> = (0..300).map(|i| l.nodes[at(i)]).collect();
        assert_eq!(l.cycles.iter().map(|(_, k)| *k).sum::<usize>(), 42, "{:?}", l.cycles);
        let canvas = Rect { x: 0.0, y: 0.0, w: l.width, h: l.height };
        for (i, a) in nodes.iter().enumerate() {
            assert!(canvas.contains(a), "s{i} {a:?} lies outside the drawing {canvas:?}");
            for (j, b) in nodes.iter().enumerate().skip(i + 1) {
                assert!(!a.overlaps(b), "s{i} {a:?} overlaps s{j} {b:?}");
            }
        }
        for (i, (a, _)) in l.cycles.iter().enumerate() {
            for (b, _) in &l.cycles[i + 1..] {
                assert!(!a.overlaps(b), "two cycles overlap: {a:?} {b:?}");
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            let holders = l.cycles.iter().filter(|(r, _)| r.overlaps(node)).count();
            let in_cycle = (100..140).contains(&i) || i == 200 || i == 201;
            assert_eq!(holders, usize::from(in_cycle), "s{i} {node:?}: inside {holders} cycle box(es)");
            if in_cycle {
                assert!(l.cycles.iter().any(|(r, _)| r.contains(node)), "s{i} lies wholly inside its cycle's box");
            }
        }
        let groups = g.condensed();
        for &(p, c) in &edges {
            let (p, c) = (at(p), at(c));
            if groups.group_of[p] != groups.group_of[c] {
                assert!(
                    l.layer[p] < l.layer[c],
                    "a provider's layer {} is above its consumer's {}",
                    l.layer[p],
                    l.layer[c]
                );
                assert!(l.nodes[p].y + l.nodes[p].h < l.nodes[c].y, "a provider is drawn above its consumer");
            }
        }
    }

    #[test]
    fn a_wide_layer_wraps_and_the_svg_names_every_service_once() {
        let c = chor(500, &[]);
        let g = ServiceGraph::build(&c);
        let l = layout(&g);
        assert!(l.width <= MAX_ROW_WIDTH + 2.0 * MARGIN, "{}", l.width);
        let svg = render(&g);
        for i in 0..500 {
            assert_eq!(svg.matches(&format!(">s{i}<")).count(), 1, "s{i}");
        }
        assert_eq!(svg.matches("class=\"dependency\"").count(), 0);
    }

    #[test]
    fn roles_other_than_the_providers_name_label_their_arrow_and_text_is_escaped() {
        let mut c = chor(2, &[(0, 1)]);
        c.deployable_service_specs[0].name = "a&b".into();
        c.deployable_service_specs[1].dependencies[0].service_spec_name = "a&b".into();
        c.deployable_service_specs[1].dependencies[0].service_spec_role = "<pay>".into();
        let svg = render(&ServiceGraph::build(&c));
        assert!(svg.contains(">a&amp;b<"), "{svg}");
        assert!(svg.contains("class=\"role\"") && svg.contains(">&lt;pay&gt;<"), "{svg}");
        assert_eq!(svg.matches("class=\"dependency\"").count(), 1, "{svg}");

        let empty = render(&ServiceGraph::build(&Choreography::default()));
        assert!(empty.starts_with("<svg") && empty.trim_end().ends_with("</svg>"), "{empty}");
        assert!(!empty.contains("class=\"service\""), "{empty}");
    }
}
