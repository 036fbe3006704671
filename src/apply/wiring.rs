//! Wiring (`docs/wiring.md`): telling a consumer instance the endpoints of a provider with
//! `setInvocationAddress(role, name, endpoints)`, over real HTTP.
//!
//! - SOAP (and COORDEL): a SOAP 1.1 envelope POSTed to the consumer's `nativeUri`, in the
//!   namespace its `?wsdl` declares (else `http://services.choreos.org/`);
//! - REST: `POST <nativeUri>/setInvocationAddress` with `{"role", "name", "endpoints"}`.
//!
//! A call is retried with backoff; a 2xx answer counts as done; anything else is an error the
//! caller reports as a failed step.

use std::time::Duration;

use crate::repo::settings::WiringSettings;
use crate::spec::ServiceType;

pub const DEFAULT_NAMESPACE: &str = "http://services.choreos.org/";

/// One `setInvocationAddress` call.
#[derive(Debug, Clone)]
pub struct WireCall<'a> {
    pub service_type: ServiceType,
    /// The consumer instance's `nativeUri`.
    pub consumer: &'a str,
    pub role: &'a str,
    /// The provider's service name.
    pub provider: &'a str,
    pub endpoints: &'a [String],
    /// Tries, backoff and timeout of the call.
    pub retry: WiringSettings,
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

/// Sends one call, retried with exponential backoff.
pub fn send(call: &WireCall<'_>) -> Result<(), String> {
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
    let mut last = String::new();
    for attempt in 1..=tries {
        let mut request = agent.post(&url).header("Content-Type", content_type);
        if call.service_type != ServiceType::Rest {
            request = request.header("SOAPAction", "\"\"");
        }
        match request.send(body.as_bytes()) {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(mut response) => {
                let text = response.body_mut().read_to_string().unwrap_or_default();
                last = format!(
                    "HTTP {} from {url}: {}",
                    response.status().as_u16(),
                    text.chars().take(200).collect::<String>()
                );
            }
            Err(e) => last = format!("{url}: {e}"),
        }
        if attempt < tries {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
    Err(format!("setInvocationAddress({}, {}) failed after {tries} tries: {last}", call.role, call.provider))
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
}
