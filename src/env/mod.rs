//! Environments: overlays merged onto the base spec, and configuration moved between them
//! (promote, merge, diff).

pub mod overlay;
pub mod promote;
