//! Importing a deployment of the CHOReOS Enactment Engine: a Choreography XML document (root
//! `<choreography>`, read by [`crate::spec::xml`] into a [`Report`]) turned into the recorded
//! state of an environment, so `enact import-xml` can adopt a running deployment. Repository
//! level because it builds a [`State`] (which the spec may not know) and checks node addresses
//! as `enact.json` does ([`is_valid_host`]).
//!
//! # Mapping choices (Choreography → [`State`])
//!
//! - The state is new: `formatVersion` 1, empty lineage, serial 0, the given env, no
//!   `appliedAt`. Recorded specs are normalized, as apply records them.
//! - A deployable service is recorded when a `<deployableServices>` reports it: its spec is that
//!   element's `<spec>` (what was deployed; the `<choreographySpec>` is what was last *asked*
//!   for, which after an update without a new deployment differs), or, without one, the
//!   `<serviceSpec>` of its first instance. A service of the `<choreographySpec>` that was never
//!   deployed is not recorded: the next plan creates it. [`import_choreography_spec`] returns the
//!   `<choreographySpec>` itself, to write as `chor.json`.
//! - An instance's copy of its spec (`<serviceInstances><serviceSpec>`) that differs from the
//!   service's spec means the Enactment Engine was interrupted mid-update: the service is
//!   recorded `incomplete`, so the next plan replaces its instances.
//! - Each `<serviceInstances>` is an instance: `id` = `<instanceId>`, `nativeUri` =
//!   `<nativeUri>` (both required: the Enactment Engine always writes them), `node` = the key of
//!   its `<node>`, status `running`, no pid, `memory` = the service's `resourceImpact.memory`
//!   (SMALL when left out), which is what enact records for an instance it places.
//! - Every cloud node (`<selectedNodes>` and each instance's `<node>`) becomes a node keyed
//!   `imported-<id>` (`<id>`, else `<ip>`, else `<hostname>`; characters outside
//!   `[A-Za-z0-9._-]` become `-`), account `imported`, provider `ssh` (the XML does not say
//!   whether a node came from EC2, OpenStack or the fixed cluster; a node reached by address is
//!   what the ssh provider knows), `address` = `<ip>`, else `<hostname>`, `providerId` = the
//!   node's `<id>`, and `memory` from `<ram>` (MB) by the Enactment Engine's own thresholds
//!   (SMALL 256, MEDIUM 512, LARGE 768: the largest size that fits; none below 256), `size` its
//!   label. The same node described twice with another address or size is an error.
//! - Legacy services come from `<legacyServices>` (their `<spec>`) and from the
//!   `<choreographySpec>`'s `<legacyServiceSpecs>` (a legacy service needs no deployment, so
//!   being in the choreography is being applied); the `<uri>` of each
//!   `<legacyServiceInstances>` missing from `nativeURIs` is appended to it.
//!

use std::collections::BTreeMap;
use std::path::Path;

use crate::diagnostic::Diagnostic;
use crate::repo::settings::is_valid_host;
use crate::spec::model::{Choreography, DeployableServiceSpec, LegacyServiceSpec, Memory};
use crate::spec::validate::{check_http_uri, is_valid_name, redact_uri};
use crate::spec::xml::{CloudNode, Deployed, Document, Instance, LegacyDeployed, Report};
use crate::state::model::{
    AppliedSpec, InstanceState, InstanceStatus, NodeState, STATE_FORMAT_VERSION, ServiceState, State,
};

/// The account of every imported node (`imported-<id>` is its key).
pub const IMPORTED_ACCOUNT: &str = "imported";
/// The provider of every imported node: a node reached by its address, as ssh hosts are.
pub const IMPORTED_PROVIDER: &str = "ssh";

/// Reads a Choreography XML document (root `<choreography>`, what the Enactment Engine returns
/// after a deployment) into the recorded state of `env`. See the module documentation for how
/// each element maps. `file` is the path diagnostics show.
///
/// # Errors
/// Every problem of the document, each located at its element: malformed XML, a root other
/// than `<choreography>`, unknown elements, instances without an id, a URI or a node, nodes
/// without an address or described twice, services reported twice.
pub fn import_choreography(xml: &str, file: &Path, env: &str) -> Result<State, Vec<Diagnostic>> {
    let mut doc = Document::new(xml, file);
    let report = doc.read_report()?;
    let state = Importer::new(&mut doc, env).run(report);
    doc.finish(state)
}

/// The `<choreographySpec>` inside a Choreography XML document (root `<choreography>`): the
/// choreography the Enactment Engine was last asked for, to write as `chor.json`. The rest of
/// the document is checked as [`import_choreography`] checks it.
///
/// # Errors
/// Every problem [`import_choreography`] finds in the document.
pub fn import_choreography_spec(xml: &str, file: &Path) -> Result<Choreography, Vec<Diagnostic>> {
    let mut doc = Document::new(xml, file);
    let report = doc.read_report()?;
    let chor = report.spec.clone();
    Importer::new(&mut doc, "").run(report);
    doc.finish(chor)
}

/// A value that is there and not blank.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The size class of a node of `ram` MB: the largest memory size whose Enactment Engine base
/// (SMALL 256, MEDIUM 512, LARGE 768 MB) fits.
fn memory_of_ram(ram: i64) -> Option<Memory> {
    match ram {
        768.. => Some(Memory::Large),
        512.. => Some(Memory::Medium),
        256.. => Some(Memory::Small),
        _ => None,
    }
}

/// A report being turned into a state: the document (where problems go), the state so far,
/// and the cloud id of every node key recorded (two ids must not share a key).
struct Importer<'d, 'a> {
    doc: &'d mut Document<'a>,
    state: State,
    node_ids: BTreeMap<String, Option<String>>,
}

impl<'d, 'a> Importer<'d, 'a> {
    /// A new state of `env`: formatVersion 1, no lineage, serial 0 (an environment never
    /// applied by enact).
    fn new(doc: &'d mut Document<'a>, env: &str) -> Self {
        let state = State::empty(env);
        debug_assert_eq!(state.format_version, STATE_FORMAT_VERSION);
        Importer { doc, state, node_ids: BTreeMap::new() }
    }

    /// The state of the whole report: deployed services, legacy services, then the legacy
    /// services of the `<choreographySpec>` no `<legacyServices>` reported.
    fn run(mut self, report: Report) -> State {
        for d in report.deployed {
            self.deployed(d);
        }
        for l in report.legacy {
            self.legacy(l);
        }
        for spec in report.spec.legacy_service_specs {
            self.asked_legacy(spec);
        }
        self.state
    }

    /// Records a deployed service with its nodes and instances.
    fn deployed(&mut self, d: Deployed) {
        let mark = self.doc.mark();
        let spec = d.spec.clone().or_else(|| d.instances.iter().find_map(|i| i.spec.clone()));
        let Some(mut spec) = spec else {
            self.doc.push(
                d.pos,
                Diagnostic::new("a `<deployableServices>` without a `<spec>`")
                    .hint("the deployed service's spec says which service it is"),
            );
            return;
        };
        let name = spec.name.clone();
        for n in &d.selected {
            self.node(n);
        }
        let mut normalized = spec.clone();
        normalized.normalize();
        let mut incomplete = false;
        let mut instances: Vec<InstanceState> = Vec::new();
        for i in &d.instances {
            incomplete |= self.copy_differs(&name, &normalized, i);
            if let Some(instance) = self.instance(&spec, &instances, i) {
                instances.push(instance);
            }
        }
        spec.normalize();
        if self.state.services.contains_key(&name) {
            self.doc.push(d.pos, Diagnostic::new(format!("service `{name}` is reported twice")));
        } else {
            self.state.services.insert(
                name.clone(),
                ServiceState { spec: Box::new(AppliedSpec::Deployable(spec)), instances, paused: false, incomplete },
            );
        }
        self.doc.tag_service(mark, &name);
    }

    /// Whether an instance's copy of its spec differs from the service's (`normalized`): the
    /// Enactment Engine stopped mid-update. A copy of another service's spec is an error.
    fn copy_differs(&mut self, name: &str, normalized: &DeployableServiceSpec, i: &Instance) -> bool {
        let Some(copy) = &i.spec else { return false };
        if copy.name != name {
            self.doc.push(
                i.pos,
                Diagnostic::new(format!("an instance of `{name}` carries the spec of `{}`", copy.name.escape_debug())),
            );
            return false;
        }
        let mut copy = copy.clone();
        copy.normalize();
        copy != *normalized
    }

    /// The recorded instance of a `<serviceInstances>` of the service `spec`, unless it lacks
    /// what enact records (or repeats an id of `taken`): then a problem and `None`.
    fn instance(
        &mut self,
        spec: &DeployableServiceSpec,
        taken: &[InstanceState],
        i: &Instance,
    ) -> Option<InstanceState> {
        let Some(id) = i.id.clone() else {
            self.doc.push(
                i.pos,
                Diagnostic::new("a `<serviceInstances>` without `<instanceId>`")
                    .hint("the Enactment Engine writes one for every instance"),
            );
            return None;
        };
        if !is_valid_name(&id) {
            self.doc.push(
                i.pos,
                Diagnostic::new(format!("instance id `{}` is not valid", id.escape_debug()))
                    .hint("ids are letters, digits, `.`, `_` and `-`: they end up in file names and commands"),
            );
            return None;
        }
        if taken.iter().any(|x| x.id == id) {
            self.doc.push(i.pos, Diagnostic::new(format!("instance id `{id}` is used twice")));
            return None;
        }
        let Some((native_uri, uri_at)) = i.native_uri.clone() else {
            self.doc.push(
                i.pos,
                Diagnostic::new(format!("instance `{id}` has no `<nativeUri>`"))
                    .hint("consumers are wired to it: give the URL the instance answers at"),
            );
            return None;
        };
        if let Err(why) = check_http_uri(&native_uri) {
            self.doc.push(
                uri_at,
                Diagnostic::new(format!(
                    "`<nativeUri>` `{}` is not valid: {why}",
                    redact_uri(&native_uri).escape_debug()
                )),
            );
            return None;
        }
        let Some(node) = &i.node else {
            self.doc.push(
                i.pos,
                Diagnostic::new(format!("instance `{id}` has no `<node>`"))
                    .hint("enact records where every instance runs"),
            );
            return None;
        };
        let node = self.node(node)?;
        Some(InstanceState {
            id,
            node,
            status: InstanceStatus::Running,
            native_uri,
            pid: None,
            start_time: None,
            memory: Some(spec.memory()),
        })
    }

    /// Records a `<legacyServices>`: its spec, with the URIs of its replicas.
    fn legacy(&mut self, l: LegacyDeployed) {
        let Some(mut spec) = l.spec else {
            self.doc.push(l.pos, Diagnostic::new("a `<legacyServices>` without a `<spec>`"));
            return;
        };
        for (copy, at) in &l.instance_names {
            if *copy != spec.name {
                self.doc.push(
                    *at,
                    Diagnostic::new(format!(
                        "a replica of `{}` carries the spec of `{}`",
                        spec.name,
                        copy.escape_debug()
                    ))
                    .service(&spec.name),
                );
            }
        }
        for uri in l.uris {
            if !spec.native_uris.contains(&uri) {
                spec.native_uris.push(uri);
            }
        }
        spec.normalize();
        if self.state.services.contains_key(&spec.name) {
            self.doc
                .push(l.pos, Diagnostic::new(format!("service `{}` is reported twice", spec.name)).service(&spec.name));
            return;
        }
        let service = ServiceState {
            spec: Box::new(AppliedSpec::Legacy(spec.clone())),
            instances: Vec::new(),
            paused: false,
            incomplete: false,
        };
        self.state.services.insert(spec.name, service);
    }

    /// Records a legacy service of the `<choreographySpec>` (being in the choreography is being
    /// applied), unless a `<legacyServices>` did; a deployed service of that name is an error.
    fn asked_legacy(&mut self, mut spec: LegacyServiceSpec) {
        spec.normalize();
        match self.state.services.get(&spec.name) {
            Some(ServiceState { spec, .. }) if matches!(**spec, AppliedSpec::Legacy(_)) => {}
            Some(_) => self.doc.push_unlocated(
                Diagnostic::new("the choreography spec has it as a legacy service, but it was deployed")
                    .service(&spec.name),
            ),
            None => {
                let name = spec.name.clone();
                let service = ServiceState {
                    spec: Box::new(AppliedSpec::Legacy(spec)),
                    instances: Vec::new(),
                    paused: false,
                    incomplete: false,
                };
                self.state.services.insert(name, service);
            }
        }
    }

    /// Records a cloud node in the state; its key, or None when it cannot be recorded.
    fn node(&mut self, n: &CloudNode) -> Option<String> {
        let Some(raw) = given(&n.id).or(given(&n.ip)).or(given(&n.hostname)) else {
            self.doc.push(
                n.pos,
                Diagnostic::new("a cloud node without `<id>`, `<ip>` or `<hostname>`")
                    .hint("enact needs to know which node it is and where to reach it"),
            );
            return None;
        };
        let key: String = format!(
            "{IMPORTED_ACCOUNT}-{}",
            raw.chars()
                .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
                .collect::<String>()
        );
        let Some(address) = given(&n.ip).or(given(&n.hostname)).map(str::to_string) else {
            self.doc.push(
                n.pos,
                Diagnostic::new(format!("cloud node `{}` has neither `<ip>` nor `<hostname>`", raw.escape_debug()))
                    .hint("enact reaches a node by its address"),
            );
            return None;
        };
        if !is_valid_host(&address) {
            self.doc.push(
                n.pos,
                Diagnostic::new(format!(
                    "cloud node `{}` has the address `{}`, not a host name or IP address",
                    raw.escape_debug(),
                    address.escape_debug()
                )),
            );
            return None;
        }
        let memory = n.ram.and_then(memory_of_ram);
        let node = NodeState {
            account: IMPORTED_ACCOUNT.to_string(),
            provider: IMPORTED_PROVIDER.to_string(),
            address,
            memory,
            size: memory.map(|m| m.to_string()),
            provider_id: n.id.clone(),
            spare: false,
        };
        match self.state.nodes.get_mut(&key) {
            None => {
                self.node_ids.insert(key.clone(), n.id.clone());
                self.state.nodes.insert(key.clone(), Box::new(node));
            }
            Some(existing) => {
                if self.node_ids.get(&key).is_some_and(|id| *id != n.id) {
                    self.doc.push(
                        n.pos,
                        Diagnostic::new(format!("two different cloud nodes would both be recorded as `{key}`"))
                            .hint("their ids differ only in characters enact replaces with `-`"),
                    );
                    return None;
                }
                if existing.address != node.address
                    || (existing.memory.is_some() && node.memory.is_some() && existing.memory != node.memory)
                {
                    self.doc.push(
                        n.pos,
                        Diagnostic::new(format!(
                            "cloud node `{}` is described twice, with different addresses or sizes",
                            raw.escape_debug()
                        )),
                    );
                    return None;
                }
                if existing.memory.is_none() {
                    existing.memory = node.memory;
                    existing.size = node.size;
                }
            }
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choreography(xml: &str) -> Result<State, Vec<Diagnostic>> {
        import_choreography(xml, Path::new("chor.xml"), "dev")
    }

    #[test]
    fn a_chorspec_is_not_a_choreography() {
        let errs = choreography("<choreographySpec/>").unwrap_err();
        assert!(errs[0].hint.as_deref().unwrap_or_default().contains("ChorSpec"));
    }

    const DEPLOYED: &str = r#"<choreography xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <choreographySpec>
    <deployableServiceSpecs><name>never</name><port>1</port></deployableServiceSpecs>
    <legacyServiceSpecs><name>w</name><nativeURIs>http://10.0.0.5/w</nativeURIs></legacyServiceSpecs>
  </choreographySpec>
  <deployableServices>
    <spec xsi:type="deployableServiceSpec"><name>a</name><port>80</port><numberOfInstances>2</numberOfInstances>
      <resourceImpact><memory>MEDIUM</memory></resourceImpact></spec>
    <UUID>u</UUID>
    <selectedNodes><id>RegionOne/n1</id><ip>10.0.0.1</ip><ram>600</ram></selectedNodes>
    <selectedNodes><id>n2</id><hostname>node2.lab</hostname></selectedNodes>
    <serviceInstances><instanceId>a0</instanceId><nativeUri>http://10.0.0.1:80/a/</nativeUri>
      <node><id>RegionOne/n1</id><ip>10.0.0.1</ip></node></serviceInstances>
  </deployableServices>
  <id>7</id>
</choreography>"#;

    #[test]
    fn a_choreography_becomes_a_state() {
        let state = choreography(DEPLOYED).unwrap();
        assert_eq!((state.format_version, state.serial, state.lineage.as_str(), state.env.as_str()), (1, 0, "", "dev"));
        // Deployed services and legacy services are recorded; a service never deployed is not.
        assert_eq!(state.services.keys().collect::<Vec<_>>(), ["a", "w"]);
        let a = &state.services["a"];
        assert!(!a.incomplete);
        assert_eq!(a.instances.len(), 1);
        let i = &a.instances[0];
        assert_eq!((i.id.as_str(), i.node.as_str()), ("a0", "imported-RegionOne-n1"));
        assert_eq!(i.native_uri, "http://10.0.0.1:80/a/");
        assert_eq!((i.status, i.memory), (InstanceStatus::Running, Some(Memory::Medium)));
        let n1 = &state.nodes["imported-RegionOne-n1"];
        assert_eq!((n1.account.as_str(), n1.provider.as_str(), n1.address.as_str()), ("imported", "ssh", "10.0.0.1"));
        assert_eq!((n1.memory, n1.provider_id.as_deref()), (Some(Memory::Medium), Some("RegionOne/n1")));
        // A node known only by host name is reached by it; without `<ram>` its size is unknown.
        let n2 = &state.nodes["imported-n2"];
        assert_eq!((n2.address.as_str(), n2.memory), ("node2.lab", None));
        assert!(matches!(&*state.services["w"].spec, AppliedSpec::Legacy(s) if s.native_uris == ["http://10.0.0.5/w"]));
    }

    #[test]
    fn the_choreography_spec_of_a_report_can_be_had_alone() {
        let chor = import_choreography_spec(DEPLOYED, Path::new("c.xml")).unwrap();
        assert_eq!(chor.names().into_iter().collect::<Vec<_>>(), ["never", "w"]);
    }

    #[test]
    fn an_instance_deployed_from_another_spec_marks_the_service_incomplete() {
        let xml = DEPLOYED.replace(
            "<node><id>RegionOne/n1</id>",
            "<serviceSpec><name>a</name><port>80</port><version>old</version></serviceSpec><node><id>RegionOne/n1</id>",
        );
        assert!(choreography(&xml).unwrap().services["a"].incomplete);
    }

    #[test]
    fn ram_maps_to_the_enactment_engine_sizes() {
        assert_eq!(memory_of_ram(255), None);
        assert_eq!(memory_of_ram(256), Some(Memory::Small));
        assert_eq!(memory_of_ram(767), Some(Memory::Medium));
        assert_eq!(memory_of_ram(4096), Some(Memory::Large));
    }

    #[test]
    fn an_instance_needs_a_node_and_a_uri() {
        let xml = DEPLOYED.replace("<node><id>RegionOne/n1</id><ip>10.0.0.1</ip></node>", "");
        let errs = choreography(&xml).unwrap_err();
        assert!(errs[0].message.contains("instance `a0` has no `<node>`"), "{}", errs[0]);
        assert_eq!(errs[0].service.as_deref(), Some("a"));
        let xml = DEPLOYED.replace("http://10.0.0.1:80/a/", "not a url");
        assert!(choreography(&xml).unwrap_err()[0].message.contains("`<nativeUri>` `not a url` is not valid"));
    }

    #[test]
    fn a_legacy_spec_in_a_deployed_service_is_an_error() {
        let xml = DEPLOYED.replace("xsi:type=\"deployableServiceSpec\"", "xsi:type=\"legacyServiceSpec\"");
        let errs = choreography(&xml).unwrap_err();
        assert!(errs.iter().any(|d| d.message.contains("holds a `deployableServiceSpec`")), "{errs:#?}");
    }

    #[test]
    fn one_node_described_two_ways_is_an_error() {
        let xml = DEPLOYED
            .replace("<node><id>RegionOne/n1</id><ip>10.0.0.1</ip>", "<node><id>RegionOne/n1</id><ip>10.0.0.9</ip>");
        let errs = choreography(&xml).unwrap_err();
        assert!(errs[0].message.contains("described twice"), "{}", errs[0]);
    }

    #[test]
    fn legacy_replica_uris_join_the_native_uris() {
        let xml = DEPLOYED.replace(
            "<id>7</id>",
            "<id>7</id><legacyServices><spec xsi:type=\"legacyServiceSpec\"><name>w</name><nativeURIs>http://10.0.0.5/w</nativeURIs></spec>\
             <legacyServiceInstances><spec><name>w</name></spec><uri>http://10.0.0.6/w</uri></legacyServiceInstances></legacyServices>",
        );
        let state = choreography(&xml).unwrap();
        assert_eq!(state.endpoints("w"), ["http://10.0.0.5/w", "http://10.0.0.6/w"]);
    }
}
