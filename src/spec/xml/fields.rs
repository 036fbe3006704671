//! The fields of a ChorSpec's elements, read with the XSD's rules: every element's header
//! (`xsi:nil`, `xsi:type`, stray text), its known children (unknown and repeated ones reported),
//! and the simple values (strings as written, numbers and enum values trimmed) of the
//! deployable and legacy service specs (`docs/formats.md`, CHOReOS XML).

use super::Document;
use super::tree::Element;
use crate::diagnostic::Diagnostic;
use crate::spec::model::{
    Choreography, DeployableServiceSpec, DesiredQos, LegacyServiceSpec, Memory, ResourceImpact, ResponseTimeMetric,
    ServiceDependency, ServiceType,
};

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

impl Document<'_> {
    /// `xsi:nil`, `xsi:type` against the declared type, and (for complex types) stray text.
    pub(super) fn header(&mut self, el: &Element, declared: &str, complex: bool) {
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

    /// Reports `child`, which `parent`'s type does not have, with the closest known element.
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

    /// A complex element: its header, then [`Document::body`].
    pub(super) fn fields(
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

    /// The text of an `xs:string` element, exactly as written.
    pub(super) fn string(&mut self, el: &Element) -> Option<String> {
        self.leaf(el, "string")
    }

    /// The value of an `xs:int` element (trimmed); an error when it is not a whole number.
    pub(super) fn int(&mut self, el: &Element) -> Option<i64> {
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

    /// The value of an `xs:float` element (trimmed); an error when it is not a finite number.
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

    /// A `memoryType`: SMALL, MEDIUM or LARGE.
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

    /// A `<serviceType>` (wrapped or bare): SOAP, REST or COORDEL.
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

    /// A `<choreographySpec>`: its deployable and legacy services, in document order.
    pub(super) fn chorspec(&mut self, el: &Element) -> Choreography {
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
    pub(super) fn deployable(&mut self, el: &Element) -> DeployableServiceSpec {
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
    pub(super) fn legacy(&mut self, el: &Element) -> LegacyServiceSpec {
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

    /// The service's `<name>`; an error (and an empty name) when it has none.
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

    /// A `<dependencies>`: both `<serviceSpecName>` and `<serviceSpecRole>` are required.
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

    /// A `<resourceImpact>`: memory, cpu, storage, network.
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

    /// A `<desiredQoS>` with its `<responseTimeMetric>`.
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
}
