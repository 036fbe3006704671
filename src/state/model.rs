//! The recorded state of an environment (`state/<env>.json`): what was applied, where every
//! instance runs, and the nodes that exist. Maps are ordered so the file is deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::spec::{Choreography, DeployableServiceSpec, LegacyServiceSpec, Memory, Service};

pub const STATE_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub format_version: u32,
    pub lineage: String,
    pub serial: u64,
    pub env: String,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeState>,
    /// When this serial was written (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// The config repository's git commit this serial was applied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Which commit of the config repository produced a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub commit: String,
    /// Whether the working tree had uncommitted changes (outside the state directory).
    pub dirty: bool,
}

impl Provenance {
    /// The commit of the git repository holding `root`, if it is in one and git runs.
    pub fn of(root: &std::path::Path, state_dir: &std::path::Path) -> Option<Provenance> {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let commit = git(&["rev-parse", "HEAD"])?.trim().to_string();
        let mut args = vec!["status".to_string(), "--porcelain".into(), "--".into(), ".".into()];
        // Apply itself writes the state directory: its changes are not the spec's.
        if let Ok(inside) = state_dir.strip_prefix(root) {
            args.push(format!(":(exclude){}", inside.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dirty = !git(&args)?.trim().is_empty();
        Some(Provenance { commit, dirty })
    }
}

/// One applied service: its spec as applied and its instances.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    pub spec: AppliedSpec,
    pub instances: Vec<InstanceState>,
    /// Instances stopped on purpose (`enact pause`) but not forgotten.
    pub paused: bool,
    /// An apply was interrupted or failed while changing this service: the next plan
    /// replaces its instances so it converges.
    pub incomplete: bool,
}

/// The applied spec of a service, of either kind.
#[allow(clippy::large_enum_variant, reason = "one per service, never moved around in bulk")]
#[derive(Debug, Clone, PartialEq)]
pub enum AppliedSpec {
    Deployable(DeployableServiceSpec),
    Legacy(LegacyServiceSpec),
}

impl AppliedSpec {
    pub fn as_service(&self) -> Service<'_> {
        match self {
            AppliedSpec::Deployable(s) => Service::Deployable(s),
            AppliedSpec::Legacy(s) => Service::Legacy(s),
        }
    }

    pub fn from_service(service: Service<'_>) -> Self {
        match service {
            Service::Deployable(s) => AppliedSpec::Deployable(s.clone()),
            Service::Legacy(s) => AppliedSpec::Legacy(s.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceState {
    pub id: String,
    pub node: String,
    pub status: InstanceStatus,
    pub native_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The process's start time (clock ticks since boot on Linux): a pid is only signalled
    /// while this still matches, so a reused pid is never killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// The memory size the instance was placed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    Running,
    Paused,
    Starting,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub account: String,
    pub provider: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// The provider's size label (an EC2 instance type); the memory size elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The provider's own id (an EC2 instance id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
}

impl State {
    /// The state of an environment never applied: no lineage yet, serial 0.
    pub fn empty(env: &str) -> State {
        State {
            format_version: STATE_FORMAT_VERSION,
            lineage: String::new(),
            serial: 0,
            env: env.to_string(),
            services: BTreeMap::new(),
            nodes: BTreeMap::new(),
            applied_at: None,
            provenance: None,
        }
    }

    /// The choreography this state records (as `export --from-state` prints it).
    pub fn choreography(&self) -> Choreography {
        let mut chor = Choreography::default();
        for service in self.services.values() {
            match &service.spec {
                AppliedSpec::Deployable(s) => chor.deployable_service_specs.push(s.clone()),
                AppliedSpec::Legacy(s) => chor.legacy_service_specs.push(s.clone()),
            }
        }
        chor.normalize();
        chor
    }

    /// The endpoints consumers are told for `service`: its instances' URIs, or a legacy
    /// service's `nativeURIs`.
    pub fn endpoints(&self, service: &str) -> Vec<String> {
        match self.services.get(service) {
            Some(ServiceState { spec: AppliedSpec::Legacy(s), .. }) => s.native_uris.clone(),
            Some(s) => s
                .instances
                .iter()
                .filter(|i| i.status == InstanceStatus::Running)
                .map(|i| i.native_uri.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Deterministic pretty JSON with a final newline, so git diffs of state stay small.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawServiceStateRef<'a> {
    kind: Kind,
    spec: Value,
    instances: &'a [InstanceState],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    paused: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    incomplete: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Deployable,
    Legacy,
}

impl Serialize for ServiceState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (kind, spec) = match &self.spec {
            AppliedSpec::Deployable(s) => (Kind::Deployable, serde_json::to_value(s)),
            AppliedSpec::Legacy(s) => (Kind::Legacy, serde_json::to_value(s)),
        };
        RawServiceStateRef {
            kind,
            spec: spec.map_err(serde::ser::Error::custom)?,
            instances: &self.instances,
            paused: self.paused,
            incomplete: self.incomplete,
        }
        .serialize(serializer)
    }
}

/// The keys of a recorded service, read without allocating them.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Kind,
    Spec,
    Instances,
    Paused,
    Incomplete,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for ServiceState {
    /// `kind` comes before `spec` in every file enact writes, so the spec is read straight into
    /// its type; only a file with `spec` first goes through an intermediate value.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = ServiceState;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a recorded service: kind, spec, instances")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ServiceState, A::Error> {
                use serde::de::Error as _;
                let (mut kind, mut spec, mut pending) = (None::<Kind>, None::<AppliedSpec>, None::<Value>);
                let (mut instances, mut paused, mut incomplete) = (Vec::new(), false, false);
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Kind => kind = Some(map.next_value()?),
                        Field::Spec => match kind {
                            Some(Kind::Deployable) => spec = Some(AppliedSpec::Deployable(map.next_value()?)),
                            Some(Kind::Legacy) => spec = Some(AppliedSpec::Legacy(map.next_value()?)),
                            None => pending = Some(map.next_value()?),
                        },
                        Field::Instances => instances = map.next_value()?,
                        Field::Paused => paused = map.next_value()?,
                        Field::Incomplete => incomplete = map.next_value()?,
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
                let spec = match (spec, pending) {
                    (Some(spec), _) => spec,
                    (None, Some(value)) => match kind {
                        Kind::Deployable => {
                            AppliedSpec::Deployable(serde_json::from_value(value).map_err(A::Error::custom)?)
                        }
                        Kind::Legacy => AppliedSpec::Legacy(serde_json::from_value(value).map_err(A::Error::custom)?),
                    },
                    (None, None) => return Err(A::Error::missing_field("spec")),
                };
                Ok(ServiceState { spec, instances, paused, incomplete })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}
