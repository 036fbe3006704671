//! What enact.json already decides about running an environment's services, checked by
//! `validate` and `plan` so that `apply` does not find it out half-way:
//!
//! - the service's **account can make nodes for it**: an ec2 account cannot in this version
//!   (apply refuses it), and an ssh account needs a host that takes the service's memory size;
//! - its **package type has a recipe the account's provider runs**: `COMMAND_LINE` and every
//!   type of `packageTypes` run anywhere; `TOMCAT` only on an ssh account with `tomcatWebapps`;
//!   `EASY_ESB` (and `TOMCAT` elsewhere) needs a recipe under `packageTypes`. The simulated
//!   provider runs nothing, so it takes any type. These are the rules of the providers' start
//!   (`provider::command_for` and the ssh provider's `TOMCAT` deployment);
//! - its **package file exists** when it is a path (relative to the config repository) or a
//!   `file://` URI (absolute, as file URIs are), for every provider that starts a process.
//!   `http(s)://` packages are fetched at apply time and not checked here.

use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt as _};

use crate::diagnostic::{Diagnostic, Segment};
use crate::repo::settings::{Account, Settings};
use crate::spec::model::DeployableServiceSpec;
use crate::spec::validate::Locate;
use crate::spec::{Choreography, Memory};

/// Every problem of `chor` (the effective spec of `env`) that the settings decide, each naming
/// its service and, through `locate`, the field at fault. `root` is the config repository.
pub fn check(chor: &Choreography, settings: &Settings, env: &str, root: &Path, locate: Locate<'_>) -> Vec<Diagnostic> {
    let view = settings.env_view(env);
    let mut errors = Vec::new();
    // Many services share a package: each URI is looked at once.
    let mut seen: HashMap<&str, Option<(String, String)>> = HashMap::new();
    for spec in &chor.deployable_service_specs {
        let account_name = spec.cloud_account.as_deref().unwrap_or(&view.default_account);
        // An account enact.json does not define is reported by the spec's validation.
        let Some(account) = settings.account(account_name) else { continue };
        let at = |field: &str, set: bool| {
            if set { locate(&spec.name, 0, &[Segment::Key(field.to_string())]) } else { locate(&spec.name, 0, &[]) }
        };
        let whose = match &spec.cloud_account {
            Some(_) => format!("account `{account_name}` (its `cloudAccount`)"),
            None => format!("account `{account_name}` (the default account of env `{env}`)"),
        };
        match account {
            Account::Ec2(_) | Account::Simulated(_) => continue,
            Account::Ssh(ssh) => {
                let memory = spec.memory();
                if !ssh.hosts.is_empty() && ssh.hosts.iter().all(|h| h.memory.is_some_and(|m| m < memory)) {
                    let largest = ssh.hosts.iter().filter_map(|h| h.memory).max().unwrap_or(Memory::Small);
                    let set = spec.resource_impact.as_ref().is_some_and(|r| r.memory.is_some());
                    errors.push(
                        Diagnostic::new(format!(
                            "no host of ssh {whose} takes a {memory} instance (the largest take {largest})"
                        ))
                        .service(&spec.name)
                        .at(if set {
                            locate(&spec.name, 0, &[Segment::Key("resourceImpact".into()), Segment::Key("memory".into())])
                        } else {
                            at("resourceImpact", false)
                        })
                        .hint(format!(
                            "lower `resourceImpact.memory` to {largest}, or raise a host's `memory` in account `{account_name}`"
                        )),
                    );
                }
            }
            Account::Local(_) => {}
        }
        if let Some(problem) = recipe_problem(spec, settings, account, account_name) {
            errors.push(
                Diagnostic::new(problem)
                    .service(&spec.name)
                    .at(at("packageType", spec.package_type.is_some()))
                    .hint(format!(
                        "define a start recipe for it under `packageTypes` in enact.json (e.g. `\"{}\": {{ \"start\": \"… {{package}} …\" }}`), \
                         or place the service in an account whose provider runs it",
                        spec.package_type()
                    )),
            );
        }
        if let Some(uri) = &spec.package_uri
            && let Some(problem) = seen.entry(uri.as_str()).or_insert_with(|| package_problem(uri, root))
        {
            errors.push(
                Diagnostic::new(problem.0.clone())
                    .service(&spec.name)
                    .at(at("packageUri", true))
                    .hint(problem.1.clone()),
            );
        }
    }
    errors
}

/// Why the account's provider cannot start a package of the service's type, if it cannot.
fn recipe_problem(
    spec: &DeployableServiceSpec,
    settings: &Settings,
    account: &Account,
    account_name: &str,
) -> Option<String> {
    let package_type = spec.package_type();
    if settings.package_types.contains_key(package_type) || package_type == crate::spec::model::DEFAULT_PACKAGE_TYPE {
        return None;
    }
    // Unknown package types are reported by the spec's validation.
    if !settings.knows_package_type(package_type) {
        return None;
    }
    match (account, package_type) {
        (Account::Ssh(ssh), "TOMCAT") if ssh.tomcat_webapps.is_some() => None,
        (Account::Ssh(_), "TOMCAT") => Some(format!(
            "package type `TOMCAT` needs `tomcatWebapps` (Tomcat's webapps directory) in ssh account `{account_name}`"
        )),
        _ => Some(format!(
            "package type `{package_type}` has no start recipe the {} provider of account `{account_name}` can run",
            account.provider()
        )),
    }
}

/// Why a package path or `file://` URI names no file, with a hint; `None` when it does (or is
/// a URL fetched at apply time).
fn package_problem(uri: &str, root: &Path) -> Option<(String, String)> {
    if uri.starts_with("http://") || uri.starts_with("https://") || uri.is_empty() {
        return None;
    }
    let path = match uri.strip_prefix("file://") {
        Some(p) if p.starts_with('/') => PathBuf::from(p),
        Some(p) => {
            return Some((
                format!("`packageUri` `{}` is a file:// URI with a relative path", uri.escape_debug()),
                format!(
                    "a file:// URI holds an absolute path; for a path relative to the config repository write `{p}`"
                ),
            ));
        }
        None => root.join(uri),
    };
    if path.is_file() {
        return None;
    }
    let shown = if uri.starts_with("file://") { path.display().to_string() } else { uri.to_string() };
    Some((
        format!("`packageUri` `{}`: there is no file {shown}", uri.escape_debug()),
        "fix the path (relative to the config repository, or an absolute file:// URI), or add the file".to_string(),
    ))
}
