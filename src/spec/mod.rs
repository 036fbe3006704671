//! The choreography spec: model (CHOReOS field names), parsing with positions, the overlay
//! merge, validation, the canonical layout, CHOReOS XML and the JSON Schema of `chor.json`
//! (`docs/formats.md` §2, §3).
//!
//! Depends on the leaves only (diagnostic, suggest, …): never on the repository, the state or
//! anything above; what `enact.json` defines reaches validation through
//! [`validate::Catalog`].

pub mod endpoint;
pub mod format;
pub mod model;
pub mod overlay;
pub mod parse;
pub mod validate;
pub mod xml;

pub use model::{
    Choreography, DeployableServiceSpec, LegacyServiceSpec, Memory, Service, ServiceDependency, ServiceType,
};

/// The JSON Schema of `chor.json` (and, field for field, of an overlay).
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Choreography)).unwrap_or_default()
}
