//! Wiring over HTTP (`docs/wiring.md`): telling a consumer instance the endpoints of a provider
//! with `setInvocationAddress(role, name, endpoints)`. This is the call every real provider makes
//! ([`crate::provider::Provider::wire`]); which consumer is told which list, and when, is the
//! executor's business (`apply::executor::wire`).
//!
//! - SOAP (and COORDEL): a SOAP 1.1 envelope POSTed to the consumer's `nativeUri`, in the
//!   namespace its `?wsdl` declares (else `http://services.choreos.org/`, the CHOReOS one);
//! - REST: `POST <nativeUri>/setInvocationAddress` with `{"role", "name", "endpoints"}`.
//!
//! A call is retried with backoff; a 2xx answer counts as done; anything else is a
//! [`WireError`] the caller reports as a failed step.
//!
//! Depends on the spec (the service type) and the repository settings (tries, backoff, timeout).

use std::time::Duration;

use crate::repo::settings::WiringSettings;
use crate::spec::ServiceType;

/// The namespace of `setInvocationAddress` when a SOAP consumer's WSDL does not say (the one the
/// CHOReOS services use).
pub const DEFAULT_NAMESPACE: &str = "http://services.choreos.org/";

/// One `setInvocationAddress` call: tell the consumer instance at `consumer` that its role
/// `role` is served by `provider` at `endpoints`.
#[derive(Debug, Clone)]
pub struct WireCall<'a> {
    /// How the consumer is spoken to: a SOAP envelope (SOAP, COORDEL) or a REST JSON body.
    pub service_type: ServiceType,
    /// The consumer instance's `nativeUri`.
    pub consumer: &'a str,
    /// The role of the dependency being wired (the consumer's `serviceSpecRole`).
    pub role: &'a str,
    /// The provider's service name (several, comma-separated, when providers of the role are
    /// told as one list).
    pub provider: &'a str,
    /// The whole list the consumer must hold for `role`: every endpoint (`nativeUri`) of it.
    pub endpoints: &'a [String],
    /// Tries, backoff and timeout of the call.
    pub retry: WiringSettings,
}

/// A `setInvocationAddress` call that failed on its every try: the consumer, the role and
/// provider it was about, the URL it went to and the last try's outcome. What to do: make the
/// consumer answer (is it up, does it implement `setInvocationAddress`, docs/wiring.md), then
/// apply again; the call is sent again whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The consumer answered the last try with a status other than 2xx.
    #[error("setInvocationAddress({role}, {provider}) failed after {tries} tries: HTTP {status} from {url}: {body}")]
    Refused {
        /// The consumer instance's `nativeUri`.
        consumer: String,
        /// The role of the call.
        role: String,
        /// The provider's service name.
        provider: String,
        /// Where the call went (the SOAP endpoint, or `<nativeUri>/setInvocationAddress`).
        url: String,
        /// How many tries were made.
        tries: u32,
        /// The HTTP status of the last answer.
        status: u16,
        /// The first 200 characters of the last answer's body.
        body: String,
    },
    /// The last try got no answer (refused connection, timeout, bad URL).
    #[error("setInvocationAddress({role}, {provider}) failed after {tries} tries: {url}: {reason}")]
    Unanswered {
        /// The consumer instance's `nativeUri`.
        consumer: String,
        /// The role of the call.
        role: String,
        /// The provider's service name.
        provider: String,
        /// Where the call went.
        url: String,
        /// How many tries were made.
        tries: u32,
        /// What the HTTP client said of the last try.
        reason: String,
    },
}

impl WireError {
    /// The consumer instance's `nativeUri` the failed call was for.
    pub fn consumer(&self) -> &str {
        match self {
            WireError::Refused { consumer, .. } | WireError::Unanswered { consumer, .. } => consumer,
        }
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
}

/// Escapes text for an XML element.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The SOAP 1.1 envelope of a `setInvocationAddress` call.
pub fn soap_envelope(namespace: &str, role: &str, provider: &str, endpoints: &[String]) -> String {
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:ns=\"{}\">\
         <soapenv:Body><ns:setInvocationAddress><arg0>{}</arg0><arg1>{}</arg1>",
        xml_escape(namespace),
        xml_escape(role),
        xml_escape(provider)
    );
    for endpoint in endpoints {
        body.push_str("<arg2>");
        body.push_str(&xml_escape(endpoint));
        body.push_str("</arg2>");
    }
    body.push_str("</ns:setInvocationAddress></soapenv:Body></soapenv:Envelope>");
    body
}

/// The REST body of a `setInvocationAddress` call.
pub fn rest_body(role: &str, provider: &str, endpoints: &[String]) -> String {
    serde_json::json!({ "role": role, "name": provider, "endpoints": endpoints }).to_string()
}

/// The `targetNamespace` a WSDL declares on its root element.
pub fn target_namespace(wsdl: &str) -> Option<String> {
    let root = wsdl.find("definitions")?;
    let rest = &wsdl[root..];
    let end = rest.find('>')?;
    let tag = &rest[..end];
    let at = tag.find("targetNamespace")?;
    let after = tag[at + "targetNamespace".len()..].trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].to_string())
}

/// Asks a SOAP consumer for its namespace; the CHOReOS default when it does not say.
fn namespace_of(agent: &ureq::Agent, consumer: &str) -> String {
    let wsdl = agent
        .get(&format!("{consumer}?wsdl"))
        .call()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|mut r| r.body_mut().read_to_string().ok());
    wsdl.as_deref().and_then(target_namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// How the last try of a call ended, when it did not succeed.
enum LastTry {
    Refused { status: u16, body: String },
    Unanswered(String),
}

/// Sends one call, retried with exponential backoff (`retry.tries` tries, the first pause
/// `retry.backoffMs` ms, each try at most `retry.timeoutMs` ms). Blocks the calling thread.
///
/// # Errors
/// Every try failed: [`WireError::Refused`] when the consumer answered the last one with a
/// status other than 2xx, [`WireError::Unanswered`] when it did not answer it.
pub fn send(call: &WireCall<'_>) -> Result<(), WireError> {
    let agent = agent(Duration::from_millis(call.retry.timeout_ms.max(1)));
    let tries = call.retry.tries.max(1);
    let (url, content_type, body) = match call.service_type {
        ServiceType::Rest => (
            format!("{}/setInvocationAddress", call.consumer.trim_end_matches('/')),
            "application/json",
            rest_body(call.role, call.provider, call.endpoints),
        ),
        ServiceType::Soap | ServiceType::Coordel => {
            let namespace = namespace_of(&agent, call.consumer);
            (
                call.consumer.to_string(),
                "text/xml; charset=utf-8",
                soap_envelope(&namespace, call.role, call.provider, call.endpoints),
            )
        }
    };
    let mut backoff = Duration::from_millis(call.retry.backoff_ms);
    let mut last = LastTry::Unanswered(String::new());
    for attempt in 1..=tries {
        let mut request = agent.post(&url).header("Content-Type", content_type);
        if call.service_type != ServiceType::Rest {
            request = request.header("SOAPAction", "\"\"");
        }
        match request.send(body.as_bytes()) {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(mut response) => {
                let text = response.body_mut().read_to_string().unwrap_or_default();
                last = LastTry::Refused {
                    status: response.status().as_u16(),
                    body: text.chars().take(200).collect::<String>(),
                };
            }
            Err(e) => last = LastTry::Unanswered(e.to_string()),
        }
        if attempt < tries {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
    let (consumer, role, provider) = (call.consumer.to_string(), call.role.to_string(), call.provider.to_string());
    Err(match last {
        LastTry::Refused { status, body } => WireError::Refused { consumer, role, provider, url, tries, status, body },
        LastTry::Unanswered(reason) => WireError::Unanswered { consumer, role, provider, url, tries, reason },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_escapes_every_value() {
        let e = soap_envelope("urn:x", "r<1>", "p&q", &["http://h:1/a?b=\"c\"".into(), "http://h:2/a".into()]);
        assert!(e.contains("<arg0>r&lt;1&gt;</arg0><arg1>p&amp;q</arg1>"), "{e}");
        assert!(e.contains("<arg2>http://h:1/a?b=&quot;c&quot;</arg2><arg2>http://h:2/a</arg2>"), "{e}");
        assert!(e.contains("xmlns:ns=\"urn:x\""));
    }

    #[test]
    fn the_namespace_comes_from_the_wsdl_root() {
        let wsdl = r#"<?xml version="1.0"?><wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" targetNamespace = 'http://airline.example/' name="x"><types/></wsdl:definitions>"#;
        assert_eq!(target_namespace(wsdl).as_deref(), Some("http://airline.example/"));
        assert_eq!(target_namespace("<definitions name=\"x\">"), None);
    }

    #[test]
    fn the_rest_body_is_the_documented_json() {
        let body: serde_json::Value =
            serde_json::from_str(&rest_body("airline", "airline", &["http://a/1".into()])).unwrap();
        assert_eq!(body, serde_json::json!({"role": "airline", "name": "airline", "endpoints": ["http://a/1"]}));
    }

    fn once() -> WiringSettings {
        WiringSettings { tries: 2, backoff_ms: 0, timeout_ms: 5_000 }
    }

    #[test]
    fn a_consumer_that_does_not_answer_is_an_unanswered_call_naming_it() {
        // A port nothing listens on: bound, then let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let consumer = format!("http://127.0.0.1:{port}/travel");
        let endpoints = ["http://127.0.0.1:1/airline".to_string()];
        let call = WireCall {
            service_type: ServiceType::Rest,
            consumer: &consumer,
            role: "airline",
            provider: "airline",
            endpoints: &endpoints,
            retry: once(),
        };
        let e = send(&call).unwrap_err();
        assert!(
            matches!(&e, WireError::Unanswered { tries: 2, url, .. } if url.ends_with("/travel/setInvocationAddress")),
            "{e:?}"
        );
        assert_eq!(e.consumer(), consumer);
        assert!(
            e.to_string().starts_with("setInvocationAddress(airline, airline) failed after 2 tries: http://127.0.0.1:"),
            "{e}"
        );
    }

    #[test]
    fn a_consumer_that_answers_an_error_status_is_a_refused_call_with_its_status() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom",
                );
            }
        });
        let consumer = format!("http://127.0.0.1:{port}/travel");
        let call = WireCall {
            service_type: ServiceType::Rest,
            consumer: &consumer,
            role: "airline",
            provider: "airline",
            endpoints: &[],
            retry: once(),
        };
        let e = send(&call).unwrap_err();
        server.join().unwrap();
        assert!(matches!(&e, WireError::Refused { status: 500, body, .. } if body == "boom"), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "setInvocationAddress(airline, airline) failed after 2 tries: HTTP 500 from {consumer}/setInvocationAddress: boom"
            )
        );
    }
}
