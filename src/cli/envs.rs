//! The environment commands: `merge`, `promote`, `diff`, `scale`. Each edits one overlay: it
//! computes the new overlay, checks that the environment it makes is valid, shows the diff, and
//! writes only when confirmed. A refused command changes no file.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Map, Value};
use similar::{ChangeTag, TextDiff};

use super::args::{DiffArgs, MergeArgs, PromoteArgs};
use super::{Ask, Context, Outcome};
use crate::diagnostic::{Diagnostic, SourceFile};
use crate::env::promote::{self, Promotion, ServiceOutcome};
use crate::error::{Error, Result};
use crate::plan::{self, PlanInput};
use crate::repo::{ConfigRepo, ENVS_DIR, SPEC_FILE, read_optional};
use crate::spec::format;
use crate::spec::parse::{FileKind, LISTS, parse_spec_file};
use crate::spec::{Choreography, Service};
use crate::state::StateStore;
use crate::state::store::write_atomic;

/// An overlay being edited.
struct OverlayEdit {
    env: String,
    display: String,
    /// The file as it is (empty when there is none).
    original: String,
    /// Whether the file exists.
    exists: bool,
    /// What the file holds, parsed (an empty object when there is none).
    original_value: Map<String, Value>,
    value: Map<String, Value>,
}

impl OverlayEdit {
    fn open(repo: &ConfigRepo, env: &str) -> Result<OverlayEdit> {
        let display = format!("{ENVS_DIR}/{env}.json");
        let read = read_optional(&repo.overlay_path(env))?;
        let exists = read.is_some();
        let original = read.unwrap_or_default();
        let value = if original.trim().is_empty() {
            Map::new()
        } else {
            match parse_spec_file(&SourceFile::new(&display, original.clone()), FileKind::Overlay)? {
                Value::Object(map) => map,
                _ => Map::new(),
            }
        };
        Ok(OverlayEdit { env: env.to_string(), display, original, exists, original_value: value.clone(), value })
    }

    fn text(&self) -> String {
        format::to_text(&format::canonical(&Value::Object(self.value.clone())))
    }

    /// Whether the edit changes what the overlay says (not merely its layout): an edit that
    /// changes nothing writes nothing.
    fn changed(&self) -> bool {
        format::canonical(&Value::Object(self.value.clone()))
            != format::canonical(&Value::Object(self.original_value.clone()))
    }

    /// The unified diff of the overlay file: the file as it is, then as it would be written.
    fn diff(&self, ctx: &Context) -> String {
        let paint = ctx.printer.paint;
        let new = self.text();
        let diff = TextDiff::from_lines(&self.original, &new);
        let mut out = if self.exists {
            format!("--- {}\n+++ {} (as it would be written)\n", self.display, self.display)
        } else {
            format!("--- /dev/null\n+++ {} (a new file)\n", self.display)
        };
        for group in diff.grouped_ops(3) {
            let first = group.first().map_or(0, |op| op.old_range().start + 1);
            let _ = writeln!(out, "{}", paint.dim(&format!("@@ line {first} @@")));
            for op in group {
                for change in diff.iter_changes(&op) {
                    let line = change.value().trim_end_matches('\n');
                    let shown = match change.tag() {
                        ChangeTag::Delete => paint.red(&format!("-{line}")),
                        ChangeTag::Insert => paint.green(&format!("+{line}")),
                        ChangeTag::Equal => format!(" {line}"),
                    };
                    let _ = writeln!(out, "{shown}");
                }
            }
        }
        out
    }

    /// Checks the environment the edit makes; every problem, named for the environment.
    fn check(&self, repo: &ConfigRepo) -> Result<Choreography> {
        repo.load_with_overlay(&self.env, Some(self.text())).map(|e| e.choreography)
    }

    /// Writes after confirmation (a terminal prompt, or `--yes`).
    fn write(&self, ctx: &Context, repo: &ConfigRepo, yes: bool) -> Result<()> {
        ctx.printer.confirm(Ask::Write { file: &self.display }, yes)?;
        write_atomic(&repo.overlay_path(&self.env), self.text().as_bytes())
    }
}

/// An environment must exist: an overlay, an entry in enact.json, a recorded state, or the
/// default.
fn known_env(repo: &ConfigRepo, env: &str) -> Result<()> {
    repo.require_env(env)
}

/// `env new NAME`: writes an empty overlay, the explicit act that creates an environment.
pub fn new_env(ctx: &Context, name: &str) -> Result<Outcome> {
    let repo = ctx.repo()?;
    ConfigRepo::check_env_name(name)?;
    let path = repo.overlay_path(name);
    let display = format!("{ENVS_DIR}/{name}.json");
    if path.exists() {
        return Err(Diagnostic::new(format!("env `{name}` already exists: {display} is there"))
            .hint(format!("plan it with `enact -e {name} plan`; `enact env list` lists the environments"))
            .into());
    }
    let dir = repo.root.join(ENVS_DIR);
    std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
    write_atomic(&path, b"{}\n")?;
    let mut note = format!(
        "Created env `{name}`: {display}, an empty overlay (the env is the base spec alone until you add to it).\n\
         `enact -e {name} plan` shows what applying it would do."
    );
    let others: Vec<String> = repo.environments().into_iter().filter(|e| e != name).collect();
    if let Some(close) = crate::suggest::closest(name, others.iter().map(String::as_str)) {
        let _ = write!(note, "\nNote: env `{close}` exists too; remove {display} if you meant that one.");
    }
    ctx.printer.info(&note);
    Ok(Outcome::Success)
}

/// `env list`: each environment and what makes it one.
pub fn list_envs(ctx: &Context) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let store = repo.store();
    let default = repo.default_env();
    let mut out = String::new();
    for env in repo.environments() {
        let mut sources = Vec::new();
        if repo.overlay_path(&env).exists() {
            sources.push(format!("{ENVS_DIR}/{env}.json"));
        }
        if repo.settings.envs.contains_key(&env) {
            sources.push(format!("`envs.{env}` in {}", crate::repo::SETTINGS_FILE));
        }
        if sources.is_empty() {
            sources.push("no overlay: the base spec alone".to_string());
        }
        let state = match store.read(&env) {
            Ok(Some(state)) => format!("serial {}, {} service(s)", state.serial, state.services.len()),
            Ok(None) => "never applied".to_string(),
            Err(_) => "state unreadable (`enact -e ENV show` says why)".replace("ENV", &env),
        };
        let marker = if env == default { "*" } else { " " };
        let _ = writeln!(out, "{marker} {env:<12} {:<40} {state}", sources.join(", "));
    }
    let _ = writeln!(out, "\n* the default (`-e` when none is given)");
    ctx.printer.out(&out);
    Ok(Outcome::Success)
}

/// Names of the services of chor.json, as written (for `$delete`).
fn base_names(repo: &ConfigRepo) -> Result<BTreeSet<String>> {
    let text = crate::repo::read_text(&repo.root.join(SPEC_FILE))?;
    let value = parse_spec_file(&SourceFile::new(SPEC_FILE, text), FileKind::Base)?;
    Ok(LISTS
        .iter()
        .filter_map(|l| value.get(*l).and_then(Value::as_array))
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_string))
        .collect())
}

fn render_report(ctx: &Context, report: &promote::Report) -> String {
    let paint = ctx.printer.paint;
    let mut out = String::new();
    for (service, outcome) in &report.services {
        let line = match outcome {
            ServiceOutcome::Created => paint.green(&format!("  + {service}: created")),
            ServiceOutcome::Updated { fields } => {
                paint.yellow(&format!("  ~ {service}: updated {}", fields.join(", ")))
            }
            ServiceOutcome::Unchanged => format!("    {service}: unchanged"),
            ServiceOutcome::KeptLocal { fields } => {
                format!(
                    "    {service}: kept this environment's own {} (changed here since the last promotion)",
                    fields.join(", ")
                )
            }
            ServiceOutcome::Conflicted { fields } => {
                paint.red(&format!("  ! {service}: conflict on {}", fields.join(", ")))
            }
            ServiceOutcome::RemovedInSource => {
                paint.yellow(&format!("  ! {service}: not in the source; kept (pass --prune to remove it)"))
            }
            ServiceOutcome::Deleted => paint.red(&format!("  - {service}: removed")),
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Turns a failed check of the edited environment into errors naming what new services lack.
fn incomplete(env: &str, created: &[String], err: Error) -> Error {
    let Error::Invalid(diagnostics) = err else { return err };
    let list = diagnostics
        .0
        .into_iter()
        .map(|mut d| {
            if let Some(service) = d.service.clone().filter(|s| created.contains(s)) {
                d.message = format!("is new in env `{env}` and cannot be completed there: {}", d.message);
                d.service = Some(service);
            }
            d
        })
        .collect::<Vec<_>>();
    Error::from(list)
}

/// `enact merge FILE`: an exported spec merged into the environment's overlay, by name.
///
/// # Errors
/// The file cannot be read or is not a spec, the environment it makes is not valid, no
/// confirmation.
pub fn merge(ctx: &Context, args: &MergeArgs) -> Result<Outcome> {
    let MergeArgs { file, prune, yes } = args;
    let (file, prune, yes) = (file.as_path(), *prune, *yes);
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let path = ctx.resolve(file);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Diagnostic::new(format!("cannot read {}: {e}", file.display())).hint("give a file made by `enact export`")
    })?;
    let value = parse_spec_file(&SourceFile::new(file, text), FileKind::Base)?;
    let mut incoming: Choreography =
        serde_json::from_value(value).map_err(|e| Diagnostic::new(format!("{} is not a spec: {e}", file.display())))?;
    incoming.normalize();
    let current = repo.load(&env)?.choreography;
    let mut edit = OverlayEdit::open(&repo, &env)?;
    let report = promote::merge(&incoming, &current, &base_names(&repo)?, prune, &mut edit.value);
    let created: Vec<String> =
        report.services.iter().filter(|(_, o)| **o == ServiceOutcome::Created).map(|(s, _)| s.clone()).collect();
    edit.check(&repo).map_err(|e| incomplete(&env, &created, e))?;
    let mut out = format!("Merging {} into env `{env}`:\n", file.display());
    out.push_str(&render_report(ctx, &report));
    if !edit.changed() {
        out.push_str(&format!("\n{} is already up to date; nothing to write.\n", edit.display));
        ctx.printer.out(&out);
        return Ok(Outcome::Success);
    }
    out.push('\n');
    out.push_str(&edit.diff(ctx));
    ctx.printer.out(&out);
    edit.write(ctx, &repo, yes)?;
    ctx.printer.info(&format!("Wrote {}. `enact -e {env} plan` shows what apply would do.", edit.display));
    Ok(Outcome::Success)
}

/// `enact promote FROM TO`: FROM's promotable fields copied into TO's overlay, three-way against
/// the last promotion.
///
/// # Errors
/// An unknown environment, `--only` naming no service, a conflict without `--force`, an
/// environment that is not valid after the promotion, no confirmation.
pub fn promote(ctx: &Context, args: &PromoteArgs) -> Result<Outcome> {
    let repo = ctx.repo()?;
    known_env(&repo, &args.from)?;
    known_env(&repo, &args.to)?;
    if args.from == args.to {
        return Err(Diagnostic::new(format!("cannot promote env `{}` into itself", args.from)).into());
    }
    let source = repo.load(&args.from)?.choreography;
    let target = repo.load(&args.to)?.choreography;
    let known: BTreeSet<&str> = source.services().chain(target.services()).map(Service::name).collect();
    let unknown: Vec<&String> = args.only.iter().filter(|o| !known.contains(o.as_str())).collect();
    if !unknown.is_empty() {
        return Err(Diagnostic::new(format!(
            "`--only` names no service of env `{}` or `{}`: {}",
            args.from,
            args.to,
            unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    let mut edit = OverlayEdit::open(&repo, &args.to)?;
    let base = base_names(&repo)?;
    let report = promote::promote(
        Promotion {
            from: &args.from,
            source: &source,
            target: &target,
            base_names: &base,
            only: &args.only,
            force: args.force,
            prune: args.prune,
        },
        &mut edit.value,
    );
    let mut out = format!("Promoting env `{}` into env `{}`:\n", args.from, args.to);
    out.push_str(&render_report(ctx, &report));
    if !report.conflicts.is_empty() {
        let _ = writeln!(out, "\nConflicts (changed in both since the last promotion):");
        for c in &report.conflicts {
            let _ = writeln!(
                out,
                "  {}: base {}, {} (source) {}, {} (target) {}{}",
                c.pointer,
                c.base,
                args.from,
                c.source,
                args.to,
                c.target,
                if args.force { " → took the source's (--force)" } else { "" }
            );
        }
        if !args.force {
            ctx.printer.out(&out);
            return Err(Diagnostic::new(format!("{} conflict(s); nothing was written", report.conflicts.len()))
                .hint(format!(
                    "resolve them in envs/{}.json, or pass --force to take env `{}`'s values",
                    args.to, args.from
                ))
                .into());
        }
    }
    let created: Vec<String> =
        report.services.iter().filter(|(_, o)| **o == ServiceOutcome::Created).map(|(s, _)| s.clone()).collect();
    if let Err(e) = edit.check(&repo) {
        ctx.printer.out(&out);
        return Err(incomplete(&args.to, &created, e));
    }
    if !edit.changed() {
        let _ = writeln!(out, "\nenv `{}` already has everything of env `{}`; nothing to write.", args.to, args.from);
        ctx.printer.out(&out);
        return Ok(Outcome::Success);
    }
    out.push('\n');
    out.push_str(&edit.diff(ctx));
    ctx.printer.out(&out);
    edit.write(ctx, &repo, args.yes)?;
    ctx.printer.info(&format!("Wrote {}. `enact -e {} plan` shows what apply would do.", edit.display, args.to));
    Ok(Outcome::Success)
}

/// `enact diff A B`: how two environments' effective specs differ, as a text diff and by kind of
/// field (promotable, environment-local, other).
///
/// # Errors
/// An unknown environment, or one whose spec does not load.
pub fn diff(ctx: &Context, args: &DiffArgs) -> Result<Outcome> {
    let (a, b, json) = (args.a.as_str(), args.b.as_str(), args.json);
    let repo = ctx.repo()?;
    known_env(&repo, a)?;
    known_env(&repo, b)?;
    let (sa, sb) = (repo.load(a)?.choreography, repo.load(b)?.choreography);
    let d = promote::diff(&sa, &sb);
    if json {
        let value = serde_json::json!({ "a": a, "b": b, "differences": d });
        ctx.printer.out(&format::to_text(&value));
        return Ok(Outcome::Success);
    }
    let paint = ctx.printer.paint;
    let (ta, tb) = (sa.to_canonical_json(), sb.to_canonical_json());
    let mut out = String::new();
    if ta == tb {
        ctx.printer.out(&format!("env `{a}` and env `{b}` have the same effective spec.\n"));
        return Ok(Outcome::Success);
    }
    let _ = writeln!(out, "--- env {a}\n+++ env {b}");
    let text = TextDiff::from_lines(&ta, &tb);
    for group in text.grouped_ops(3) {
        let first = group.first().map_or(0, |op| op.old_range().start + 1);
        let _ = writeln!(out, "{}", paint.dim(&format!("@@ line {first} @@")));
        for op in group {
            for change in text.iter_changes(&op) {
                let line = change.value().trim_end_matches('\n');
                let _ = writeln!(
                    out,
                    "{}",
                    match change.tag() {
                        ChangeTag::Delete => paint.red(&format!("-{line}")),
                        ChangeTag::Insert => paint.green(&format!("+{line}")),
                        ChangeTag::Equal => format!(" {line}"),
                    }
                );
            }
        }
    }
    let section = |out: &mut String, title: &str, list: &[promote::FieldDifference]| {
        if list.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{title}:");
        for f in list {
            let (va, vb) = (shown(&f.a, f.a_default.as_ref()), shown(&f.b, f.b_default.as_ref()));
            let _ = writeln!(out, "  {} {}: {va} → {vb}", f.service, f.field);
        }
    };
    section(&mut out, "Promotable differences (`enact promote` moves these)", &d.promotable);
    section(&mut out, "Environment-local differences (each environment keeps its own)", &d.environment_local);
    section(&mut out, "Other differences", &d.other);
    if !d.only_in_a.is_empty() {
        let _ = writeln!(out, "\nOnly in env `{a}`: {}", d.only_in_a.join(", "));
    }
    if !d.only_in_b.is_empty() {
        let _ = writeln!(out, "\nOnly in env `{b}`: {}", d.only_in_b.join(", "));
    }
    ctx.printer.out(&out);
    Ok(Outcome::Success)
}

/// A field's value in `diff`'s text: a field left out of an effective spec holds its default
/// (the spec is normalized: defaults are dropped), which is said, or else is not set.
fn shown(value: &Value, default: Option<&Value>) -> String {
    match default {
        _ if !value.is_null() => value.to_string(),
        Some(default) => format!("{default} (default)"),
        None => "(not set)".to_string(),
    }
}

/// `scale SVC=N…`: the elasticity hook. Edits the overlay (no prompt: a monitoring daemon
/// calls it), then shows the plan.
pub fn scale(ctx: &Context, requests: &[String]) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let current = repo.load(&env)?.choreography;
    let mut wanted = Vec::new();
    let mut errors = Vec::new();
    for request in requests {
        let Some((name, count)) = request.split_once('=') else {
            errors.push(
                Diagnostic::new(format!("`{request}` is not SERVICE=COUNT"))
                    .hint("for example `enact scale airline=3`"),
            );
            continue;
        };
        let Ok(count) = count.parse::<u32>() else {
            errors.push(Diagnostic::new(format!("`{count}` in `{request}` is not a count of instances (0 or more)")));
            continue;
        };
        match current.services().find(|s| s.name() == name) {
            Some(Service::Deployable(_)) => wanted.push((name.to_string(), count)),
            Some(Service::Legacy(_)) => errors.push(
                Diagnostic::new(format!(
                    "`{name}` is a legacy service: enact does not run its instances, so it cannot scale it"
                ))
                .service(name),
            ),
            None => {
                errors.push(
                    Diagnostic::new(format!("env `{env}` has no service `{name}`")).hint(crate::suggest::hint(
                        name,
                        current.names(),
                        "`enact graph` lists the services",
                    )),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let mut edit = OverlayEdit::open(&repo, &env)?;
    for (name, count) in &wanted {
        let items = edit.value.entry(LISTS[0].to_string()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = items {
            match items.iter_mut().find(|i| i.get("name").and_then(Value::as_str) == Some(name)) {
                Some(Value::Object(entry)) => {
                    entry.insert("numberOfInstances".into(), Value::from(*count));
                }
                _ => items.push(serde_json::json!({ "name": name, "numberOfInstances": count })),
            }
        }
    }
    let spec = edit.check(&repo)?;
    if edit.changed() {
        write_atomic(&repo.overlay_path(&env), edit.text().as_bytes())?;
        ctx.printer.info(&format!(
            "Set {} in {}.",
            wanted.iter().map(|(n, c)| format!("{n}={c}")).collect::<Vec<_>>().join(", "),
            edit.display
        ));
    } else {
        ctx.printer.info(&format!("{} already says so.", edit.display));
    }
    let state = repo.store().read_or_empty(&env)?;
    let planned = plan::plan(PlanInput {
        env: &env,
        spec: &spec,
        state: &state,
        settings: &repo.settings,
        targets: &[],
        observed: None,
    })?;
    ctx.printer.out(&plan::render::render(&planned.plan, ctx.printer.paint));
    // Quick, for a monitoring hook: nothing running is looked at.
    ctx.printer.info(&format!(
        "This plan takes the recorded state at its word; `enact -e {env} plan` also looks at what runs."
    ));
    Ok(Outcome::Success)
}
