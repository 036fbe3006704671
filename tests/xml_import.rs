//! CHOReOS XML import through the library: the guide's listings and a ChorSpec with every
//! field import, validate and round-trip through canonical JSON; bad documents are located;
//! and export then import is the identity on generated choreographies.

use std::path::{Path, PathBuf};

use enact::repo::import::import_choreography;
use enact::repo::settings::Settings;
use enact::spec::model::{DesiredQos, ResourceImpact, ResponseTimeMetric};
use enact::spec::validate::validate;
use enact::spec::xml::{export_chorspec, import_chorspec};
use enact::spec::{Choreography, DeployableServiceSpec, LegacyServiceSpec, Memory, ServiceDependency, ServiceType};
use enact::state::{AppliedSpec, InstanceStatus};
use proptest::prelude::*;

fn fixture(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xml").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

fn import(name: &str) -> Choreography {
    let (path, text) = fixture(name);
    import_chorspec(&text, &path).unwrap_or_else(|errors| panic!("{name}: {errors:#?}"))
}

fn assert_valid(chor: &Choreography) {
    let errors = validate(chor, &Settings::default(), &|_, _, _| None);
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{text:#?}");
}

/// Canonical JSON, parsed back, equals the normalized import.
fn assert_json_round_trip(chor: &Choreography) {
    let mut normalized = chor.clone();
    normalized.normalize();
    let back: Choreography = serde_json::from_str(&chor.to_canonical_json()).expect("canonical JSON parses");
    assert_eq!(back, normalized);
}

#[test]
fn listing_2_1_imports_validates_and_round_trips() {
    let chor = import("listing-2-1-chorspec.xml");
    assert!(chor.legacy_service_specs.is_empty());
    let names: Vec<&str> = chor.deployable_service_specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["airline", "travelagency"]);

    let airline = &chor.deployable_service_specs[0];
    assert_eq!(airline.roles, ["airline"]);
    assert!(airline.dependencies.is_empty());
    assert_eq!(airline.service_type, Some(ServiceType::Soap));
    assert_eq!(airline.package_type.as_deref(), Some("COMMAND_LINE"));
    assert_eq!(
        airline.package_uri.as_deref(),
        Some("http://valinhos.ime.usp.br:54080/enact_test/v3/Airline-3.0.0.jar")
    );
    assert_eq!(airline.endpoint_name.as_deref(), Some("airline"));
    assert_eq!((airline.port, airline.number_of_instances), (Some(1234), Some(1)));
    assert_eq!(airline.version.as_deref(), Some("0.1"));
    // `<resourceImpact/>` is there but empty.
    assert_eq!(airline.resource_impact, Some(ResourceImpact::default()));

    let travel = &chor.deployable_service_specs[1];
    assert_eq!(
        travel.dependencies,
        [ServiceDependency { service_spec_name: "airline".into(), service_spec_role: "airline".into() }]
    );
    assert_eq!(
        travel.package_uri.as_deref(),
        Some("http://valinhos.ime.usp.br:54080/enact_test/v3/TravelAgency-3.0.0.jar")
    );
    assert_eq!(travel.port, Some(1235));

    assert_valid(&chor);
    assert_json_round_trip(&chor);
    // Normalized, the defaults the listing spells out are gone.
    let mut normalized = chor.clone();
    normalized.normalize();
    let airline = &normalized.deployable_service_specs[0];
    assert_eq!(
        (airline.service_type, airline.number_of_instances, airline.endpoint_name.as_deref()),
        (None, None, None)
    );
    assert_eq!(airline.resource_impact, None);
}

#[test]
fn a_chorspec_with_every_field_imports_validates_and_round_trips() {
    let chor = import("full-chorspec.xml");
    assert_eq!(chor.deployable_service_specs.len(), 2);
    let airline = &chor.deployable_service_specs[0];
    assert_eq!(airline.roles, ["airline", "flights"]);
    assert_eq!(airline.service_type, Some(ServiceType::Rest));
    assert_eq!(airline.cloud_account.as_deref(), Some("local"));
    assert_eq!(
        airline.desired_qos,
        Some(DesiredQos {
            response_time_metric: Some(ResponseTimeMetric {
                acceptable_percentage: Some(95.0),
                max_desired_response_time: Some(120.5),
            }),
        })
    );
    assert_eq!(airline.endpoint_name.as_deref(), Some("airline-ws"));
    assert_eq!((airline.number_of_instances, airline.port), (Some(3), Some(1234)));
    assert_eq!(airline.package_uri.as_deref(), Some("services/airline.py"));
    assert_eq!(
        airline.resource_impact,
        Some(ResourceImpact {
            memory: Some(Memory::Medium),
            cpu: Some("2 cores".into()),
            storage: Some("10GB SSD & backup".into()),
            network: Some("100Mbps <shared>".into()),
        })
    );
    assert_eq!(airline.version.as_deref(), Some("1.2.0"));

    let travel = &chor.deployable_service_specs[1];
    assert_eq!(travel.dependencies.len(), 2);
    assert_eq!(travel.package_type.as_deref(), Some("TOMCAT"));
    assert_eq!(travel.port, None);
    assert_eq!(travel.memory(), Memory::Large);

    let weather = &chor.legacy_service_specs[0];
    assert_eq!(weather.name, "weather");
    assert_eq!(weather.service_type, Some(ServiceType::Coordel));
    assert_eq!(weather.native_uris, ["http://10.0.0.5:8192/weather", "http://10.0.0.6:8192/weather"]);
    assert_eq!(weather.dependencies[0].service_spec_role, "flights");

    assert_valid(&chor);
    assert_json_round_trip(&chor);
    assert_eq!(import_chorspec(&export_chorspec(&chor), Path::new("x.xml")).unwrap(), chor);
}

#[test]
fn listing_2_2_imports_as_a_state() {
    let (path, text) = fixture("listing-2-2-choreography.xml");
    let state = import_choreography(&text, &path, "dev").unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!((state.format_version, state.lineage.as_str(), state.serial, state.env.as_str()), (1, "", 0, "dev"));
    assert_eq!(state.services.keys().collect::<Vec<_>>(), ["airline", "travelagency"]);

    let uris = |name: &str| -> Vec<(String, String, String)> {
        state.services[name].instances.iter().map(|i| (i.id.clone(), i.node.clone(), i.native_uri.clone())).collect()
    };
    assert_eq!(
        uris("airline"),
        [("airline0".into(), "imported-1".into(), "http://192.168.56.101:1234/airline/".into())]
    );
    assert_eq!(
        uris("travelagency"),
        [("travelagency1".into(), "imported-2".into(), "http://192.168.56.102:1235/travelagency/".into())]
    );
    for service in state.services.values() {
        assert!(!service.incomplete && !service.paused);
        for i in &service.instances {
            assert_eq!((i.status, i.pid, i.memory), (InstanceStatus::Running, None, Some(Memory::Small)));
        }
    }
    assert_eq!(state.endpoints("airline"), ["http://192.168.56.101:1234/airline/"]);

    assert_eq!(state.nodes.keys().collect::<Vec<_>>(), ["imported-1", "imported-2"]);
    for (key, ip, id) in [("imported-1", "192.168.56.101", "1"), ("imported-2", "192.168.56.102", "2")] {
        let node = &state.nodes[key];
        assert_eq!((node.account.as_str(), node.provider.as_str()), ("imported", "ssh"));
        assert_eq!((node.address.as_str(), node.provider_id.as_deref()), (ip, Some(id)));
        assert_eq!(node.memory, None, "the listing gives no `<ram>`");
    }

    // The recorded specs are the listing's, normalized; they validate and match Listing 2.1.
    let recorded = state.choreography();
    assert_valid(&recorded);
    let mut listing = import("listing-2-1-chorspec.xml");
    listing.normalize();
    assert_eq!(recorded, listing);
    assert!(matches!(&*state.services["airline"].spec, AppliedSpec::Deployable(s) if s.port == Some(1234)));

    // The state survives its own JSON form.
    let back: enact::state::State = serde_json::from_str(&state.to_json()).unwrap();
    assert_eq!(back, state);
}

/// (fixture, message fragment, line, column)
const BAD: &[(&str, &str, usize, usize)] = &[
    ("bad-unknown-element.xml", "unknown element `<prot>` in `<deployableServiceSpecs>`", 6, 5),
    ("bad-memory-enum.xml", "`<memory>` is `HUGE`; expected SMALL, MEDIUM or LARGE", 6, 15),
    ("bad-malformed.xml", "malformed XML", 4, 15),
    ("bad-service-type.xml", "`<serviceType>` is `CORBA`", 5, 13),
    ("bad-unclosed.xml", "`<deployableServiceSpecs>` is never closed", 2, 3),
];

#[test]
fn bad_documents_are_errors_at_their_line_and_column() {
    for (name, message, line, column) in BAD {
        let (path, text) = fixture(name);
        let errors = import_chorspec(&text, &path).expect_err(name);
        assert_eq!(errors.len(), 1, "{name}: {errors:#?}");
        let d = &errors[0];
        assert!(d.message.contains(message), "{name}: {d}");
        let location = d.location.as_ref().expect("located");
        assert_eq!(location.file, path);
        assert_eq!((location.line, location.column), (*line, *column), "{name}: {d}");
        assert!(d.to_string().starts_with(&format!("{}:{line}:{column}: ", path.display())), "{d}");
    }
}

#[test]
fn a_bad_choreography_names_the_service() {
    let (path, text) = fixture("bad-choreography-instance-without-node.xml");
    let errors = import_choreography(&text, &path, "dev").unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].message.contains("instance `airline0` has no `<node>`"), "{}", errors[0]);
    assert_eq!(errors[0].service.as_deref(), Some("airline"));
    assert_eq!(errors[0].location.as_ref().map(|l| (l.line, l.column)), Some((7, 5)));
}

// ---------------------------------------------------------------------------------------------
// import(export(x)) == x

/// Text with what XML must escape, whitespace at the edges and non-ASCII letters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9.-]{0,8}", "[ -~\t\n\r]{0,12}", "\\PC{0,6}",]
}

fn opt<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop::option::of(s)
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![0.0f64..=100.0, prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL]
}

fn service_type() -> impl Strategy<Value = ServiceType> {
    prop_oneof![Just(ServiceType::Soap), Just(ServiceType::Rest), Just(ServiceType::Coordel)]
}

fn dependencies() -> impl Strategy<Value = Vec<ServiceDependency>> {
    prop::collection::vec(
        (text(), text()).prop_map(|(n, r)| ServiceDependency { service_spec_name: n, service_spec_role: r }),
        0..3,
    )
}

fn deployable() -> impl Strategy<Value = DeployableServiceSpec> {
    let head = (text(), prop::collection::vec(text(), 0..3), dependencies(), opt(service_type()));
    let package = (opt(text()), opt(text()), opt(text()), opt(any::<i64>()), opt(any::<i64>()));
    let impact = opt((
        opt(prop_oneof![Just(Memory::Small), Just(Memory::Medium), Just(Memory::Large)]),
        opt(text()),
        opt(text()),
        opt(text()),
    )
        .prop_map(|(memory, cpu, storage, network)| ResourceImpact { memory, cpu, storage, network }));
    let qos = opt(opt((opt(number()), opt(number()))
        .prop_map(|(a, m)| ResponseTimeMetric { acceptable_percentage: a, max_desired_response_time: m }))
    .prop_map(|response_time_metric| DesiredQos { response_time_metric }));
    (head, package, impact, opt(text()), opt(text()), qos).prop_map(
        |(
            (name, roles, dependencies, service_type),
            (package_type, package_uri, endpoint_name, port, n),
            r,
            v,
            c,
            q,
        )| {
            DeployableServiceSpec {
                name,
                roles,
                dependencies,
                service_type,
                package_type,
                package_uri,
                endpoint_name,
                port,
                number_of_instances: n,
                resource_impact: r,
                version: v,
                cloud_account: c,
                desired_qos: q,
            }
        },
    )
}

fn legacy() -> impl Strategy<Value = LegacyServiceSpec> {
    (
        text(),
        prop::collection::vec(text(), 0..3),
        dependencies(),
        opt(service_type()),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(|(name, roles, dependencies, service_type, native_uris)| LegacyServiceSpec {
            name,
            roles,
            dependencies,
            service_type,
            native_uris,
        })
}

fn choreography() -> impl Strategy<Value = Choreography> {
    (prop::collection::vec(deployable(), 0..4), prop::collection::vec(legacy(), 0..3))
        .prop_map(|(d, l)| Choreography { deployable_service_specs: d, legacy_service_specs: l })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn import_of_export_is_the_identity(chor in choreography()) {
        let xml = export_chorspec(&chor);
        let back = import_chorspec(&xml, Path::new("export.xml"));
        prop_assert!(back.is_ok(), "{:#?}\n{}", back, xml);
        let mut back = back.unwrap_or_default();
        // Exactly what was exported, not only up to defaults …
        prop_assert_eq!(&back, &chor);
        // … and so the same canonical choreography.
        let mut expected = chor;
        expected.normalize();
        back.normalize();
        prop_assert_eq!(back, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus of real CHOReOS documents beside the project (never copied into it)
// ---------------------------------------------------------------------------------------------

/// Element names of the Enactment Engine's documents before the 2014 XSD (2013 versions of its
/// REST API); a file holding one is of an older format, which enact does not import.
const PRE_2014_ELEMENTS: [&str; 9] = [
    "chorSpec",
    "serviceSpecs",
    "choreographyServiceSpecs",
    "choreographyServices",
    "deployedServices",
    "uuid",
    "busUris",
    "artifactType",
    "codeUri",
];

/// The first element of an older format that `text` holds.
fn pre_2014_element(text: &str) -> Option<&'static str> {
    PRE_2014_ELEMENTS.iter().find(|e| [">", "/>", " "].iter().any(|end| text.contains(&format!("<{e}{end}")))).copied()
}

/// An XML element as the test reads it: name, text and children.
#[derive(Debug, Default)]
struct Xml {
    name: String,
    text: String,
    children: Vec<Xml>,
}

impl Xml {
    fn parse(text: &str) -> Xml {
        use quick_xml::events::Event;
        let mut reader = quick_xml::NsReader::from_str(text);
        let mut stack = vec![Xml::default()];
        loop {
            match reader.read_event().expect("the corpus is well-formed XML") {
                Event::Start(e) => {
                    stack.push(Xml { name: e.local_name().as_ref().to_string(), ..Xml::default() });
                }
                Event::Empty(e) => {
                    let el = Xml { name: e.local_name().as_ref().to_string(), ..Xml::default() };
                    stack.last_mut().expect("open element").children.push(el);
                }
                Event::End(_) => {
                    let done = stack.pop().expect("open element");
                    stack.last_mut().expect("parent").children.push(done);
                }
                Event::Text(t) => {
                    stack.last_mut().expect("open element").text.push_str(&t.xml10_content());
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => quick_xml::escape::resolve_xml_entity(&r).unwrap_or_default().to_string(),
                    };
                    stack.last_mut().expect("open element").text.push_str(&resolved);
                }
                Event::CData(c) => stack.last_mut().expect("open element").text.push_str(&c.xml10_content()),
                Event::Eof => break,
                _ => {}
            }
        }
        stack.pop().expect("document").children.pop().expect("a root element")
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Xml> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// A `<serviceType>` / `<packageType>`: the text of its `<type>`, or its own.
    fn wrapped(&self) -> String {
        self.all("type").next().map_or_else(|| self.text.trim().to_string(), |t| t.text.clone())
    }
}

/// Every element of a service of the XML equals the JSON field of the same name, and the JSON
/// has no field the XML does not state: import is 1:1.
fn assert_one_to_one(file: &str, element: &Xml, json: &serde_json::Value) {
    let name = element.all("name").next().map(|n| n.text.clone()).unwrap_or_default();
    let at = format!("{file}: service `{name}`");
    let mut stated: Vec<String> = Vec::new();
    for child in &element.children {
        let field = child.name.as_str();
        if !stated.contains(&child.name) {
            stated.push(child.name.clone());
        }
        let value = &json[field];
        let texts = |n: &str| element.all(n).map(|e| serde_json::Value::from(e.text.clone())).collect::<Vec<_>>();
        match field {
            "roles" | "nativeURIs" => assert_eq!(value, &serde_json::Value::from(texts(field)), "{at}: {field}"),
            "dependencies" => {
                let expected: Vec<serde_json::Value> = element
                    .all("dependencies")
                    .map(|d| {
                        serde_json::json!({
                            "serviceSpecName": d.all("serviceSpecName").next().map(|x| x.text.clone()),
                            "serviceSpecRole": d.all("serviceSpecRole").next().map(|x| x.text.clone()),
                        })
                    })
                    .collect();
                assert_eq!(value, &serde_json::Value::from(expected), "{at}: dependencies");
            }
            "serviceType" | "packageType" => {
                assert_eq!(value, &serde_json::Value::from(child.wrapped()), "{at}: {field}");
            }
            "port" | "numberOfInstances" => {
                assert_eq!(value.as_i64(), child.text.trim().parse::<i64>().ok(), "{at}: {field}");
            }
            "resourceImpact" => {
                assert!(value.is_object(), "{at}: `<resourceImpact>` is kept even when empty: {json}");
                for part in &child.children {
                    assert_eq!(
                        value[&part.name],
                        serde_json::Value::from(part.text.trim()),
                        "{at}: resourceImpact/{}",
                        part.name
                    );
                }
                assert_eq!(value.as_object().map(|o| o.len()), Some(child.children.len()), "{at}: resourceImpact");
            }
            "desiredQoS" => assert!(value.is_object(), "{at}: desiredQoS"),
            _ => assert_eq!(value, &serde_json::Value::from(child.text.clone()), "{at}: {field}"),
        }
    }
    let mut fields: Vec<String> = json.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    fields.sort();
    stated.sort();
    assert_eq!(fields, stated, "{at}: the JSON has exactly the fields the XML states");
}

/// Each `error:` of `enact import-xml` names the XML file, line and column, and says what to do.
fn assert_located(file: &Path, stderr: &str) -> usize {
    let prefix = format!("error: {}:", file.display());
    let mut count = 0;
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with("error: ") {
            continue;
        }
        count += 1;
        let rest = line.strip_prefix(&prefix).unwrap_or_else(|| panic!("not located in the XML: {line}"));
        let mut parts = rest.splitn(3, ':');
        let (l, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        assert!(l.parse::<usize>().is_ok() && c.parse::<usize>().is_ok(), "no line:column: {line}");
        assert!(lines.get(i + 1).is_some_and(|h| h.starts_with("  help: ")), "no hint after: {line}");
    }
    count
}

#[test]
#[allow(clippy::print_stderr, reason = "says which corpus files were not of the 2014 format, or that it did not run")]
fn every_2014_document_of_the_choreos_corpus_imports_one_to_one_or_fails_located() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/choreos-xml");
    if !dir.is_dir() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the CHOReOS corpus is missing at {}: CI lays it beside the project",
            dir.display()
        );
        eprintln!("did not run: no CHOReOS corpus at {} (it lies beside the project in CI)", dir.display());
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read the corpus")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    let (mut imported, mut refused, mut suggestions, mut templates) = (0, 0, Vec::new(), 0);
    for path in &files {
        let file = path.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).expect("read");
        if let Some(old) = pre_2014_element(&text) {
            eprintln!("{file}: not of the 2014 format (it has `<{old}>`); not imported");
            continue;
        }
        let root = Xml::parse(&text);
        let (spec_root, spec_flag) = match root.name.as_str() {
            "choreography" => (root.all("choreographySpec").next().expect("a choreographySpec"), true),
            _ => (&root, false),
        };
        // The library import keeps every element, even of a document validation refuses.
        let chor = if spec_flag {
            enact::repo::import::import_choreography_spec(&text, path)
        } else {
            import_chorspec(&text, path)
        }
        .unwrap_or_else(|e| panic!("{file}: a 2014 document imports: {e:#?}"));
        let json: serde_json::Value =
            serde_json::from_str(&enact::spec::format::as_written(&chor)).expect("the spec is JSON");
        for list in ["deployableServiceSpecs", "legacyServiceSpecs"] {
            let services = json[list].as_array().cloned().unwrap_or_default();
            assert_eq!(services.len(), spec_root.all(list).count(), "{file}: {list}");
            for element in spec_root.all(list) {
                let name = element.all("name").next().map(|n| n.text.clone());
                let service = services.iter().find(|s| s["name"].as_str() == name.as_deref()).expect("imported");
                assert_one_to_one(&file, element, service);
            }
        }
        if spec_flag {
            import_choreography(&text, path, "dev").unwrap_or_else(|e| panic!("{file}: imports as a state: {e:#?}"));
        }
        // The command: the spec printed as imported, or every problem located in the XML.
        let mut args = vec!["import-xml".to_string()];
        if spec_flag {
            args.push("--spec".into());
        }
        args.push(path.display().to_string());
        let output = assert_cmd::Command::cargo_bin("enact").expect("enact").args(&args).output().expect("runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        match output.status.code() {
            Some(0) => {
                assert_eq!(stdout, enact::spec::format::as_written(&chor), "{file}");
                assert!(validate(&chor, &Settings::default(), &|_, _, _| None).is_empty(), "{file}");
                imported += 1;
            }
            Some(1) => {
                assert!(stdout.is_empty(), "{file}: a refused import prints no spec");
                assert!(assert_located(path, &stderr) > 0, "{file}: {stderr}");
                templates += usize::from(stderr.contains("a template leaves it empty"));
                suggestions.extend(stderr.lines().filter(|l| l.contains("did you mean")).map(str::to_string));
                refused += 1;
            }
            other => panic!("{file}: exit {other:?}\n{stderr}"),
        }
    }
    eprintln!("{imported} imported and valid, {refused} refused with located errors");
    assert!(imported >= 2, "the 2014 guide's listings import");
    assert!(templates >= 1, "the corpus's templates are refused for their empty URIs");
    if files.iter().any(|f| f.to_string_lossy().contains("f6a9dca")) {
        assert!(
            suggestions.iter().any(|l| l.contains("did you mean `CD-marketingmanager-marketingapplication`?")),
            "the dependency typo gets its suggestion: {suggestions:#?}"
        );
    }
}
