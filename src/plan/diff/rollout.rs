//! Rolling replacements: how apply replaces a service's running instances, old before new or
//! new before old, and whether the service's `rollout.maxUnavailable` allows it. Pure; used by
//! [`super::plan`] once placement is known.

use foldhash::{HashMap, HashMapExt as _, HashSet};

use super::PlanInput;
use crate::diagnostic::Diagnostic;
use crate::plan::model::{Rollout, RolloutOrder};
use crate::plan::placement::{Demand, PlacedInstance, Placement, old_first_reason};
use crate::repo::settings::{Account, EnvView};

/// The reason of a rollout whose new instances all have a spare slot.
pub const SPARE_SLOT_REASON: &str = "a spare slot for each new instance";

/// The rollout of every rolling replacement among `demands` (a desired service whose instances
/// are all replaced), by service name; refused when one stops an old instance before its
/// replacement is ready and the service's `rollout.maxUnavailable` is 0.
pub(super) fn rollouts<'d>(
    input: PlanInput<'_>,
    view: &EnvView<'_>,
    demands: &[Demand<'d>],
    placement: &Placement,
) -> Result<Vec<(&'d str, Rollout)>, Vec<Diagnostic>> {
    let rolling: Vec<&Demand<'d>> = demands
        .iter()
        .filter(|d| {
            d.replace_all && d.spec.is_some() && placement.stopped.get(d.service).is_some_and(|s| !s.is_empty())
        })
        .collect();
    if rolling.is_empty() {
        return Ok(Vec::new());
    }
    let names: HashSet<&str> = rolling.iter().map(|d| d.service).collect();
    let mut started: HashMap<&str, Vec<&PlacedInstance>> = HashMap::with_capacity(names.len());
    for placed in placement.started.iter().filter(|p| names.contains(p.service.as_str())) {
        started.entry(placed.service.as_str()).or_default().push(placed);
    }
    let mut out = Vec::with_capacity(rolling.len());
    let mut errors = Vec::new();
    for demand in rolling {
        let (Some(spec), Some(stopped)) = (demand.spec, placement.stopped.get(demand.service)) else {
            continue;
        };
        let recorded = input.state.services.get(demand.service).map_or(0, |s| s.instances.len());
        // Dead instances serve nothing: stopping them first takes nothing down, so the rollout
        // is that of the live ones.
        let is_dead = |id: &str| demand.dead.contains(&id);
        let stopped_live: Vec<String> = stopped.iter().filter(|id| !is_dead(id)).cloned().collect();
        let started_live: Vec<PlacedInstance> = started
            .get(demand.service)
            .into_iter()
            .flatten()
            .map(|p| {
                let mut p = (*p).clone();
                p.after_stopping = p.after_stopping.filter(|old| !is_dead(old));
                p
            })
            .collect();
        let started_live: Vec<&PlacedInstance> = started_live.iter().collect();
        let Some(rollout) = rollout(&started_live, &stopped_live, recorded.saturating_sub(stopped.len()), || {
            old_first_reason(view, spec)
        }) else {
            continue;
        };
        let max_unavailable = view.max_unavailable(demand.service);
        if max_unavailable.value == 0 && !rollout.old_first.is_empty() {
            let whose = if rollout.old_first.len() == 1 { "its replacement is" } else { "their replacements are" };
            let set_at = max_unavailable.set_at.map(|at| format!(" (enact.json `{at}`)")).unwrap_or_default();
            let account = spec.cloud_account.as_deref().unwrap_or(&view.default_account);
            let first = match input.settings.account(account) {
                Some(Account::Ssh(_)) => format!("add a host to ssh account `{account}`"),
                _ => "raise `nodeSelector.vmLimit`".to_string(),
            };
            errors.push(
                Diagnostic::new(format!(
                    "`rollout.maxUnavailable` is 0{set_at}, but {} would stop before {whose} ready: {}",
                    rollout.old_first.join(", "),
                    rollout.reason
                ))
                .service(demand.service)
                .hint(format!("{first}, give the service a free port, or allow it with `rollout.maxUnavailable` ≥ 1")),
            );
        }
        out.push((demand.service, rollout));
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// How one service's rolling replacement runs, following apply's sequence: with old instances
/// `stopped` (in order) and new ones `started` (in order), `remaining` is `stopped` without the
/// `after_stopping` ones; for each new instance its `after_stopping` instance stops first, the
/// new one starts, then the front of `remaining` stops; what remains stops at the end. `kept`
/// instances are not replaced and serve throughout. `None` when nothing rolls (no instance to
/// start or none to stop: apply then starts, or stops, them all at once). `reason` explains an
/// old-before-new stop; it is only called when there is one.
pub fn rollout(
    started: &[&PlacedInstance],
    stopped: &[String],
    kept: usize,
    reason: impl FnOnce() -> String,
) -> Option<Rollout> {
    if started.is_empty() || stopped.is_empty() {
        return None;
    }
    let old_first: Vec<String> = started.iter().filter_map(|p| p.after_stopping.clone()).collect();
    let order = match old_first.len() {
        0 => RolloutOrder::NewBeforeOld,
        n if n == started.len() => RolloutOrder::OldBeforeNew,
        _ => RolloutOrder::Mixed,
    };
    let mut remaining: std::collections::VecDeque<&String> =
        stopped.iter().filter(|id| !old_first.contains(id)).collect();
    let mut serving = kept + stopped.len();
    let mut empty_windows = 0;
    for placed in started {
        // Each stop here comes before this instance starts: a replacement is still to come.
        if placed.after_stopping.as_ref().is_some_and(|old| stopped.contains(old)) {
            serving = serving.saturating_sub(1);
            if serving == 0 {
                empty_windows += 1;
            }
        }
        serving += 1;
        if remaining.pop_front().is_some() {
            // The instance just started serves: this stop never empties the service.
            serving = serving.saturating_sub(1);
        }
    }
    let reason = if old_first.is_empty() { SPARE_SLOT_REASON.to_string() } else { reason() };
    Some(Rollout { order, reason, old_first, empty_windows })
}
