//! The commands that change an environment (apply, destroy, rollback, pause, resume) and those
//! that look at it live (status, logs, history, state, hosts): one file each, and here what they
//! share (executor options, providers, a session, the warnings about what an interrupted apply
//! left, the summary after an apply).

mod apply;
mod hosts;
mod logs;
mod pause;
mod state;
mod status;

use std::fmt::Write as _;
use std::time::Duration;

use super::{Context, Outcome, interrupt};
use crate::apply::executor::{Options, Report};
use crate::apply::session::{Leftover, Session};
use crate::diagnostic::Diagnostic;
use crate::error::Result;
use crate::provider;
use crate::repo::ConfigRepo;
use crate::state::State;
use crate::state::lock;
use crate::state::observed::Observations;
pub use apply::{apply, destroy, rollback};
pub use hosts::trust_hosts;
pub use logs::logs;
pub use pause::pause;
pub use state::{history, state};
pub use status::status;

/// Executor options from the flags, whose ranges clap has checked (they are clamped again here,
/// so no value can overflow a clock or spawn without bound): `parallelism` steps at once,
/// `health_timeout` in seconds, and the host keys `ctx` accepts.
fn options(ctx: &Context, parallelism: u64, health_timeout: Option<u64>) -> Result<Options> {
    if parallelism == 0 {
        return Err(Diagnostic::new("`--parallelism` must be at least 1").into());
    }
    let parallelism = usize::try_from(parallelism.min(super::args::MAX_PARALLELISM)).unwrap_or(1);
    let health_timeout = health_timeout.map(|s| Duration::from_secs(s.clamp(1, super::args::MAX_HEALTH_TIMEOUT_SECS)));
    Ok(Options {
        parallelism,
        health_timeout,
        accept_new_host_keys: ctx.accept_new_host_keys,
        cancel: Some(&interrupt::INTERRUPTED),
        keep_logs: false,
        notify: ctx.provider_options_notify(),
    })
}

/// One provider per account the state has nodes in (accounts enact.json lost are left out).
fn providers_of(
    ctx: &Context,
    repo: &ConfigRepo,
    state: &State,
) -> std::collections::HashMap<String, Box<dyn provider::Provider>> {
    let options = ctx.provider_options(repo);
    let mut providers = std::collections::HashMap::new();
    for account in state.nodes.values().map(|n| n.account.clone()).collect::<std::collections::BTreeSet<_>>() {
        if let Some(p) = repo.settings.account(&account).and_then(|a| provider::for_account(&account, a, &options).ok())
        {
            providers.insert(account, p);
        }
    }
    providers
}

/// The state of `env` as the next locked command will see it: a journal an interrupted apply left
/// behind is replayed (in memory: nothing is written, no lock is taken), and a warning says what
/// recovery will do and whether a lock is left. For the commands that only read.
pub(super) fn leftovers(ctx: &Context, repo: &ConfigRepo, env: &str, state: State) -> Result<State> {
    let state_dir = repo.state_dir();
    if let Some(holder) = lock::holder(&state_dir, env)? {
        let running = holder.host == lock::hostname() && crate::process::process_alive(holder.pid, holder.start_time);
        if running {
            ctx.printer.warn(&format!(
                "env `{env}` is being changed right now by pid {} ({}, since {}): what follows may be out of date",
                holder.pid, holder.command, holder.time
            ));
        } else if holder.host == lock::hostname() {
            ctx.printer.warn(&format!(
                "state/{env}.lock is left by pid {} on {} ({}, since {}), which no longer runs: the next `enact apply` takes it over (`enact state unlock` removes it)",
                holder.pid, holder.host, holder.command, holder.time
            ));
        } else {
            // Whether a process on another machine still runs cannot be told from here.
            ctx.printer.warn(&format!(
                "env `{env}` is locked by pid {} on {} ({}, since {}): an apply here is refused until it ends; if it no longer runs, `enact state unlock` removes the lock",
                holder.pid, holder.host, holder.command, holder.time
            ));
        }
    }
    match crate::apply::session::preview(&state_dir, env, &state, repo, &ctx.provider_options(repo))? {
        Leftover::Interrupted(recovery) => {
            let mut known: Vec<String> = recovery.started.clone();
            known.extend(recovery.found.iter().cloned());
            known.sort();
            known.dedup();
            ctx.printer.warn(&format!(
                "an apply on env `{env}` was interrupted and left state/{env}.journal; shown as the next `enact apply` will recover it: {} instance(s) it started{}{}",
                known.len(),
                if known.is_empty() { String::new() } else { format!(" ({})", known.join(", ")) },
                if recovery.incomplete.is_empty() {
                    String::new()
                } else {
                    format!("; to be redeployed so they converge: {}", recovery.incomplete.join(", "))
                }
            ));
            if !recovery.unreadable.is_empty() {
                let lines: Vec<String> = recovery.unreadable.iter().map(ToString::to_string).collect();
                ctx.printer.warn(&format!(
                    "state/{env}.journal has {} unreadable record(s) (line {}): instances they named are not known; `enact status` shows what answers",
                    lines.len(),
                    lines.join(", ")
                ));
            }
            if !recovery.untracked.is_empty() {
                ctx.printer.warn(&format!(
                    "{} carry env `{env}`'s lineage but no record names them: {}; the next `enact apply` or `enact destroy` stops them{}",
                    recovery.untracked.counted(),
                    recovery.untracked.summary(),
                    recovery.untracked.adopt_hint()
                ));
            }
            Ok(recovery.state.clone())
        }
        Leftover::Stale(_) | Leftover::None => Ok(state),
    }
}

/// Finds which processes and EC2 instances carry `env`'s lineage but are in no record of
/// `state` (a journal that lost them, a state edited by hand), for `plan` to count: the next
/// apply stops them. With `warn` (the plan is not shown as text, which says it) also a warning.
pub(super) fn plan_untracked(
    ctx: &Context,
    repo: &ConfigRepo,
    env: &str,
    state: &State,
    warn: bool,
) -> crate::plan::model::UntrackedSummary {
    let untracked = find_untracked(ctx, repo, state);
    if warn && !untracked.is_empty() {
        ctx.printer.warn(&format!(
            "{} carry env `{env}`'s lineage but no record names them: {}; the next `enact apply` stops them{}",
            untracked.counted(),
            untracked.summary(),
            untracked.adopt_hint()
        ));
    }
    untracked_summary(&untracked)
}

/// What a plan says of `untracked` ([`crate::plan::model::Plan::untracked`]).
fn untracked_summary(untracked: &crate::apply::untracked::Untracked) -> crate::plan::model::UntrackedSummary {
    crate::plan::model::UntrackedSummary {
        processes: untracked.orphans.len(),
        ec2_instances: untracked.nodes.len(),
        described: untracked.summary(),
        found: untracked.found(),
    }
}

/// The processes and EC2 instances that carry `state`'s lineage but are in no record of it,
/// with a warning for each place that could not be looked at.
fn find_untracked(ctx: &Context, repo: &ConfigRepo, state: &State) -> crate::apply::untracked::Untracked {
    let untracked = crate::apply::untracked::find(&repo.settings, state, &ctx.provider_options(repo));
    warn_unreachable(ctx, &untracked);
    untracked
}

/// Says where the sweep for what no record names could not look (a host that does not answer,
/// an EC2 API without credentials): what runs there is not known.
fn warn_unreachable(ctx: &Context, untracked: &crate::apply::untracked::Untracked) {
    for place in &untracked.unreachable {
        ctx.printer.warn(&format!(
            "could not look for processes or EC2 instances that no record names on {place}; what runs there is not known"
        ));
    }
}

/// Stops (or terminates) `untracked`, once the plan that names them is approved and before its
/// steps run (under the lock: they are in no record, so the apply does not see them). Says what
/// it stopped; what it could not stop is an error for the user to see, and makes it `false`.
fn stop_untracked(ctx: &Context, repo: &ConfigRepo, untracked: &crate::apply::untracked::Untracked) -> bool {
    if untracked.is_empty() {
        return true;
    }
    let errors = untracked.stop_all(&repo.settings, &ctx.provider_options(repo));
    ctx.printer.warn(&format!(
        "{} that this environment started and no record names: {}",
        untracked.stopped_text(),
        untracked.summary()
    ));
    for error in &errors {
        ctx.printer.error(&format!("could not stop {error}"));
    }
    errors.is_empty()
}

/// Looks at every recorded instance of `state` when `on` (a refresh); `None` when off.
pub(super) fn refresh(ctx: &Context, repo: &ConfigRepo, state: &State, on: bool) -> Option<Observations> {
    on.then(|| crate::apply::refresh::observe(&repo.settings, state, &ctx.provider_options(repo)))
}

/// Opens a session on `env` for `command` (takes the lock, recovers a journal, reads the state),
/// warns about what recovery noted, and refuses a state at the last serial.
fn open_session<'a>(ctx: &Context, repo: &'a ConfigRepo, env: &str, command: &str) -> Result<Session<'a>> {
    let session = Session::open(repo, env, command, &ctx.provider_options(repo))?;
    for note in &session.notes {
        ctx.printer.warn(note);
    }
    last_serial(env, &session.state)?;
    Ok(session)
}

/// A state at serial 2^64 − 1 cannot be followed by another: refused before anything runs.
///
/// # Errors
/// When `state`'s serial is `u64::MAX`.
pub(super) fn last_serial(env: &str, state: &State) -> Result<()> {
    if state.serial < u64::MAX {
        return Ok(());
    }
    Err(Diagnostic::new(format!(
        "env `{env}` is at serial {}, the largest a state records: the next write would wrap it to 0, so nothing can change it",
        state.serial
    ))
    .hint("start a new history: move the state file away (its services keep running) and import or apply it again")
    .into())
}

/// The summary after an apply, and how to reach what runs.
fn summarize(ctx: &Context, report: &Report, verb: &str) -> Outcome {
    let paint = ctx.printer.paint;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} {} done, {} failed, {} skipped. State serial {}.",
        paint.bold(&format!("{verb}:")),
        report.done.len(),
        report.failed.len(),
        report.skipped.len(),
        report.state.serial
    );
    for (service, error) in &report.failed {
        let _ = writeln!(out, "  {} {service}: {error}", paint.red("failed"));
    }
    for service in &report.skipped {
        let why = if report.interrupted.contains(service) {
            "not started: enact was interrupted"
        } else {
            "a step it depends on failed"
        };
        let _ = writeln!(out, "  {} {service}: {why}", paint.yellow("skipped"));
    }
    for error in &report.node_errors {
        let _ = writeln!(out, "  {} {error}", paint.red("error"));
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "  {} {warning}", paint.yellow("warning"));
    }
    let endpoints: Vec<String> = report
        .state
        .services
        .iter()
        .filter(|(name, _)| report.done.contains(name))
        .flat_map(|(name, s)| s.instances.iter().map(move |i| format!("  {name}: {}", i.native_uri)))
        .collect();
    if !endpoints.is_empty() {
        let _ = writeln!(out, "Endpoints:\n{}", endpoints.join("\n"));
    }
    ctx.printer.out(&out);
    if !report.interrupted.is_empty() || (interrupt::interrupted() && !report.succeeded()) {
        ctx.printer.error("interrupted: the state records what was done; run the same command again to finish");
        Outcome::Interrupted
    } else if report.succeeded() {
        Outcome::Success
    } else {
        ctx.printer.error("the apply did not finish every step; fix the cause and run `enact apply` again to converge");
        Outcome::Failed
    }
}
