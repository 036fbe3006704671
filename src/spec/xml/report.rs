//! A Choreography document (root `<choreography>`, what the CHOReOS Enactment Engine reports
//! after a deployment) read into a [`Report`]: the `<choreographySpec>`, then per deployed
//! service its spec, selected nodes and instances, and per legacy service its spec and replica
//! URIs, each with where it is in the document. Turning a report into a recorded state is the
//! repository's ([`crate::repo::import`]); this module checks the document's shape only.

use super::Document;
use super::tree::Element;
use crate::diagnostic::Diagnostic;
use crate::spec::model::{Choreography, DeployableServiceSpec, LegacyServiceSpec};

const CHOREOGRAPHY_FIELDS: &[&str] = &["choreographySpec", "deployableServices", "id", "legacyServices"];
const DEPLOYED_FIELDS: &[&str] = &["spec", "UUID", "selectedNodes", "serviceInstances"];
const LEGACY_SERVICE_FIELDS: &[&str] = &["spec", "UUID", "legacyServiceInstances"];
const LEGACY_INSTANCE_FIELDS: &[&str] = &["spec", "uri"];
const INSTANCE_FIELDS: &[&str] = &["instanceId", "nativeUri", "node", "serviceSpec"];
const NODE_FIELDS: &[&str] =
    &["cpus", "hostname", "id", "image", "ip", "privateKeyFile", "ram", "so", "state", "storage", "user", "zone"];

/// A Choreography document, read but not yet turned into state. Positions (`pos`) are byte
/// offsets of the element's `<` in the document's text, for [`Document::push`].
#[derive(Debug, Default)]
pub struct Report {
    /// The `<choreographySpec>`: the choreography last asked for.
    pub spec: Choreography,
    /// Every `<deployableServices>`, in document order.
    pub deployed: Vec<Deployed>,
    /// Every `<legacyServices>`, in document order.
    pub legacy: Vec<LegacyDeployed>,
}

/// A `<deployableServices>`: one deployed service.
#[derive(Debug, Default)]
pub struct Deployed {
    /// Byte offset of the element.
    pub pos: usize,
    /// Its `<spec>`: what was deployed.
    pub spec: Option<DeployableServiceSpec>,
    /// Its `<selectedNodes>`.
    pub selected: Vec<CloudNode>,
    /// Its `<serviceInstances>`.
    pub instances: Vec<Instance>,
}

/// A `<serviceInstances>`: one running instance of a deployed service.
#[derive(Debug, Default)]
pub struct Instance {
    /// Byte offset of the element.
    pub pos: usize,
    /// `<instanceId>`.
    pub id: Option<String>,
    /// `<nativeUri>`, and the byte offset of its text.
    pub native_uri: Option<(String, usize)>,
    /// `<node>`: where it runs.
    pub node: Option<CloudNode>,
    /// `<serviceSpec>`: the instance's copy of its service's spec.
    pub spec: Option<DeployableServiceSpec>,
}

/// A cloud node (`<selectedNodes>` or an instance's `<node>`): the fields enact keeps. The
/// others (`cpus`, `image`, `so`, `zone`, …) are checked and dropped.
#[derive(Debug, Default)]
pub struct CloudNode {
    /// Byte offset of the element.
    pub pos: usize,
    /// `<id>`: the cloud's id of the node.
    pub id: Option<String>,
    /// `<ip>`.
    pub ip: Option<String>,
    /// `<hostname>`.
    pub hostname: Option<String>,
    /// `<ram>`, in MB.
    pub ram: Option<i64>,
}

/// A `<legacyServices>`: one legacy service and its replicas.
#[derive(Debug, Default)]
pub struct LegacyDeployed {
    /// Byte offset of the element.
    pub pos: usize,
    /// Its `<spec>`.
    pub spec: Option<LegacyServiceSpec>,
    /// The `<uri>` of each `<legacyServiceInstances>`.
    pub uris: Vec<String>,
    /// The name in each replica's copy of the spec, and where that copy is.
    pub instance_names: Vec<(String, usize)>,
}

impl Document<'_> {
    /// Reads the document as a Choreography document into a [`Report`]; problems of its
    /// elements are collected in the document ([`Document::finish`] returns them).
    ///
    /// # Errors
    /// Malformed XML, or a root element other than `<choreography>` (the hint says what the
    /// document is): every problem found so far, the document given up.
    pub fn read_report(&mut self) -> Result<Report, Vec<Diagnostic>> {
        let root = self.tree()?;
        match self.choreography_root(&root) {
            Some(report) => Ok(report),
            None => Err(std::mem::take(&mut self.errors)),
        }
    }

    /// The header of the `<spec>` of a deployed or legacy service, typed by the abstract
    /// `serviceSpec`: `xsi:type` says which kind follows and must be the kind the service is.
    /// Whether the spec may be read (as a legacy one when `legacy`).
    fn service_spec_header(&mut self, el: &Element, legacy: bool) -> bool {
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
            return false;
        }
        // The type is checked above; the header still checks nil and stray text.
        self.header(el, want, true);
        true
    }

    /// The root `<choreography>`: its spec and services; `None` (and an error saying what the
    /// document is) for another root.
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

    /// A `<deployableServices>`.
    fn deployed(&mut self, el: &Element) -> Deployed {
        let mut d = Deployed { pos: el.pos, ..Deployed::default() };
        self.fields(el, "deployableService", DEPLOYED_FIELDS, &["selectedNodes", "serviceInstances"], |cx, c| match c
            .name
            .as_str()
        {
            "spec" => {
                if cx.service_spec_header(c, false) {
                    d.spec = Some(cx.deployable(c));
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

    /// A `<serviceInstances>`.
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

    /// A cloud node: the fields enact keeps, the others checked for their type.
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

    /// A `<legacyServices>` with its replicas.
    fn legacy_service(&mut self, el: &Element) -> LegacyDeployed {
        let mut l = LegacyDeployed { pos: el.pos, ..LegacyDeployed::default() };
        self.fields(el, "legacyService", LEGACY_SERVICE_FIELDS, &["legacyServiceInstances"], |cx, c| {
            match c.name.as_str() {
                "spec" => {
                    if cx.service_spec_header(c, true) {
                        l.spec = Some(cx.legacy(c));
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
}
