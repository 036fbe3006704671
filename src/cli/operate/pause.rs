//! `enact pause` and `enact resume`: a service's instances stopped and unwired without being
//! forgotten, then started and wired again.

use super::{open_session, options};
use crate::cli::args::{PauseArgs, ResumeArgs};
use crate::cli::{Ask, Context, Outcome, interrupt};
use crate::diagnostic::Diagnostic;
use crate::error::Result;
use crate::plan::Planned;
use crate::state::AppliedSpec;

/// Whether `enact pause` or `enact resume` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle {
    /// Stop the instances (`enact pause`).
    Pause,
    /// Start them again (`enact resume`).
    Resume,
}

/// What `enact pause` and `enact resume` are asked to do, from their arguments.
#[derive(Debug, Clone, Copy)]
pub struct PauseOptions<'a> {
    /// Pause or resume.
    pub toggle: Toggle,
    /// The service; `None` for every one that is not paused (pause) or is (resume).
    pub service: Option<&'a str>,
    /// `--yes`: do not ask for confirmation.
    pub yes: bool,
    /// `--health-timeout` of `resume`, in seconds.
    pub health_timeout: Option<u64>,
}

impl<'a> From<&'a PauseArgs> for PauseOptions<'a> {
    fn from(args: &'a PauseArgs) -> Self {
        PauseOptions { toggle: Toggle::Pause, service: args.service.as_deref(), yes: args.yes, health_timeout: None }
    }
}

impl<'a> From<&'a ResumeArgs> for PauseOptions<'a> {
    fn from(args: &'a ResumeArgs) -> Self {
        PauseOptions {
            toggle: Toggle::Resume,
            service: args.service.as_deref(),
            yes: args.yes,
            health_timeout: args.health_timeout,
        }
    }
}

/// `enact pause` and `enact resume`: stop one service's instances (or every service's) without
/// forgetting them, or start them again and wire them, after confirmation.
///
/// # Errors
/// The repository, the lock, the state, a service the state does not have or that is legacy, no
/// confirmation; a service that fails to pause or resume is reported and makes it exit 1.
pub fn pause(ctx: &Context, asked: &PauseOptions<'_>) -> Result<Outcome> {
    let PauseOptions { toggle, service, yes, health_timeout } = *asked;
    let pause = toggle == Toggle::Pause;
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let verb = if pause { "pause" } else { "resume" };
    let _guard = interrupt::guard();
    let session = open_session(ctx, &repo, &env, &format!("enact {verb} -e {env}"))?;
    let candidates: Vec<String> = session
        .state
        .services
        .iter()
        .filter(|(_, s)| matches!(*s.spec, AppliedSpec::Deployable(_)) && s.paused != pause)
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
            if matches!(*s.spec, AppliedSpec::Legacy(_)) {
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
    let question = format!(
        "{} {} service(s) of env `{env}`: {listed}? {}",
        if pause { "Pause" } else { "Resume" },
        services.len(),
        if pause {
            "Their instances are unwired from consumers and stopped."
        } else {
            "Their instances start again and are wired to consumers."
        }
    );
    ctx.printer.confirm(Ask::Change { question: &question, flag: "--yes" }, yes)?;
    let spec = session.state.choreography();
    let planned = Planned::empty(&env, &session.state);
    let events = ctx.printer.progress();
    let command = format!("enact {verb}");
    let report = session.run(&spec, &planned, &events, options(ctx, 10, health_timeout)?, |executor| {
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
