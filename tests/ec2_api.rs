//! The EC2 client of the ec2 provider against a real EC2 API emulator (moto's server): one
//! `RunInstances` call for N instances, tags, lookups by tag, termination, throttling answered
//! with backoff, and a refusal reported without retries.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::moto::{Moto, ThrottlingProxy, available};
use enact::provider::ec2::api::{ApiOptions, AwsEc2, Ec2Api, Ec2Error, FixedCredentials, Launch};

fn options(endpoint: &str) -> ApiOptions {
    ApiOptions {
        region: "us-east-1".to_string(),
        endpoint: Some(endpoint.to_string()),
        requests_per_second: 50.0,
        retries: 5,
        fixed_credentials: Some(FixedCredentials {
            access_key_id: "testing".to_string(),
            secret_access_key: "testing".to_string(),
        }),
    }
}

fn launch(count: u32, lineage: &str, token: &str) -> Launch {
    Launch {
        image_id: "ami-1e749f67".to_string(),
        instance_type: "t3.micro".to_string(),
        count,
        key_name: None,
        subnet_id: None,
        security_group_ids: Vec::new(),
        tags: BTreeMap::from([
            ("enact:lineage".to_string(), lineage.to_string()),
            ("enact:env".to_string(), "dev".to_string()),
        ]),
        client_token: token.to_string(),
    }
}

#[test]
fn n_instances_cost_one_run_instances_call_and_carry_their_tags() {
    if !available() {
        return;
    }
    let moto = Moto::start();
    let api = AwsEc2::new(options(&moto.endpoint), None).expect("client");
    let made = api.run_instances(&launch(5, "lin-a", "tok-1")).expect("RunInstances");
    assert_eq!(made.len(), 5);
    assert!(made.iter().all(|i| i.id.starts_with("i-") && i.private_ip.is_some()), "{made:?}");
    assert_eq!(moto.reservations(), 1, "five instances, one call");
    let mut places: Vec<u32> = made.iter().filter_map(|i| i.launch_index).collect();
    places.sort_unstable();
    assert_eq!(places, [0, 1, 2, 3, 4], "each instance knows its place in the call");
    assert_eq!(api.requests(), 1);
    for (_, _, tags) in moto.instances() {
        assert!(tags.contains(&"enact:lineage=lin-a".to_string()), "{tags:?}");
        assert!(tags.contains(&"enact:env=dev".to_string()), "{tags:?}");
    }

    // Another lineage's instances are not found by this one's tags.
    api.run_instances(&launch(2, "lin-b", "tok-2")).expect("RunInstances");
    let mine =
        api.describe(&BTreeMap::from([("enact:lineage".to_string(), "lin-a".to_string())]), &[]).expect("describe");
    assert_eq!(mine.len(), 5);
    assert!(mine.iter().all(|i| i.is_live() && i.tags["enact:lineage"] == "lin-a"));

    let ids: Vec<String> = mine.iter().map(|i| i.id.clone()).collect();
    api.terminate(&ids).expect("TerminateInstances");
    let left =
        api.describe(&BTreeMap::from([("enact:lineage".to_string(), "lin-a".to_string())]), &[]).expect("describe");
    assert!(left.iter().all(|i| !i.is_live()), "{left:?}");
    let running: Vec<_> = moto.instances().into_iter().filter(|(_, state, _)| state == "running").collect();
    assert_eq!(running.len(), 2, "only the other lineage's two still run: {running:?}");
}

#[test]
fn throttling_is_answered_with_backoff_and_each_retry_is_told() {
    if !available() {
        return;
    }
    let moto = Moto::start();
    let proxy = ThrottlingProxy::start(&moto, 3);
    let told: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
    let sink = Arc::clone(&told);
    let notify = Arc::new(move |call: &str, error: &Ec2Error, wait: Duration| {
        sink.lock().expect("lock").push((format!("{call}: {error}"), wait));
    });
    let api = AwsEc2::new(options(&proxy.endpoint), Some(notify)).expect("client");
    let made = api.run_instances(&launch(2, "lin-t", "tok-t")).expect("RunInstances after three throttled answers");
    assert_eq!(made.len(), 2);
    let told = told.lock().expect("lock").clone();
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(told.iter().all(|(text, _)| text.contains("RequestLimitExceeded")), "{told:?}");
    assert_eq!(proxy.seen(), 4);
    assert_eq!(api.requests(), 4);
    assert_eq!(moto.reservations(), 1, "the throttled attempts made nothing");
}

#[test]
fn throttling_past_the_retries_fails_naming_the_call_and_the_count() {
    if !available() {
        return;
    }
    let moto = Moto::start();
    let proxy = ThrottlingProxy::start(&moto, 100);
    let mut options = options(&proxy.endpoint);
    options.retries = 2;
    let api = AwsEc2::new(options, None).expect("client");
    let error = api.terminate(&["i-0123456789abcdef0".to_string()]).expect_err("throttled for good");
    assert!(
        matches!(&error, Ec2Error::Refused { call: "TerminateInstances", code, retries: 2, .. } if code == "RequestLimitExceeded"),
        "{error:?}"
    );
    assert_eq!(proxy.seen(), 3);
}

#[test]
fn a_refusal_is_not_retried() {
    if !available() {
        return;
    }
    let moto = Moto::start();
    let api = AwsEc2::new(options(&moto.endpoint), None).expect("client");
    let error = api.terminate(&["i-does-not-exist".to_string()]).expect_err("unknown instance");
    assert!(matches!(&error, Ec2Error::Refused { retries: 0, .. }), "{error:?}");
    assert!(!error.is_transient());
    assert_eq!(api.requests(), 1);
}

#[test]
fn an_endpoint_that_does_not_answer_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut options = options(&format!("http://127.0.0.1:{port}"));
    options.retries = 0;
    let api = AwsEc2::new(options, None).expect("client");
    let error = api.describe(&BTreeMap::new(), &[]).expect_err("nothing listens");
    assert!(matches!(&error, Ec2Error::Unreachable { call: "DescribeInstances", .. }), "{error:?}");
    assert!(error.to_string().contains(&format!("127.0.0.1:{port}")), "{error}");
}
