//! The recorded state of an environment (`state/<env>.json`): what was applied, where every
//! instance runs, and the nodes that exist. Maps are ordered so the file is deterministic.
//! The format is docs/formats.md §6.
//!
//! Depends on [`crate::spec`] (the applied specs) only.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::spec::{Choreography, DeployableServiceSpec, LegacyServiceSpec, Memory, Service};

/// The `formatVersion` enact writes; a state of a later version is refused ("upgrade enact").
pub const STATE_FORMAT_VERSION: u32 = 1;

/// The recorded state of one environment, as Terraform keeps one: what the last apply left
/// running, with a lineage and a serial that order its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// [`STATE_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// A random UUID set when the environment is first applied, never changed after; empty for
    /// an environment never applied.
    pub lineage: String,
    /// +1 at every write; 0 for an environment never applied. A write derived from another
    /// serial is refused.
    pub serial: u64,
    /// The environment's name; must be the file's.
    pub env: String,
    /// The applied services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// The nodes that exist, by id (`<account>-<n>`, or `<account>-<address>` for ssh hosts).
    #[serde(default)]
    pub nodes: BTreeMap<String, Box<NodeState>>,
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
    /// The full hash of git `HEAD`.
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
    /// The spec as applied, canonical.
    pub spec: Box<AppliedSpec>,
    /// The instances that run it (none for a legacy service: it runs elsewhere).
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
    /// A service enact deploys (CHOReOS `DeployableServiceSpec`).
    Deployable(DeployableServiceSpec),
    /// A service that runs elsewhere and is only wired (CHOReOS `LegacyServiceSpec`).
    Legacy(LegacyServiceSpec),
}

impl AppliedSpec {
    /// The spec as a borrowed [`Service`] of the spec model.
    pub fn as_service(&self) -> Service<'_> {
        match self {
            AppliedSpec::Deployable(s) => Service::Deployable(s),
            AppliedSpec::Legacy(s) => Service::Legacy(s),
        }
    }

    /// A copy of `service`'s spec.
    pub fn from_service(service: Service<'_>) -> Self {
        match service {
            Service::Deployable(s) => AppliedSpec::Deployable(s.clone()),
            Service::Legacy(s) => AppliedSpec::Legacy(s.clone()),
        }
    }
}

/// One recorded instance of a deployable service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceState {
    /// `<service>-<n>`; numbers are never reused within a lineage.
    pub id: String,
    /// The node it runs on: a key of [`State::nodes`].
    pub node: String,
    /// What the last apply left it doing.
    pub status: InstanceStatus,
    /// Where consumers reach it: `http://<node address>:<port>/<endpointName>`.
    pub native_uri: String,
    /// Its process id on the node, when known.
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

/// What the last apply left an instance doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Started, healthy and wired.
    Running,
    /// Stopped by `enact pause`, kept for `enact resume`.
    Paused,
    /// Started, not yet healthy: part of the format (docs/formats.md §6), read but not written
    /// by this version of enact, which records an instance once it is healthy.
    Starting,
    /// Did not become healthy: part of the format, read but not written by this version of
    /// enact (a failed start is not recorded).
    Failed,
}

/// A node instances run on: a VM, a container host, an ssh host, or this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// The account of enact.json it belongs to.
    pub account: String,
    /// The provider that made it (`local`, `ssh`, `simulated`, …).
    pub provider: String,
    /// Its address (an IP address or a host name): what instances' URIs are made of.
    pub address: String,
    /// The memory size it was made for, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// The provider's size label (an EC2 instance type); the memory size elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The provider's own id (an EC2 instance id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// A spare node of the account's reservoir: made ahead, running no instance, handed to the
    /// next new instance that fits (it is then an ordinary node). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spare: bool,
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
            match &*service.spec {
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
            Some(ServiceState { spec, .. }) if let AppliedSpec::Legacy(s) = &**spec => s.native_uris.clone(),
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
        let mut text = Vec::new();
        // Writing into memory fails only on a map key that is not a string, which a state has none of.
        let _ = self.write_json(&mut text);
        String::from_utf8(text).unwrap_or_default()
    }

    /// Writes [`State::to_json`]'s text to `out` as it is made, without holding it whole (a
    /// large state on several threads, a few pieces at a time: `pieces`).
    ///
    /// # Errors
    /// `out` refuses a write.
    pub fn write_json(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        // A large state is serialized on several threads, to the same bytes (`pieces`).
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8);
        if threads > 1 && self.services.len() + self.nodes.len() >= super::pieces::MIN_ENTRIES {
            super::pieces::write(self, &mut out, threads)?;
        } else {
            serde_json::to_writer_pretty(&mut out, self)?;
        }
        out.write_all(b"\n")
    }
}

/// A recorded service's spec as written: the spec's own fields.
#[derive(Serialize)]
#[serde(untagged)]
enum SpecRef<'a> {
    Deployable(&'a DeployableServiceSpec),
    Legacy(&'a LegacyServiceSpec),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawServiceStateRef<'a> {
    kind: Kind,
    spec: SpecRef<'a>,
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
        let (kind, spec) = match &*self.spec {
            AppliedSpec::Deployable(s) => (Kind::Deployable, SpecRef::Deployable(s)),
            AppliedSpec::Legacy(s) => (Kind::Legacy, SpecRef::Legacy(s)),
        };
        RawServiceStateRef { kind, spec, instances: &self.instances, paused: self.paused, incomplete: self.incomplete }
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
                Ok(ServiceState { spec: Box::new(spec), instances, paused, incomplete })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}
