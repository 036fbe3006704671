//! The commands that change an environment (apply, destroy, rollback, pause, resume) and those
//! that look at it live (status, logs, history, state).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use super::args::{ApplyArgs, StateCommand};
use super::commands::read_plan;
use super::{Context, Outcome, interrupt};
use crate::apply::events::Progress;
use crate::apply::executor::{Options, Report, log_path};
use crate::apply::session::{Leftover, Session};
use crate::diagnostic::Diagnostic;
use crate::error::{Error, Result};
use crate::plan::{self, Action, Plan, PlanInput, Planned};
use crate::provider;
use crate::repo::ConfigRepo;
use crate::spec::{Choreography, DeployableServiceSpec, LegacyServiceSpec};
use crate::state::lock;
use crate::state::observed::{DownReason, Health, Observations};
use crate::state::{AppliedSpec, InstanceStatus, State, StateStore};

/// Asks on the terminal; without one, refuses unless `auto` was given.
fn confirm(question: &str, auto: bool, flag: &str) -> Result<()> {
    if auto {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Diagnostic::new(
            "refusing to change the environment without confirmation, and there is no terminal to ask on",
        )
        .hint(format!("pass `{flag}` to confirm in advance"))
        .into());
    }
    {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{question}\n  Only 'yes' will be accepted: ");
        let _ = stderr.flush();
    }
    match interrupt::read_line() {
        Some(answer) if answer.trim() == "yes" => Ok(()),
        _ if interrupt::interrupted() => Err(Error::Interrupted),
        _ => Err(Diagnostic::new("cancelled; nothing was changed").into()),
    }
}

fn progress(ctx: &Context) -> Progress {
    Progress::new(std::io::stderr().is_terminal(), ctx.printer.paint, ctx.printer.verbose, ctx.printer.quiet)
}

/// Executor options from the flags, whose ranges clap has checked (they are clamped again here,
/// so no value can overflow a clock or spawn without bound).
fn options(parallelism: u64, health_timeout: Option<u64>, accept_new_host_keys: bool) -> Result<Options> {
    if parallelism == 0 {
        return Err(Diagnostic::new("`--parallelism` must be at least 1").into());
    }
    let parallelism = usize::try_from(parallelism.min(super::args::MAX_PARALLELISM)).unwrap_or(1);
    let health_timeout = health_timeout.map(|s| Duration::from_secs(s.clamp(1, super::args::MAX_HEALTH_TIMEOUT_SECS)));
    Ok(Options {
        parallelism,
        health_timeout,
        accept_new_host_keys,
        cancel: Some(&interrupt::INTERRUPTED),
        keep_logs: false,
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
        } else {
            ctx.printer.warn(&format!(
                "state/{env}.lock is left by pid {} on {} ({}, since {}), which no longer runs: the next `enact apply` takes it over (`enact state unlock` removes it)",
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
            if !recovery.untracked.orphans.is_empty() {
                ctx.printer.warn(&format!(
                    "{} process(es) carry env `{env}`'s lineage but no record names them: {}; the next `enact apply` or `enact destroy` stops them",
                    recovery.untracked.orphans.len(),
                    crate::apply::untracked::summary(&recovery.untracked.orphans)
                ));
            }
            Ok(recovery.state.clone())
        }
        Leftover::Stale(_) | Leftover::None => Ok(state),
    }
}

/// Says which processes carry `env`'s lineage but are in no record of `state` (a journal that
/// lost them, a state edited by hand): the next apply stops them. For `plan`.
pub(super) fn warn_untracked(ctx: &Context, repo: &ConfigRepo, env: &str, state: &State) {
    let untracked = crate::apply::untracked::find(&repo.settings, state, &ctx.provider_options(repo));
    if !untracked.orphans.is_empty() {
        ctx.printer.warn(&format!(
            "{} process(es) carry env `{env}`'s lineage but no record names them: {}; the next `enact apply` stops them",
            untracked.orphans.len(),
            crate::apply::untracked::summary(&untracked.orphans)
        ));
    }
}

/// Stops the processes that carry `env`'s lineage but are in no record of `state`, before an
/// apply plans (under its lock), so that it converges instead of starting their like beside
/// them. Says what it stopped; a process it could not stop is an error for the user to see.
fn stop_untracked(ctx: &Context, repo: &ConfigRepo, state: &State) {
    let options = ctx.provider_options(repo);
    let untracked = crate::apply::untracked::find(&repo.settings, state, &options);
    if untracked.orphans.is_empty() {
        return;
    }
    let errors = crate::apply::untracked::stop(&repo.settings, &untracked.orphans, &options);
    ctx.printer.warn(&format!(
        "stopped {} process(es) this environment started that no record names: {}",
        untracked.orphans.len() - errors.len(),
        crate::apply::untracked::summary(&untracked.orphans)
    ));
    for error in errors {
        ctx.printer.error(&format!("could not stop {error}"));
    }
}

/// Looks at every recorded instance of `state` when `on` (a refresh); `None` when off.
pub(super) fn refresh(ctx: &Context, repo: &ConfigRepo, state: &State, on: bool) -> Option<Observations> {
    on.then(|| crate::apply::refresh::observe(&repo.settings, state, &ctx.provider_options(repo)))
}

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

/// A saved plan, checked against the state, with the spec it leads to.
fn saved_plan(repo: &ConfigRepo, env: &str, state: &State, saved: &Plan) -> Result<(Choreography, Planned)> {
    if saved.env != env {
        return Err(Diagnostic::new(format!("the plan is for env `{}`, not `{env}`", saved.env))
            .hint(format!("pass `-e {}`", saved.env))
            .into());
    }
    let lineage = (!state.lineage.is_empty()).then(|| state.lineage.clone());
    if saved.prior_state.lineage != lineage || saved.prior_state.serial != state.serial {
        return Err(Diagnostic::new(format!(
            "the plan is stale: it was made against state serial {} but env `{env}` is now at serial {}",
            saved.prior_state.serial, state.serial
        ))
        .hint("make a new plan with `enact plan --out FILE`")
        .into());
    }
    // The spec the plan leads to: the recorded one with every change's `after` in place.
    let mut spec = state.choreography();
    for change in &saved.changes {
        spec.deployable_service_specs.retain(|s| s.name != change.service);
        spec.legacy_service_specs.retain(|s| s.name != change.service);
        if change.action == Action::Destroy {
            continue;
        }
        let Some(after) = &change.after else { continue };
        let bad =
            |e: serde_json::Error| Diagnostic::new(format!("the plan's spec of `{}` is damaged: {e}", change.service));
        if change.legacy {
            spec.legacy_service_specs.push(serde_json::from_value::<LegacyServiceSpec>(after.to_value()).map_err(bad)?);
        } else {
            spec.deployable_service_specs
                .push(serde_json::from_value::<DeployableServiceSpec>(after.to_value()).map_err(bad)?);
        }
    }
    spec.normalize();
    // What the plan saw when it was made, not what runs now: the same plan comes out.
    let observed: Option<Observations> = saved.refreshed.then(|| {
        saved
            .down
            .iter()
            .map(|d| (d.instance.clone(), Health::Down { reason: d.reason, detail: d.detail.clone() }))
            .collect()
    });
    let planned = plan::plan(PlanInput {
        env,
        spec: &spec,
        state,
        settings: &repo.settings,
        targets: &saved.targets,
        observed: observed.as_ref(),
    })?;
    if planned.plan.changes != saved.changes || planned.plan.nodes != saved.nodes {
        return Err(Diagnostic::new(
            "the plan no longer matches what enact would do (enact.json changed since it was made?)",
        )
        .hint("make a new plan with `enact plan --out FILE`")
        .into());
    }
    Ok((spec, planned))
}

pub fn apply(ctx: &Context, args: &ApplyArgs) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let options = Options {
        keep_logs: args.keep_logs,
        ..options(args.parallelism, args.health_timeout, ctx.accept_new_host_keys)?
    };
    let _guard = interrupt::guard();
    // The spec loads on a second thread while the session takes the lock and reads the state
    // (as `plan` reads them together); a spec that does not load is reported all the same.
    let (session, effective) = std::thread::scope(|scope| {
        let load = args.planfile.is_none().then(|| scope.spawn(|| repo.load_deployable(&env)));
        let session =
            crate::timing::phase("session open", || open_session(ctx, &repo, &env, &format!("enact apply -e {env}")));
        let effective = load.map(|l| l.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        (session, effective)
    });
    let session = session?;
    let (spec, planned, saved) = match (&args.planfile, effective) {
        (Some(file), _) => {
            let saved = read_plan(ctx, file)?;
            let (spec, planned) = saved_plan(&repo, &env, &session.state, &saved)?;
            (spec, planned, true)
        }
        (None, effective) => {
            let effective = match effective {
                Some(loaded) => loaded?,
                None => repo.load_deployable(&env)?,
            };
            if args.refresh {
                crate::timing::phase("untracked sweep", || stop_untracked(ctx, &repo, &session.state));
            }
            let observed = crate::timing::phase("refresh", || refresh(ctx, &repo, &session.state, args.refresh));
            let planned = plan::plan(PlanInput {
                env: &env,
                spec: &effective.choreography,
                state: &session.state,
                settings: &repo.settings,
                targets: &args.target,
                observed: observed.as_ref(),
            })?;
            (effective.choreography, planned, false)
        }
    };
    ctx.printer.out(&plan::render::render(&planned.plan, ctx.printer.paint));
    if !planned.plan.has_changes() {
        return Ok(Outcome::Success);
    }
    if !saved {
        confirm(&format!("\nApply these changes to env `{env}`?"), args.auto_approve, "--auto-approve")?;
    }
    let progress = progress(ctx);
    let report = crate::timing::phase("apply", || session.apply(&spec, &planned, &progress, options))?;
    progress.finish();
    Ok(summarize(ctx, &report, "Apply"))
}

pub fn destroy(ctx: &Context, auto_approve: bool, parallelism: u64, keep_logs: bool) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let options = Options { keep_logs, ..options(parallelism, None, ctx.accept_new_host_keys)? };
    let _guard = interrupt::guard();
    let session =
        crate::timing::phase("session open", || open_session(ctx, &repo, &env, &format!("enact destroy -e {env}")))?;
    // Paused services go too.
    let mut unpaused = session.state.clone();
    for service in unpaused.services.values_mut() {
        service.paused = false;
    }
    let spec = Choreography::default();
    let planned = plan::plan(PlanInput {
        env: &env,
        spec: &spec,
        state: &unpaused,
        settings: &repo.settings,
        targets: &[],
        observed: None,
    })?;
    // Processes this environment started that no record names (a journal lost their records):
    // destroy stops them with the rest.
    let untracked = crate::timing::phase("untracked sweep", || {
        crate::apply::untracked::find(&repo.settings, &session.state, &ctx.provider_options(&repo))
    });
    for host in &untracked.unreachable {
        ctx.printer.warn(&format!("could not look for processes no record names on {host}"));
    }
    if !planned.plan.has_changes() && untracked.orphans.is_empty() {
        ctx.printer.out(&format!("Nothing to destroy: env `{env}` has no services and no nodes.\n"));
        return Ok(Outcome::Success);
    }
    ctx.printer.out(&plan::render::render(&planned.plan, ctx.printer.paint));
    if !untracked.orphans.is_empty() {
        ctx.printer.out(&format!(
            "\n{} process(es) carry this environment's lineage but no record names them; destroy stops them: {}\n",
            untracked.orphans.len(),
            crate::apply::untracked::summary(&untracked.orphans)
        ));
    }
    // Legacy services run elsewhere: destroy forgets them but stops nothing of theirs.
    let (legacy, stopped): (Vec<&plan::Change>, Vec<&plan::Change>) =
        planned.plan.changes.iter().filter(|c| c.action == Action::Destroy).partition(|c| c.legacy);
    let mut question = format!("\nDestroy every service of env `{env}`? This stops {} service(s)", stopped.len());
    if !legacy.is_empty() {
        let _ = write!(question, " and forgets {} legacy service(s), which keep running elsewhere", legacy.len());
    }
    if !untracked.orphans.is_empty() {
        let _ = write!(question, " and {} untracked process(es)", untracked.orphans.len());
    }
    question.push('.');
    confirm(&question, auto_approve, "--auto-approve")?;
    // Stopped first, under the lock: they are in no record, so the apply does not see them.
    let mut orphan_errors = Vec::new();
    if !untracked.orphans.is_empty() {
        orphan_errors = crate::apply::untracked::stop(&repo.settings, &untracked.orphans, &ctx.provider_options(&repo));
        ctx.printer.info(&format!("Stopped {} untracked process(es).", untracked.orphans.len() - orphan_errors.len()));
        for error in &orphan_errors {
            ctx.printer.error(&format!("could not stop {error}"));
        }
    }
    let progress = progress(ctx);
    let report = crate::timing::phase("destroy", || session.apply(&spec, &planned, &progress, options))?;
    progress.finish();
    let mut outcome = summarize(ctx, &report, "Destroy");
    if !orphan_errors.is_empty() {
        outcome = Outcome::Failed;
    }
    if report.state.services.is_empty() && report.state.nodes.is_empty() {
        ctx.printer.out(&format!(
            "env `{env}` is empty: its state (serial {}) records no services and no nodes.\n",
            report.state.serial
        ));
        // The logs go with the environment: also those an earlier `--keep-logs` kept, and those
        // of instances that never started.
        let logs = repo.state_dir().join(".logs").join(&env);
        if !keep_logs
            && let Err(e) = std::fs::remove_dir_all(&logs)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            ctx.printer.warn(&format!("the logs in {} stay: {e}", logs.display()));
        }
    }
    Ok(outcome)
}

pub fn rollback(ctx: &Context, serial: u64, auto_approve: bool, health_timeout: Option<u64>) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let _guard = interrupt::guard();
    let session = open_session(ctx, &repo, &env, &format!("enact rollback {serial} -e {env}"))?;
    let target = session.store.read_serial(&env, serial)?;
    let spec = target.choreography();
    let observed = refresh(ctx, &repo, &session.state, true);
    let planned = plan::plan(PlanInput {
        env: &env,
        spec: &spec,
        state: &session.state,
        settings: &repo.settings,
        targets: &[],
        observed: observed.as_ref(),
    })?;
    ctx.printer.info(&format!("Rolling env `{env}` back to the spec recorded at serial {serial}."));
    ctx.printer.out(&plan::render::render(&planned.plan, ctx.printer.paint));
    if !planned.plan.has_changes() {
        return Ok(Outcome::Success);
    }
    confirm(&format!("\nRoll env `{env}` back to serial {serial}?"), auto_approve, "--auto-approve")?;
    let progress = progress(ctx);
    let report = session.apply(&spec, &planned, &progress, options(10, health_timeout, ctx.accept_new_host_keys)?)?;
    progress.finish();
    Ok(summarize(ctx, &report, "Rollback"))
}

/// Pause or resume one service or every one.
pub fn pause(
    ctx: &Context,
    service: Option<&str>,
    pause: bool,
    yes: bool,
    health_timeout: Option<u64>,
) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let verb = if pause { "pause" } else { "resume" };
    let _guard = interrupt::guard();
    let session = open_session(ctx, &repo, &env, &format!("enact {verb} -e {env}"))?;
    let candidates: Vec<String> = session
        .state
        .services
        .iter()
        .filter(|(_, s)| matches!(s.spec, AppliedSpec::Deployable(_)) && s.paused != pause)
        .map(|(n, _)| n.clone())
        .collect();
    let services: Vec<String> = match service {
        Some(name) => {
            let Some(s) = session.state.services.get(name) else {
                return Err(Diagnostic::new(format!("env `{env}` has no service `{name}`"))
                    .hint(crate::suggest::hint(
                        name,
                        session.state.services.keys().map(String::as_str),
                        "`enact status` lists the services",
                    ))
                    .into());
            };
            if matches!(s.spec, AppliedSpec::Legacy(_)) {
                return Err(Diagnostic::new(format!(
                    "`{name}` is a legacy service: enact does not run it, so it cannot {verb} it"
                ))
                .into());
            }
            if s.paused == pause {
                ctx.printer.info(&format!("Service `{name}` is already {}.", if pause { "paused" } else { "running" }));
                return Ok(Outcome::Success);
            }
            vec![name.to_string()]
        }
        None => candidates,
    };
    if services.is_empty() {
        ctx.printer.info(&format!("Nothing to {verb} in env `{env}`."));
        return Ok(Outcome::Success);
    }
    let listed = services.join(", ");
    confirm(
        &format!(
            "{} {} service(s) of env `{env}`: {listed}? {}",
            if pause { "Pause" } else { "Resume" },
            services.len(),
            if pause {
                "Their instances are unwired from consumers and stopped."
            } else {
                "Their instances start again and are wired to consumers."
            }
        ),
        yes,
        "--yes",
    )?;
    let spec = session.state.choreography();
    let planned = Planned::empty(&env, &session.state);
    let events = progress(ctx);
    let command = format!("enact {verb}");
    let report =
        session.run(&spec, &planned, &events, options(10, health_timeout, ctx.accept_new_host_keys)?, |executor| {
            executor.begin(&command)?;
            let mut failed = Vec::new();
            for s in &services {
                let result = if pause { executor.pause(s) } else { executor.resume(s) };
                if let Err(e) = result {
                    failed.push((s.clone(), e));
                }
            }
            Ok(executor.finish(failed))
        })?;
    events.finish();
    for (s, e) in &report.failed {
        ctx.printer.error(&format!("{s}: {e}"));
    }
    let ok: Vec<&String> = services.iter().filter(|s| !report.failed.iter().any(|(f, _)| f == *s)).collect();
    if !ok.is_empty() {
        ctx.printer.out(&format!(
            "{} {}: {}\n",
            if pause { "Paused" } else { "Resumed" },
            ok.len(),
            ok.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(if report.failed.is_empty() { Outcome::Success } else { Outcome::Failed })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceStatusView {
    id: String,
    node: String,
    native_uri: String,
    recorded: InstanceStatus,
    /// The process runs (as far as the provider can tell).
    alive: bool,
    /// Its port accepts connections.
    answering: bool,
    health: &'static str,
    /// Why it is down (absent when healthy or paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<DownReason>,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceStatusView {
    kind: &'static str,
    paused: bool,
    incomplete: bool,
    instances: Vec<InstanceStatusView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    native_uris: Vec<(String, bool)>,
}

fn answers(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let Some(addr): Option<SocketAddr> = with_port.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

pub fn status(ctx: &Context, json: bool) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let state = leftovers(ctx, &repo, &env, repo.store().read_or_empty(&env)?)?;
    let observed = crate::apply::refresh::observe(&repo.settings, &state, &ctx.provider_options(&repo));
    let untracked = crate::apply::untracked::find(&repo.settings, &state, &ctx.provider_options(&repo));
    let mut services = std::collections::BTreeMap::new();
    let (mut healthy, mut total) = (0, 0);
    for (name, service) in &state.services {
        let mut view = ServiceStatusView {
            kind: if matches!(service.spec, AppliedSpec::Legacy(_)) { "legacy" } else { "deployable" },
            paused: service.paused,
            incomplete: service.incomplete,
            instances: Vec::new(),
            native_uris: Vec::new(),
        };
        if let AppliedSpec::Legacy(l) = &service.spec {
            view.native_uris = l.native_uris.iter().map(|u| (u.clone(), answers(u))).collect();
        }
        for instance in &service.instances {
            let seen = observed.get(&instance.id);
            let (health, reason, detail) = match seen {
                _ if service.paused => ("paused", None, String::new()),
                Some(Health::Healthy) => ("healthy", None, String::new()),
                Some(Health::Down { reason, detail }) => ("down", Some(*reason), detail.clone()),
                None => ("down", Some(DownReason::Unknown), "not looked at".to_string()),
            };
            total += 1;
            if health == "healthy" {
                healthy += 1;
            }
            view.instances.push(InstanceStatusView {
                id: instance.id.clone(),
                node: instance.node.clone(),
                native_uri: instance.native_uri.clone(),
                recorded: instance.status,
                alive: health == "healthy" || reason == Some(DownReason::PortClosed),
                answering: health == "healthy",
                health,
                reason,
                detail,
            });
        }
        services.insert(name.clone(), view);
    }
    // Legacy services run elsewhere: shown, but not enact's to answer for in the exit code.
    let unhealthy: usize = services.values().map(|v| v.instances.iter().filter(|i| i.health == "down").count()).sum();
    let outcome = if unhealthy == 0 && untracked.orphans.is_empty() { Outcome::Success } else { Outcome::Failed };
    if json {
        let orphans: Vec<serde_json::Value> = untracked
            .orphans
            .iter()
            .map(|o| {
                serde_json::json!({ "pid": o.process.pid, "instance": o.process.instance, "service": o.process.service,
                    "address": o.node.address, "account": o.account })
            })
            .collect();
        let out = serde_json::json!({ "env": env, "serial": state.serial, "unhealthy": unhealthy, "services": services,
            "untracked": orphans, "unreachable": untracked.unreachable });
        ctx.printer.out(&format!("{}\n", serde_json::to_string_pretty(&out).unwrap_or_default()));
        return Ok(outcome);
    }
    let paint = ctx.printer.paint;
    let mut out = format!("env `{env}` · serial {}\n", state.serial);
    for (name, view) in &services {
        let mut flags = Vec::new();
        if view.paused {
            flags.push(paint.yellow("paused"));
        }
        if view.incomplete {
            flags.push(paint.yellow("incomplete: run `enact apply` to converge"));
        }
        let _ = writeln!(
            out,
            "\n{}{}{}",
            paint.bold(name),
            if view.kind == "legacy" { " (legacy)" } else { "" },
            if flags.is_empty() { String::new() } else { format!("  [{}]", flags.join(", ")) }
        );
        for (uri, up) in &view.native_uris {
            let _ = writeln!(
                out,
                "  {:<14} {uri}",
                if *up { paint.green("answering") } else { paint.red("not answering") }
            );
        }
        for i in &view.instances {
            let health = match i.health {
                "healthy" => paint.green(i.health),
                "paused" => paint.yellow(i.health),
                _ => paint.red(i.health),
            };
            let _ = writeln!(out, "  {:<20} {:<14} {:<12} {}", i.id, health, i.node, i.native_uri);
            if let Some(reason) = i.reason {
                let detail = if i.detail.is_empty() { String::new() } else { format!(": {}", i.detail) };
                let _ = writeln!(out, "    {} {}{detail}", paint.red("why:"), reason.describe());
            }
        }
    }
    if !untracked.orphans.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("untracked (carry this environment's lineage, in no record)"));
        for orphan in &untracked.orphans {
            let _ = writeln!(out, "  {}", paint.red(&orphan.describe()));
        }
    }
    for host in &untracked.unreachable {
        let _ = writeln!(out, "  could not look for untracked processes on {host}");
    }
    let _ = writeln!(out, "\n{healthy} of {total} instance(s) healthy.");
    ctx.printer.out(&out);
    if !untracked.orphans.is_empty() {
        ctx.printer.error(&format!(
            "{} process(es) carry env `{env}`'s lineage but no record names them; the next `enact apply` (or `enact destroy`) stops them",
            untracked.orphans.len()
        ));
    }
    if unhealthy > 0 {
        ctx.printer.error(&format!(
            "{unhealthy} instance(s) of env `{env}` are not healthy; `enact plan` shows what apply would do"
        ));
    }
    Ok(outcome)
}

pub fn logs(ctx: &Context, service: &str, lines: usize) -> Result<Outcome> {
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
                .logs(instance, node, &log_path(&repo.state_dir(), &env, &instance.id), lines)
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

pub fn history(ctx: &Context) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let store = repo.store();
    // Every row, damaged ones too: history is where one looks when the state is broken.
    let mut rows: Vec<std::result::Result<State, (String, String)>> = Vec::new();
    for (backup, read) in store.read_backups(&env)? {
        rows.push(read.map_err(|e| (backup.serial.to_string(), e.to_string())));
    }
    match store.read(&env) {
        Ok(Some(current)) => rows.push(Ok(current)),
        Ok(None) => {}
        Err(e) => rows.push(Err(("current".to_string(), e.to_string()))),
    }
    if rows.is_empty() {
        ctx.printer.out(&format!("env `{env}` has never been applied.\n"));
        return Ok(Outcome::Success);
    }
    let mut out = format!("{:>7}  {:<21} {:>8} {:>9}  {}\n", "serial", "applied at", "services", "instances", "commit");
    let mut damaged = 0;
    for row in &rows {
        let state = match row {
            Ok(state) => state,
            Err((serial, error)) => {
                damaged += 1;
                let first = error.lines().next().unwrap_or_default();
                let _ = writeln!(out, "{serial:>7}  {}  {first}", ctx.printer.paint.red("DAMAGED"));
                continue;
            }
        };
        let instances: usize = state.services.values().map(|s| s.instances.len()).sum();
        let commit = match &state.provenance {
            Some(p) => {
                format!("{}{}", p.commit.chars().take(12).collect::<String>(), if p.dirty { " (dirty)" } else { "" })
            }
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:>7}  {:<21} {:>8} {:>9}  {commit}",
            state.serial,
            state.applied_at.as_deref().unwrap_or("-"),
            state.services.len(),
            instances
        );
    }
    ctx.printer.out(&out);
    if damaged > 0 {
        ctx.printer.warn(&format!(
            "{damaged} recorded state(s) of env `{env}` are damaged; `enact state restore SERIAL` makes a good backup current again"
        ));
    }
    Ok(Outcome::Success)
}

pub fn state(ctx: &Context, command: &StateCommand) -> Result<Outcome> {
    let repo = ctx.repo()?;
    match command {
        StateCommand::List => {
            let store = repo.store();
            let mut out = String::new();
            for env in repo.known_envs() {
                let Some(state) = store.read(&env)? else {
                    continue;
                };
                let locked = lock::holder(&repo.state_dir(), &env)?
                    .map(|h| format!("  locked by pid {}", h.pid))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{env:<12} serial {:<5} {} service(s)  {}{locked}",
                    state.serial,
                    state.services.len(),
                    state.applied_at.as_deref().unwrap_or("")
                );
            }
            if out.is_empty() {
                out = "No environment has been applied yet.\n".to_string();
            }
            ctx.printer.out(&out);
        }
        StateCommand::Show => {
            let env = ctx.env(&repo)?;
            ctx.printer.out(&repo.store().read_or_empty(&env)?.to_json());
        }
        StateCommand::Restore { serial, yes } => {
            let env = ctx.env(&repo)?;
            let _guard = interrupt::guard();
            let state_dir = repo.state_dir();
            let _lock = lock::acquire(&state_dir, &env, &format!("enact state restore {serial} -e {env}"))?;
            let store = repo.store();
            let current = store.read(&env);
            let what = match &current {
                Ok(Some(c)) => format!("the current state (serial {}) is backed up first", c.serial),
                Ok(None) => "there is no current state".to_string(),
                Err(_) => "the current state is damaged: it is kept beside the backups".to_string(),
            };
            confirm(
                &format!(
                    "\nMake the backup of serial {serial} the current state of env `{env}`? {what}. Instances started since that serial are not in it: `enact status` and `plan` show what runs."
                ),
                *yes,
                "--yes",
            )?;
            let (written, replaced) = store.restore(&env, *serial)?;
            ctx.printer.out(&format!(
                "Restored env `{env}` from the backup of serial {serial} as serial {}{}.\n",
                written.serial,
                replaced.map(|r| format!(" (it replaces serial {r})")).unwrap_or_default()
            ));
        }
        StateCommand::Unlock => {
            // A lock left by the first apply of an environment is the one thing it has.
            let env = ctx.env_arg.clone().unwrap_or_else(|| repo.default_env());
            ConfigRepo::check_env_name(&env)?;
            if !lock::lock_path(&repo.state_dir(), &env).exists() {
                repo.require_env(&env)?;
            }
            match lock::force_unlock(&repo.state_dir(), &env)? {
                Some(holder) => ctx.printer.out(&format!(
                    "Removed the lock of env `{env}` held by pid {} of {} on {} since {} (`{}`).\n",
                    holder.pid, holder.user, holder.host, holder.time, holder.command
                )),
                None => ctx.printer.out(&format!("Env `{env}` was not locked.\n")),
            }
        }
    }
    Ok(Outcome::Success)
}

/// `enact hosts trust`: records the host keys of the ssh accounts' hosts.
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
