//! `enact logs`: what a service's instances wrote, from their providers.

use std::fmt::Write as _;

use super::providers_of;
use crate::apply::executor::log_path;
use crate::cli::args::LogsArgs;
use crate::cli::{Context, Outcome};
use crate::diagnostic::Diagnostic;
use crate::error::Result;
use crate::provider::LogPlace;
use crate::state::StateStore;

/// `enact logs SERVICE`: the last `-n` lines of output of each of the service's instances.
///
/// # Errors
/// The repository, the state, a service the state does not have or a legacy service (enact
/// runs none of its instances).
pub fn logs(ctx: &Context, args: &LogsArgs) -> Result<Outcome> {
    let (service, lines) = (args.service.as_str(), usize::try_from(args.lines).unwrap_or(usize::MAX));
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let state = repo.store().read_or_empty(&env)?;
    let providers = providers_of(ctx, &repo, &state);
    let Some(recorded) = state.services.get(service) else {
        return Err(Diagnostic::new(format!("env `{env}` has no service `{service}`"))
            .hint(crate::suggest::hint(
                service,
                state.services.keys().map(String::as_str),
                "`enact status` lists the services",
            ))
            .into());
    };
    if let crate::state::AppliedSpec::Legacy(_) = &*recorded.spec {
        return Err(Diagnostic::new(format!(
            "`{service}` is a legacy service: it runs elsewhere, and enact keeps no output of it"
        ))
        .service(service)
        .hint("read its logs where it runs; `enact status` shows whether its endpoints answer")
        .into());
    }
    if recorded.instances.is_empty() {
        ctx.printer.info(&format!("Service `{service}` has no instances in env `{env}`."));
        return Ok(Outcome::Success);
    }
    let mut out = String::new();
    for instance in &recorded.instances {
        let Some(node) = state.nodes.get(&instance.node) else {
            continue;
        };
        let _ = writeln!(out, "==> {} on {} ({}) <==", instance.id, instance.node, node.address);
        let provider = providers.get(&node.account);
        let text = match provider {
            Some(p) => p
                .logs(
                    instance,
                    node,
                    LogPlace {
                        env: &env,
                        lineage: &state.lineage,
                        local: &log_path(&repo.state_dir(), &env, &instance.id),
                    },
                    lines,
                )
                .unwrap_or_else(|e| format!("({e})")),
            None => format!("(account `{}` is not defined in enact.json)", node.account),
        };
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    ctx.printer.out(&out);
    Ok(Outcome::Success)
}
