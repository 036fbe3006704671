//! Environments: overlays merged onto the base spec.

pub mod overlay;
