//! The choreography data model: the JSON form of a CHOReOS ChorSpec, field for field.
//!
//! Field order in these structs is the canonical key order of `enact export`, and every field a
//! default covers is an `Option` so the canonical form can leave defaults out. The doc comments
//! of the fields are the descriptions `enact schema` prints; `docs/formats.md` §2 has the rules.
//! Depends on nothing of enact.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A whole choreography: the deployable services enact runs and the legacy services it only wires.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Choreography {
    /// The services enact deploys, in file order (name order once normalized).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployable_service_specs: Vec<DeployableServiceSpec>,
    /// The services already running elsewhere, in file order (name order once normalized).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_service_specs: Vec<LegacyServiceSpec>,
}

/// A service enact deploys: a package started as `numberOfInstances` instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeployableServiceSpec {
    /// The identity of the service: old and new versions are matched by name.
    pub name: String,
    /// The roles the service plays: what its consumers ask for in `serviceSpecRole`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The services it calls, each in a role: its providers, deployed (and wired) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<ServiceDependency>,
    /// `SOAP` (the default), `REST` or `COORDEL`: how the service is wired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// `COMMAND_LINE` (the default), `TOMCAT`, `EASY_ESB` or a package type of `enact.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_type: Option<String>,
    /// A path relative to the config repository, a `file://` or an `http(s)://` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_uri: Option<String>,
    /// The last segment of every instance's URI; the service name when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    /// The TCP port every instance listens on, 1–65535 (TOMCAT: 8080 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// How many instances run; 1 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_instances: Option<i64>,
    /// What an instance needs from its node; `memory` decides the node size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_impact: Option<ResourceImpact>,
    /// The version of the package (a name: letters, digits, `.`, `_`, `-`); a change
    /// redeploys the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The account of `enact.json` the instances are placed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_account: Option<String>,
    /// The quality of service asked for (CHOReOS `desiredQoS`): recorded, not acted on.
    #[serde(default, rename = "desiredQoS", skip_serializing_if = "Option::is_none")]
    pub desired_qos: Option<DesiredQos>,
}

/// A service already running elsewhere: enact only tells its consumers where it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LegacyServiceSpec {
    /// The identity of the service, unique across both lists.
    pub name: String,
    /// The roles the service plays for its consumers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The services it calls, each in a role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<ServiceDependency>,
    /// `SOAP` (the default), `REST` or `COORDEL`: how the service is wired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Where the replicas of the service answer.
    #[serde(default, rename = "nativeURIs", skip_serializing_if = "Vec::is_empty")]
    pub native_uris: Vec<String>,
}

/// "I call service `serviceSpecName` in role `serviceSpecRole`".
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceDependency {
    /// The name of the provider service.
    pub service_spec_name: String,
    /// The role the provider is called in: one of its `roles`.
    pub service_spec_role: String,
}

/// What a service needs from the node it runs on; `memory` decides the node size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceImpact {
    /// The memory size of an instance (SMALL when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// CPU needs as written (free text, recorded only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Storage needs as written (free text, recorded only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Network needs as written (free text, recorded only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// The quality of service a deployable service asks for (CHOReOS `desiredQoS`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DesiredQos {
    /// The response time asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_time_metric: Option<ResponseTimeMetric>,
}

/// A response time goal: `acceptablePercentage` of the calls answered within
/// `maxDesiredResponseTime`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseTimeMetric {
    /// The share of calls that must meet the goal, a percentage in 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptable_percentage: Option<f64>,
    /// The longest response time wanted, 0 or more (recorded, not acted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_desired_response_time: Option<f64>,
}

/// Memory size of an instance, and so of the node it is placed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Memory {
    /// `SMALL` (the default): a node of 256 MB in the Enactment Engine's sizes.
    #[default]
    Small,
    /// `MEDIUM`: 512 MB.
    Medium,
    /// `LARGE`: 768 MB.
    Large,
}

impl Memory {
    /// The JSON name: `SMALL`, `MEDIUM` or `LARGE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Memory::Small => "SMALL",
            Memory::Medium => "MEDIUM",
            Memory::Large => "LARGE",
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service is told its dependencies' endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServiceType {
    /// `SOAP` (the default): consumers are told with a SOAP 1.1 `setInvocationAddress` call.
    #[default]
    Soap,
    /// `REST`: consumers are told with `POST <nativeUri>/setInvocationAddress` and a JSON body.
    Rest,
    /// `COORDEL`: a CHOReOS coordination delegate, wired as SOAP.
    Coordel,
}

impl ServiceType {
    /// The JSON name: `SOAP`, `REST` or `COORDEL`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Soap => "SOAP",
            ServiceType::Rest => "REST",
            ServiceType::Coordel => "COORDEL",
        }
    }
}

/// The package types every installation knows; `enact.json` may add more.
pub const BUILTIN_PACKAGE_TYPES: [&str; 3] = ["COMMAND_LINE", "TOMCAT", "EASY_ESB"];
/// The package type of a service that names none.
pub const DEFAULT_PACKAGE_TYPE: &str = "COMMAND_LINE";

impl DeployableServiceSpec {
    /// How many instances run: `numberOfInstances`, 1 when left out, 0 when negative (which
    /// validation refuses).
    pub fn instances(&self) -> u32 {
        self.number_of_instances.map_or(1, |n| u32::try_from(n).unwrap_or(0))
    }

    /// The memory size of an instance: `resourceImpact.memory`, SMALL when left out.
    pub fn memory(&self) -> Memory {
        self.resource_impact.as_ref().and_then(|r| r.memory).unwrap_or_default()
    }

    /// `serviceType`, SOAP when left out.
    pub fn service_type(&self) -> ServiceType {
        self.service_type.unwrap_or_default()
    }

    /// `packageType`, [`DEFAULT_PACKAGE_TYPE`] when left out.
    pub fn package_type(&self) -> &str {
        self.package_type.as_deref().unwrap_or(DEFAULT_PACKAGE_TYPE)
    }

    /// `endpointName`, the service's name when left out.
    pub fn endpoint_name(&self) -> &str {
        self.endpoint_name.as_deref().unwrap_or(&self.name)
    }

    /// Drops every value equal to its default, so equal specs have one canonical form.
    pub fn normalize(&mut self) {
        if self.number_of_instances == Some(1) {
            self.number_of_instances = None;
        }
        if self.service_type == Some(ServiceType::Soap) {
            self.service_type = None;
        }
        if self.package_type.as_deref() == Some(DEFAULT_PACKAGE_TYPE) {
            self.package_type = None;
        }
        if self.endpoint_name.as_deref() == Some(self.name.as_str()) {
            self.endpoint_name = None;
        }
        if let Some(impact) = &mut self.resource_impact {
            if impact.memory == Some(Memory::Small) {
                impact.memory = None;
            }
            if *impact == ResourceImpact::default() {
                self.resource_impact = None;
            }
        }
        if let Some(qos) = &self.desired_qos
            && qos.response_time_metric.as_ref().is_none_or(|m| *m == ResponseTimeMetric::default())
        {
            self.desired_qos = None;
        }
        self.roles.sort();
        self.roles.dedup();
        self.dependencies.sort();
        self.dependencies.dedup();
    }
}

impl LegacyServiceSpec {
    /// `serviceType`, SOAP when left out.
    pub fn service_type(&self) -> ServiceType {
        self.service_type.unwrap_or_default()
    }

    /// Drops every value equal to its default and sorts the lists, so equal specs have one
    /// canonical form.
    pub fn normalize(&mut self) {
        if self.service_type == Some(ServiceType::Soap) {
            self.service_type = None;
        }
        self.roles.sort();
        self.roles.dedup();
        self.dependencies.sort();
        self.dependencies.dedup();
    }
}

/// One service of either kind, borrowed from a [`Choreography`].
#[derive(Debug, Clone, Copy)]
pub enum Service<'a> {
    /// A service enact deploys.
    Deployable(&'a DeployableServiceSpec),
    /// A service running elsewhere.
    Legacy(&'a LegacyServiceSpec),
}

impl<'a> Service<'a> {
    /// The service's name.
    pub fn name(self) -> &'a str {
        match self {
            Service::Deployable(s) => &s.name,
            Service::Legacy(s) => &s.name,
        }
    }

    /// The roles the service plays.
    pub fn roles(self) -> &'a [String] {
        match self {
            Service::Deployable(s) => &s.roles,
            Service::Legacy(s) => &s.roles,
        }
    }

    /// The services it calls.
    pub fn dependencies(self) -> &'a [ServiceDependency] {
        match self {
            Service::Deployable(s) => &s.dependencies,
            Service::Legacy(s) => &s.dependencies,
        }
    }

    /// Whether it is a legacy service.
    pub fn is_legacy(self) -> bool {
        matches!(self, Service::Legacy(_))
    }

    /// The JSON form of the service spec, as recorded in state and compared by the plan.
    pub fn to_value(self) -> serde_json::Value {
        let value = match self {
            Service::Deployable(s) => serde_json::to_value(s),
            Service::Legacy(s) => serde_json::to_value(s),
        };
        value.unwrap_or(serde_json::Value::Null)
    }
}

impl Choreography {
    /// Every service, deployable first, each list in its own order.
    pub fn services(&self) -> impl Iterator<Item = Service<'_>> {
        self.deployable_service_specs
            .iter()
            .map(Service::Deployable)
            .chain(self.legacy_service_specs.iter().map(Service::Legacy))
    }

    /// How many services, of both kinds.
    pub fn len(&self) -> usize {
        self.deployable_service_specs.len() + self.legacy_service_specs.len()
    }

    /// Whether there is no service at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The canonical form: defaults left out, services sorted by name, lists sorted.
    pub fn normalize(&mut self) {
        for s in &mut self.deployable_service_specs {
            s.normalize();
        }
        for s in &mut self.legacy_service_specs {
            s.normalize();
        }
        // Specs are usually in name order already: checking is one pass, where a stable sort
        // takes a scratch buffer the size of the list.
        if !self.deployable_service_specs.is_sorted_by(|a, b| a.name <= b.name) {
            self.deployable_service_specs.sort_by(|a, b| a.name.cmp(&b.name));
        }
        if !self.legacy_service_specs.is_sorted_by(|a, b| a.name <= b.name) {
            self.legacy_service_specs.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }

    /// The names of every service, for lookups that only need membership.
    pub fn names(&self) -> BTreeSet<&str> {
        self.services().map(Service::name).collect()
    }

    /// The canonical JSON text: 2-space indent, fixed key order, final newline.
    pub fn to_canonical_json(&self) -> String {
        let mut normalized = self.clone();
        normalized.normalize();
        let mut text = serde_json::to_string_pretty(&normalized).unwrap_or_default();
        text.push('\n');
        text
    }
}
