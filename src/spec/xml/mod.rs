//! CHOReOS XML: the ChorSpec and Choreography documents of the Enactment Engine (guide §2.2,
//! XSDs in §2.5) read into enact's spec model, and a ChorSpec written back.
//!
//! One file per job: `tree.rs` builds the element tree with positions, `fields.rs` reads the
//! fields of a service spec with the XSD's rules, `report.rs` reads a Choreography document
//! into a [`Report`], `write.rs` writes a ChorSpec. A report becomes a recorded state in
//! [`crate::repo::import`] (the state is not the spec's business). Depends on the spec model,
//! its validation and the leaves only.
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
//!   flattened: `serviceType` to the [`ServiceType`](crate::spec::ServiceType) enum (`SOAP`, `REST`, `COORDEL`; anything
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

use std::path::Path;

use quick_xml::NsReader;
use quick_xml::events::Event;

use crate::diagnostic::{Diagnostic, Segment};
use crate::spec::model::Choreography;
use crate::spec::validate::{AnyCatalog, validate};

mod fields;
mod report;
mod tree;
mod write;

pub use report::{CloudNode, Deployed, Instance, LegacyDeployed, Report};
pub use tree::Document;
use tree::Element;
pub use write::export_chorspec;

/// Reads a ChorSpec XML document (root `<choreographySpec>`) into the model, field for field.
///
/// `file` is the path shown in diagnostics. Every problem is reported, each located at the
/// element it is about.
///
/// # Errors
/// Every problem of the document: malformed XML (the first one only), unknown or repeated
/// elements, values of the wrong type, a root that is not a ChorSpec (or a lone service spec).
pub fn import_chorspec(xml: &str, file: &Path) -> Result<Choreography, Vec<Diagnostic>> {
    let mut cx = Document::new(xml, file);
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

/// The spec checks of `chor`, imported from the ChorSpec (or Choreography) document `xml`, each
/// located at the XML element it is about: names, dependencies (with the closest service or
/// role when one is mistyped), ports, URIs (a template's empty `<packageUri>` or
/// `<nativeURIs>`), and so on. Accounts and package types are left to `enact validate`, which
/// knows enact.json: an imported spec may name ones the repository defines later.
pub fn check_imported(xml: &str, file: &Path, chor: &Choreography) -> Vec<Diagnostic> {
    let mut cx = Document::new(xml, file);
    let Ok(root) = cx.tree() else { return Vec::new() };
    let spec_root = match root.name.as_str() {
        "choreography" => root.children.iter().find(|c| c.name == "choreographySpec"),
        _ => Some(&root),
    };
    let locate = |service: &str, occurrence: usize, path: &[Segment]| {
        let spec_root = spec_root?;
        let offset = locate_element(spec_root, service, occurrence, path)?;
        Some(cx.location(offset))
    };
    validate(chor, &AnyCatalog, &locate)
}

/// Where the field `path` of the `occurrence`th service named `service` is in a
/// `<choreographySpec>` (or a lone `<deployableServiceSpec>` / `<legacyServiceSpec>`): the
/// element names are the JSON field names, and a list is its repeated elements. The offset is
/// that of the value's text, else of the element, else of the nearest enclosing element found.
fn locate_element(spec_root: &Element, service: &str, occurrence: usize, path: &[Segment]) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ServiceType;

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
}
