//! Environments: configuration moved between them, as edits of their overlays (promote, merge,
//! diff; [`promote`]). Merging an overlay onto the base spec is [`crate::spec::overlay`]'s.
//!
//! May use repo, graph, state, spec and the leaves.

pub mod promote;
