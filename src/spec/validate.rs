//! Validation of an effective choreography, before anything runs. Every problem is collected and
//! each names its service and, through the caller's locator, the file, line and column.
//!
//! The rules are those of `docs/formats.md` §2. What the spec names outside itself (accounts and
//! package types of `enact.json`) is asked of a [`Catalog`], so this module depends on the spec
//! model, the diagnostics and the suggestions only (never on the repository or the state).

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use super::model::{BUILTIN_PACKAGE_TYPES, Choreography, DeployableServiceSpec, LegacyServiceSpec, Service};
use crate::diagnostic::{Diagnostic, Location, Segment};

/// Finds where a field of a service was written: `(service, occurrence, path inside the
/// service)`; occurrence 1 is the second service of that name (for duplicates), else 0.
pub type Locate<'a> = &'a dyn Fn(&str, usize, &[Segment]) -> Option<Location>;

/// What a spec may name that is defined outside it, in `enact.json`: accounts (`cloudAccount`)
/// and package types (`packageType`). The repository's settings are one; [`AnyCatalog`] takes
/// every name (for a spec checked before any `enact.json` exists, such as an imported one).
pub trait Catalog {
    /// Whether `name` is an account, the built-in `local` one included.
    fn has_account(&self, name: &str) -> bool;
    /// Every account name, for a "did you mean" and the list of known ones: the defined ones in
    /// their order, then `local` when it is not among them.
    fn account_names(&self) -> Vec<&str>;
    /// Whether `name` is a package type: a built-in one ([`BUILTIN_PACKAGE_TYPES`]) or one
    /// defined under `packageTypes`.
    fn has_package_type(&self, name: &str) -> bool;
    /// The package types defined under `packageTypes`, in their order (the built-in ones left
    /// out).
    fn defined_package_types(&self) -> Vec<&str>;
}

/// A [`Catalog`] that knows every account and every package type.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyCatalog;

impl Catalog for AnyCatalog {
    fn has_account(&self, _: &str) -> bool {
        true
    }

    fn account_names(&self) -> Vec<&str> {
        Vec::new()
    }

    fn has_package_type(&self, _: &str) -> bool {
        true
    }

    fn defined_package_types(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// Names end up in file names, tags and remote commands: `[A-Za-z0-9][A-Za-z0-9._-]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.len() <= 128
}

const NAME_HINT: &str = "names are letters, digits, `.`, `_` and `-`, starting with a letter or digit (at most 128)";

/// Why a URL with user-info (`user:password@host`) is refused, as [`check_http_uri`] says it.
pub const CREDENTIALS_IN_URI: &str = "it holds credentials (`user:password@` before the host), which would be committed with the spec, recorded in the state and shown in every plan";

/// Where package credentials come from instead of the URI.
pub const CREDENTIALS_HINT: &str = "remove them from the URI (and change the password if the file was committed); enact downloads \
     http:// packages with the credentials `~/.netrc` (or the file `NETRC` names) gives for the host (`machine HOST login USER password PASSWORD`), \
     read on the machine that downloads: enact's own for local accounts, the host's for ssh accounts (curl and wget read it)";

/// Why a URI is refused by [`check_http_uri`] or [`check_package_uri`]. Each message is a clause
/// that follows "`packageUri` `…` is not valid: " (or the like) in a diagnostic, which names the
/// URI, the service and the file; the host or port at fault is carried here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The scheme is neither `http://` nor `https://`.
    #[error("it is not an http:// or https:// URL")]
    NotHttp,
    /// Whitespace, a control character or one of `"<>`\` somewhere in the URL.
    #[error("it contains whitespace or a character URLs do not allow")]
    BadCharacter,
    /// User-info (`user:password@`) before the host: see [`CREDENTIALS_IN_URI`] and
    /// [`CREDENTIALS_HINT`] for what to do.
    #[error("{}", CREDENTIALS_IN_URI)]
    Credentials,
    /// An IPv6 host opened with `[` and never closed.
    #[error("an IPv6 host lacks its `]`")]
    UnclosedIpv6,
    /// Nothing between the scheme and the port or path.
    #[error("it has no host")]
    NoHost,
    /// The host holds a character no host name or address has.
    #[error("its host `{host}` is not a host name or address")]
    BadHost {
        /// The host as written.
        host: String,
    },
    /// The port is not a number in 1–65535.
    #[error("its port `{port}` is not a number in 1–65535")]
    BadPort {
        /// The port as written.
        port: String,
    },
    /// An empty package URI (a template leaves it empty).
    #[error("it is empty")]
    Empty,
    /// A scheme other than `file://` and `http(s)://` (`s3://`, `ftp://`, …).
    #[error("only paths, file:// and http(s):// URIs are supported")]
    UnsupportedScheme,
    /// `file://` and nothing after it.
    #[error("it names no file")]
    NoFile,
    /// A control character in a path.
    #[error("it contains a control character")]
    ControlCharacter,
}

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

/// Checks that `uri` is an `http://` or `https://` URL with a host, an optional port in
/// 1–65535, no user-info and no whitespace (`docs/formats.md`, `nativeURIs`).
///
/// # Errors
/// The [`UriError`] that says why it is not one (`it has no host`); [`UriError::Credentials`]
/// for user-info.
pub fn check_http_uri(uri: &str) -> Result<(), UriError> {
    let rest = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")).ok_or(UriError::NotHttp)?;
    if uri.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '`' | '\\')) {
        return Err(UriError::BadCharacter);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(UriError::Credentials);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UriError::UnclosedIpv6)?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::NoHost);
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '%')) {
        return Err(UriError::BadHost { host: host.to_string() });
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(UriError::BadPort { port: port.to_string() });
    }
    Ok(())
}

/// Checks a package URI: a relative or absolute path, a `file://` URI or an `http(s)://` URL
/// (as [`check_http_uri`] checks it).
///
/// # Errors
/// The [`UriError`] that says why it is none of these.
pub fn check_package_uri(uri: &str) -> Result<(), UriError> {
    if uri.is_empty() {
        return Err(UriError::Empty);
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return check_http_uri(uri);
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if uri.contains("://") && !uri.starts_with("file://") {
        return Err(UriError::UnsupportedScheme);
    }
    if path.is_empty() {
        return Err(UriError::NoFile);
    }
    if path.chars().any(char::is_control) {
        return Err(UriError::ControlCharacter);
    }
    Ok(())
}

/// Checks the rules of `docs/formats.md` (the spec) on an effective choreography: names, roles
/// and dependencies, then each service's own fields. `catalog` says which accounts and package
/// types exist; `locate` where each field was written.
///
/// Every problem found, in a fixed order (names first, then service by service); empty when the
/// choreography is valid.
pub fn validate(chor: &Choreography, catalog: &dyn Catalog, locate: Locate<'_>) -> Vec<Diagnostic> {
    let mut checks = Checks { locate, catalog, errors: Vec::new() };
    let seen = checks.names(chor);
    // Roles each service declares, for dependency checks (of every service of a name, so a
    // duplicate name is reported once and not again as a missing role).
    let mut roles: HashSet<(&str, &str)> = HashSet::with_capacity(chor.len());
    for s in chor.services() {
        roles.extend(s.roles().iter().map(|role| (s.name(), role.as_str())));
    }
    for service in chor.services() {
        checks.roles(service);
        checks.dependencies(chor, service, &seen, &roles);
        match service {
            Service::Deployable(s) => checks.deployable(s),
            Service::Legacy(s) => checks.legacy(s),
        }
    }
    checks.errors
}

/// The problems found so far, and what the checks ask: where a field is and what enact.json
/// defines.
struct Checks<'a> {
    locate: Locate<'a>,
    catalog: &'a dyn Catalog,
    errors: Vec<Diagnostic>,
}

/// The path of a top-level field of a service.
fn key(k: &str) -> Vec<Segment> {
    vec![Segment::Key(k.to_string())]
}

impl Checks<'_> {
    /// A diagnostic about `service`, at the field `path` of its first occurrence.
    fn err(&self, service: &str, path: &[Segment], message: String) -> Diagnostic {
        Diagnostic::new(message).service(service).at((self.locate)(service, 0, path))
    }

    /// Names: valid and unique across both lists. How many services bear each name.
    fn names<'c>(&mut self, chor: &'c Choreography) -> HashMap<&'c str, usize> {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(chor.len());
        for service in chor.services() {
            let name = service.name();
            if !is_valid_name(name) {
                self.errors.push(
                    Diagnostic::new(format!("service name `{}` is not valid", name.escape_debug()))
                        .at((self.locate)(name, 0, &key("name")))
                        .hint(NAME_HINT),
                );
            }
            let count = seen.entry(name).or_insert(0);
            *count += 1;
            if *count > 1 {
                self.errors.push(
                    Diagnostic::new("the name is used by another service too")
                        .service(name)
                        .at((self.locate)(name, *count - 1, &key("name")))
                        .hint("service names are identities and must be unique across deployable and legacy services"),
                );
            }
        }
        seen
    }

    /// Every role a service declares is a valid name.
    fn roles(&mut self, service: Service<'_>) {
        let name = service.name();
        for (i, role) in service.roles().iter().enumerate() {
            if !is_valid_name(role) {
                let at = [Segment::Key("roles".into()), Segment::Index(i)];
                let d = self.err(name, &at, format!("role `{}` is not a valid name", role.escape_debug()));
                self.errors.push(d.hint(NAME_HINT));
            }
        }
    }

    /// Every dependency names a service (`seen`) that declares the role (`roles`).
    fn dependencies(
        &mut self,
        chor: &Choreography,
        service: Service<'_>,
        seen: &HashMap<&str, usize>,
        roles: &HashSet<(&str, &str)>,
    ) {
        let name = service.name();
        for (i, dep) in service.dependencies().iter().enumerate() {
            let provider = dep.service_spec_name.as_str();
            if roles.contains(&(provider, dep.service_spec_role.as_str())) {
                continue;
            }
            let mut at = vec![Segment::Key("dependencies".into()), Segment::Index(i)];
            if !seen.contains_key(provider) {
                at.push(Segment::Key("serviceSpecName".into()));
                let message =
                    format!("depends on service `{}`, which does not exist", dep.service_spec_name.escape_debug());
                let hint =
                    crate::suggest::hint(provider, seen.keys().copied(), "add that service, or fix `serviceSpecName`");
                let d = self.err(name, &at, message).hint(hint);
                self.errors.push(d);
                continue;
            }
            let mut listed: Vec<&str> = chor
                .services()
                .filter(|s| s.name() == provider)
                .flat_map(|s| s.roles().iter().map(String::as_str))
                .collect();
            listed.sort_unstable();
            listed.dedup();
            at.push(Segment::Key("serviceSpecRole".into()));
            let message = format!(
                "depends on `{}` in role `{}`, but `{}` declares roles [{}]",
                dep.service_spec_name,
                dep.service_spec_role.escape_debug(),
                dep.service_spec_name,
                listed.join(", ")
            );
            let hint = crate::suggest::hint(
                &dep.service_spec_role,
                listed.iter().copied(),
                "add the role to the provider's `roles`, or fix `serviceSpecRole`",
            );
            let d = self.err(name, &at, message).hint(hint);
            self.errors.push(d);
        }
    }

    /// The fields of a deployable service, in the order of `docs/formats.md`'s table.
    fn deployable(&mut self, s: &DeployableServiceSpec) {
        self.instances_and_port(s);
        self.package(s);
        self.identifiers(s);
        self.account(s);
        self.desired_qos(s);
    }

    /// `numberOfInstances` in 0–10000, `port` in 1–65535 and given (but for TOMCAT).
    fn instances_and_port(&mut self, s: &DeployableServiceSpec) {
        let name = s.name.as_str();
        if let Some(n) = s.number_of_instances
            && n < 0
        {
            let d =
                self.err(name, &key("numberOfInstances"), format!("`numberOfInstances` is {n}; it must be 0 or more"));
            self.errors.push(d);
        }
        if let Some(n) = s.number_of_instances
            && n > 10_000
        {
            let message = format!("`numberOfInstances` is {n}; at most 10000 instances per service");
            let d = self.err(name, &key("numberOfInstances"), message);
            self.errors.push(d);
        }
        match s.port {
            Some(p) if !(1..=65535).contains(&p) => {
                let d = self.err(name, &key("port"), format!("`port` {p} is outside 1–65535"));
                self.errors.push(d);
            }
            None if s.package_type() != "TOMCAT" => {
                let d = self.err(name, &[], "has no `port`".into()).hint(
                    "every deployable service needs the `port` its instances listen on (TOMCAT defaults to 8080)",
                );
                self.errors.push(d);
            }
            _ => {}
        }
    }

    /// `packageUri` given and valid, `packageType` known to the catalog.
    fn package(&mut self, s: &DeployableServiceSpec) {
        let name = s.name.as_str();
        match &s.package_uri {
            None => {
                let d = self
                    .err(name, &[], "has no `packageUri`".into())
                    .hint("give a path relative to the config repository, a file:// or an http(s):// URI");
                self.errors.push(d);
            }
            Some(uri) => {
                if let Err(why) = check_package_uri(uri) {
                    let message = format!("`packageUri` `{}` is not valid: {why}", redact_uri(uri).escape_debug());
                    let hint = if why == UriError::Credentials {
                        CREDENTIALS_HINT
                    } else if uri.is_empty() {
                        "fill in the package (a template leaves it empty): a path relative to the config repository, a file:// or an http(s):// URI"
                    } else {
                        "give a path relative to the config repository, a file:// or an http(s):// URI"
                    };
                    let d = self.err(name, &key("packageUri"), message).hint(hint);
                    self.errors.push(d);
                }
            }
        }
        if !self.catalog.has_package_type(s.package_type()) {
            let mut known: Vec<&str> = BUILTIN_PACKAGE_TYPES.to_vec();
            known.extend(self.catalog.defined_package_types());
            let message = format!("unknown `packageType` `{}`", s.package_type().escape_debug());
            let hint = crate::suggest::hint(
                s.package_type(),
                known.iter().copied(),
                &format!("use one of {}, or define it under `packageTypes` in enact.json", known.join(", ")),
            );
            let d = self.err(name, &key("packageType"), message).hint(hint);
            self.errors.push(d);
        }
    }

    /// `endpointName` and `version` are valid names.
    fn identifiers(&mut self, s: &DeployableServiceSpec) {
        let name = s.name.as_str();
        if let Some(endpoint) = &s.endpoint_name
            && !is_valid_name(endpoint)
        {
            let message = format!("`endpointName` `{}` is not valid", endpoint.escape_debug());
            let d = self.err(name, &key("endpointName"), message).hint(NAME_HINT);
            self.errors.push(d);
        }
        if let Some(version) = &s.version
            && !is_valid_name(version)
        {
            let message = format!("`version` `{}` is not valid", version.escape_debug());
            let d = self
                .err(name, &key("version"), message)
                .hint("versions are letters, digits, `.`, `_` and `-`, like `1.2.0`");
            self.errors.push(d);
        }
    }

    /// `cloudAccount` names an account of the catalog.
    fn account(&mut self, s: &DeployableServiceSpec) {
        let Some(account) = &s.cloud_account else { return };
        if self.catalog.has_account(account) {
            return;
        }
        let known = self.catalog.account_names();
        let message = format!("`cloudAccount` `{}` is not defined in enact.json", account.escape_debug());
        let hint = crate::suggest::hint(
            account,
            known,
            "define it under `accounts` in enact.json, or remove `cloudAccount` to use the default account",
        );
        let d = self.err(&s.name, &key("cloudAccount"), message).hint(hint);
        self.errors.push(d);
    }

    /// `desiredQoS.responseTimeMetric`: a response time of 0 or more, a percentage in 0–100.
    fn desired_qos(&mut self, s: &DeployableServiceSpec) {
        let Some(metric) = s.desired_qos.as_ref().and_then(|q| q.response_time_metric.as_ref()) else { return };
        let path = |field: &str| ["desiredQoS", "responseTimeMetric", field].map(|k| Segment::Key(k.into()));
        if metric.max_desired_response_time.is_some_and(|t| t < 0.0) {
            let message = "`maxDesiredResponseTime` must be 0 or more".into();
            let d = self.err(&s.name, &path("maxDesiredResponseTime"), message);
            self.errors.push(d);
        }
        if metric.acceptable_percentage.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
            let message = "`acceptablePercentage` must be within 0–100".into();
            let d = self.err(&s.name, &path("acceptablePercentage"), message);
            self.errors.push(d);
        }
    }

    /// A legacy service lists at least one `nativeURIs`, each a valid http(s) URL.
    fn legacy(&mut self, s: &LegacyServiceSpec) {
        let name = s.name.as_str();
        if s.native_uris.is_empty() {
            let d = self
                .err(name, &[], "legacy service has no `nativeURIs`".into())
                .hint("list the URLs where the running service answers");
            self.errors.push(d);
        }
        for (i, uri) in s.native_uris.iter().enumerate() {
            let Err(why) = check_http_uri(uri) else { continue };
            let at = [Segment::Key("nativeURIs".into()), Segment::Index(i)];
            let message = format!("`nativeURIs` `{}` is not a valid URI: {why}", redact_uri(uri).escape_debug());
            let hint = if why == UriError::Credentials {
                "a legacy service's URLs are sent to its consumers and recorded as they are: remove the credentials and give them to the consumers another way"
            } else if uri.is_empty() {
                "fill in the URL where the running service answers (a template leaves it empty)"
            } else {
                "list the http(s):// URLs where the running service answers"
            };
            let d = self.err(name, &at, message).hint(hint);
            self.errors.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalog of an empty enact.json: the `local` account and the built-in package types.
    struct Builtin;

    impl Catalog for Builtin {
        fn has_account(&self, name: &str) -> bool {
            name == "local"
        }
        fn account_names(&self) -> Vec<&str> {
            vec!["local"]
        }
        fn has_package_type(&self, name: &str) -> bool {
            BUILTIN_PACKAGE_TYPES.contains(&name)
        }
        fn defined_package_types(&self) -> Vec<&str> {
            Vec::new()
        }
    }

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
    fn uri_errors_say_which_part_is_wrong() {
        assert!(matches!(check_http_uri("ftp://x"), Err(UriError::NotHttp)));
        assert!(matches!(check_http_uri("http://u:p@host/"), Err(UriError::Credentials)));
        assert!(matches!(check_http_uri("http://[::1/"), Err(UriError::UnclosedIpv6)));
        assert!(matches!(check_http_uri("http://:80/"), Err(UriError::NoHost)));
        assert!(matches!(check_http_uri("http://h*st/"), Err(UriError::BadHost { host }) if host == "h*st"));
        assert!(matches!(check_http_uri("http://host:0/"), Err(UriError::BadPort { port }) if port == "0"));
        assert!(matches!(check_package_uri(""), Err(UriError::Empty)));
        assert!(matches!(check_package_uri("s3://b/a.jar"), Err(UriError::UnsupportedScheme)));
        assert!(matches!(check_package_uri("file://"), Err(UriError::NoFile)));
        assert!(matches!(check_package_uri("a\u{7}.jar"), Err(UriError::ControlCharacter)));
        assert_eq!(
            UriError::BadPort { port: "99999".into() }.to_string(),
            "its port `99999` is not a number in 1–65535"
        );
        assert_eq!(UriError::Credentials.to_string(), CREDENTIALS_IN_URI);
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
        let errors = validate(&chor, &Builtin, &|_, _, _| None);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 7, "{text:#?}");
    }
}
