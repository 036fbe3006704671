//! Parsing, checking and resolving `enact.json`.

use super::*;
use crate::diagnostic::{Diagnostic, SourceFile};
use crate::spec::model::Memory;

fn parse(text: &str) -> Result<Settings, Vec<Diagnostic>> {
    Settings::parse(&SourceFile::new("enact.json", text.to_string()))
}

#[test]
fn the_design_example_parses() {
    let s = parse(
        r#"{ "defaultEnv": "dev", "defaultAccount": "local",
"accounts": {
  "local": { "provider": "local" },
  "lab": { "provider": "ssh", "knownHosts": "~/.ssh/known_hosts",
           "hosts": [ { "address": "10.0.0.11", "port": 22, "user": "deploy",
                        "privateKey": "~/.ssh/id_ed25519", "memory": "MEDIUM" } ] },
  "aws": { "provider": "ec2", "region": "us-east-1", "imageId": "ami-0abc", "keyName": "deploy",
           "user": "ubuntu", "privateKey": "~/.ssh/deploy.pem",
           "instanceTypes": { "SMALL": "t3.small", "MEDIUM": "t3.medium", "LARGE": "t3.large" },
           "endpoint": null },
  "rehearsal": { "provider": "simulated", "latencyMs": 200 } },
"nodeSelector": { "policy": "LIMITED_ROUND_ROBIN", "vmLimit": 10 },
"reservoir": { "initialSize": 2, "threshold": 1 },
"packageTypes": { "PYTHON": { "start": "python3 {package}" } },
"envs": { "prod": { "defaultAccount": "aws" } } }"#,
    )
    .unwrap();
    assert_eq!(s.accounts.len(), 4);
    assert_eq!(s.env_view("prod").default_account, "aws");
    assert_eq!(s.env_view("dev").node_selector.vm_limit, Some(10));
    assert_eq!(s.account("aws").map(|a| a.node_size(Memory::Large)), Some("t3.large".to_string()));
}

#[test]
fn every_bad_account_is_reported_with_its_place() {
    let errs = parse(
          "{\"accounts\": {\n \"a\": {\"provider\": \"gcp\"},\n \"b\": {\"provider\": \"ssh\", \"hosts\": [], \"x\": 1}}}",
      )
      .unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].message.contains("gcp"));
    assert_eq!(errs[0].location.as_ref().map(|l| l.line), Some(2));
    assert!(errs[1].message.contains("unknown field `x`"));
}

#[test]
fn timeouts_come_from_the_service_then_the_account_then_the_top_level() {
    let s = parse(
        r#"{"timeouts": {"healthMs": 1000, "stopGraceMs": 2000},
              "accounts": {"lab": {"provider": "local", "timeouts": {"healthMs": 3000}}},
              "services": {"airline": {"timeouts": {"stopGraceMs": 4000}}}}"#,
    )
    .unwrap();
    assert_eq!(s.timeouts_of("airline", "lab"), (3000, 4000));
    assert_eq!(s.timeouts_of("other", "lab"), (3000, 2000));
    assert_eq!(s.timeouts_of("other", "local"), (1000, 2000));
    assert_eq!(Settings::default().timeouts_of("x", "local"), (DEFAULT_HEALTH_MS, DEFAULT_STOP_GRACE_MS));
    let errs = parse(r#"{"services": {"a": {"timeouts": {"healthMs": 0, "stopGraceMs": 99999999}}}}"#).unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 2, "{text:?}");
    assert!(text[0].contains("`services.a.timeouts.healthMs` is 0 ms"), "{text:?}");
}

#[test]
fn the_log_cap_comes_from_the_service_then_the_account_then_the_top_level() {
    let s = parse(
        r#"{"logs": {"maxBytes": 65536, "keep": 5},
              "accounts": {"lab": {"provider": "ssh", "hosts": [{"address": "10.0.0.1", "user": "u"}],
                                   "logs": {"maxBytes": 1048576}}},
              "services": {"airline": {"logs": {"keep": 0}}}}"#,
    )
    .unwrap();
    assert_eq!(s.logs_of("airline", "lab"), LogCap { max_bytes: 1_048_576, keep: 0 });
    assert_eq!(s.logs_of("other", "lab"), LogCap { max_bytes: 1_048_576, keep: 5 });
    assert_eq!(s.logs_of("other", "local"), LogCap { max_bytes: 65_536, keep: 5 });
    assert_eq!(
        Settings::default().logs_of("x", "local"),
        LogCap { max_bytes: DEFAULT_LOG_MAX_BYTES, keep: DEFAULT_LOG_KEEP }
    );
}

#[test]
fn a_log_cap_out_of_range_is_refused_with_its_file_line_and_field() {
    let text = "{\"logs\": {\"maxBytes\": 100},\n \"accounts\": {\"l\": {\"provider\": \"local\",\n  \"logs\": {\"keep\": 101}}},\n \"services\": {\"a\": {\"logs\": {\"maxBytes\": 2199023255552, \"keep\": 100}}}}";
    let errs = parse(text).unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 3, "{text:?}");
    assert!(text[0].starts_with("enact.json:1:"), "{text:?}");
    assert!(text[0].contains("`logs.maxBytes` is 100, outside 4096–1099511627776 bytes"), "{text:?}");
    assert!(text[0].contains("10 MiB"), "the hint gives the defaults: {text:?}");
    assert!(text[1].starts_with("enact.json:3:"), "{text:?}");
    assert!(text[1].contains("`accounts.l.logs.keep` is 101, outside 0–100 rotated files"), "{text:?}");
    assert!(text[2].contains("`services.a.logs.maxBytes` is 2199023255552"), "{text:?}");
    let errs = parse(r#"{"logs": {"maxBytes": -1}}"#).unwrap_err();
    assert!(errs[0].to_string().contains("/logs/maxBytes"), "{}", errs[0]);
    let errs = parse(r#"{"logs": {"max": 1}}"#).unwrap_err();
    assert!(errs[0].to_string().contains("unknown field `max`"), "{}", errs[0]);
    assert!(parse(r#"{"logs": {"maxBytes": 4096, "keep": 0}}"#).is_ok());
}

#[test]
fn references_and_recipes_are_checked() {
    let errs = parse(
        r#"{"defaultAccount": "nope", "envs": {"prod": {"defaultAccount": "gone"}},
              "packageTypes": {"PY": {"start": "python3 {pkg}"}},
              "nodeSelector": {"policy": "LIMITED_ROUND_ROBIN"}}"#,
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 4, "{text:?}");
    assert!(text.iter().any(|t| t.contains("unknown placeholder `{pkg}`")));
    assert!(text.iter().any(|t| t.contains("vmLimit")));
}

#[test]
fn max_unavailable_is_the_services_else_the_envs_else_the_top_levels_else_1() {
    let s = parse(
        r#"{ "rollout": { "maxUnavailable": 2 },
"envs": { "prod": { "rollout": { "maxUnavailable": 0 } }, "test": { "rollout": {} } },
"services": { "airline": { "rollout": { "maxUnavailable": 3 } }, "hotel": {} } }"#,
    )
    .unwrap();
    let at = |env: &str, service: &str| {
        let m = s.env_view(env).max_unavailable(service);
        (m.value, m.set_at)
    };
    assert_eq!(at("prod", "airline"), (3, Some("services.airline.rollout".to_string())));
    assert_eq!(at("prod", "hotel"), (0, Some("envs.prod.rollout".to_string())));
    assert_eq!(at("dev", "hotel"), (2, Some("rollout".to_string())));
    assert_eq!(at("test", "hotel"), (2, Some("rollout".to_string())), "an empty `rollout` inherits");
    let none = parse("{}").unwrap();
    assert_eq!(none.env_view("dev").max_unavailable("airline"), MaxUnavailable { value: 1, set_at: None });
}

#[test]
fn service_settings_refuse_unknown_fields_and_bad_names_with_their_place() {
    let errs = parse("{\"services\": {\n \"airline\": {\"rollout\": {\"maxUnavailable\": -1}}}}").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].location.as_ref().map(|l| l.line), Some(2), "{errs:?}");
    let errs = parse("{\"services\": {\"airline\": {\"rolout\": {}}}}").unwrap_err();
    assert!(errs[0].message.contains("unknown field `rolout`"), "{errs:?}");
    let errs = parse("{\"services\": {\"air line\": {}}}").unwrap_err();
    assert!(errs[0].message.contains("not a valid service name"), "{errs:?}");
    // A name the spec may not hold is fine here: settings are read before the spec.
    assert!(parse("{\"services\": {\"nowhere\": {\"rollout\": {\"maxUnavailable\": 0}}}}").is_ok());
}

#[test]
fn a_service_setting_for_no_service_is_located_with_the_closest_name() {
    let text = "{\"services\": {\n  \"airlin\": {},\n  \"airline\": {},\n  \"zzz\": {}}}";
    let source = SourceFile::new("enact.json", text.to_string());
    let s = Settings::parse(&source).unwrap();
    let names = ["airline", "hotel"];
    let errs = s.unknown_services(&source, |n| names.contains(&n), names.iter().copied());
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].location.as_ref().map(|l| (l.line, l.column)), Some((2, 3)));
    assert!(errs[0].to_string().contains("did you mean `airline`?"), "{}", errs[0]);
    assert!(errs[1].message.contains("`zzz`") && !errs[1].to_string().contains("did you mean"), "{}", errs[1]);
}

#[test]
fn the_schema_of_enact_json_has_the_rollout_settings() {
    let schema = schema();
    let text = schema.to_string();
    for field in ["rollout", "services", "maxUnavailable"] {
        assert!(text.contains(&format!("\"{field}\"")), "{field} missing: {text}");
    }
    assert!(schema["properties"]["services"].is_object(), "{schema}");
}

#[test]
fn rollout_settings_survive_a_round_trip() {
    let text = r#"{"rollout":{"maxUnavailable":1},"services":{"airline":{"rollout":{"maxUnavailable":0}}}}"#;
    let s = parse(text).unwrap();
    assert_eq!(serde_json::to_string(&s).unwrap(), text);
}

#[test]
fn the_reservoir_is_the_envs_else_the_top_levels_and_its_counts_are_checked() {
    let s = parse(
        r#"{"reservoir": {"initialSize": 2, "threshold": 1},
              "envs": {"prod": {"reservoir": {"initialSize": 5}}}}"#,
    )
    .unwrap();
    assert_eq!(s.env_view("dev").reservoir, Some(Reservoir { initial_size: 2, threshold: 1 }));
    assert_eq!(s.env_view("prod").reservoir, Some(Reservoir { initial_size: 5, threshold: 0 }));
    assert_eq!(parse("{}").unwrap().env_view("dev").reservoir, None);

    let errs = parse("{\"reservoir\": {\"initialSize\": 2,\n \"threshold\": 3}}").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("`reservoir.threshold` is 3, outside 0–2"), "{}", errs[0]);
    assert_eq!(errs[0].location.as_ref().map(|l| l.line), Some(2));
    let errs = parse(r#"{"envs": {"prod": {"reservoir": {"initialSize": 5000, "threshold": -1}}}}"#).unwrap_err();
    let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "`envs.prod.reservoir.initialSize` is 5000, outside 0–1000",
            "`envs.prod.reservoir.threshold` is -1, outside 0–5000 (`initialSize`)"
        ]
    );
}

#[test]
fn every_refused_field_of_an_account_and_of_the_rest_is_reported() {
    let errs = parse(
        r#"{"defaultAcount": "l", "accounts": {"l": {"provider": "local", "logz": 1, "timeouts": {"healht": 1}}}, "rolout": {}}"#,
    )
    .unwrap_err();
    let messages: Vec<&str> = errs.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages[0].starts_with("account `l`: unknown field `logz`"), "{messages:#?}");
    assert!(messages[1].starts_with("account `l`: unknown field `healht`"), "{messages:#?}");
    assert!(messages[2].starts_with("unknown field `defaultAcount`"), "{messages:#?}");
    assert!(messages[3].starts_with("unknown field `rolout`"), "{messages:#?}");
}
