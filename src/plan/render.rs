//! Showing a plan to a person, like Terraform: `+` create, `-` destroy, `~` update, `-/+`
//! replace, a unified diff of each changed service spec, the nodes placement needs, a summary.

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use super::model::{Action, Change, DownInstance, Plan, Rollout, RolloutOrder, SpecValue};
use crate::paint::Painter;

/// The human form of a plan.
pub fn render(plan: &Plan, paint: Painter) -> String {
    let mut out = String::new();
    let serial = match &plan.prior_state.lineage {
        Some(_) => format!("state serial {}", plan.prior_state.serial),
        None => "never applied".to_string(),
    };
    let unreplaced: Vec<&DownInstance> = plan.down.iter().filter(|d| !d.replaced).collect();
    for d in &unreplaced {
        let detail = if d.detail.is_empty() { String::new() } else { format!(": {}", d.detail) };
        let _ = writeln!(
            out,
            "{} instance {} of service `{}` is not healthy ({}){detail}; enact does not replace it",
            paint.yellow("Warning:"),
            d.instance,
            d.service,
            d.reason.describe(),
        );
    }
    if !unreplaced.is_empty() {
        out.push('\n');
    }
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "{} env `{}` matches its spec ({serial}); apply would change nothing.",
            paint.green("No changes."),
            plan.env
        );
        for service in &plan.paused {
            let _ =
                writeln!(out, "Service `{service}` is paused: apply leaves it alone until `enact resume {service}`.");
        }
        limited_reservoirs(&mut out, plan);
        return out;
    }
    let _ = writeln!(out, "enact will perform these actions on env `{}` ({serial}):", plan.env);
    if !plan.targets.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            paint.yellow(&format!("  (limited to --target {} and what they depend on)", plan.targets.join(", ")))
        );
    }
    let _ = writeln!(
        out,
        "  {} create  {} update in place  {} destroy  {} replace",
        paint.green("+"),
        paint.yellow("~"),
        paint.red("-"),
        paint.magenta("-/+")
    );
    let changes: std::collections::HashMap<&str, &Change> =
        plan.changes.iter().map(|c| (c.service.as_str(), c)).collect();
    for step in &plan.steps {
        if let Some(change) = changes.get(step.service.as_str()) {
            out.push('\n');
            render_change(&mut out, change, &plan.down, paint);
        }
    }
    out.push('\n');
    for service in &plan.paused {
        let _ = writeln!(
            out,
            "{} service `{service}` is paused: apply leaves it alone until `enact resume {service}`",
            paint.yellow("~")
        );
    }
    node_lines(&mut out, plan, paint);
    limited_reservoirs(&mut out, plan);
    let untracked = untracked_line(&mut out, plan, paint);
    let s = &plan.summary;
    let _ = writeln!(
        out,
        "{} {} to create, {} to update, {} to replace, {} to destroy{untracked}.",
        paint.bold("Plan:"),
        s.create,
        s.update,
        s.replace,
        s.destroy
    );
    out
}

/// The line saying what apply stops that no record names, if anything; returns what the
/// summary line adds for it (`, 2 untracked to stop`).
fn untracked_line(out: &mut String, plan: &Plan, paint: Painter) -> String {
    let u = &plan.untracked;
    if u.is_empty() {
        return String::new();
    }
    let mut what = Vec::new();
    if u.processes > 0 {
        what.push(format!("stops {} process(es)", u.processes));
    }
    if u.ec2_instances > 0 {
        what.push(format!("terminates {} EC2 instance(s)", u.ec2_instances));
    }
    let adopt = if u.ec2_instances > 0 { " (`enact state adopt` records the machines instead)" } else { "" };
    let _ = writeln!(
        out,
        "{} first {} that carry env `{}`'s lineage but no record names: {}{adopt}",
        paint.red("-"),
        what.join(" and "),
        plan.env,
        u.described
    );
    format!(", {} untracked to stop", u.processes + u.ec2_instances)
}

/// A line per account whose reservoir `vmLimit` keeps below what it would hold.
fn limited_reservoirs(out: &mut String, plan: &Plan) {
    for (account, nodes) in &plan.nodes {
        if let Some(spares) = nodes.spares
            && let Some(from) = spares.limited_from
        {
            let _ = writeln!(
                out,
                "The reservoir of account `{account}` keeps {} spare node{}, not {from}: `vmLimit` leaves no room for more (spares count against it).",
                spares.after,
                if spares.after == 1 { "" } else { "s" }
            );
        }
    }
}

fn render_change(out: &mut String, change: &Change, down: &[DownInstance], paint: Painter) {
    let kind = if change.legacy { "legacy service" } else { "service" };
    let name = &change.service;
    let (symbol, headline) = match change.action {
        Action::Create => (paint.green("  +"), format!("{kind} `{name}` will be created")),
        Action::Destroy => (paint.red("  -"), format!("{kind} `{name}` will be destroyed")),
        Action::Update => (paint.yellow("  ~"), format!("{kind} `{name}` will be updated in place")),
        Action::Replace => (
            paint.magenta("-/+"),
            format!(
                "{kind} `{name}` will be redeployed{} (forced by {})",
                change.rollout.as_ref().map(|r| format!(" {}", order_words(r))).unwrap_or_default(),
                change
                    .forced_by
                    .iter()
                    .map(|f| if f == "incomplete" { "an earlier apply that did not finish" } else { f.as_str() })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    let mut notes = Vec::new();
    if let Some(i) = change.instances {
        notes.push(format!("instances {} → {}", i.from, i.to));
    }
    if let Some(m) = change.memory
        && change.action != Action::Create
        && change.action != Action::Destroy
    {
        let show = |m: Option<crate::spec::Memory>| m.map_or("none".to_string(), |m| m.to_string());
        notes.push(format!("memory {} → {}, instances move to new nodes", show(m.from), show(m.to)));
    }
    if !change.rewire.is_empty() {
        // A provider the service no longer depends on is in the list too: apply sends it the
        // empty list once, so the service stops calling it.
        let calls = provider_names(change.after.as_ref());
        let (kept, dropped): (Vec<&str>, Vec<&str>) =
            change.rewire.iter().map(String::as_str).partition(|p| calls.iter().any(|c| c == p));
        if !kept.is_empty() {
            notes.push(format!("rewired to {}", kept.join(", ")));
        }
        if !dropped.is_empty() {
            notes.push(format!("told to stop calling {}", dropped.join(", ")));
        }
    }
    let _ = writeln!(out, "  {} {headline}", paint.dim("#"));
    if !notes.is_empty() {
        let _ = writeln!(out, "  {} {}", paint.dim("#"), notes.join("; "));
    }
    for id in &change.restart {
        let why = down.iter().find(|d| d.instance == *id).map_or("not running", |d| d.reason.describe());
        let _ = writeln!(out, "  {} instance {id} is not running ({why}) → replaced by a new instance", paint.dim("#"));
    }
    if let Some(rollout) = &change.rollout {
        // A replace says the order in its headline; a move to new nodes says it here.
        let order = (change.action != Action::Replace).then(|| format!("redeployed {}", order_words(rollout)));
        let old_first = old_first_words(rollout);
        let line = match (order, old_first) {
            (Some(order), Some(old_first)) => format!("{order}: {old_first}"),
            (Some(line), None) | (None, Some(line)) => line,
            (None, None) => String::new(),
        };
        if !line.is_empty() {
            let _ = writeln!(out, "  {} {line}", paint.dim("#"));
        }
    }
    let _ = writeln!(out, "{symbol} {name}");
    let before = pretty(change.before.as_ref());
    let after = pretty(change.after.as_ref());
    if change.action == Action::Destroy {
        return;
    }
    let diff = TextDiff::from_lines(&before, &after);
    for group in diff.grouped_ops(2) {
        if change.action != Action::Create {
            let first = group.first().map(|op| op.old_range().start + 1).unwrap_or(0);
            let _ = writeln!(out, "      {}", paint.dim(&format!("@@ line {first} @@")));
        }
        for op in group {
            for line in diff.iter_changes(&op) {
                let text = line.value().trim_end_matches('\n');
                let shown = match line.tag() {
                    ChangeTag::Delete => paint.red(&format!("    - {text}")),
                    ChangeTag::Insert => paint.green(&format!("    + {text}")),
                    ChangeTag::Equal => format!("      {text}"),
                };
                let _ = writeln!(out, "  {shown}");
            }
        }
    }
}

/// The order of a rollout in words: `new-before-old, one instance at a time`, `old-before-new`,
/// `one instance at a time, partly old-before-new`.
fn order_words(rollout: &Rollout) -> String {
    match rollout.order {
        RolloutOrder::NewBeforeOld => "new-before-old, one instance at a time".to_string(),
        RolloutOrder::OldBeforeNew => "old-before-new".to_string(),
        RolloutOrder::Mixed => "one instance at a time, partly old-before-new".to_string(),
    }
}

/// Which old instances stop before their replacement is ready, why, and how often the service
/// then has no serving instance; `None` when none does.
fn old_first_words(rollout: &Rollout) -> Option<String> {
    let n = rollout.old_first.len();
    if n == 0 {
        return None;
    }
    let (verb, whose) = if n == 1 { ("stops", "its replacement is") } else { ("stop", "their replacements are") };
    let serving = match rollout.empty_windows {
        0 => "the service keeps at least one serving instance".to_string(),
        1 => "the service has no serving instance once".to_string(),
        2 => "the service has no serving instance twice".to_string(),
        k => format!("the service has no serving instance {k} times"),
    };
    Some(format!("{} {verb} before {whose} ready ({}); {serving}", rollout.old_first.join(", "), rollout.reason))
}

/// The providers a spec depends on (`serviceSpecName` of every dependency), typed or as a
/// saved plan's JSON holds it.
fn provider_names(spec: Option<&SpecValue>) -> Vec<String> {
    match spec {
        Some(SpecValue::Deployable(s)) => s.dependencies.iter().map(|d| d.service_spec_name.clone()).collect(),
        Some(SpecValue::Legacy(s)) => s.dependencies.iter().map(|d| d.service_spec_name.clone()).collect(),
        Some(SpecValue::Json(value)) => value
            .get("dependencies")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| d.get("serviceSpecName").and_then(serde_json::Value::as_str).map(str::to_string))
            .collect(),
        None => Vec::new(),
    }
}

fn pretty(value: Option<&SpecValue>) -> String {
    match value {
        Some(v) => {
            let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
            text.push('\n');
            text
        }
        None => String::new(),
    }
}

/// One line per account whose nodes the plan changes: `Nodes in account `aws`: +3 t3.micro,
/// -1 SMALL, +2 spare`.
fn node_lines(out: &mut String, plan: &Plan, paint: Painter) {
    for (account, nodes) in &plan.nodes {
        let mut parts = Vec::new();
        for (size, n) in &nodes.create {
            parts.push(paint.green(&format!("+{n} {size}")));
        }
        for (size, n) in &nodes.destroy {
            parts.push(paint.red(&format!("-{n} {size}")));
        }
        if let Some(spares) = nodes.spares {
            if spares.create > 0 {
                parts.push(paint.green(&format!("+{} spare", spares.create)));
            }
            if spares.destroy > 0 {
                parts.push(paint.red(&format!("-{} spare", spares.destroy)));
            }
            if spares.handed_out > 0 {
                parts.push(format!("{} spare taken by new instances", spares.handed_out));
            }
        }
        if !parts.is_empty() {
            let _ = writeln!(out, "Nodes in account `{account}`: {}", parts.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::{FromTo, PLAN_FORMAT_VERSION, PriorState, Step, Summary};
    use crate::spec::{DeployableServiceSpec, ServiceDependency};

    /// A plan in which `c` goes from calling `a` and `b` to calling `a` alone, while `a`'s
    /// instances change: `c` is rewired to `a` and told to stop calling `b`.
    fn plan(after: SpecValue) -> Plan {
        let depends = |names: &[&str]| {
            names
                .iter()
                .map(|n| ServiceDependency { service_spec_name: (*n).into(), service_spec_role: (*n).into() })
                .collect()
        };
        let before = DeployableServiceSpec {
            name: "c".into(),
            port: Some(80),
            dependencies: depends(&["a", "b"]),
            ..Default::default()
        };
        Plan {
            format_version: PLAN_FORMAT_VERSION,
            env: "dev".into(),
            prior_state: PriorState { lineage: Some("l".into()), serial: 3 },
            spec_digest: "d".into(),
            changes: vec![Change {
                service: "c".into(),
                action: Action::Update,
                instances: Some(FromTo { from: 1, to: 2 }),
                memory: None,
                fields: Vec::new(),
                rewire: vec!["a".into(), "b".into()],
                forced_by: Vec::new(),
                legacy: false,
                before: Some(SpecValue::Deployable(std::sync::Arc::new(before))),
                after: Some(after),
                rollout: None,
                restart: Vec::new(),
            }],
            steps: vec![Step { service: "c".into(), action: Action::Update, after: vec!["a".into()] }],
            nodes: std::collections::BTreeMap::new(),
            summary: Summary { update: 1, ..Summary::default() },
            paused: Vec::new(),
            targets: Vec::new(),
            refreshed: false,
            down: Vec::new(),
            untracked: crate::plan::model::UntrackedSummary::default(),
        }
    }

    #[test]
    fn what_no_record_names_is_a_change_apply_makes() {
        let mut plan = plan(SpecValue::Json(serde_json::Value::Null));
        plan.changes.clear();
        plan.steps.clear();
        plan.summary = Summary::default();
        assert!(!plan.has_changes());
        assert!(render(&plan, Painter::new(false)).starts_with("No changes."));
        plan.untracked = crate::plan::model::UntrackedSummary {
            processes: 2,
            ec2_instances: 1,
            described: "pid 7 on this machine, i-1".into(),
            ..Default::default()
        };
        assert!(plan.has_changes(), "--detailed-exitcode says 2");
        let text = render(&plan, Painter::new(false));
        assert!(
            text.contains("- first stops 2 process(es) and terminates 1 EC2 instance(s) that carry env `dev`'s lineage but no record names: pid 7 on this machine, i-1 (`enact state adopt` records the machines instead)"),
            "{text}"
        );
        assert!(
            text.contains("Plan: 0 to create, 0 to update, 0 to replace, 0 to destroy, 3 untracked to stop."),
            "{text}"
        );
    }

    #[test]
    fn a_dropped_provider_is_not_said_to_be_wired() {
        let after = DeployableServiceSpec {
            name: "c".into(),
            port: Some(80),
            dependencies: vec![ServiceDependency { service_spec_name: "a".into(), service_spec_role: "a".into() }],
            ..Default::default()
        };
        let json = SpecValue::Json(serde_json::to_value(&after).unwrap());
        // As planned, and as read back from a saved plan.
        for after in [SpecValue::Deployable(std::sync::Arc::new(after)), json] {
            let text = render(&plan(after), Painter::new(false));
            assert!(text.contains("instances 1 → 2; rewired to a; told to stop calling b"), "{text}");
            assert!(!text.contains("rewired to a, b"), "{text}");
        }
    }
}
