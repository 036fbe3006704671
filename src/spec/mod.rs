//! The choreography spec: model (CHOReOS field names), parsing with positions, validation and
//! the JSON Schema of `chor.json`.

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
