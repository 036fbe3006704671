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

/// `enact logs SERVICE`: the last `-n` lines of output of each of the service's instances; with
/// `--follow`, then what they write, until interrupted.
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
    if args.follow {
        return follow(ctx, &repo, &env, &state, &providers, &recorded.instances, lines);
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

/// How long `logs --follow` waits between two looks at the logs.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `enact logs --follow`: the last `lines` lines of each instance, then what they gain, look
/// after look ([`crate::provider::Provider::log_since`]), whole lines only, each after
/// `[instance] ` when there are several. Ends when interrupted, or (exit 0) when stdout closes.
/// An instance whose log cannot be read is said once on stderr, and looked at again.
fn follow(
    ctx: &Context,
    repo: &crate::repo::ConfigRepo,
    env: &str,
    state: &crate::state::State,
    providers: &std::collections::HashMap<String, Box<dyn crate::provider::Provider>>,
    instances: &[crate::state::InstanceState],
    lines: usize,
) -> Result<Outcome> {
    use std::io::Write as _;
    let prefixed = instances.len() > 1;
    let mut marks: Vec<Option<crate::provider::LogMark>> = vec![None; instances.len()];
    // A line begun but not ended, per instance, and whether a failure was said already.
    let mut partial: Vec<String> = vec![String::new(); instances.len()];
    let mut said: Vec<bool> = vec![false; instances.len()];
    loop {
        let mut out = String::new();
        for (i, instance) in instances.iter().enumerate() {
            let Some(node) = state.nodes.get(&instance.node) else {
                continue;
            };
            let Some(provider) = providers.get(&node.account) else {
                if !std::mem::replace(&mut said[i], true) {
                    ctx.printer
                        .warn(&format!("{}: account `{}` is not defined in enact.json", instance.id, node.account));
                }
                continue;
            };
            let place =
                LogPlace { env, lineage: &state.lineage, local: &log_path(&repo.state_dir(), env, &instance.id) };
            match provider.log_since(instance, node, place, marks[i], lines) {
                Ok((text, mark)) => {
                    // The first look gives whole lines; later ones may stop inside one.
                    let first = marks[i].is_none();
                    marks[i] = Some(mark);
                    said[i] = false;
                    partial[i].push_str(&text);
                    if first && !partial[i].is_empty() && !partial[i].ends_with('\n') {
                        partial[i].push('\n');
                    }
                    let Some(end) = partial[i].rfind('\n') else { continue };
                    let complete: String = partial[i].drain(..=end).collect();
                    for line in complete.lines() {
                        if prefixed {
                            let _ = write!(out, "[{}] ", instance.id);
                        }
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut said[i], true) {
                        ctx.printer.warn(&format!("{}: {e}; looking again", instance.id));
                    }
                }
            }
        }
        if !out.is_empty() {
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).is_err() {
                // Whoever read the output is gone (`| head`): nothing left to do.
                return Ok(Outcome::Success);
            }
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}
