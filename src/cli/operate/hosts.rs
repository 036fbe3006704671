//! `enact hosts trust`: the host keys of the ssh accounts' hosts, recorded.

use std::fmt::Write as _;

use crate::cli::{Context, Outcome};
use crate::diagnostic::Diagnostic;
use crate::error::Result;
use crate::provider;

/// `enact hosts trust`: records the host keys of the ssh accounts' hosts (`only` that account).
///
/// # Errors
/// No such ssh account, or its provider cannot be made; a refused host is reported and makes it
/// exit 1.
pub fn trust_hosts(ctx: &Context, only: Option<&str>) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let accounts: Vec<(&String, &crate::repo::settings::SshAccount)> = repo
        .settings
        .accounts
        .iter()
        .filter_map(|(name, a)| match a {
            crate::repo::settings::Account::Ssh(ssh) => Some((name, ssh)),
            _ => None,
        })
        .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
        .collect();
    if accounts.is_empty() {
        return Err(Diagnostic::new(match only {
            Some(name) => format!("enact.json has no ssh account `{name}`"),
            None => "enact.json has no ssh account".to_string(),
        })
        .hint("ssh accounts have `\"provider\": \"ssh\"` and a list of `hosts`")
        .into());
    }
    let mut failed = false;
    let mut out = String::new();
    for (name, account) in accounts {
        let options = provider::ssh::SshOptions { repo_root: repo.root.clone(), accept_new_host_keys: true };
        let provider =
            provider::ssh::SshProvider::new(name, account, options).map_err(|e| Diagnostic::new(e.to_string()))?;
        let known = provider::ssh::known_hosts_of(account.known_hosts.as_deref(), &repo.root);
        let _ = writeln!(out, "account `{name}` (known hosts: {}):", known.display());
        for (host, result) in provider.trust_hosts() {
            match result {
                Ok(what) => {
                    let _ = writeln!(out, "  {host}: {what}");
                }
                Err(e) => {
                    failed = true;
                    let _ = writeln!(out, "  {host}: {} {e}", ctx.printer.paint.red("refused:"));
                }
            }
        }
    }
    ctx.printer.out(&out);
    Ok(if failed { Outcome::Failed } else { Outcome::Success })
}
