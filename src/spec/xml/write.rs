//! Writing a choreography as a ChorSpec XML document (root `<choreographySpec>`), with the
//! `<type>` wrappers of the CHOReOS guide's XSD and its element order, for `enact export-xml`.

use std::fmt::Write as _;

use crate::spec::model::{Choreography, Memory, ServiceDependency, ServiceType};

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

/// The document being written and the depth of the open element.
#[derive(Debug, Default)]
struct Out {
    text: String,
    depth: usize,
}

impl Out {
    /// Two spaces per open element.
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.text.push_str("  ");
        }
    }

    /// A start tag on its own line.
    fn open(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.text, "<{name}>");
        self.depth += 1;
    }

    /// An end tag on its own line.
    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        let _ = writeln!(self.text, "</{name}>");
    }

    /// An element holding `value` as text, escaped.
    fn leaf(&mut self, name: &str, value: &str) {
        self.indent();
        let _ = write!(self.text, "<{name}>");
        escape_into(&mut self.text, value);
        let _ = writeln!(self.text, "</{name}>");
    }

    /// [`Out::leaf`] when there is a value.
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
