//! Where an instance of a deployable service listens: its port and its `nativeUri`, both
//! functions of the service spec alone (and, for the URI, of the address of the node it runs
//! on). The plan records them, the providers start instances on them, the refresh looks at
//! them.
//!
//! Depends on nothing but the spec model.

use super::DeployableServiceSpec;

/// The port a `TOMCAT` package listens on when the spec gives none (docs/formats.md).
pub const TOMCAT_PORT: u16 = 8080;

/// The TCP port every instance of `spec` listens on: its `port`, else 8080 for a `TOMCAT`
/// package, else 0 (a spec without a port does not validate, so a valid one never gets 0). A
/// value outside 0–65535 counts as missing.
pub fn port_of(spec: &DeployableServiceSpec) -> u16 {
    spec.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(if spec.package_type() == "TOMCAT" {
        TOMCAT_PORT
    } else {
        0
    })
}

/// The `nativeUri` of an instance of `spec` on the node at `address` (a host name, or an IPv4 or
/// IPv6 address): `http://<address>:<port>/<endpointName>`, an IPv6 address in brackets.
pub fn native_uri(address: &str, spec: &DeployableServiceSpec) -> String {
    let (port, endpoint) = (port_of(spec), spec.endpoint_name());
    if address.contains(':') {
        format!("http://[{address}]:{port}/{endpoint}")
    } else {
        format!("http://{address}:{port}/{endpoint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_the_spec_s_else_tomcat_s_default() {
        let mut spec = DeployableServiceSpec { name: "a".into(), port: Some(9000), ..Default::default() };
        assert_eq!(port_of(&spec), 9000);
        spec.port = None;
        assert_eq!(port_of(&spec), 0);
        spec.package_type = Some("TOMCAT".into());
        assert_eq!(port_of(&spec), TOMCAT_PORT);
        spec.port = Some(70_000);
        assert_eq!(port_of(&spec), TOMCAT_PORT, "out of range counts as missing");
    }

    #[test]
    fn the_native_uri_brackets_an_ipv6_address() {
        let spec = DeployableServiceSpec {
            name: "airline".into(),
            endpoint_name: Some("air".into()),
            port: Some(8081),
            ..Default::default()
        };
        assert_eq!(native_uri("127.0.0.2", &spec), "http://127.0.0.2:8081/air");
        assert_eq!(native_uri("::1", &spec), "http://[::1]:8081/air");
    }
}
