//! CHOReOS XML import: the ChorSpec and Choreography documents of the Enactment Engine (guide
//! §2.2, XSDs in §2.5) read into enact's spec and state models, and a ChorSpec written back.
//!
//! # The documents
//!
//! A **ChorSpec** (root `<choreographySpec>`) is the desired choreography. Its children are
//! `<deployableServiceSpecs>` and `<legacyServiceSpecs>`, one element per service, whose children
//! are the fields of the XSD types `deployableServiceSpec` and `legacyServiceSpec`:
//!
//! ```xml
//! <choreographySpec>
//!   <deployableServiceSpecs>
//!     <dependencies><serviceSpecName>airline</serviceSpecName><serviceSpecRole>airline</serviceSpecRole></dependencies>
//!     <name>travelagency</name>
//!     <roles>travelagency</roles>
//!     <serviceType><type>SOAP</type></serviceType>
//!     <cloudAccount>…</cloudAccount>
//!     <desiredQoS><responseTimeMetric><acceptablePercentage>95</acceptablePercentage>
//!       <maxDesiredResponseTime>120</maxDesiredResponseTime></responseTimeMetric></desiredQoS>
//!     <endpointName>travelagency</endpointName>
//!     <numberOfInstances>1</numberOfInstances>
//!     <packageType><type>COMMAND_LINE</type></packageType>
//!     <packageUri>http://…/TravelAgency-3.0.0.jar</packageUri>
//!     <port>1235</port>
//!     <resourceImpact><memory>SMALL</memory><cpu>…</cpu><storage>…</storage><network>…</network></resourceImpact>
//!     <version>0.1</version>
//!   </deployableServiceSpecs>
//!   <legacyServiceSpecs>… <nativeURIs>http://…</nativeURIs> …</legacyServiceSpecs>
//! </choreographySpec>
//! ```
//!
//! A **Choreography** (root `<choreography>`) is what the Enactment Engine reports after a
//! deployment: `<choreographySpec>`, then per deployed service a `<deployableServices>` holding
//! `<spec xsi:type="deployableServiceSpec">`, `<UUID>`, `<selectedNodes>` (cloud nodes) and
//! `<serviceInstances>` (`<instanceId>`, `<nativeUri>`, `<node>`, `<serviceSpec>`), the
//! `<id>` of the choreography and per legacy service a `<legacyServices>` (`<spec
//! xsi:type="legacyServiceSpec">`, `<UUID>`, `<legacyServiceInstances>` with `<spec>` and
//! `<uri>`). A cloud node has `cpus`, `hostname`, `id`, `image`, `ip`, `privateKeyFile`, `ram`,
//! `so`, `state`, `storage`, `user` and `zone`.
//!
//! # Mapping choices (ChorSpec → [`Choreography`])
//!
//! - Every field of the XSD maps 1:1 to the JSON field of the same name. The `<serviceType>` and
//!   `<packageType>` wrappers (`<type>…</type>` inside, as the guide's XSD has them) are
//!   flattened: `serviceType` to the [`ServiceType`] enum (`SOAP`, `REST`, `COORDEL`; anything
//!   else is an error), `packageType` to its string. A bare `<serviceType>SOAP</serviceType>` (how
//!   later Enactment Engine versions, whose types are plain Java enums, write them) is read too.
//!   A wrapper without `<type>` is the field left out.
//! - Values are kept as written: `<numberOfInstances>1</numberOfInstances>` becomes `Some(1)`,
//!   not "left out", and `enact import-xml` prints every field the XML states (an explicit
//!   `SOAP` or `COMMAND_LINE`, an empty `<resourceImpact/>` as `{}`); only
//!   [`Choreography::normalize`] drops defaults. `import-xml` prints a spec only once it passes
//!   the spec's checks, each problem located in the XML ([`check_imported`]). Services and list entries keep
//!   document order. (CHOReOS reads `numberOfInstances` ≤ 0 as 1; enact keeps the number, and 0
//!   means no instance.)
//! - `xs:string` values are taken exactly, whitespace included; numbers and enum values are
//!   trimmed first. Numbers must be whole (`port`, `numberOfInstances`) or finite (`xs:float`
//!   fields: `INF`/`NaN` have no JSON form). The XSD's required `port`, `numberOfInstances`,
//!   `acceptablePercentage` and `maxDesiredResponseTime` may be left out, as in enact's JSON
//!   (validation decides what a service needs); `name` and both fields of a dependency are
//!   required.
//! - An unknown element or attribute, an element given twice where the XSD allows one, text
//!   where the XSD has elements, elements where it has text, `xsi:nil` (the model has no
//!   nulls) and a DTD are errors, each at its file:line:column and collected, never silently
//!   dropped. Malformed XML stops at its first error.
//! - The text is taken as it is given (UTF-8); an `encoding` declaration is not consulted. Line
//!   ends are normalized as XML 1.0 says (`\r\n` and `\r` read as `\n`).
//! - Elements are matched by local name (any namespace prefix); JAXB writes them unqualified.
//!   Attributes allowed: namespace declarations, `xsi:type`, `xsi:nil="false"` and the
//!   `xsi:schemaLocation` hints (ignored: they hold no data).
//! - `xsi:type` is accepted where the XSD allows it: on an element of declared type T it must
//!   name T, except on the `<spec>` of a `<deployableServices>` / `<legacyServices>`, typed by
//!   the abstract `serviceSpec`, where it says which kind of spec follows (and is inferred from
//!   the surrounding element when left out). A document whose root is one of the XSD's global
//!   elements `<deployableServiceSpec>` / `<legacyServiceSpec>` imports as a one-service
//!   choreography.
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
//! # What enact's model cannot hold
//!
//! - The choreography's `<id>` and every service's `<UUID>` (enact identifies an environment by
//!   its name and lineage, a service by its name).
//! - Which nodes were *selected* for a service (`<selectedNodes>`): the nodes are recorded, the
//!   association only through the instances placed on them.
//! - Of a cloud node: `hostname` (when there is an `ip`), `image`, `so`, `zone`, `cpus`,
//!   `storage`, `state`, `user`, `privateKeyFile`, and `ram` beyond its size class; and which
//!   cloud provider and account it came from.
//! - The per-instance copy of the spec and the per-replica `<spec>` of a legacy instance (only
//!   compared, see above). The Enactment Engine computes a `nativeUri` its document leaves out;
//!   enact requires it.
//! - Service and package types beyond enact's: CHOReOS lets an installation add service types
//!   (`context_sender.properties`); enact's `serviceType` is `SOAP`, `REST` or `COORDEL`.
//! - The later `group` field of `DeployableServiceSpec` (not in the guide's XSD: an unknown
//!   element here).
//! - Comments, element order beyond list order, formatting, and control characters other than
//!   tab, newline and carriage return (XML 1.0 has no form for them; the export writes them as
//!   character references, which this importer reads back but other XML 1.0 readers refuse).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quick_xml::NsReader;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use super::model::{
    Choreography, DeployableServiceSpec, DesiredQos, LegacyServiceSpec, Memory, ResourceImpact, ResponseTimeMetric,
    ServiceDependency, ServiceType,
};
use crate::diagnostic::{Diagnostic, Location};
use crate::repo::settings::is_valid_host;
use crate::spec::validate::{check_http_uri, is_valid_name};
use crate::state::model::{
    AppliedSpec, InstanceState, InstanceStatus, NodeState, STATE_FORMAT_VERSION, ServiceState, State,
};

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The account and provider of every imported node.
pub const IMPORTED_ACCOUNT: &str = "imported";
pub const IMPORTED_PROVIDER: &str = "ssh";

/// Deeper than any document of the XSD; a limit keeps hostile nesting from exhausting the stack.
const MAX_DEPTH: usize = 64;

const CHORSPEC_FIELDS: &[&str] = &["deployableServiceSpecs", "legacyServiceSpecs"];
const DEPLOYABLE_FIELDS: &[&str] = &[
    "dependencies",
    "name",
    "roles",
    "serviceType",
    "cloudAccount",
    "desiredQoS",
    "endpointName",
    "numberOfInstances",
    "packageType",
    "packageUri",
    "port",
    "resourceImpact",
    "version",
];
const LEGACY_FIELDS: &[&str] = &["dependencies", "name", "roles", "serviceType", "nativeURIs"];
const DEPENDENCY_FIELDS: &[&str] = &["serviceSpecName", "serviceSpecRole"];
const RESOURCE_FIELDS: &[&str] = &["memory", "cpu", "storage", "network"];
const QOS_FIELDS: &[&str] = &["responseTimeMetric"];
const METRIC_FIELDS: &[&str] = &["acceptablePercentage", "maxDesiredResponseTime"];
const WRAPPER_FIELDS: &[&str] = &["type"];
const CHOREOGRAPHY_FIELDS: &[&str] = &["choreographySpec", "deployableServices", "id", "legacyServices"];
const DEPLOYED_FIELDS: &[&str] = &["spec", "UUID", "selectedNodes", "serviceInstances"];
const LEGACY_SERVICE_FIELDS: &[&str] = &["spec", "UUID", "legacyServiceInstances"];
const LEGACY_INSTANCE_FIELDS: &[&str] = &["spec", "uri"];
const INSTANCE_FIELDS: &[&str] = &["instanceId", "nativeUri", "node", "serviceSpec"];
const NODE_FIELDS: &[&str] =
    &["cpus", "hostname", "id", "image", "ip", "privateKeyFile", "ram", "so", "state", "storage", "user", "zone"];

/// Reads a ChorSpec XML document (root `<choreographySpec>`) into the model, field for field.
///
/// `file` is the path shown in diagnostics. Every problem is reported, each located at the
/// element it is about.
pub fn import_chorspec(xml: &str, file: &Path) -> Result<Choreography, Vec<Diagnostic>> {
    let mut cx = Cx::new(xml, file);
    let root = cx.tree()?;
    let mut chor = Choreography::default();
    match root.name.as_str() {
        "choreographySpec" => chor = cx.chorspec(&root),
        "deployableServiceSpec" => {
            cx.header(&root, "deployableServiceSpec", true);
            chor.deployable_service_specs.push(cx.deployable(&root));
        }
        "legacyServiceSpec" => {
            cx.header(&root, "legacyServiceSpec", true);
            chor.legacy_service_specs.push(cx.legacy(&root));
        }
        "choreography" => cx.push(
            root.pos,
            Diagnostic::new("this is a Choreography document (a deployment report), not a ChorSpec")
                .hint("import it as the state of an environment, or take its `<choreographySpec>` alone"),
        ),
        other => cx.push(
            root.pos,
            Diagnostic::new(format!("the root element is `<{other}>`; a ChorSpec starts with `<choreographySpec>`")),
        ),
    }
    cx.finish(chor)
}

/// The `<choreographySpec>` inside a Choreography XML document (root `<choreography>`): the
/// choreography the Enactment Engine was last asked for. The rest of the document is checked
/// as [`import_choreography`] checks it.
pub fn import_choreography_spec(xml: &str, file: &Path) -> Result<Choreography, Vec<Diagnostic>> {
    let mut cx = Cx::new(xml, file);
    let root = cx.tree()?;
    let Some(report) = cx.choreography_root(&root) else {
        return Err(cx.errors);
    };
    let chor = report.spec.clone();
    cx.state(report, "");
    cx.finish(chor)
}

/// Reads a Choreography XML document (root `<choreography>`, what the Enactment Engine returns
/// after a deployment) into the recorded state of `env`. See the module documentation for how
/// each element maps.
pub fn import_choreography(xml: &str, file: &Path, env: &str) -> Result<State, Vec<Diagnostic>> {
    let mut cx = Cx::new(xml, file);
    let root = cx.tree()?;
    let Some(report) = cx.choreography_root(&root) else {
        return Err(cx.errors);
    };
    let state = cx.state(report, env);
    cx.finish(state)
}

/// The spec checks of `chor`, imported from the ChorSpec (or Choreography) document `xml`, each
/// located at the XML element it is about: names, dependencies (with the closest service or
/// role when one is mistyped), ports, URIs (a template's empty `<packageUri>` or
/// `<nativeURIs>`), and so on. Accounts and package types are left to `enact validate`, which
/// knows enact.json: an imported spec may name ones the repository defines later.
pub fn check_imported(xml: &str, file: &Path, chor: &Choreography) -> Vec<Diagnostic> {
    let mut cx = Cx::new(xml, file);
    let Ok(root) = cx.tree() else { return Vec::new() };
    let spec_root = match root.name.as_str() {
        "choreography" => root.children.iter().find(|c| c.name == "choreographySpec"),
        _ => Some(&root),
    };
    let locate = |service: &str, occurrence: usize, path: &[crate::diagnostic::Segment]| {
        let spec_root = spec_root?;
        let offset = locate_element(spec_root, service, occurrence, path)?;
        Some(cx.location(offset))
    };
    crate::spec::validate::validate(chor, &crate::spec::validate::AnyCatalog, &locate)
}

/// Where the field `path` of the `occurrence`th service named `service` is in a
/// `<choreographySpec>` (or a lone `<deployableServiceSpec>` / `<legacyServiceSpec>`): the
/// element names are the JSON field names, and a list is its repeated elements. The offset is
/// that of the value's text, else of the element, else of the nearest enclosing element found.
fn locate_element(
    spec_root: &Element,
    service: &str,
    occurrence: usize,
    path: &[crate::diagnostic::Segment],
) -> Option<usize> {
    use crate::diagnostic::Segment;
    let name_of = |el: &Element| el.children.iter().find(|c| c.name == "name").map(|n| n.text.trim().to_string());
    let services: Vec<&Element> = if matches!(spec_root.name.as_str(), "deployableServiceSpec" | "legacyServiceSpec") {
        vec![spec_root]
    } else {
        spec_root
            .children
            .iter()
            .filter(|c| matches!(c.name.as_str(), "deployableServiceSpecs" | "legacyServiceSpecs"))
            .collect()
    };
    let mut element = *services.iter().filter(|el| name_of(el).as_deref() == Some(service)).nth(occurrence)?;
    let mut i = 0;
    while i < path.len() {
        let Segment::Key(key) = &path[i] else { break };
        let index = match path.get(i + 1) {
            Some(Segment::Index(n)) => {
                i += 1;
                *n
            }
            _ => 0,
        };
        match element.children.iter().filter(|c| &c.name == key).nth(index) {
            Some(child) => element = child,
            None => break,
        }
        i += 1;
    }
    Some(element.text_pos.unwrap_or(element.pos))
}

/// The name of the root element of an XML document (`choreographySpec`, `choreography`, …), to
/// tell the two kinds of document apart; `None` when the text is not XML with a root element.
pub fn root_name(xml: &str) -> Option<String> {
    let mut reader = NsReader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                return Some(e.local_name().as_ref().to_string());
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Writes a choreography as a ChorSpec XML document, with the `<type>` wrappers of the guide's
/// XSD and its element order. Only fields that are set are written, so
/// `import_chorspec(export_chorspec(x)) == x`.
pub fn export_chorspec(chor: &Choreography) -> String {
    let mut out = Out::default();
    out.text.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n");
    if chor.is_empty() {
        out.text.push_str("<choreographySpec/>\n");
        return out.text;
    }
    out.open("choreographySpec");
    for s in &chor.deployable_service_specs {
        out.open("deployableServiceSpecs");
        out.service_head(&s.dependencies, &s.name, &s.roles, s.service_type);
        out.leaf_opt("cloudAccount", s.cloud_account.as_deref());
        if let Some(qos) = &s.desired_qos {
            out.open("desiredQoS");
            if let Some(m) = &qos.response_time_metric {
                out.open("responseTimeMetric");
                out.leaf_opt("acceptablePercentage", m.acceptable_percentage.map(|v| v.to_string()).as_deref());
                out.leaf_opt("maxDesiredResponseTime", m.max_desired_response_time.map(|v| v.to_string()).as_deref());
                out.close("responseTimeMetric");
            }
            out.close("desiredQoS");
        }
        out.leaf_opt("endpointName", s.endpoint_name.as_deref());
        out.leaf_opt("numberOfInstances", s.number_of_instances.map(|v| v.to_string()).as_deref());
        if let Some(t) = &s.package_type {
            out.open("packageType");
            out.leaf("type", t);
            out.close("packageType");
        }
        out.leaf_opt("packageUri", s.package_uri.as_deref());
        out.leaf_opt("port", s.port.map(|v| v.to_string()).as_deref());
        if let Some(r) = &s.resource_impact {
            out.open("resourceImpact");
            out.leaf_opt("memory", r.memory.map(Memory::as_str));
            out.leaf_opt("cpu", r.cpu.as_deref());
            out.leaf_opt("storage", r.storage.as_deref());
            out.leaf_opt("network", r.network.as_deref());
            out.close("resourceImpact");
        }
        out.leaf_opt("version", s.version.as_deref());
        out.close("deployableServiceSpecs");
    }
    for s in &chor.legacy_service_specs {
        out.open("legacyServiceSpecs");
        out.service_head(&s.dependencies, &s.name, &s.roles, s.service_type);
        for uri in &s.native_uris {
            out.leaf("nativeURIs", uri);
        }
        out.close("legacyServiceSpecs");
    }
    out.close("choreographySpec");
    out.text
}

// ---------------------------------------------------------------------------------------------
// The export writer.

#[derive(Debug, Default)]
struct Out {
    text: String,
    depth: usize,
}

impl Out {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.text.push_str("  ");
        }
    }

    fn open(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.text, "<{name}>");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        let _ = writeln!(self.text, "</{name}>");
    }

    fn leaf(&mut self, name: &str, value: &str) {
        self.indent();
        let _ = write!(self.text, "<{name}>");
        escape_into(&mut self.text, value);
        let _ = writeln!(self.text, "</{name}>");
    }

    fn leaf_opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.leaf(name, value);
        }
    }

    /// The fields of the abstract `serviceSpec`, in the XSD's order.
    fn service_head(&mut self, deps: &[ServiceDependency], name: &str, roles: &[String], t: Option<ServiceType>) {
        for d in deps {
            self.open("dependencies");
            self.leaf("serviceSpecName", &d.service_spec_name);
            self.leaf("serviceSpecRole", &d.service_spec_role);
            self.close("dependencies");
        }
        self.leaf("name", name);
        for role in roles {
            self.leaf("roles", role);
        }
        if let Some(t) = t {
            self.open("serviceType");
            self.leaf("type", t.as_str());
            self.close("serviceType");
        }
    }
}

/// A NUL byte in text: XML allows it in no form (not even `&#0;`), so a document holding one is
/// damaged, and a spec read from it could not be exported again.
const NUL_MESSAGE: &str = "malformed XML: a NUL character (U+0000), which XML never allows";
const NUL_HINT: &str = "remove it; a NUL byte in a text file is often a sign of damage (a copy cut short, binary data)";

/// Text content: markup characters as entities, and carriage returns and other control
/// characters as character references (a raw `\r` would be read back as a newline).
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() && (c as u32) < 0x20 => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The element tree.

/// One element of the document: its local name, position, the `xsi:` attributes that matter
/// and its content. Text is concatenated (entities, character references and CDATA resolved).
#[derive(Debug)]
struct Element {
    name: String,
    /// Byte offset of its `<`.
    pos: usize,
    /// The local part of `xsi:type` and where the attribute is.
    xsi_type: Option<(String, usize)>,
    /// Where an `xsi:nil="true"` is.
    nil: Option<usize>,
    children: Vec<Element>,
    text: String,
    /// Where the first text that is not whitespace starts.
    text_pos: Option<usize>,
}

impl Element {
    fn has_text(&self) -> bool {
        self.text_pos.is_some()
    }
}

/// The parsing context: the document, its file and every problem found so far.
struct Cx<'a> {
    text: &'a str,
    file: PathBuf,
    errors: Vec<Diagnostic>,
}

impl<'a> Cx<'a> {
    fn new(text: &'a str, file: &Path) -> Self {
        Cx { text, file: file.to_path_buf(), errors: Vec::new() }
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<Diagnostic>> {
        if self.errors.is_empty() { Ok(value) } else { Err(self.errors) }
    }

    /// Line and column (1-based, columns in characters) of a byte offset.
    fn location(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { file: self.file.clone(), line, column }
    }

    fn push(&mut self, offset: usize, diagnostic: Diagnostic) {
        let located = diagnostic.at(Some(self.location(offset)));
        self.errors.push(located);
    }

    /// Names the service on every diagnostic found since `mark` that names none yet.
    fn tag_service(&mut self, mark: usize, name: &str) {
        if name.is_empty() {
            return;
        }
        for d in &mut self.errors[mark..] {
            if d.service.is_none() {
                d.service = Some(name.to_string());
            }
        }
    }

    /// Offset of a slice of the document (attribute names borrow from it).
    fn offset_of(&self, part: &[u8], fallback: usize) -> usize {
        let base = self.text.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        if at >= base && at <= base + self.text.len() { at - base } else { fallback }
    }

    // -- Building the tree --------------------------------------------------------------------

    /// Parses the whole document into a tree. Malformed XML is fatal (one diagnostic, at the
    /// first error); attribute problems are collected and the tree still built.
    fn tree(&mut self) -> Result<Element, Vec<Diagnostic>> {
        let text = self.text;
        let mut reader = NsReader::from_str(text);
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        let fatal = |cx: &mut Self, offset: usize, message: String, hint: &str| {
            cx.push(offset, Diagnostic::new(message).hint(hint.to_string()));
            Err(std::mem::take(&mut cx.errors))
        };
        loop {
            let start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(e) => {
                    let at = usize::try_from(reader.error_position()).unwrap_or(start);
                    return fatal(self, at, format!("malformed XML: {e}"), "fix the XML syntax");
                }
            };
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(event, Event::Empty(_));
                    if stack.len() >= MAX_DEPTH {
                        return fatal(
                            self,
                            start,
                            format!("elements are nested deeper than {MAX_DEPTH} levels"),
                            "a ChorSpec or Choreography is a few levels deep; this is not one",
                        );
                    }
                    if stack.is_empty() && root.is_some() {
                        return fatal(
                            self,
                            start,
                            "malformed XML: a second root element".to_string(),
                            "an XML document has exactly one root element",
                        );
                    }
                    let element = match self.element(&reader, e, start) {
                        Ok(element) => element,
                        Err((at, message)) => return fatal(self, at, message, "fix the XML syntax"),
                    };
                    if empty {
                        match stack.last_mut() {
                            Some(parent) => parent.children.push(element),
                            None => root = Some(element),
                        }
                    } else {
                        stack.push(element);
                    }
                }
                Event::End(_) => {
                    // quick-xml checks that end tags match their start tags.
                    if let Some(done) = stack.pop() {
                        match stack.last_mut() {
                            Some(parent) => parent.children.push(done),
                            None => root = Some(done),
                        }
                    }
                }
                Event::Text(t) => {
                    let raw: &str = &t;
                    if let Some(nul) = raw.find('\0') {
                        return fatal(self, start + nul, NUL_MESSAGE.to_string(), NUL_HINT);
                    }
                    let lead = raw.len() - raw.trim_start_matches(is_xml_space).len();
                    let content = t.xml10_content();
                    if !self.add_text(&mut stack, &content, start + lead) {
                        return fatal(
                            self,
                            start + lead,
                            "malformed XML: text outside the root element".to_string(),
                            "remove it",
                        );
                    }
                }
                Event::CData(c) => {
                    if let Some(nul) = c.find('\0') {
                        return fatal(self, start + "<![CDATA[".len() + nul, NUL_MESSAGE.to_string(), NUL_HINT);
                    }
                    let content = c.xml10_content();
                    if !self.add_text(&mut stack, &content, start) {
                        return fatal(
                            self,
                            start,
                            "malformed XML: CDATA outside the root element".to_string(),
                            "remove it",
                        );
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => match quick_xml::escape::resolve_xml_entity(&r) {
                            Some(s) => s.to_string(),
                            None => {
                                return fatal(
                                    self,
                                    start,
                                    format!("unknown entity `&{};`", &*r),
                                    "only the predefined entities (&amp; &lt; &gt; &quot; &apos;) and character references are known",
                                );
                            }
                        },
                        Err(e) => return fatal(self, start, format!("malformed XML: {e}"), "fix the reference"),
                    };
                    if !self.add_text(&mut stack, &resolved, start) {
                        return fatal(
                            self,
                            start,
                            "malformed XML: a reference outside the root element".to_string(),
                            "remove it",
                        );
                    }
                }
                Event::DocType(_) => {
                    return fatal(
                        self,
                        start,
                        "a DTD (`<!DOCTYPE …>`) is not supported".to_string(),
                        "remove it: the Enactment Engine's documents have none",
                    );
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = stack.last() {
            let (name, pos) = (open.name.clone(), open.pos);
            return fatal(
                self,
                pos,
                format!("malformed XML: `<{name}>` is never closed"),
                "the document ends before its end tag",
            );
        }
        match root {
            Some(root) => Ok(root),
            None => fatal(self, self.text.len(), "the document has no root element".to_string(), "is the file empty?"),
        }
    }

    /// Appends text to the open element; false when there is none and the text is not
    /// whitespace.
    fn add_text(&mut self, stack: &mut [Element], content: &str, at: usize) -> bool {
        let blank = content.chars().all(is_xml_space);
        match stack.last_mut() {
            Some(open) => {
                if !blank && open.text_pos.is_none() {
                    open.text_pos = Some(at);
                }
                open.text.push_str(content);
                true
            }
            None => blank,
        }
    }

    /// An element from its start tag: attributes are checked here (unknown ones are
    /// collected); an `Err` is malformed XML, with where it is.
    fn element(
        &mut self,
        reader: &NsReader<&[u8]>,
        e: &BytesStart<'_>,
        start: usize,
    ) -> Result<Element, (usize, String)> {
        let name = e.local_name().as_ref().to_string();
        let mut element = Element {
            name,
            pos: start,
            xsi_type: None,
            nil: None,
            children: Vec::new(),
            text: String::new(),
            text_pos: None,
        };
        for attr in e.attributes() {
            let attr = attr.map_err(|err| {
                // Positions count from just after the `<`; the message repeats it.
                let (AttrError::ExpectedEq(p)
                | AttrError::ExpectedValue(p)
                | AttrError::UnquotedValue(p)
                | AttrError::ExpectedQuote(p, _)
                | AttrError::Duplicated(p, _)) = err;
                let text = match err {
                    AttrError::Duplicated(..) => "an attribute is given twice".to_string(),
                    _ => {
                        let text = err.to_string();
                        text.split_once(": ").map_or(text.clone(), |(_, m)| m.to_string())
                    }
                };
                (start + 1 + p, format!("malformed XML: {text}"))
            })?;
            let key = attr.key;
            let at = self.offset_of(key.as_ref().as_bytes(), start);
            let qname = key.as_ref().to_string();
            if key.as_namespace_binding().is_some() {
                continue;
            }
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| (at, format!("malformed XML in attribute `{qname}`: {err}")))?
                .into_owned();
            let (ns, local) = reader.resolver().resolve_attribute(key);
            let local = local.as_ref().to_string();
            match ns {
                ResolveResult::Bound(ns) if ns.as_ref() == XSI => match local.as_str() {
                    "type" => {
                        let type_local = value.rsplit(':').next().unwrap_or_default().trim().to_string();
                        element.xsi_type = Some((type_local, at));
                    }
                    "nil" => match value.trim() {
                        "true" | "1" => element.nil = Some(at),
                        "false" | "0" => {}
                        other => self
                            .push(at, Diagnostic::new(format!("`xsi:nil` is `{other}`; expected `true` or `false`"))),
                    },
                    "schemaLocation" | "noNamespaceSchemaLocation" => {}
                    _ => self.push(
                        at,
                        Diagnostic::new(format!("unknown attribute `{qname}` on `<{}>`", element.name))
                            .hint("the XSD declares no attributes; only `xsi:type` and `xsi:nil` are understood"),
                    ),
                },
                ResolveResult::Unknown(prefix) => self.push(
                    at,
                    Diagnostic::new(format!(
                        "attribute `{qname}` uses the namespace prefix `{}`, which is not declared",
                        prefix
                    ))
                    .hint(format!("declare it, e.g. xmlns:xsi=\"{XSI}\"")),
                ),
                _ => self.push(
                    at,
                    Diagnostic::new(format!("unknown attribute `{qname}` on `<{}>`", element.name))
                        .hint("the XSD declares no attributes; the fields of a spec are child elements"),
                ),
            }
        }
        Ok(element)
    }

    // -- Checks shared by every element -------------------------------------------------------

    /// `xsi:nil`, `xsi:type` against the declared type, and (for complex types) stray text.
    fn header(&mut self, el: &Element, declared: &str, complex: bool) {
        if let Some(at) = el.nil {
            self.push(
                at,
                Diagnostic::new(format!("`<{}>` is nil (`xsi:nil=\"true\"`)", el.name))
                    .hint("enact's model has no null values: leave the element out instead"),
            );
        }
        if let Some((t, at)) = &el.xsi_type
            && t != declared
        {
            self.push(
                *at,
                Diagnostic::new(format!("`<{}>` has `xsi:type` `{t}`; its type is `{declared}`", el.name))
                    .hint("remove the `xsi:type` attribute or name the element's own type"),
            );
        }
        if complex && let Some(at) = el.text_pos {
            self.push(
                at,
                Diagnostic::new(format!("unexpected text in `<{}>`, which holds elements", el.name))
                    .hint("a value goes inside the child element it belongs to"),
            );
        }
    }

    fn unknown(&mut self, child: &Element, parent: &Element, expected: &[&str]) {
        let list: Vec<String> = expected.iter().map(|e| format!("<{e}>")).collect();
        self.push(
            child.pos,
            Diagnostic::new(format!("unknown element `<{}>` in `<{}>`", child.name, parent.name)).hint(
                match crate::suggest::closest(&child.name, expected.iter().copied()) {
                    Some(meant) => format!("did you mean `<{meant}>`? Otherwise use one of {}", list.join(", ")),
                    None => format!("expected one of {}", list.join(", ")),
                },
            ),
        );
    }

    /// Whether `child` may be taken: false (and an error) when a single-valued element repeats.
    fn once(&mut self, seen: &mut Vec<String>, child: &Element, parent: &Element) -> bool {
        if seen.contains(&child.name) {
            self.push(
                child.pos,
                Diagnostic::new(format!("`<{}>` appears more than once in `<{}>`", child.name, parent.name))
                    .hint("the XSD allows it once; remove the extra one"),
            );
            return false;
        }
        seen.push(child.name.clone());
        true
    }

    /// A complex element: its header, then [`Cx::body`].
    fn fields(
        &mut self,
        el: &Element,
        declared: &str,
        known: &[&str],
        repeated: &[&str],
        take: impl FnMut(&mut Self, &Element),
    ) {
        self.header(el, declared, true);
        self.body(el, known, repeated, take);
    }

    /// The text of a simple-typed element (`xs` is its type's local name).
    fn leaf(&mut self, el: &Element, xs: &str) -> Option<String> {
        self.header(el, xs, false);
        if let Some(child) = el.children.first() {
            self.push(
                child.pos,
                Diagnostic::new(format!(
                    "unexpected element `<{}>` in `<{}>`, which holds a value",
                    child.name, el.name
                ))
                .hint("write the value as text"),
            );
            return None;
        }
        Some(el.text.clone())
    }

    fn string(&mut self, el: &Element) -> Option<String> {
        self.leaf(el, "string")
    }

    fn int(&mut self, el: &Element) -> Option<i64> {
        let text = self.leaf(el, "int")?;
        match text.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.push(
                    el.text_pos.unwrap_or(el.pos),
                    Diagnostic::new(format!("`<{}>` is `{}`, not a whole number", el.name, text.trim().escape_debug())),
                );
                None
            }
        }
    }

    fn float(&mut self, el: &Element) -> Option<f64> {
        let text = self.leaf(el, "float")?;
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                self.push(
                    el.text_pos.unwrap_or(el.pos),
                    Diagnostic::new(format!(
                        "`<{}>` is `{}`, not a finite number",
                        el.name,
                        text.trim().escape_debug()
                    )),
                );
                None
            }
        }
    }

    fn memory(&mut self, el: &Element) -> Option<Memory> {
        let text = self.leaf(el, "memoryType")?;
        let memory = match text.trim() {
            "SMALL" => Memory::Small,
            "MEDIUM" => Memory::Medium,
            "LARGE" => Memory::Large,
            other => {
                self.push(
                    el.text_pos.unwrap_or(el.pos),
                    Diagnostic::new(format!(
                        "`<memory>` is `{}`; expected SMALL, MEDIUM or LARGE",
                        other.escape_debug()
                    ))
                    .hint("the memoryType of the XSD has these three values"),
                );
                return None;
            }
        };
        Some(memory)
    }

    /// A `<serviceType>` / `<packageType>` wrapper: the text of its `<type>`, or its own text
    /// (trimmed) in the bare form; with the position of that text.
    fn wrapper(&mut self, el: &Element, declared: &str) -> Option<(String, usize)> {
        if el.has_text() && el.children.is_empty() {
            self.header(el, declared, false);
            return Some((el.text.trim().to_string(), el.text_pos.unwrap_or(el.pos)));
        }
        let mut found = None;
        self.fields(el, declared, WRAPPER_FIELDS, &[], |cx, child| {
            if let Some(t) = cx.string(child) {
                found = Some((t, child.text_pos.unwrap_or(child.pos)));
            }
        });
        found
    }

    fn service_type(&mut self, el: &Element) -> Option<ServiceType> {
        let (text, at) = self.wrapper(el, "serviceType")?;
        match text.trim() {
            "SOAP" => Some(ServiceType::Soap),
            "REST" => Some(ServiceType::Rest),
            "COORDEL" => Some(ServiceType::Coordel),
            other => {
                self.push(
                    at,
                    Diagnostic::new(format!(
                        "`<serviceType>` is `{}`; expected SOAP, REST or COORDEL",
                        other.escape_debug()
                    ))
                    .hint("enact wires these three service types"),
                );
                None
            }
        }
    }

    // -- ChorSpec -----------------------------------------------------------------------------

    fn chorspec(&mut self, el: &Element) -> Choreography {
        let mut chor = Choreography::default();
        self.fields(el, "choreographySpec", CHORSPEC_FIELDS, CHORSPEC_FIELDS, |cx, child| {
            if child.name == "deployableServiceSpecs" {
                cx.header(child, "deployableServiceSpec", true);
                chor.deployable_service_specs.push(cx.deployable(child));
            } else {
                cx.header(child, "legacyServiceSpec", true);
                chor.legacy_service_specs.push(cx.legacy(child));
            }
        });
        chor
    }

    /// A deployable service spec; the caller has checked the element's own type.
    fn deployable(&mut self, el: &Element) -> DeployableServiceSpec {
        let mark = self.errors.len();
        let mut spec = DeployableServiceSpec::default();
        let mut name = None;
        self.body(el, DEPLOYABLE_FIELDS, &["dependencies", "roles"], |cx, child| match child.name.as_str() {
            "dependencies" => spec.dependencies.extend(cx.dependency(child)),
            "name" => name = cx.string(child),
            "roles" => spec.roles.extend(cx.string(child)),
            "serviceType" => spec.service_type = cx.service_type(child),
            "cloudAccount" => spec.cloud_account = cx.string(child),
            "desiredQoS" => spec.desired_qos = Some(cx.desired_qos(child)),
            "endpointName" => spec.endpoint_name = cx.string(child),
            "numberOfInstances" => spec.number_of_instances = cx.int(child),
            "packageType" => spec.package_type = cx.wrapper(child, "packageType").map(|(t, _)| t),
            "packageUri" => spec.package_uri = cx.string(child),
            "port" => spec.port = cx.int(child),
            "resourceImpact" => spec.resource_impact = Some(cx.resource_impact(child)),
            "version" => spec.version = cx.string(child),
            _ => {}
        });
        spec.name = self.require_name(el, name);
        self.tag_service(mark, &spec.name);
        spec
    }

    /// A legacy service spec; the caller has checked the element's own type.
    fn legacy(&mut self, el: &Element) -> LegacyServiceSpec {
        let mark = self.errors.len();
        let mut spec = LegacyServiceSpec::default();
        let mut name = None;
        self.body(el, LEGACY_FIELDS, &["dependencies", "roles", "nativeURIs"], |cx, child| match child.name.as_str() {
            "dependencies" => spec.dependencies.extend(cx.dependency(child)),
            "name" => name = cx.string(child),
            "roles" => spec.roles.extend(cx.string(child)),
            "serviceType" => spec.service_type = cx.service_type(child),
            "nativeURIs" => spec.native_uris.extend(cx.string(child)),
            _ => {}
        });
        spec.name = self.require_name(el, name);
        self.tag_service(mark, &spec.name);
        spec
    }

    /// The children of a complex element: unknown ones and repeats of single-valued ones are
    /// reported, every other one is handed to `take`.
    fn body(&mut self, el: &Element, known: &[&str], repeated: &[&str], mut take: impl FnMut(&mut Self, &Element)) {
        let mut seen = Vec::new();
        for child in &el.children {
            if !known.contains(&child.name.as_str()) {
                self.unknown(child, el, known);
                continue;
            }
            if !repeated.contains(&child.name.as_str()) && !self.once(&mut seen, child, el) {
                continue;
            }
            take(self, child);
        }
    }

    fn require_name(&mut self, el: &Element, name: Option<String>) -> String {
        match name {
            Some(name) => name,
            None => {
                // A `<name>` that failed to parse has been reported already.
                if !el.children.iter().any(|c| c.name == "name") {
                    self.push(
                        el.pos,
                        Diagnostic::new(format!("`<{}>` has no `<name>`", el.name))
                            .hint("every service needs a unique name: it is how services are matched"),
                    );
                }
                String::new()
            }
        }
    }

    fn dependency(&mut self, el: &Element) -> Option<ServiceDependency> {
        let (mut name, mut role) = (None, None);
        self.fields(el, "serviceDependency", DEPENDENCY_FIELDS, &[], |cx, child| {
            if child.name == "serviceSpecName" {
                name = cx.string(child);
            } else {
                role = cx.string(child);
            }
        });
        let present = |n: &str| el.children.iter().any(|c| c.name == n);
        for (value, field) in [(&name, "serviceSpecName"), (&role, "serviceSpecRole")] {
            if value.is_none() && !present(field) {
                self.push(
                    el.pos,
                    Diagnostic::new(format!("a dependency without `<{field}>`"))
                        .hint("a dependency names the service it calls and the role it calls it in"),
                );
            }
        }
        Some(ServiceDependency { service_spec_name: name?, service_spec_role: role? })
    }

    fn resource_impact(&mut self, el: &Element) -> ResourceImpact {
        let mut impact = ResourceImpact::default();
        self.fields(el, "resourceImpact", RESOURCE_FIELDS, &[], |cx, child| match child.name.as_str() {
            "memory" => impact.memory = cx.memory(child),
            "cpu" => impact.cpu = cx.string(child),
            "storage" => impact.storage = cx.string(child),
            _ => impact.network = cx.string(child),
        });
        impact
    }

    fn desired_qos(&mut self, el: &Element) -> DesiredQos {
        let mut qos = DesiredQos::default();
        self.fields(el, "desiredQoS", QOS_FIELDS, &[], |cx, child| {
            let mut metric = ResponseTimeMetric::default();
            cx.fields(child, "responseTimeMetric", METRIC_FIELDS, &[], |cx, m| {
                if m.name == "acceptablePercentage" {
                    metric.acceptable_percentage = cx.float(m);
                } else {
                    metric.max_desired_response_time = cx.float(m);
                }
            });
            qos.response_time_metric = Some(metric);
        });
        qos
    }

    /// The `<spec>` of a deployed or legacy service, typed by the abstract `serviceSpec`:
    /// `xsi:type` says which kind follows and must be the kind the service is.
    fn service_spec(&mut self, el: &Element, legacy: bool) -> Option<AppliedSpec> {
        let (want, other, service) = if legacy {
            ("legacyServiceSpec", "deployableServiceSpec", "legacyServices")
        } else {
            ("deployableServiceSpec", "legacyServiceSpec", "deployableServices")
        };
        if let Some((t, at)) = &el.xsi_type
            && t != want
        {
            let message = if t == other {
                format!("a `<{service}>` holds a `{want}`, but this `<spec>` is a `{t}`")
            } else if t == "serviceSpec" {
                "`serviceSpec` is abstract: `xsi:type` must name `deployableServiceSpec` or `legacyServiceSpec`".into()
            } else {
                format!("unknown `xsi:type` `{t}` for a service spec")
            };
            self.push(*at, Diagnostic::new(message).hint(format!("write xsi:type=\"{want}\"")));
            return None;
        }
        // The type is checked above; the header still checks nil and stray text.
        self.header(el, want, true);
        Some(if legacy { AppliedSpec::Legacy(self.legacy(el)) } else { AppliedSpec::Deployable(self.deployable(el)) })
    }

    // -- Choreography -------------------------------------------------------------------------

    fn choreography_root(&mut self, root: &Element) -> Option<Report> {
        if root.name != "choreography" {
            let hint = if root.name == "choreographySpec" {
                "this is a ChorSpec (a desired choreography): import it as the spec, not as state"
            } else {
                "the Enactment Engine's deployment report starts with `<choreography>`"
            };
            self.push(
                root.pos,
                Diagnostic::new(format!("the root element is `<{}>`, not `<choreography>`", root.name)).hint(hint),
            );
            return None;
        }
        let mut report = Report::default();
        self.fields(root, "choreography", CHOREOGRAPHY_FIELDS, &["deployableServices", "legacyServices"], |cx, c| {
            match c.name.as_str() {
                "choreographySpec" => report.spec = cx.chorspec(c),
                "deployableServices" => report.deployed.push(cx.deployed(c)),
                "legacyServices" => report.legacy.push(cx.legacy_service(c)),
                _ => {
                    cx.string(c);
                }
            }
        });
        Some(report)
    }

    fn deployed(&mut self, el: &Element) -> Deployed {
        let mut d = Deployed { pos: el.pos, ..Deployed::default() };
        self.fields(el, "deployableService", DEPLOYED_FIELDS, &["selectedNodes", "serviceInstances"], |cx, c| match c
            .name
            .as_str()
        {
            "spec" => {
                if let Some(AppliedSpec::Deployable(s)) = cx.service_spec(c, false) {
                    d.spec = Some(s);
                }
            }
            "UUID" => {
                cx.string(c);
            }
            "selectedNodes" => d.selected.push(cx.cloud_node(c)),
            _ => d.instances.push(cx.instance(c)),
        });
        d
    }

    fn instance(&mut self, el: &Element) -> Instance {
        let mut i = Instance { pos: el.pos, ..Instance::default() };
        self.fields(el, "serviceInstance", INSTANCE_FIELDS, &[], |cx, c| match c.name.as_str() {
            "instanceId" => i.id = cx.string(c),
            "nativeUri" => i.native_uri = cx.string(c).map(|u| (u, c.text_pos.unwrap_or(c.pos))),
            "node" => i.node = Some(cx.cloud_node(c)),
            _ => {
                cx.header(c, "deployableServiceSpec", true);
                i.spec = Some(cx.deployable(c));
            }
        });
        i
    }

    fn cloud_node(&mut self, el: &Element) -> CloudNode {
        let mut n = CloudNode { pos: el.pos, ..CloudNode::default() };
        self.fields(el, "cloudNode", NODE_FIELDS, &[], |cx, c| match c.name.as_str() {
            "id" => n.id = cx.string(c),
            "ip" => n.ip = cx.string(c),
            "hostname" => n.hostname = cx.string(c),
            "ram" => n.ram = cx.int(c),
            "cpus" | "state" | "storage" => {
                cx.int(c);
            }
            _ => {
                cx.string(c);
            }
        });
        n
    }

    fn legacy_service(&mut self, el: &Element) -> LegacyDeployed {
        let mut l = LegacyDeployed { pos: el.pos, ..LegacyDeployed::default() };
        self.fields(el, "legacyService", LEGACY_SERVICE_FIELDS, &["legacyServiceInstances"], |cx, c| {
            match c.name.as_str() {
                "spec" => {
                    if let Some(AppliedSpec::Legacy(s)) = cx.service_spec(c, true) {
                        l.spec = Some(s);
                    }
                }
                "UUID" => {
                    cx.string(c);
                }
                _ => {
                    let mut uri = None;
                    cx.fields(c, "legacyServiceInstance", LEGACY_INSTANCE_FIELDS, &[], |cx, f| {
                        if f.name == "uri" {
                            uri = cx.string(f);
                        } else {
                            cx.header(f, "legacyServiceSpec", true);
                            let copy = cx.legacy(f);
                            l.instance_names.push((copy.name, f.pos));
                        }
                    });
                    l.uris.extend(uri);
                }
            }
        });
        l
    }

    // -- Choreography → State -----------------------------------------------------------------

    fn state(&mut self, report: Report, env: &str) -> State {
        // formatVersion 1, no lineage, serial 0: an environment never applied by enact.
        let mut state = State::empty(env);
        debug_assert_eq!(state.format_version, STATE_FORMAT_VERSION);
        let mut node_ids: BTreeMap<String, Option<String>> = BTreeMap::new();
        for d in report.deployed {
            let mark = self.errors.len();
            let spec = d.spec.clone().or_else(|| d.instances.iter().find_map(|i| i.spec.clone()));
            let Some(mut spec) = spec else {
                self.push(
                    d.pos,
                    Diagnostic::new("a `<deployableServices>` without a `<spec>`")
                        .hint("the deployed service's spec says which service it is"),
                );
                continue;
            };
            let name = spec.name.clone();
            for n in &d.selected {
                self.node(&mut state, &mut node_ids, n);
            }
            let mut normalized = spec.clone();
            normalized.normalize();
            let mut incomplete = false;
            let mut instances: Vec<InstanceState> = Vec::new();
            for i in &d.instances {
                if let Some(copy) = &i.spec {
                    if copy.name != name {
                        self.push(
                            i.pos,
                            Diagnostic::new(format!(
                                "an instance of `{name}` carries the spec of `{}`",
                                copy.name.escape_debug()
                            )),
                        );
                    } else {
                        let mut copy = copy.clone();
                        copy.normalize();
                        incomplete |= copy != normalized;
                    }
                }
                let Some(id) = i.id.clone() else {
                    self.push(
                        i.pos,
                        Diagnostic::new("a `<serviceInstances>` without `<instanceId>`")
                            .hint("the Enactment Engine writes one for every instance"),
                    );
                    continue;
                };
                if !is_valid_name(&id) {
                    self.push(
                        i.pos,
                        Diagnostic::new(format!("instance id `{}` is not valid", id.escape_debug()))
                            .hint("ids are letters, digits, `.`, `_` and `-`: they end up in file names and commands"),
                    );
                    continue;
                }
                if instances.iter().any(|x| x.id == id) {
                    self.push(i.pos, Diagnostic::new(format!("instance id `{id}` is used twice")));
                    continue;
                }
                let Some((native_uri, uri_at)) = i.native_uri.clone() else {
                    self.push(
                        i.pos,
                        Diagnostic::new(format!("instance `{id}` has no `<nativeUri>`"))
                            .hint("consumers are wired to it: give the URL the instance answers at"),
                    );
                    continue;
                };
                if let Err(why) = check_http_uri(&native_uri) {
                    self.push(
                        uri_at,
                        Diagnostic::new(format!(
                            "`<nativeUri>` `{}` is not valid: {why}",
                            crate::spec::validate::redact_uri(&native_uri).escape_debug()
                        )),
                    );
                    continue;
                }
                let Some(node) = &i.node else {
                    self.push(
                        i.pos,
                        Diagnostic::new(format!("instance `{id}` has no `<node>`"))
                            .hint("enact records where every instance runs"),
                    );
                    continue;
                };
                let Some(node) = self.node(&mut state, &mut node_ids, node) else { continue };
                instances.push(InstanceState {
                    id,
                    node,
                    status: InstanceStatus::Running,
                    native_uri,
                    pid: None,
                    start_time: None,
                    memory: Some(spec.memory()),
                });
            }
            spec.normalize();
            if state.services.contains_key(&name) {
                self.push(d.pos, Diagnostic::new(format!("service `{name}` is reported twice")));
            } else {
                state.services.insert(
                    name.clone(),
                    ServiceState { spec: AppliedSpec::Deployable(spec), instances, paused: false, incomplete },
                );
            }
            self.tag_service(mark, &name);
        }
        for l in report.legacy {
            let Some(mut spec) = l.spec else {
                self.push(l.pos, Diagnostic::new("a `<legacyServices>` without a `<spec>`"));
                continue;
            };
            for (copy, at) in &l.instance_names {
                if *copy != spec.name {
                    self.push(
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
            if state.services.contains_key(&spec.name) {
                self.push(
                    l.pos,
                    Diagnostic::new(format!("service `{}` is reported twice", spec.name)).service(&spec.name),
                );
                continue;
            }
            let service = ServiceState {
                spec: AppliedSpec::Legacy(spec.clone()),
                instances: Vec::new(),
                paused: false,
                incomplete: false,
            };
            state.services.insert(spec.name, service);
        }
        for mut spec in report.spec.legacy_service_specs {
            spec.normalize();
            match state.services.get(&spec.name) {
                Some(ServiceState { spec: AppliedSpec::Legacy(_), .. }) => {}
                Some(_) => self.errors.push(
                    Diagnostic::new("the choreography spec has it as a legacy service, but it was deployed")
                        .service(&spec.name)
                        .in_file(&self.file),
                ),
                None => {
                    let name = spec.name.clone();
                    let service = ServiceState {
                        spec: AppliedSpec::Legacy(spec),
                        instances: Vec::new(),
                        paused: false,
                        incomplete: false,
                    };
                    state.services.insert(name, service);
                }
            }
        }
        state
    }

    /// Records a cloud node in the state; its key, or None when it cannot be recorded.
    fn node(&mut self, state: &mut State, ids: &mut BTreeMap<String, Option<String>>, n: &CloudNode) -> Option<String> {
        let Some(raw) = given(&n.id).or(given(&n.ip)).or(given(&n.hostname)) else {
            self.push(
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
            self.push(
                n.pos,
                Diagnostic::new(format!("cloud node `{}` has neither `<ip>` nor `<hostname>`", raw.escape_debug()))
                    .hint("enact reaches a node by its address"),
            );
            return None;
        };
        if !is_valid_host(&address) {
            self.push(
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
        };
        match state.nodes.get_mut(&key) {
            None => {
                ids.insert(key.clone(), n.id.clone());
                state.nodes.insert(key.clone(), node);
            }
            Some(existing) => {
                if ids.get(&key).is_some_and(|id| *id != n.id) {
                    self.push(
                        n.pos,
                        Diagnostic::new(format!("two different cloud nodes would both be recorded as `{key}`"))
                            .hint("their ids differ only in characters enact replaces with `-`"),
                    );
                    return None;
                }
                if existing.address != node.address
                    || (existing.memory.is_some() && node.memory.is_some() && existing.memory != node.memory)
                {
                    self.push(
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

/// A value that is there and not blank.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// XML's whitespace (other space characters are text).
fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
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

/// A Choreography document, read but not yet turned into state.
#[derive(Debug, Default)]
struct Report {
    spec: Choreography,
    deployed: Vec<Deployed>,
    legacy: Vec<LegacyDeployed>,
}

#[derive(Debug, Default)]
struct Deployed {
    pos: usize,
    spec: Option<DeployableServiceSpec>,
    selected: Vec<CloudNode>,
    instances: Vec<Instance>,
}

#[derive(Debug, Default)]
struct Instance {
    pos: usize,
    id: Option<String>,
    native_uri: Option<(String, usize)>,
    node: Option<CloudNode>,
    spec: Option<DeployableServiceSpec>,
}

#[derive(Debug, Default)]
struct CloudNode {
    pos: usize,
    id: Option<String>,
    ip: Option<String>,
    hostname: Option<String>,
    ram: Option<i64>,
}

#[derive(Debug, Default)]
struct LegacyDeployed {
    pos: usize,
    spec: Option<LegacyServiceSpec>,
    uris: Vec<String>,
    /// The name in each replica's copy of the spec, and where that copy is.
    instance_names: Vec<(String, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chorspec(xml: &str) -> Result<Choreography, Vec<Diagnostic>> {
        import_chorspec(xml, Path::new("chor.xml"))
    }

    fn errors(xml: &str) -> Vec<Diagnostic> {
        match chorspec(xml) {
            Ok(chor) => panic!("expected errors, got {chor:?}"),
            Err(errors) => errors,
        }
    }

    fn at(d: &Diagnostic) -> (usize, usize) {
        d.location.as_ref().map(|l| (l.line, l.column)).unwrap_or_default()
    }

    fn choreography(xml: &str) -> Result<State, Vec<Diagnostic>> {
        import_choreography(xml, Path::new("chor.xml"), "dev")
    }

    const ONE: &str = "<choreographySpec><deployableServiceSpecs><name>a</name>\
        <serviceType><type>REST</type></serviceType><packageType><type>TOMCAT</type></packageType>\
        <port>8080</port><numberOfInstances>1</numberOfInstances></deployableServiceSpecs></choreographySpec>";

    #[test]
    fn wrappers_flatten_and_values_are_kept_as_written() {
        let chor = chorspec(ONE).unwrap();
        let s = &chor.deployable_service_specs[0];
        assert_eq!(s.name, "a");
        assert_eq!(s.service_type, Some(ServiceType::Rest));
        assert_eq!(s.package_type.as_deref(), Some("TOMCAT"));
        assert_eq!(s.port, Some(8080));
        // The default is kept as written; normalizing drops it.
        assert_eq!(s.number_of_instances, Some(1));
    }

    #[test]
    fn unknown_element_is_an_error_at_its_line_and_column() {
        let errs = errors(
            "<choreographySpec>\n  <deployableServiceSpecs>\n    <name>a</name>\n    <prot>1</prot>\n  </deployableServiceSpecs>\n</choreographySpec>",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("unknown element `<prot>` in `<deployableServiceSpecs>`"), "{}", errs[0]);
        assert_eq!(at(&errs[0]), (4, 5));
        assert_eq!(errs[0].service.as_deref(), Some("a"));
        assert!(errs[0].hint.as_deref().unwrap_or_default().contains("<port>"));
    }

    #[test]
    fn bad_memory_value_is_an_error() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs><name>a</name><resourceImpact><memory>HUGE</memory></resourceImpact></deployableServiceSpecs></choreographySpec>",
        );
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("`<memory>` is `HUGE`"), "{}", errs[0]);
    }

    #[test]
    fn bad_service_type_is_an_error() {
        let errs = errors(
            "<choreographySpec><legacyServiceSpecs><name>w</name><serviceType><type>CORBA</type></serviceType></legacyServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("`<serviceType>` is `CORBA`"), "{}", errs[0]);
        assert_eq!(errs[0].service.as_deref(), Some("w"));
    }

    #[test]
    fn malformed_xml_is_located() {
        let errs = errors("<choreographySpec>\n  <deployableServiceSpecs>\n    <port>1</prt>\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.starts_with("malformed XML"), "{}", errs[0]);
        assert_eq!(at(&errs[0]).0, 3, "{}", errs[0]);
    }

    #[test]
    fn an_unclosed_element_is_malformed() {
        let errs = errors("<choreographySpec>\n  <deployableServiceSpecs>\n");
        assert!(errs[0].message.contains("`<deployableServiceSpecs>` is never closed"), "{}", errs[0]);
        assert_eq!(at(&errs[0]), (2, 3));
    }

    #[test]
    fn every_problem_is_collected() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs><name>a</name><port>x</port><foo/></deployableServiceSpecs>\
             <legacyServiceSpecs><roles>r</roles></legacyServiceSpecs><bar/></choreographySpec>",
        );
        assert_eq!(errs.len(), 4, "{errs:#?}");
    }

    #[test]
    fn a_repeated_single_element_is_an_error() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs><name>a</name><port>1</port><port>2</port></deployableServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("`<port>` appears more than once"), "{}", errs[0]);
    }

    #[test]
    fn unknown_attributes_and_nil_are_errors() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs id=\"1\"><name>a</name></deployableServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("unknown attribute `id`"), "{}", errs[0]);
        assert_eq!(at(&errs[0]), (1, 43));
        let errs = errors(
            "<choreographySpec xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><deployableServiceSpecs>\
             <name>a</name><roles xsi:nil=\"true\"/></deployableServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("is nil"), "{}", errs[0]);
    }

    #[test]
    fn xsi_type_must_name_the_declared_type() {
        let ok = "<choreographySpec xmlns:x=\"http://www.w3.org/2001/XMLSchema-instance\">\
                  <deployableServiceSpecs x:type=\"deployableServiceSpec\"><name>a</name></deployableServiceSpecs></choreographySpec>";
        assert_eq!(chorspec(ok).unwrap().deployable_service_specs[0].name, "a");
        let bad = ok.replace("x:type=\"deployableServiceSpec\"", "x:type=\"legacyServiceSpec\"");
        assert!(errors(&bad)[0].message.contains("its type is `deployableServiceSpec`"));
        let undeclared = "<choreographySpec><deployableServiceSpecs xsi:type=\"deployableServiceSpec\"><name>a</name></deployableServiceSpecs></choreographySpec>";
        assert!(errors(undeclared)[0].message.contains("not declared"));
    }

    #[test]
    fn text_where_elements_belong_is_an_error_and_elements_where_text_belongs_too() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs>oops<name>a</name></deployableServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("unexpected text"), "{}", errs[0]);
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs><name><b>a</b></name></deployableServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("unexpected element `<b>` in `<name>`"), "{}", errs[0]);
    }

    #[test]
    fn the_bare_enum_form_is_read_too() {
        let chor = chorspec(
            "<choreographySpec><deployableServiceSpecs><name>a</name><serviceType> COORDEL </serviceType>\
             <packageType>EASY_ESB</packageType></deployableServiceSpecs></choreographySpec>",
        )
        .unwrap();
        let s = &chor.deployable_service_specs[0];
        assert_eq!(s.service_type, Some(ServiceType::Coordel));
        assert_eq!(s.package_type.as_deref(), Some("EASY_ESB"));
    }

    #[test]
    fn entities_character_references_and_cdata_are_resolved() {
        let chor = chorspec(
            "<choreographySpec><legacyServiceSpecs><name>w</name>\
             <nativeURIs>http://h/a?x=1&amp;y=&#50;<![CDATA[&z]]></nativeURIs></legacyServiceSpecs></choreographySpec>",
        )
        .unwrap();
        assert_eq!(chor.legacy_service_specs[0].native_uris, ["http://h/a?x=1&y=2&z"]);
    }

    #[test]
    fn a_service_without_name_is_an_error() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs><port>1</port></deployableServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("has no `<name>`"), "{}", errs[0]);
    }

    #[test]
    fn a_dependency_needs_both_fields() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs><name>a</name><dependencies><serviceSpecName>b</serviceSpecName>\
             </dependencies></deployableServiceSpecs></choreographySpec>",
        );
        assert!(errs[0].message.contains("without `<serviceSpecRole>`"), "{}", errs[0]);
    }

    #[test]
    fn numbers_must_be_numbers() {
        let errs = errors(
            "<choreographySpec><deployableServiceSpecs><name>a</name><port>12.5</port><desiredQoS><responseTimeMetric>\
             <acceptablePercentage>NaN</acceptablePercentage></responseTimeMetric></desiredQoS></deployableServiceSpecs></choreographySpec>",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].message.contains("not a whole number"));
        assert!(errs[1].message.contains("not a finite number"));
    }

    #[test]
    fn a_dtd_is_refused() {
        let errs = errors("<!DOCTYPE x [<!ENTITY e \"boom\">]><choreographySpec/>");
        assert!(errs[0].message.contains("DTD"), "{}", errs[0]);
    }

    #[test]
    fn the_wrong_root_says_what_the_document_is() {
        let errs = errors("<choreography/>");
        assert!(errs[0].message.contains("Choreography document"), "{}", errs[0]);
        assert_eq!(root_name("<?xml version=\"1.0\"?><!-- c --><choreography/>").as_deref(), Some("choreography"));
        let errs = choreography("<choreographySpec/>").unwrap_err();
        assert!(errs[0].hint.as_deref().unwrap_or_default().contains("ChorSpec"));
    }

    #[test]
    fn a_global_service_element_is_a_one_service_choreography() {
        let chor = chorspec("<legacyServiceSpec><name>w</name><nativeURIs>http://h/w</nativeURIs></legacyServiceSpec>")
            .unwrap();
        assert_eq!(chor.legacy_service_specs.len(), 1);
    }

    #[test]
    fn export_writes_wrappers_and_escapes() {
        let mut chor = chorspec(ONE).unwrap();
        chor.deployable_service_specs[0].version = Some("a<b>&\r\u{1}".into());
        let xml = export_chorspec(&chor);
        assert!(xml.contains("<serviceType>\n      <type>REST</type>"), "{xml}");
        assert!(xml.contains("<version>a&lt;b&gt;&amp;&#13;&#1;</version>"), "{xml}");
        assert_eq!(chorspec(&xml).unwrap(), chor);
        assert_eq!(chorspec(&export_chorspec(&Choreography::default())).unwrap(), Choreography::default());
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
        assert!(matches!(&state.services["w"].spec, AppliedSpec::Legacy(s) if s.native_uris == ["http://10.0.0.5/w"]));
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
