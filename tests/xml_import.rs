//! CHOReOS XML import through the library: the guide's listings and a ChorSpec with every
//! field import, validate and round-trip through canonical JSON; bad documents are located;
//! and export then import is the identity on generated choreographies.

use std::path::{Path, PathBuf};

use enact::repo::settings::Settings;
use enact::spec::model::{DesiredQos, ResourceImpact, ResponseTimeMetric};
use enact::spec::validate::validate;
use enact::spec::xml::{export_chorspec, import_choreography, import_chorspec};
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
    assert!(matches!(&state.services["airline"].spec, AppliedSpec::Deployable(s) if s.port == Some(1234)));

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
