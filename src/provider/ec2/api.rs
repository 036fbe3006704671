//! The EC2 API as enact uses it: three calls (`RunInstances`, `DescribeInstances`,
//! `TerminateInstances`) behind the small [`Ec2Api`] trait, and [`AwsEc2`], its implementation
//! with `aws-sdk-ec2`.
//!
//! Every request of one [`AwsEc2`] first waits for the account's client-side rate limit (a token
//! bucket, `governor`), and an answer that says "later" — throttling
//! (`RequestLimitExceeded`, `Throttling`), no capacity (`InsufficientInstanceCapacity`), or a
//! server error — is retried with exponential backoff and full jitter (`backon`), each retry
//! reported through [`Notify`] so the progress output shows it. The SDK's own retries are off:
//! enact's are the only ones, and visible.
//!
//! Credentials come from the standard AWS chain (environment, profile files, web identity,
//! container and instance metadata); enact never reads, stores or prints them.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use backon::{ExponentialBuilder, Retryable};
use governor::{Quota, RateLimiter};

/// The longest wait between two retries of one request.
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The first wait before a retry; each next one doubles, up to [`MAX_BACKOFF`], with jitter.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// How an [`AwsEc2`] reaches its endpoint and how hard it may press it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiOptions {
    /// The AWS region, like `us-east-1`.
    pub region: String,
    /// Another EC2 endpoint (an emulator), AWS's own for the region when `None`.
    pub endpoint: Option<String>,
    /// The most requests per second this client sends (the client-side rate limit); a value
    /// below 1 means one request every `1 / value` seconds (0.5: one every 2 s).
    pub requests_per_second: f64,
    /// How many times a request that was answered "later" is tried again before it fails.
    pub retries: u32,
    /// Fixed credentials (access key id, secret) instead of the standard chain: for an
    /// emulator, which takes any. Never read from `enact.json`.
    pub fixed_credentials: Option<FixedCredentials>,
}

/// An access key for an emulator. Its `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct FixedCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for FixedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .finish()
    }
}

/// The instances one `RunInstances` call asks for: `count` of one type, tagged alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The AMI id (`ami-…`).
    pub image_id: String,
    /// The instance type, like `t3.micro`.
    pub instance_type: String,
    /// How many instances (`MinCount` = `MaxCount`: all or none).
    pub count: u32,
    /// The EC2 key pair the instances accept for SSH.
    pub key_name: Option<String>,
    /// The subnet they are made in (the account's default subnet when `None`).
    pub subnet_id: Option<String>,
    /// Their security groups (the subnet's default group when empty).
    pub security_group_ids: Vec<String>,
    /// Tags put on every instance at creation, key → value.
    pub tags: BTreeMap<String, String>,
    /// The idempotency token of the request (`ClientToken`, at most 64 ASCII characters):
    /// the same token sent again makes nothing new on AWS.
    pub client_token: String,
}

/// One EC2 instance as enact needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Instance {
    /// Its id (`i-…`).
    pub id: String,
    /// Its instance type.
    pub instance_type: String,
    /// Its state's name: `pending`, `running`, `shutting-down`, `terminated`, `stopping`,
    /// `stopped`.
    pub state: String,
    /// Its private IPv4 address, once it has one.
    pub private_ip: Option<String>,
    /// Its public IPv4 address, if it has one.
    pub public_ip: Option<String>,
    /// Its tags, key → value.
    pub tags: BTreeMap<String, String>,
    /// Its place among the instances of the `RunInstances` call that made it (`AmiLaunchIndex`,
    /// 0 to N − 1).
    pub launch_index: Option<u32>,
}

impl Ec2Instance {
    /// Whether the instance is on its way up or up (`pending` or `running`).
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

/// An EC2 request that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ec2Error {
    /// EC2 answered with an error code.
    #[error("EC2 {call} failed: {code}: {message}{}", retried_text(*retries))]
    Refused {
        /// The API call, like `RunInstances`.
        call: &'static str,
        /// The error code, like `InvalidAMIID.NotFound` or `UnauthorizedOperation`.
        code: String,
        /// EC2's message.
        message: String,
        /// How many times it was tried again before giving up.
        retries: u32,
    },
    /// The endpoint could not be reached or answered something that is not EC2.
    #[error("EC2 {call} at {endpoint} failed: {message}{}", retried_text(*retries))]
    Unreachable {
        /// The API call.
        call: &'static str,
        /// The endpoint (AWS's for the region when no `endpoint` is set).
        endpoint: String,
        /// What went wrong.
        message: String,
        /// How many times it was tried again before giving up.
        retries: u32,
    },
}

fn retried_text(retries: u32) -> String {
    match retries {
        0 => String::new(),
        1 => " (after 1 retry)".to_string(),
        n => format!(" (after {n} retries)"),
    }
}

impl Ec2Error {
    /// Whether EC2 asked to come back later (throttling, capacity, a server error): worth a
    /// retry after a wait.
    pub fn is_transient(&self) -> bool {
        match self {
            Ec2Error::Refused { code, .. } => is_transient_code(code),
            Ec2Error::Unreachable { message, .. } => message.contains("5xx") || message.contains("timed out"),
        }
    }

    fn with_retries(mut self, n: u32) -> Self {
        match &mut self {
            Ec2Error::Refused { retries, .. } | Ec2Error::Unreachable { retries, .. } => *retries = n,
        }
        self
    }
}

/// The error codes EC2 uses for "later": throttling, no capacity now, and its own failures.
/// Source: the EC2 API reference's error code list.
pub fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "InsufficientInstanceCapacity"
            | "InsufficientCapacity"
            | "InsufficientHostCapacity"
            | "InsufficientReservedInstanceCapacity"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
    )
}

/// Told of every retry: the call, the error that made it wait, and the wait.
pub type Notify = Arc<dyn Fn(&str, &Ec2Error, Duration) + Send + Sync>;

/// The three EC2 calls enact makes. [`AwsEc2`] makes them for real; tests of the provider's
/// logic may use a fake.
pub trait Ec2Api: Send + Sync {
    /// Makes `launch.count` instances in one `RunInstances` call and returns them as EC2
    /// answered (usually `pending`, with private addresses).
    ///
    /// # Errors
    /// [`Ec2Error`] when EC2 refuses (a bad AMI, no permission, capacity after every retry) or
    /// cannot be reached.
    fn run_instances(&self, launch: &Launch) -> Result<Vec<Ec2Instance>, Ec2Error>;

    /// The instances that carry every tag of `tags` (key → value), in any state except
    /// `terminated`, or the instances `ids` when `tags` is empty.
    ///
    /// # Errors
    /// [`Ec2Error`] as for [`Ec2Api::run_instances`].
    fn describe(&self, tags: &BTreeMap<String, String>, ids: &[String]) -> Result<Vec<Ec2Instance>, Ec2Error>;

    /// Terminates the instances `ids` in one `TerminateInstances` call (none: no call).
    ///
    /// # Errors
    /// [`Ec2Error`] as for [`Ec2Api::run_instances`].
    fn terminate(&self, ids: &[String]) -> Result<(), Ec2Error>;

    /// How many requests this client has sent, retries included.
    fn requests(&self) -> u64;
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
    governor::middleware::NoOpMiddleware,
>;

/// The EC2 API through `aws-sdk-ec2`, rate limited and retried (see the module docs). It owns a
/// small tokio runtime: its methods block the calling thread, and may be called from several
/// threads at once.
pub struct AwsEc2 {
    client: aws_sdk_ec2::Client,
    runtime: tokio::runtime::Runtime,
    limiter: Limiter,
    options: ApiOptions,
    notify: Option<Notify>,
    requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AwsEc2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEc2").field("options", &self.options).finish_non_exhaustive()
    }
}

/// The token bucket of a rate of `per_second` requests (below 1: one every `1 / per_second`
/// seconds), with a burst of one second's worth (at least 1).
fn quota(per_second: f64) -> Quota {
    let per_second = if per_second.is_finite() && per_second > 0.0 { per_second } else { 1.0 };
    if per_second >= 1.0 {
        let n = NonZeroU32::new(per_second.round().min(f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(n)
    } else {
        let period = Duration::from_secs_f64(1.0 / per_second);
        Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
    }
}

impl AwsEc2 {
    /// A client for `options`, with credentials from the standard AWS chain.
    ///
    /// # Errors
    /// [`Ec2Error::Unreachable`] when the runtime cannot be made (out of threads).
    pub fn new(options: ApiOptions, notify: Option<Notify>) -> Result<Self, Ec2Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("enact-ec2")
            .enable_all()
            .build()
            .map_err(|e| Ec2Error::Unreachable {
                call: "setup",
                endpoint: endpoint_text(&options),
                message: format!("cannot start the EC2 client's runtime: {e}"),
                retries: 0,
            })?;
        // rustls on ring: the crypto the SSH connections use too.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = runtime.block_on(async {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(http)
                .region(aws_config::Region::new(options.region.clone()))
                .retry_config(aws_config::retry::RetryConfig::disabled());
            if let Some(endpoint) = &options.endpoint {
                loader = loader.endpoint_url(endpoint.clone());
            }
            if let Some(fixed) = &options.fixed_credentials {
                loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    fixed.access_key_id.clone(),
                    fixed.secret_access_key.clone(),
                    None,
                    None,
                    "fixed",
                ));
            }
            loader.load().await
        });
        let client = aws_sdk_ec2::Client::new(&config);
        let limiter = RateLimiter::direct(quota(options.requests_per_second));
        Ok(AwsEc2 { client, runtime, limiter, options, notify, requests: Default::default() })
    }

    /// Runs `request` under the rate limit, retrying transient failures with backoff.
    fn call<T, F, Fut>(&self, call: &'static str, request: F) -> Result<T, Ec2Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Ec2Error>>,
    {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_BACKOFF)
            .with_max_delay(MAX_BACKOFF)
            .with_jitter()
            .with_max_times(self.options.retries as usize);
        let attempt = || async {
            self.limiter.until_ready().await;
            self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            request().await
        };
        let result = self.runtime.block_on(
            attempt.retry(backoff).sleep(tokio::time::sleep).when(Ec2Error::is_transient).notify(
                |error: &Ec2Error, wait: Duration| {
                    if let Some(notify) = &self.notify {
                        notify(call, error, wait);
                    }
                },
            ),
        );
        let retries = attempts.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(1);
        result.map_err(|e| e.with_retries(retries))
    }

    fn failure<E>(&self, call: &'static str, error: aws_sdk_ec2::error::SdkError<E>) -> Ec2Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        use aws_sdk_ec2::error::SdkError;
        match &error {
            SdkError::ServiceError(service) => {
                let err = service.err();
                Ec2Error::Refused {
                    call,
                    code: err.code().unwrap_or("Unknown").to_string(),
                    message: err.message().unwrap_or("no message").to_string(),
                    retries: 0,
                }
            }
            SdkError::ResponseError(response) => {
                let status = response.raw().status().as_u16();
                let code = error.code().map(str::to_string);
                match code {
                    Some(code) => Ec2Error::Refused {
                        call,
                        code,
                        message: error.message().unwrap_or("no message").to_string(),
                        retries: 0,
                    },
                    None => Ec2Error::Unreachable {
                        call,
                        endpoint: endpoint_text(&self.options),
                        message: format!(
                            "the answer (HTTP {status}{}) is not an EC2 answer",
                            if status >= 500 { ", 5xx" } else { "" }
                        ),
                        retries: 0,
                    },
                }
            }
            SdkError::TimeoutError(_) => Ec2Error::Unreachable {
                call,
                endpoint: endpoint_text(&self.options),
                message: "the request timed out".to_string(),
                retries: 0,
            },
            _ => {
                let chain = error_chain(&error);
                let message = if chain.contains("no credentials found") {
                    // The chain goes on with every provider tried, one per line.
                    format!(
                        "no AWS credentials were found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE for ~/.aws, or run where an instance or container role gives them): {}",
                        chain
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .trim_end_matches("Attempted:")
                            .trim_end_matches(['.', ' '])
                    )
                } else {
                    chain
                };
                Ec2Error::Unreachable { call, endpoint: endpoint_text(&self.options), message, retries: 0 }
            }
        }
    }
}

fn endpoint_text(options: &ApiOptions) -> String {
    options.endpoint.clone().unwrap_or_else(|| format!("ec2.{}.amazonaws.com", options.region))
}

/// An error and its causes on one line (the SDK's top-level message alone says "dispatch
/// failure").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn instance_of(instance: &aws_sdk_ec2::types::Instance) -> Ec2Instance {
    Ec2Instance {
        id: instance.instance_id().unwrap_or_default().to_string(),
        instance_type: instance.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        state: instance.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
        private_ip: instance.private_ip_address().map(str::to_string),
        public_ip: instance.public_ip_address().map(str::to_string),
        tags: instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect(),
        launch_index: instance.ami_launch_index().and_then(|i| u32::try_from(i).ok()),
    }
}

impl Ec2Api for AwsEc2 {
    fn run_instances(&self, launch: &Launch) -> Result<Vec<Ec2Instance>, Ec2Error> {
        let count = i32::try_from(launch.count).unwrap_or(i32::MAX);
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(launch.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
            .build();
        self.call("RunInstances", || {
            let request = self
                .client
                .run_instances()
                .image_id(&launch.image_id)
                .instance_type(InstanceType::from(launch.instance_type.as_str()))
                .min_count(count)
                .max_count(count)
                .client_token(&launch.client_token)
                .set_key_name(launch.key_name.clone())
                .set_subnet_id(launch.subnet_id.clone())
                .set_security_group_ids(
                    (!launch.security_group_ids.is_empty()).then(|| launch.security_group_ids.clone()),
                )
                .tag_specifications(tags.clone());
            async move {
                let output = request.send().await.map_err(|e| self.failure("RunInstances", e))?;
                Ok(output.instances().iter().map(instance_of).collect())
            }
        })
    }

    fn describe(&self, tags: &BTreeMap<String, String>, ids: &[String]) -> Result<Vec<Ec2Instance>, Ec2Error> {
        let mut filters: Vec<Filter> =
            tags.iter().map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build()).collect();
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(
                    ["pending", "running", "shutting-down", "stopping", "stopped"].map(String::from).to_vec(),
                ))
                .build(),
        );
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.call("DescribeInstances", || {
                let request = self
                    .client
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .set_instance_ids((tags.is_empty() && !ids.is_empty()).then(|| ids.to_vec()))
                    .set_next_token(next.clone());
                async move { request.send().await.map_err(|e| self.failure("DescribeInstances", e)) }
            })?;
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().map(instance_of));
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    fn terminate(&self, ids: &[String]) -> Result<(), Ec2Error> {
        if ids.is_empty() {
            return Ok(());
        }
        self.call("TerminateInstances", || {
            let request = self.client.terminate_instances().set_instance_ids(Some(ids.to_vec()));
            async move { request.send().await.map(|_| ()).map_err(|e| self.failure("TerminateInstances", e)) }
        })
    }

    fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_of_later_are_transient_and_others_are_not() {
        for code in ["RequestLimitExceeded", "InsufficientInstanceCapacity", "InternalError"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["InvalidAMIID.NotFound", "UnauthorizedOperation", "InvalidParameterValue"] {
            assert!(!is_transient_code(code), "{code}");
        }
    }

    #[test]
    fn a_rate_below_one_per_second_is_one_request_per_period() {
        assert_eq!(quota(0.5).replenish_interval(), Duration::from_secs(2));
        assert_eq!(quota(5.0).replenish_interval(), Duration::from_millis(200));
        assert_eq!(quota(0.0).replenish_interval(), Duration::from_secs(1));
        assert_eq!(quota(f64::NAN).replenish_interval(), Duration::from_secs(1));
    }

    #[test]
    fn a_failure_says_how_often_it_was_retried() {
        let e = Ec2Error::Refused {
            call: "RunInstances",
            code: "RequestLimitExceeded".into(),
            message: "slow down".into(),
            retries: 0,
        }
        .with_retries(3);
        assert_eq!(e.to_string(), "EC2 RunInstances failed: RequestLimitExceeded: slow down (after 3 retries)");
        assert!(e.is_transient());
    }
}
