//! `enact status`: the live health of every recorded instance (a refresh), the legacy services'
//! endpoints, the spare nodes of each account's reservoir, and the processes that carry the
//! environment's lineage but no record names; as text or JSON (`--json`, docs/formats.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use super::leftovers;
use crate::apply::untracked::Untracked;
use crate::cli::{Context, Outcome};
use crate::error::Result;
use crate::paint::Painter;
use crate::repo::settings::Settings;
use crate::state::observed::{DownReason, Health, Observations};
use crate::state::{AppliedSpec, InstanceStatus, State, StateStore};

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

/// What `status` found, per service (by name), with the count of healthy instances of all.
#[derive(Debug)]
struct Seen {
    services: BTreeMap<String, ServiceStatusView>,
    healthy: usize,
    total: usize,
}

/// Whether an HTTP(S) endpoint accepts a TCP connection within 500 ms.
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

/// `enact status`: exits 1 when an instance enact runs is down, a service is incomplete, an
/// untracked process or EC2 instance runs, or a place it may run could not be looked at.
///
/// # Errors
/// The repository, or the state cannot be read.
pub fn status(ctx: &Context, json: bool) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let state = leftovers(ctx, &repo, &env, repo.store().read_or_empty(&env)?)?;
    let observed = crate::apply::refresh::observe(&repo.settings, &state, &ctx.provider_options(&repo));
    let untracked = crate::apply::untracked::find(&repo.settings, &state, &ctx.provider_options(&repo));
    let seen = views(&state, &observed);
    let spares = spares(&repo.settings, &env, &state);
    // Legacy services run elsewhere: shown, but not enact's to answer for in the exit code.
    let unhealthy: usize =
        seen.services.values().map(|v| v.instances.iter().filter(|i| i.health == "down").count()).sum();
    // A place the sweep could not look at may hide what no record names: not all known is not healthy.
    let incomplete: Vec<&str> = state.services.iter().filter(|(_, s)| s.incomplete).map(|(n, _)| n.as_str()).collect();
    let outcome = if unhealthy == 0 && incomplete.is_empty() && untracked.is_empty() && untracked.unreachable.is_empty()
    {
        Outcome::Success
    } else {
        Outcome::Failed
    };
    if json {
        ctx.printer.out(&status_json(&env, &state, &seen, &spares, &untracked, unhealthy));
        return Ok(outcome);
    }
    ctx.printer.out(&status_text(ctx.printer.paint, &env, &state, &seen, &spares, &untracked));
    if !untracked.is_empty() {
        ctx.printer.error(&format!(
            "{} carry env `{env}`'s lineage but no record names them; the next `enact apply` (or `enact destroy`) stops them{}",
            untracked.counted(),
            untracked.adopt_hint()
        ));
    }
    if unhealthy > 0 {
        ctx.printer.error(&format!(
            "{unhealthy} instance(s) of env `{env}` are not healthy; `enact plan` shows what apply would do"
        ));
    }
    if !incomplete.is_empty() {
        ctx.printer.error(&format!(
            "{} service(s) of env `{env}` are incomplete (an apply did not finish them): {}; `enact apply` converges them",
            incomplete.len(),
            incomplete.join(", ")
        ));
    }
    if !untracked.unreachable.is_empty() {
        ctx.printer.error(&format!(
            "could not look everywhere env `{env}` may run something ({}); what runs there is not known",
            untracked.unreachable.join("; ")
        ));
    }
    for (name, view) in &seen.services {
        for (uri, _) in view.native_uris.iter().filter(|(_, up)| !up) {
            ctx.printer.warn(&format!(
                "legacy service `{name}` does not answer at {uri}: its consumers' calls to it fail (enact does not run it, so the exit code does not count it)"
            ));
        }
    }
    Ok(outcome)
}

/// Every service of `state` with the health `observed` of each instance (and whether each
/// endpoint of a legacy service answers).
fn views(state: &State, observed: &Observations) -> Seen {
    let mut services = BTreeMap::new();
    let (mut healthy, mut total) = (0, 0);
    for (name, service) in &state.services {
        let mut view = ServiceStatusView {
            kind: if matches!(*service.spec, AppliedSpec::Legacy(_)) { "legacy" } else { "deployable" },
            paused: service.paused,
            incomplete: service.incomplete,
            instances: Vec::new(),
            native_uris: Vec::new(),
        };
        if let AppliedSpec::Legacy(l) = &*service.spec {
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
    Seen { services, healthy, total }
}

/// Per account, the ids of its spare nodes: every account with spares in `state`, and every
/// account that keeps a reservoir for the services `state` records (with none, when it holds
/// none now).
fn spares(settings: &Settings, env: &str, state: &State) -> BTreeMap<String, Vec<String>> {
    let view = settings.env_view(env);
    let accounts = state.services.values().filter_map(|s| match &*s.spec {
        AppliedSpec::Deployable(d) => Some(d.cloud_account.as_deref().unwrap_or(&view.default_account)),
        AppliedSpec::Legacy(_) => None,
    });
    let mut spares: BTreeMap<String, Vec<String>> = crate::plan::placement::reservoir_accounts(&view, accounts)
        .into_iter()
        .map(|account| (account, Vec::new()))
        .collect();
    for (id, node) in state.nodes.iter().filter(|(_, n)| n.spare) {
        spares.entry(node.account.clone()).or_default().push(id.clone());
    }
    spares
}

/// The machine form of `status --json`.
fn status_json(
    env: &str,
    state: &State,
    seen: &Seen,
    spares: &BTreeMap<String, Vec<String>>,
    untracked: &Untracked,
    unhealthy: usize,
) -> String {
    let found = untracked.found();
    let (orphans, machines) = (found.processes, found.ec2_instances);
    let spares: BTreeMap<&str, usize> = spares.iter().map(|(a, ids)| (a.as_str(), ids.len())).collect();
    let out = serde_json::json!({ "env": env, "serial": state.serial, "unhealthy": unhealthy, "services": seen.services,
        "spares": spares, "untracked": orphans, "untrackedNodes": machines, "unreachable": untracked.unreachable });
    format!("{}\n", serde_json::to_string_pretty(&out).unwrap_or_default())
}

/// The human form of `status`.
fn status_text(
    paint: Painter,
    env: &str,
    state: &State,
    seen: &Seen,
    spares: &BTreeMap<String, Vec<String>>,
    untracked: &Untracked,
) -> String {
    let mut out = format!("env `{env}` · serial {}\n", state.serial);
    for (name, view) in &seen.services {
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
    if !spares.is_empty() {
        out.push('\n');
    }
    for (account, ids) in spares {
        let _ = match ids.len() {
            0 => writeln!(out, "reservoir of account `{account}`: 0 spare nodes (the next apply refills it)"),
            1 => writeln!(out, "reservoir of account `{account}`: 1 spare node ({})", ids[0]),
            n => writeln!(out, "reservoir of account `{account}`: {n} spare nodes ({})", ids.join(", ")),
        };
    }
    if !untracked.orphans.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("untracked (carry this environment's lineage, in no record)"));
        for orphan in &untracked.orphans {
            let _ = writeln!(out, "  {}", paint.red(&orphan.describe()));
        }
    }
    if !untracked.nodes.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            paint.bold("untracked machines (tagged with this environment's lineage, in no record)")
        );
        for node in &untracked.nodes {
            let _ = writeln!(out, "  {}", paint.red(&crate::apply::untracked::describe_node(node)));
        }
    }
    for host in &untracked.unreachable {
        let _ = writeln!(out, "  could not look for untracked processes or EC2 instances on {host}");
    }
    let endpoints: Vec<bool> = seen.services.values().flat_map(|v| v.native_uris.iter().map(|(_, up)| *up)).collect();
    let answering = endpoints.iter().filter(|up| **up).count();
    let legacy = match endpoints.len() {
        0 => String::new(),
        n if answering == n => format!("; {n} of {n} legacy endpoint(s) answering"),
        n => format!("; {} of {n} legacy endpoint(s) {}", n - answering, paint.red("not answering")),
    };
    let _ = writeln!(out, "\n{} of {} instance(s) healthy{legacy}.", seen.healthy, seen.total);
    out
}
