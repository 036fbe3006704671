//! The fast path of reading a large state file: the file as enact writes it (pretty JSON, two
//! spaces of indentation, `services` then `nodes`) is cut into its top-level skeleton and
//! pieces of the two maps, which are parsed on several threads and put back together.
//!
//! The cuts are found by their text alone, but nothing is taken on trust: the skeleton (the
//! file without the bodies of the two maps) and every piece must each parse as JSON on its
//! own, and a piece parses as `{piece}` only when its brackets balance, so every cut falls
//! between two entries of its map. Whatever does not fit (another layout, a damaged file)
//! returns `None`, and the caller parses the whole text as one, which locates any error; for
//! a file both accept, both give the same [`State`] (a key twice in a map keeps the last, as
//! there).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::de::DeserializeOwned;

use super::model::{NodeState, ServiceState, State};

/// Below this many bytes the whole text is parsed as one: threads would not pay.
pub const MIN_SPLIT_BYTES: usize = 1 << 20;
/// The least a piece of a map holds, in bytes.
const MIN_PIECE_BYTES: usize = 256 * 1024;
/// Pieces per thread: more than one, so a thread that another process slows down holds up little.
const PIECES_PER_THREAD: usize = 4;

const SERVICES_KEY: &str = "\n  \"services\": {\n";
const NODES_AFTER_SERVICES: &str = "\n  },\n  \"nodes\": {\n";
/// The end of a map's body: its closing brace at the indentation of a top-level key.
const BODY_END: &str = "\n  }";
/// Where one entry of a map ends and the next begins.
const ENTRY_SEPARATOR: &str = ",\n    \"";

/// Parses `text` (without a byte order mark) on up to `threads` threads (the calling one
/// included); `None` when it is not laid out as enact writes it or does not parse, for the
/// caller to parse it whole and report what is wrong.
pub fn parse(text: &str, threads: usize) -> Option<State> {
    let layout = Layout::find(text)?;
    let mut jobs = vec![Job::Skeleton];
    let pieces = |body: (usize, usize)| {
        let wanted = (threads.max(1) * PIECES_PER_THREAD).min((body.1 - body.0) / MIN_PIECE_BYTES).max(1);
        split(text, body, wanted)
    };
    jobs.extend(pieces(layout.services).into_iter().map(Job::Services));
    if let Some(nodes) = layout.nodes {
        jobs.extend(pieces(nodes).into_iter().map(Job::Nodes));
    }
    let done = run(text, &layout, &jobs, threads)?;

    let mut skeleton = None;
    let (mut services, mut nodes) = (Vec::new(), Vec::new());
    for result in done {
        match result {
            Done::Skeleton(state) => skeleton = Some(state),
            Done::Services(entries) => services.push(entries),
            Done::Nodes(entries) => nodes.push(entries),
        }
    }
    let mut state = skeleton?;
    // Sorted already as enact writes them: collecting checks that in one pass and builds the
    // tree at once, where a parse inserts every key from the root.
    state.services = concat(services).into_iter().collect();
    if layout.nodes.is_some() {
        state.nodes = concat(nodes).into_iter().collect::<BTreeMap<_, _>>();
    }
    Some(state)
}

/// The pieces' entries in one vector, in order.
fn concat<T>(pieces: Vec<Vec<T>>) -> Vec<T> {
    let mut all = Vec::with_capacity(pieces.iter().map(Vec::len).sum());
    for piece in pieces {
        all.extend(piece);
    }
    all
}

/// Where the bodies of the two maps are: byte ranges inside their braces.
#[derive(Debug, Clone, Copy)]
struct Layout {
    services: (usize, usize),
    nodes: Option<(usize, usize)>,
}

impl Layout {
    fn find(text: &str) -> Option<Layout> {
        let key = memchr::memmem::find(text.as_bytes(), SERVICES_KEY.as_bytes())?;
        // `"services"` must be a key of the top-level object, not of something inside it.
        if depth_before(&text.as_bytes()[..key]) != Some(1) {
            return None;
        }
        let open = key + SERVICES_KEY.len() - 2;
        let close = open + memchr::memmem::find(&text.as_bytes()[open..], BODY_END.as_bytes())?;
        let services = (open + 1, close);
        let nodes = text[close..].starts_with(NODES_AFTER_SERVICES).then(|| {
            let open = close + NODES_AFTER_SERVICES.len() - 2;
            memchr::memmem::find(&text.as_bytes()[open..], BODY_END.as_bytes()).map(|end| (open + 1, open + end))
        });
        Some(Layout { services, nodes: nodes.flatten() })
    }

    /// The file without the bodies of the maps: `"services": {}` and `"nodes": {}` (each body
    /// ends before the line of its closing brace, which stays).
    fn skeleton(&self, text: &str) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(&text[..self.services.0]);
        match self.nodes {
            Some(nodes) => {
                out.push_str(&text[self.services.1..nodes.0]);
                out.push_str(&text[nodes.1..]);
            }
            None => out.push_str(&text[self.services.1..]),
        }
        out
    }
}

/// The nesting depth (objects and arrays) at the end of `text`; `None` when it ends inside a
/// string or a bracket closes what was never opened.
fn depth_before(text: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
    }
    (!in_string).then_some(depth)
}

/// Cuts the body `(start, end)` of a map into about `wanted` pieces at entry separators; each
/// piece is a byte range without the separating comma.
fn split(text: &str, (start, end): (usize, usize), wanted: usize) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let step = (end - start) / wanted.max(1);
    let mut pieces = Vec::with_capacity(wanted);
    let mut from = start;
    for i in 1..wanted {
        let target = (start + i * step).max(from);
        if target >= end {
            break;
        }
        let Some(at) = memchr::memmem::find(&bytes[target..end], ENTRY_SEPARATOR.as_bytes()) else {
            break;
        };
        let comma = target + at;
        pieces.push((from, comma));
        from = comma + 1;
    }
    pieces.push((from, end));
    pieces
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Skeleton,
    Services((usize, usize)),
    Nodes((usize, usize)),
}

#[derive(Debug)]
enum Done {
    Skeleton(State),
    Services(Vec<(String, ServiceState)>),
    Nodes(Vec<(String, Box<NodeState>)>),
}

/// Runs every job on up to `threads` threads; the results in the order of `jobs`, or `None`
/// when one fails.
fn run(text: &str, layout: &Layout, jobs: &[Job], threads: usize) -> Option<Vec<Done>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        let mut done = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else { return Some(done) };
            let result = match *job {
                Job::Skeleton => serde_json::from_str(&layout.skeleton(text)).ok().map(Done::Skeleton),
                Job::Services(range) => entries(text, range).map(Done::Services),
                Job::Nodes(range) => entries(text, range).map(Done::Nodes),
            };
            let Some(result) = result else {
                failed.store(true, Ordering::Relaxed);
                return None;
            };
            done.push((i, result));
        }
        None
    };
    let helpers = threads.clamp(1, jobs.len()) - 1;
    let mut all: Vec<(usize, Done)> = std::thread::scope(|scope| {
        // A helper that cannot start leaves its share to the others.
        let spawned: Vec<_> =
            (0..helpers).filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok()).collect();
        let mut all = work();
        for handle in spawned {
            let theirs = handle.join().ok().flatten();
            match (&mut all, theirs) {
                (Some(all), Some(theirs)) => all.extend(theirs),
                _ => all = None,
            }
        }
        all
    })?;
    if all.len() != jobs.len() {
        return None;
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Some(all.into_iter().map(|(_, done)| done).collect())
}

/// The entries of one piece of a map's body, each value parsed where it lies in `text` (no copy
/// of the piece). `None` when an entry is not `"key": value` with a plain key (no escapes, no
/// control characters) or its value does not parse on its own, for the caller to parse the
/// whole file.
fn entries<V: DeserializeOwned>(text: &str, (start, end): (usize, usize)) -> Option<Vec<(String, V)>> {
    let piece = &text[start..end];
    if piece.trim_ascii().is_empty() {
        return Some(Vec::new());
    }
    // Where each entry ends: a separator cannot fall inside a value, since JSON strings hold no
    // raw newline, and a cut inside brackets leaves the value before it unbalanced, so it fails
    // to parse.
    let ends: Vec<usize> = memchr::memmem::find_iter(piece.as_bytes(), ENTRY_SEPARATOR.as_bytes())
        .chain(std::iter::once(piece.len()))
        .collect();
    let mut out = Vec::with_capacity(ends.len());
    let mut from = 0;
    for end in ends {
        let quoted = piece[from..end].trim_ascii_start().strip_prefix('"')?;
        let close = memchr::memchr(b'"', quoted.as_bytes())?;
        let key = &quoted[..close];
        if key.bytes().any(|b| b == b'\\' || b < 0x20) {
            return None;
        }
        let value = quoted[close + 1..].trim_ascii_start().strip_prefix(':')?;
        out.push((key.to_string(), serde_json::from_str(value).ok()?));
        // Past the comma.
        from = end + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DeployableServiceSpec;
    use crate::state::{AppliedSpec, InstanceState, InstanceStatus};

    /// A state of `n` services of two instances, each on its own node.
    fn state(n: usize) -> State {
        let mut state = State::empty("dev");
        state.lineage = "l".into();
        state.serial = 7;
        state.applied_at = Some("2024-01-01T00:00:00Z".into());
        for i in 0..n {
            let name = format!("svc-{i:05}");
            let spec = DeployableServiceSpec {
                name: name.clone(),
                roles: vec![name.clone()],
                port: Some(8000),
                ..Default::default()
            };
            let instances = (1..=2)
                .map(|k| {
                    let node = format!("local-{}", 2 * i + k);
                    state.nodes.insert(
                        node.clone(),
                        Box::new(NodeState {
                            account: "local".into(),
                            provider: "local".into(),
                            address: "127.0.0.2".into(),
                            memory: None,
                            size: None,
                            provider_id: None,
                            spare: false,
                        }),
                    );
                    InstanceState {
                        id: format!("{name}-{k}"),
                        node,
                        status: InstanceStatus::Running,
                        native_uri: format!("http://127.0.0.2:8000/{name}"),
                        pid: None,
                        start_time: None,
                        memory: None,
                    }
                })
                .collect();
            state.services.insert(
                name,
                ServiceState {
                    spec: Box::new(AppliedSpec::Deployable(spec)),
                    instances,
                    paused: false,
                    incomplete: false,
                },
            );
        }
        state
    }

    #[test]
    fn a_state_written_in_pieces_is_the_text_one_thread_writes() {
        // Large (over the threshold), small, and with empty maps; in pieces on 2 and 3 threads.
        let mut cases = vec![state(2100), state(3), State::empty("dev")];
        let mut no_nodes = state(2500);
        no_nodes.nodes.clear();
        no_nodes.provenance = Some(crate::state::model::Provenance { commit: "abc".into(), dirty: true });
        cases.push(no_nodes);
        for state in cases {
            let expected = serde_json::to_vec_pretty(&state).unwrap();
            for threads in [2, 3] {
                let mut written = Vec::new();
                crate::state::pieces::write(&state, &mut written, threads).unwrap();
                assert!(written == expected, "{threads} threads, {} services: the texts differ", state.services.len());
            }
            // And what `write_json` writes: the same text and a newline, whichever way it takes.
            let mut json = Vec::new();
            state.write_json(&mut json).unwrap();
            assert_eq!(json.len(), expected.len() + 1);
            assert!(json.starts_with(&expected) && json.ends_with(b"\n"));
        }
        assert!(state(2100).services.len() + state(2100).nodes.len() >= crate::state::pieces::MIN_ENTRIES);
    }

    #[test]
    fn a_state_as_written_parses_in_pieces_to_the_same_state() {
        let state = state(3000);
        let text = state.to_json();
        assert!(text.len() > 2 * MIN_PIECE_BYTES, "{}", text.len());
        let layout = Layout::find(&text).unwrap();
        assert!(layout.nodes.is_some());
        for threads in [1, 2, 3] {
            assert_eq!(parse(&text, threads).as_ref(), Some(&state), "{threads} threads");
        }
        // Many pieces: every cut falls between entries.
        let pieces = split(&text, layout.services, 50);
        assert!(pieces.len() > 40, "{}", pieces.len());
        let parts: Vec<(String, ServiceState)> = pieces.iter().flat_map(|p| entries(&text, *p).unwrap()).collect();
        assert_eq!(parts.len(), 3000);
    }

    #[test]
    fn another_layout_or_a_damaged_file_is_left_to_the_whole_parse() {
        let state = state(50);
        let text = state.to_json();
        assert_eq!(parse(&text, 2).as_ref(), Some(&state));
        // Compact JSON: nothing to cut at.
        assert_eq!(parse(&serde_json::to_string(&state).unwrap(), 2), None);
        // A damaged entry, a damaged skeleton.
        assert_eq!(parse(&text.replacen("\"running\"", "\"runnin\"", 1), 2), None);
        assert_eq!(parse(&text.replacen("\"serial\": 7", "\"serial\": -7", 1), 2), None);
        // A brace too many inside the services: the cuts no longer fall between entries.
        let broken = text.replacen("\"instances\": [", "\"instances\": [{", 1);
        assert_eq!(parse(&broken, 2), None);
        // `"services"` nested in another field is not the map.
        let nested = text.replacen("  \"lineage\": \"l\",\n", "  \"x\": {\n  \"services\": {\n  }},\n", 1);
        assert_eq!(depth_before(&nested.as_bytes()[..nested.find("\"services\"").unwrap()]), Some(2));
        assert_eq!(parse(&nested, 2), None);
        // A key with an escape is left to the whole parse, which reads it the same.
        let escaped = text.replacen("\"svc-00001\": {", "\"svc-0000\\u0031\": {", 1);
        assert_eq!(parse(&escaped, 2), None);
        assert_eq!(serde_json::from_str::<State>(&escaped).unwrap(), state);
        // A value that does not end where the next entry begins.
        assert_eq!(parse(&text.replacen("\n    },\n    \"svc-00002\"", "\n    }},\n    \"svc-00002\"", 1), 2), None);
        // A key twice keeps the last, as the whole parse does.
        let twice = text.replacen(
            "  \"services\": {\n",
            "  \"services\": {\n    \"svc-00001\": {\"kind\": \"legacy\", \"spec\": {\"name\": \"x\"}, \"instances\": []},\n",
            1,
        );
        let whole: State = serde_json::from_str(&twice).unwrap();
        assert_eq!(parse(&twice, 2), Some(whole));
    }
}
