//! `enact apply`, `enact destroy` and `enact rollback`: a plan carried out under the
//! environment's lock, after confirmation.

use std::fmt::Write as _;

use super::{find_untracked, open_session, options, refresh, stop_untracked, summarize, untracked_summary};
use crate::apply::executor::Options;
use crate::apply::untracked::Untracked;
use crate::cli::args::{ApplyArgs, DestroyArgs, RollbackArgs};
use crate::cli::commands::read_plan;
use crate::cli::{Ask, Context, Outcome, interrupt};
use crate::diagnostic::Diagnostic;
use crate::error::Result;
use crate::plan::{self, Action, Plan, PlanInput, Planned};
use crate::repo::ConfigRepo;
use crate::spec::{Choreography, DeployableServiceSpec, LegacyServiceSpec};
use crate::state::observed::{Health, Observations};
use crate::state::{State, StateStore};

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

/// `enact apply`: a plan computed now (after confirmation) or a saved one, carried out under
/// the environment's lock.
///
/// # Errors
/// Everything that stops it before a step runs: the repository, the spec, the lock, the state,
/// a stale or foreign saved plan, a plan refused, no confirmation.
pub fn apply(ctx: &Context, args: &ApplyArgs) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let options = Options { keep_logs: args.keep_logs, ..options(ctx, args.parallelism, args.health_timeout)? };
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
    let mut untracked = Untracked::default();
    let (spec, planned, saved) = match (&args.planfile, effective) {
        (Some(file), _) => {
            let saved = read_plan(ctx, file)?;
            let (spec, mut planned) = saved_plan(&repo, &env, &session.state, &saved)?;
            // As the saved plan said: what no record names goes first (looked for again now).
            if args.refresh {
                untracked = crate::timing::phase("untracked sweep", || find_untracked(ctx, &repo, &session.state));
            }
            planned.plan.untracked = untracked_summary(&untracked);
            (spec, planned, true)
        }
        (None, effective) => {
            let effective = match effective {
                Some(loaded) => loaded?,
                None => repo.load_deployable(&env)?,
            };
            // What no record names is found now, shown in the plan, and stopped once it is
            // approved: nothing changes before the answer.
            if args.refresh {
                untracked = crate::timing::phase("untracked sweep", || find_untracked(ctx, &repo, &session.state));
            }
            let observed = crate::timing::phase("refresh", || refresh(ctx, &repo, &session.state, args.refresh));
            let mut planned = plan::plan(PlanInput {
                env: &env,
                spec: &effective.choreography,
                state: &session.state,
                settings: &repo.settings,
                targets: &args.target,
                observed: observed.as_ref(),
            })?;
            planned.plan.untracked = untracked_summary(&untracked);
            (effective.choreography, planned, false)
        }
    };
    ctx.printer.out(&plan::render::render(&planned.plan, ctx.printer.paint));
    if !planned.plan.has_changes() {
        return Ok(Outcome::Success);
    }
    if !saved {
        let question = format!("\nApply these changes to env `{env}`?");
        ctx.printer.confirm(Ask::Change { question: &question, flag: "--auto-approve" }, args.auto_approve)?;
    }
    let stopped_all = stop_untracked(ctx, &repo, &untracked);
    if planned.plan.changes.is_empty() && !planned.plan.nodes.values().any(plan::model::NodeChanges::changes_something)
    {
        // Only what no record names had to go: the state stays as it is.
        return Ok(if stopped_all { Outcome::Success } else { Outcome::Failed });
    }
    let progress = ctx.printer.progress();
    let report = crate::timing::phase("apply", || session.apply(&spec, &planned, &progress, options))?;
    progress.finish();
    let mut outcome = summarize(ctx, &report, "Apply");
    if !stopped_all {
        outcome = Outcome::Failed;
    }
    // The process ends right after this: freeing the spec, the plan and the state one small
    // allocation at a time would take as long as writing the state.
    std::mem::forget((spec, planned, report));
    Ok(outcome)
}

/// `enact destroy`: every service and node of the environment goes (legacy services are only
/// forgotten), with the processes that carry its lineage but no record names.
///
/// # Errors
/// As [`apply`].
pub fn destroy(ctx: &Context, args: &DestroyArgs) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let options = Options { keep_logs: args.keep_logs, ..options(ctx, args.parallelism, None)? };
    let _guard = interrupt::guard();
    let session =
        crate::timing::phase("session open", || open_session(ctx, &repo, &env, &format!("enact destroy -e {env}")))?;
    // Paused services go too.
    let mut unpaused = session.state.clone();
    for service in unpaused.services.values_mut() {
        service.paused = false;
    }
    let spec = Choreography::default();
    let mut planned = plan::plan(PlanInput {
        env: &env,
        spec: &spec,
        state: &unpaused,
        settings: &repo.settings,
        targets: &[],
        observed: None,
    })?;
    // Processes this environment started that no record names (a journal lost their records):
    // destroy stops them with the rest.
    let untracked = crate::timing::phase("untracked sweep", || find_untracked(ctx, &repo, &session.state));
    planned.plan.untracked = untracked_summary(&untracked);
    if !planned.plan.has_changes() {
        ctx.printer.out(&format!("Nothing to destroy: env `{env}` has no services and no nodes.\n"));
        return Ok(Outcome::Success);
    }
    ctx.printer.out(&plan::render::render(&planned.plan, ctx.printer.paint));
    // Legacy services run elsewhere: destroy forgets them but stops nothing of theirs.
    let (legacy, stopped): (Vec<&plan::Change>, Vec<&plan::Change>) =
        planned.plan.changes.iter().filter(|c| c.action == Action::Destroy).partition(|c| c.legacy);
    let mut question = format!("\nDestroy every service of env `{env}`? This stops {} service(s)", stopped.len());
    if !untracked.is_empty() {
        let _ = write!(question, " and {}", untracked.counted_as("untracked "));
    }
    if !legacy.is_empty() {
        let _ = write!(question, ", and forgets {} legacy service(s), which keep running elsewhere", legacy.len());
    }
    question.push('.');
    ctx.printer.confirm(Ask::Change { question: &question, flag: "--auto-approve" }, args.auto_approve)?;
    let stopped_all = stop_untracked(ctx, &repo, &untracked);
    let progress = ctx.printer.progress();
    let report = crate::timing::phase("destroy", || session.apply(&spec, &planned, &progress, options))?;
    progress.finish();
    let mut outcome = summarize(ctx, &report, "Destroy");
    if !stopped_all {
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
        if !args.keep_logs
            && let Err(e) = std::fs::remove_dir_all(&logs)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            ctx.printer.warn(&format!("the logs in {} stay: {e}", logs.display()));
        }
    }
    Ok(outcome)
}

/// `enact rollback SERIAL`: plans and applies toward the spec recorded at `serial`.
///
/// # Errors
/// As [`apply`], and no recorded state of that serial.
pub fn rollback(ctx: &Context, args: &RollbackArgs) -> Result<Outcome> {
    let serial = args.serial;
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
    let question = format!("\nRoll env `{env}` back to serial {serial}?");
    ctx.printer.confirm(Ask::Change { question: &question, flag: "--auto-approve" }, args.auto_approve)?;
    let progress = ctx.printer.progress();
    let report = session.apply(&spec, &planned, &progress, options(ctx, 10, args.health_timeout)?)?;
    progress.finish();
    Ok(summarize(ctx, &report, "Rollback"))
}
