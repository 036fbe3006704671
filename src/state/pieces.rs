//! The fast path of writing a large state file, the counterpart of `split`: the text
//! `serde_json::to_writer_pretty` would write (two spaces of indentation, `services` then
//! `nodes`), made on several threads. The state without its two maps is written as a skeleton;
//! each map's entries are cut into pieces, each piece serialized on its own by serde_json (as the
//! one map of a wrapper object, which puts its entries at the same depth as in the state), and
//! the pieces are written in order between the skeleton's braces. The bytes are the same as the
//! one-thread text's (a test compares them).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::model::State;

/// Below this many services and nodes together the state is written on one thread.
pub const MIN_ENTRIES: usize = 4096;
/// Entries per piece: a few hundred KiB of text, so that the pieces in flight are few and small
/// and their buffers, used again, stay warm (fresh memory costs the kernel more than the
/// serializing it would save at 100,000 services).
const PIECE_ENTRIES: usize = 256;

/// The skeleton's empty maps, as serde_json's pretty printer writes them at the top level.
const SERVICES_EMPTY: &str = "\n  \"services\": {}";
const NODES_EMPTY: &str = "\n  \"nodes\": {}";
/// What a piece's text starts and ends with around its entries (see [`Wrapper`]).
const PIECE_START: &[u8] = b"{\n  \"m\": {\n";
const PIECE_END: &[u8] = b"\n  }\n}";

/// Some entries of a map, serialized as a map.
struct Entries<'a, V>(&'a [(&'a String, &'a V)]);

impl<V: Serialize> Serialize for Entries<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// An object of one member, `m`, whose entries land two levels deep, as a map of the state's do.
#[derive(Serialize)]
struct Wrapper<'a, V: Serialize> {
    m: Entries<'a, V>,
}

/// Writes `state` as `serde_json::to_writer_pretty` would, with `threads` threads (the calling
/// one writes).
///
/// # Errors
/// `out` refuses a write, or a value cannot be serialized (a map key that is not a string,
/// which a state has none of).
pub fn write(state: &State, out: &mut impl Write, threads: usize) -> std::io::Result<()> {
    let skeleton = State {
        format_version: state.format_version,
        lineage: state.lineage.clone(),
        serial: state.serial,
        env: state.env.clone(),
        services: BTreeMap::new(),
        nodes: BTreeMap::new(),
        applied_at: state.applied_at.clone(),
        provenance: state.provenance.clone(),
    };
    let text = serde_json::to_string_pretty(&skeleton)?;
    let (Some(services), Some(nodes)) = (text.find(SERVICES_EMPTY), text.find(NODES_EMPTY)) else {
        return Err(std::io::Error::other("the state's skeleton has no empty `services` and `nodes` maps"));
    };
    if nodes < services {
        return Err(std::io::Error::other("the state's skeleton has `nodes` before `services`"));
    }
    // Each map's `{` ends one part of the skeleton and its `}` starts the next.
    let services_open = services + SERVICES_EMPTY.len() - 1;
    let nodes_open = nodes + NODES_EMPTY.len() - 1;
    out.write_all(&text.as_bytes()[..services_open])?;
    write_entries(out, &state.services, threads)?;
    out.write_all(&text.as_bytes()[services_open..nodes_open])?;
    write_entries(out, &state.nodes, threads)?;
    out.write_all(&text.as_bytes()[nodes_open..])
}

/// Writes the entries of `map` as they stand between the braces of a top-level map of the
/// pretty text (nothing for an empty map: `{}` stays).
fn write_entries<V: Serialize + Sync>(
    out: &mut impl Write,
    map: &BTreeMap<String, V>,
    threads: usize,
) -> std::io::Result<()> {
    if map.is_empty() {
        return Ok(());
    }
    let entries: Vec<(&String, &V)> = map.iter().collect();
    let pieces: Vec<&[(&String, &V)]> = entries.chunks(PIECE_ENTRIES).collect();
    let next = AtomicUsize::new(0);
    // Buffers come back here once written, for the next pieces.
    let spare: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let (done, received) = std::sync::mpsc::sync_channel::<(usize, std::io::Result<Vec<u8>>)>(2 * threads);
        for _ in 0..threads.min(pieces.len()) {
            let done = done.clone();
            let (pieces, next, spare) = (&pieces, &next, &spare);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(piece) = pieces.get(index) else { break };
                    let mut text = spare.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default();
                    text.clear();
                    let made = serde_json::to_writer_pretty(&mut text, &Wrapper { m: Entries(piece) })
                        .map(|()| text)
                        .map_err(std::io::Error::from);
                    if done.send((index, made)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done);
        // In order: a piece that comes early waits for the ones before it.
        let mut waiting = BTreeMap::new();
        let mut written = 0;
        out.write_all(b"\n")?;
        for (index, text) in received {
            waiting.insert(index, text?);
            while let Some(text) = waiting.remove(&written) {
                let body = text
                    .strip_prefix(PIECE_START)
                    .and_then(|t| t.strip_suffix(PIECE_END))
                    .ok_or_else(|| std::io::Error::other("a piece of the state was not laid out as expected"))?;
                if written > 0 {
                    out.write_all(b",\n")?;
                }
                out.write_all(body)?;
                spare.lock().unwrap_or_else(PoisonError::into_inner).push(text);
                written += 1;
            }
        }
        if written != pieces.len() {
            return Err(std::io::Error::other("a thread writing the state stopped early"));
        }
        out.write_all(b"\n  ")
    })
}
