//! Readiness: a new instance is told to consumers only once it can serve. The provider's health
//! check says its port accepts connections; a `readiness` setting adds an HTTP check (a 2xx
//! answer to `GET <path>` on the instance's address and port) and a time it must keep passing
//! (`minReadyMs`), like a Kubernetes readiness probe with `minReadySeconds`.
//!
//! Depends on `repo` (the `readiness` setting) only.

use std::time::{Duration, Instant};

use crate::repo::settings::Readiness;

/// Why an instance is not ready. The executor names the instance ("instance web-2: …").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadinessError {
    /// The instance's process is gone: waiting longer is pointless. See its log.
    #[error("{instance} exited before it was ready")]
    Exited {
        /// The instance id.
        instance: String,
    },
    /// The readiness URL answered, but not 2xx.
    #[error("GET {url} answered HTTP {status}")]
    Status {
        /// The URL checked.
        url: String,
        /// The HTTP status it answered.
        status: u16,
    },
    /// The readiness URL did not answer (refused, timed out).
    #[error("GET {url}: {reason}")]
    NoAnswer {
        /// The URL checked.
        url: String,
        /// The HTTP client's error.
        reason: String,
    },
    /// The timeout passed before the check kept passing for `minReadyMs`: raise the service's
    /// `timeouts.healthMs` (or `--health-timeout`), or fix what keeps it from being ready.
    #[error("not ready within {timeout_ms} ms{}", last.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Timeout {
        /// The time it was given, in milliseconds.
        timeout_ms: u128,
        /// The last check's failure, if the last check failed.
        last: Option<Box<ReadinessError>>,
    },
}

/// The first wait between two checks; it grows by half each time up to [`INTERVAL`], so an
/// instance that is ready soon is seen at once.
const FIRST_INTERVAL: Duration = Duration::from_millis(5);
/// The longest wait between two checks.
const INTERVAL: Duration = Duration::from_millis(50);
/// How often `still_up` is asked (on ssh nodes it is a remote command).
const ALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// The time one HTTP check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The URL a readiness `path` names on `address:port`; `{endpoint}` becomes `endpoint`.
pub fn readiness_url(address: &str, port: u16, path: &str, endpoint: &str) -> String {
    let host = if address.contains(':') { format!("[{address}]") } else { address.to_string() };
    let path = path.replace("{endpoint}", endpoint);
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!("http://{host}:{port}{slash}{path}")
}

/// Whether `url` answers 2xx now.
fn answers_ok(agent: &ureq::Agent, url: &str) -> Result<(), ReadinessError> {
    match agent.get(url).call() {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(ReadinessError::Status { url: url.to_string(), status: response.status().as_u16() }),
        Err(e) => Err(ReadinessError::NoAnswer { url: url.to_string(), reason: e.to_string() }),
    }
}

/// Waits until the instance passes `check` (an HTTP check of `url` when given, else `still_up`
/// alone) without a break for `readiness.min_ready_ms`, within `timeout`.
///
/// # Errors
/// [`ReadinessError::Timeout`] (with the last failure) when `timeout` passes first, or at once
/// the error of `still_up` when it says the instance is gone.
pub fn wait_ready(
    url: Option<&str>,
    readiness: &Readiness,
    timeout: Duration,
    still_up: &dyn Fn() -> Result<(), ReadinessError>,
) -> Result<(), ReadinessError> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(CHECK_TIMEOUT)).http_status_as_error(false).build().into();
    let min_ready = Duration::from_millis(readiness.min_ready_ms);
    let deadline = Instant::now() + timeout;
    let mut ready_since: Option<Instant> = None;
    let mut asked: Option<Instant> = None;
    let mut pause = FIRST_INTERVAL;
    loop {
        if asked.is_none_or(|at| at.elapsed() >= ALIVE_INTERVAL) {
            still_up()?;
            asked = Some(Instant::now());
        }
        let result = url.map_or(Ok(()), |url| answers_ok(&agent, url));
        match result {
            Ok(()) => {
                let since = *ready_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= min_ready {
                    return Ok(());
                }
            }
            Err(e) => {
                ready_since = None;
                if Instant::now() >= deadline {
                    return Err(ReadinessError::Timeout { timeout_ms: timeout.as_millis(), last: Some(Box::new(e)) });
                }
            }
        }
        if Instant::now() >= deadline && ready_since.is_none() {
            return Err(ReadinessError::Timeout { timeout_ms: timeout.as_millis(), last: None });
        }
        std::thread::sleep(pause);
        pause = (pause * 3 / 2).min(INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_fills_in_the_endpoint_and_brackets_ipv6() {
        assert_eq!(readiness_url("127.0.0.2", 8080, "/{endpoint}/health", "air"), "http://127.0.0.2:8080/air/health");
        assert_eq!(readiness_url("::1", 80, "ready", "x"), "http://[::1]:80/ready");
    }

    #[test]
    fn an_instance_that_goes_away_fails_at_once() {
        let asked = std::cell::Cell::new(0);
        let gone = || {
            asked.set(asked.get() + 1);
            Err(ReadinessError::Exited { instance: "web-1".into() })
        };
        let err = wait_ready(None, &Readiness::default(), Duration::from_secs(30), &gone).unwrap_err();
        assert!(matches!(&err, ReadinessError::Exited { instance } if instance == "web-1"), "{err}");
        assert_eq!(err.to_string(), "web-1 exited before it was ready");
        assert_eq!(asked.get(), 1, "the first answer that it is gone ends the wait");
    }

    #[test]
    fn a_port_that_never_answers_times_out_naming_the_url() {
        // A closed port on loopback: connection refused at once.
        let url = readiness_url("127.0.0.1", 9, "/ready", "x");
        let up = || Ok(());
        let err = wait_ready(Some(&url), &Readiness::default(), Duration::from_millis(200), &up).unwrap_err();
        assert!(matches!(&err, ReadinessError::Timeout { timeout_ms: 200, last: Some(_) }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("not ready within 200 ms") && text.contains("127.0.0.1:9/ready"), "{text}");
    }

    #[test]
    fn min_ready_waits_that_long_after_the_first_pass() {
        let started = Instant::now();
        let up = || Ok(());
        let readiness = Readiness { path: None, min_ready_ms: 300 };
        wait_ready(None, &readiness, Duration::from_secs(5), &up).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
