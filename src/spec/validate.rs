//! Validation of an effective choreography, before anything runs. Every problem is collected and
//! each names its service and, through the caller's locator, the file, line and column.

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use super::model::{Choreography, Service};
use crate::diagnostic::{Diagnostic, Location, Segment};
use crate::repo::settings::Settings;

/// Finds where a field of a service was written: `(service, occurrence, path inside the
/// service)`; occurrence 1 is the second service of that name (for duplicates), else 0.
pub type Locate<'a> = &'a dyn Fn(&str, usize, &[Segment]) -> Option<Location>;

/// Names end up in file names, tags and remote commands: `[A-Za-z0-9][A-Za-z0-9._-]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.len() <= 128
}

const NAME_HINT: &str = "names are letters, digits, `.`, `_` and `-`, starting with a letter or digit (at most 128)";

/// An `http://` or `https://` URL with a host, an optional numeric port and no whitespace.
/// Why a URL with user-info (`user:password@host`) is refused, as [`check_http_uri`] says it.
pub const CREDENTIALS_IN_URI: &str = "it holds credentials (`user:password@` before the host), which would be committed with the spec, recorded in the state and shown in every plan";

/// Where package credentials come from instead of the URI.
pub const CREDENTIALS_HINT: &str = "remove them from the URI (and change the password if the file was committed); enact downloads \
     http:// packages with the credentials `~/.netrc` (or the file `NETRC` names) gives for the host (`machine HOST login USER password PASSWORD`), \
     read on the machine that downloads: enact's own for local accounts, the host's for ssh accounts (curl and wget read it)";

/// `uri` with the user-info of its authority replaced by `***` (`http://***@host/p`), so a
/// password never reaches an output; any other text unchanged.
pub fn redact_uri(uri: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = uri.split_once("://") else { return uri.into() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]).into(),
        None => uri.into(),
    }
}

/// An http(s) URL with a host, an optional port in 1–65535, and no user-info.
///
/// # Errors
/// Why it is not one, as a clause (`it has no host`); [`CREDENTIALS_IN_URI`] for user-info.
pub fn check_http_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or("it is not an http:// or https:// URL")?;
    if uri.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '`' | '\\')) {
        return Err("it contains whitespace or a character URLs do not allow".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(CREDENTIALS_IN_URI.into());
    }
    let host_port = authority;
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("an IPv6 host lacks its `]`")?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("it has no host".into());
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '%')) {
        return Err(format!("its host `{host}` is not a host name or address"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("its port `{port}` is not a number in 1–65535"));
    }
    Ok(())
}

/// A package URI: a relative or absolute path, a `file://` URI or an `http(s)://` URL.
pub fn check_package_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("it is empty".into());
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return check_http_uri(uri);
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if uri.contains("://") && !uri.starts_with("file://") {
        return Err("only paths, file:// and http(s):// URIs are supported".into());
    }
    if path.is_empty() {
        return Err("it names no file".into());
    }
    if path.chars().any(char::is_control) {
        return Err("it contains a control character".into());
    }
    Ok(())
}

/// Checks the rules of `docs/formats.md` (the spec) on an effective choreography.
pub fn validate(chor: &Choreography, settings: &Settings, locate: Locate<'_>) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let err = |service: &str, path: &[Segment], message: String| {
        Diagnostic::new(message).service(service).at(locate(service, 0, path))
    };
    let key = |k: &str| vec![Segment::Key(k.to_string())];

    // Names: valid and unique across both lists.
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(chor.len());
    for service in chor.services() {
        let name = service.name();
        if !is_valid_name(name) {
            errors.push(
                Diagnostic::new(format!("service name `{}` is not valid", name.escape_debug()))
                    .at(locate(name, 0, &key("name")))
                    .hint(NAME_HINT),
            );
        }
        let count = seen.entry(name).or_insert(0);
        *count += 1;
        if *count > 1 {
            errors.push(
                Diagnostic::new("the name is used by another service too")
                    .service(name)
                    .at(locate(name, *count - 1, &key("name")))
                    .hint("service names are identities and must be unique across deployable and legacy services"),
            );
        }
    }

    // Roles each service declares, for dependency checks (of every service of a name, so a
    // duplicate name is reported once and not again as a missing role).
    let mut roles: HashSet<(&str, &str)> = HashSet::with_capacity(chor.len());
    for s in chor.services() {
        roles.extend(s.roles().iter().map(|role| (s.name(), role.as_str())));
    }

    for service in chor.services() {
        let name = service.name();
        for (i, role) in service.roles().iter().enumerate() {
            if !is_valid_name(role) {
                errors.push(
                    err(
                        name,
                        &[Segment::Key("roles".into()), Segment::Index(i)],
                        format!("role `{}` is not a valid name", role.escape_debug()),
                    )
                    .hint(NAME_HINT),
                );
            }
        }
        for (i, dep) in service.dependencies().iter().enumerate() {
            let provider = dep.service_spec_name.as_str();
            if roles.contains(&(provider, dep.service_spec_role.as_str())) {
                continue;
            }
            let at = [Segment::Key("dependencies".into()), Segment::Index(i)];
            if !seen.contains_key(provider) {
                let mut at = at.to_vec();
                at.push(Segment::Key("serviceSpecName".into()));
                errors.push(
                    err(
                        name,
                        &at,
                        format!("depends on service `{}`, which does not exist", dep.service_spec_name.escape_debug()),
                    )
                    .hint(crate::suggest::hint(
                        provider,
                        seen.keys().copied(),
                        "add that service, or fix `serviceSpecName`",
                    )),
                );
            } else {
                let mut listed: Vec<&str> = chor
                    .services()
                    .filter(|s| s.name() == provider)
                    .flat_map(|s| s.roles().iter().map(String::as_str))
                    .collect();
                listed.sort_unstable();
                listed.dedup();
                let mut at = at.to_vec();
                at.push(Segment::Key("serviceSpecRole".into()));
                errors.push(
                    err(
                        name,
                        &at,
                        format!(
                            "depends on `{}` in role `{}`, but `{}` declares roles [{}]",
                            dep.service_spec_name,
                            dep.service_spec_role.escape_debug(),
                            dep.service_spec_name,
                            listed.join(", ")
                        ),
                    )
                    .hint(crate::suggest::hint(
                        &dep.service_spec_role,
                        listed.iter().copied(),
                        "add the role to the provider's `roles`, or fix `serviceSpecRole`",
                    )),
                );
            }
        }
        match service {
            Service::Deployable(s) => {
                if let Some(n) = s.number_of_instances
                    && n < 0
                {
                    errors.push(err(
                        name,
                        &key("numberOfInstances"),
                        format!("`numberOfInstances` is {n}; it must be 0 or more"),
                    ));
                }
                if let Some(n) = s.number_of_instances
                    && n > 10_000
                {
                    errors.push(err(
                        name,
                        &key("numberOfInstances"),
                        format!("`numberOfInstances` is {n}; at most 10000 instances per service"),
                    ));
                }
                match s.port {
                    Some(p) if !(1..=65535).contains(&p) => {
                        errors.push(err(name, &key("port"), format!("`port` {p} is outside 1–65535")));
                    }
                    None if s.package_type() != "TOMCAT" => errors.push(err(name, &[], "has no `port`".into()).hint(
                        "every deployable service needs the `port` its instances listen on (TOMCAT defaults to 8080)",
                    )),
                    _ => {}
                }
                match &s.package_uri {
                    None => errors.push(
                        err(name, &[], "has no `packageUri`".into())
                            .hint("give a path relative to the config repository, a file:// or an http(s):// URI"),
                    ),
                    Some(uri) => {
                        if let Err(why) = check_package_uri(uri) {
                            errors.push(
                                err(
                                    name,
                                    &key("packageUri"),
                                    format!("`packageUri` `{}` is not valid: {why}", redact_uri(uri).escape_debug()),
                                )
                                .hint(if why == CREDENTIALS_IN_URI {
                                    CREDENTIALS_HINT
                                } else if uri.is_empty() {
                                    "fill in the package (a template leaves it empty): a path relative to the config repository, a file:// or an http(s):// URI"
                                } else {
                                    "give a path relative to the config repository, a file:// or an http(s):// URI"
                                }),
                            );
                        }
                    }
                }
                if !settings.knows_package_type(s.package_type()) {
                    let mut known: Vec<&str> = crate::spec::model::BUILTIN_PACKAGE_TYPES.to_vec();
                    known.extend(settings.package_types.keys().map(String::as_str));
                    errors.push(
                        err(
                            name,
                            &key("packageType"),
                            format!("unknown `packageType` `{}`", s.package_type().escape_debug()),
                        )
                        .hint(crate::suggest::hint(
                            s.package_type(),
                            known.iter().copied(),
                            &format!(
                                "use one of {}, or define it under `packageTypes` in enact.json",
                                known.join(", ")
                            ),
                        )),
                    );
                }
                if let Some(endpoint) = &s.endpoint_name
                    && !is_valid_name(endpoint)
                {
                    errors.push(
                        err(
                            name,
                            &key("endpointName"),
                            format!("`endpointName` `{}` is not valid", endpoint.escape_debug()),
                        )
                        .hint(NAME_HINT),
                    );
                }
                if let Some(version) = &s.version
                    && !is_valid_name(version)
                {
                    errors.push(
                        err(name, &key("version"), format!("`version` `{}` is not valid", version.escape_debug()))
                            .hint("versions are letters, digits, `.`, `_` and `-`, like `1.2.0`"),
                    );
                }
                if let Some(account) = &s.cloud_account
                    && settings.account(account).is_none()
                {
                    let mut known: Vec<&str> = settings.accounts.keys().map(String::as_str).collect();
                    if !known.contains(&crate::repo::settings::LOCAL_ACCOUNT) {
                        known.push(crate::repo::settings::LOCAL_ACCOUNT);
                    }
                    errors.push(
                        err(name, &key("cloudAccount"), format!("`cloudAccount` `{}` is not defined in enact.json", account.escape_debug()))
                            .hint(crate::suggest::hint(
                                account,
                                known,
                                "define it under `accounts` in enact.json, or remove `cloudAccount` to use the default account",
                            )),
                    );
                }
                if let Some(qos) = s.desired_qos.as_ref().and_then(|q| q.response_time_metric.as_ref())
                    && qos.max_desired_response_time.is_some_and(|t| t < 0.0)
                {
                    errors.push(err(
                        name,
                        &["desiredQoS", "responseTimeMetric", "maxDesiredResponseTime"].map(|k| Segment::Key(k.into())),
                        "`maxDesiredResponseTime` must be 0 or more".into(),
                    ));
                }
                if let Some(qos) = s.desired_qos.as_ref().and_then(|q| q.response_time_metric.as_ref())
                    && qos.acceptable_percentage.is_some_and(|p| !(0.0..=100.0).contains(&p))
                {
                    errors.push(err(
                        name,
                        &["desiredQoS", "responseTimeMetric", "acceptablePercentage"].map(|k| Segment::Key(k.into())),
                        "`acceptablePercentage` must be within 0–100".into(),
                    ));
                }
            }
            Service::Legacy(s) => {
                if s.native_uris.is_empty() {
                    errors.push(
                        err(name, &[], "legacy service has no `nativeURIs`".into())
                            .hint("list the URLs where the running service answers"),
                    );
                }
                for (i, uri) in s.native_uris.iter().enumerate() {
                    if let Err(why) = check_http_uri(uri) {
                        errors.push(
                            err(
                                name,
                                &[Segment::Key("nativeURIs".into()), Segment::Index(i)],
                                format!("`nativeURIs` `{}` is not a valid URI: {why}", redact_uri(uri).escape_debug()),
                            )
                            .hint(if why == CREDENTIALS_IN_URI {
                                "a legacy service's URLs are sent to its consumers and recorded as they are: remove the credentials and give them to the consumers another way"
                            } else if uri.is_empty() {
                                "fill in the URL where the running service answers (a template leaves it empty)"
                            } else {
                                "list the http(s):// URLs where the running service answers"
                            }),
                        );
                    }
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["a", "airline", "A.b_c-1", "9lives"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a;rm", "a$(x)", "a/b", "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn uris_are_checked() {
        assert!(check_http_uri("http://10.0.0.5:8192/weather").is_ok());
        assert!(check_http_uri("https://[::1]:8080/x").is_ok());
        assert!(check_http_uri("ftp://x").is_err());
        assert!(check_http_uri("http://:80/").is_err());
        assert!(check_http_uri("http://host:99999/").is_err());
        assert!(check_http_uri("http://a b/").is_err());
        assert!(check_package_uri("services/airline.py").is_ok());
        assert!(check_package_uri("file:///opt/a.jar").is_ok());
        assert!(check_package_uri("s3://bucket/a.jar").is_err());
    }

    #[test]
    fn every_problem_is_collected() {
        let chor: Choreography = serde_json::from_str(
            r#"{"deployableServiceSpecs": [
                {"name": "a", "roles": ["a"], "port": 0, "packageUri": "a.py", "numberOfInstances": -1,
                 "dependencies": [{"serviceSpecName": "ghost", "serviceSpecRole": "x"},
                                  {"serviceSpecName": "b", "serviceSpecRole": "nope"}]},
                {"name": "b", "roles": ["b"], "port": 80, "packageUri": "b.py", "packageType": "PERL"},
                {"name": "b", "port": 81, "packageUri": "b.py"}
            ], "legacyServiceSpecs": [{"name": "w", "nativeURIs": ["not a uri"]}]}"#,
        )
        .unwrap();
        let errors = validate(&chor, &Settings::default(), &|_, _, _| None);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 7, "{text:#?}");
    }
}
