//! One function per command: gather inputs, call the library, hand the result to the printer.

use std::fmt::Write as _;
use std::path::Path;

use super::args::{GraphFormat, ImportXmlArgs, PlanArgs, SchemaFile, ShowArgs};
use super::{Context, Outcome};
use crate::apply::session::Leftover;
use crate::diagnostic::{Diagnostic, SourceFile, strip_bom, strip_position};
use crate::error::{Error, Result};
use crate::graph::ServiceGraph;
use crate::plan::{self, Plan, PlanInput};
use crate::repo::{ENVS_DIR, SETTINGS_FILE, SPEC_FILE, STATE_DIR, read_optional};
use crate::spec::format;
use crate::spec::parse::{FileKind, parse_spec_file};
use crate::state::store::write_atomic;
use crate::state::{AppliedSpec, State, StateStore};

const STARTER_SPEC: &str = r#"{
  "deployableServiceSpecs": [],
  "legacyServiceSpecs": []
}
"#;

const STARTER_SETTINGS: &str = r#"{
  "defaultEnv": "dev",
  "defaultAccount": "local",
  "accounts": {
    "local": {
      "provider": "local"
    }
  }
}
"#;

const GITIGNORE: &str = "# enact: locks, journals, backups, logs and caches stay out of git; state/<env>.json goes in.\n\
state/*.lock\nstate/*.journal\nstate/.backups/\nstate/.logs/\nstate/.cache/\nstate/.*.tmp.*\n";

pub fn init(ctx: &Context) -> Result<Outcome> {
    let root = &ctx.cwd;
    if root.join(SPEC_FILE).exists() {
        return Err(Diagnostic::new(format!("{} is already a config repository (it has {SPEC_FILE})", root.display()))
            .hint("run `enact validate` to check it")
            .into());
    }
    for dir in [root.join(ENVS_DIR), root.join(STATE_DIR)] {
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
    }
    let mut files = vec![(SPEC_FILE.to_string(), STARTER_SPEC.to_string())];
    if !root.join(SETTINGS_FILE).exists() {
        files.push((SETTINGS_FILE.to_string(), STARTER_SETTINGS.to_string()));
    }
    for env in ["dev", "test", "prod"] {
        let path = format!("{ENVS_DIR}/{env}.json");
        if !root.join(&path).exists() {
            files.push((path, "{}\n".to_string()));
        }
    }
    let gitignore = root.join(".gitignore");
    let existing = read_optional(&gitignore)?.unwrap_or_default();
    if !existing.contains("state/*.lock") {
        let mut text = existing;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(GITIGNORE);
        files.push((".gitignore".to_string(), text));
    }
    for (path, text) in &files {
        write_atomic(&root.join(path), text.as_bytes())?;
    }
    let created: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    ctx.printer.info(&format!(
        "Created a config repository in {}: {}.\nAdd services to {SPEC_FILE}, then run `enact plan`.",
        root.display(),
        created.join(", ")
    ));
    Ok(Outcome::Success)
}

pub fn validate(ctx: &Context) -> Result<Outcome> {
    let repo = match ctx.repo() {
        Ok(repo) => repo,
        // enact.json does not load: the spec files' own problems are reported with its.
        Err(Error::Invalid(settings)) => {
            let root = crate::repo::ConfigRepo::discover(&ctx.cwd)?;
            let mut errors = settings.0;
            errors.extend(crate::repo::ConfigRepo::spec_file_errors(&root));
            return Err(errors.into());
        }
        Err(e) => return Err(e),
    };
    let envs: Vec<String> = match &ctx.env_arg {
        Some(_) => vec![ctx.env(&repo)?],
        None => repo.environments().into_iter().collect(),
    };
    let mut lines = Vec::new();
    // Each problem once, with the environments it shows in.
    let mut errors: Vec<(Diagnostic, Vec<String>)> = Vec::new();
    // The service names of every environment, for the names under `services` of enact.json.
    let mut names: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for env in &envs {
        match repo.load_deployable(env) {
            Ok(effective) => {
                let chor = &effective.choreography;
                if !repo.settings.services.is_empty() {
                    names.extend(chor.services().map(|s| s.name().to_string()));
                }
                let graph = ServiceGraph::build(chor);
                let groups = graph.groups();
                let cycles = groups.iter().filter(|g| g.len() > 1).count();
                let mut line = format!(
                    "env `{env}`: {} services ({} deployable, {} legacy)",
                    chor.len(),
                    chor.deployable_service_specs.len(),
                    chor.legacy_service_specs.len()
                );
                if cycles > 0 {
                    let _ = write!(line, ", {cycles} dependency cycle(s) deployed as groups");
                }
                lines.push(line);
            }
            Err(Error::Invalid(d)) => {
                for mut diagnostic in d.0 {
                    diagnostic.env = None;
                    match errors.iter_mut().find(|(known, _)| *known == diagnostic) {
                        Some((_, in_envs)) => in_envs.push(env.clone()),
                        None => errors.push((diagnostic, vec![env.clone()])),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    // Only once every environment is known: a service may live in one overlay alone.
    let mut unknown = Vec::new();
    if ctx.env_arg.is_none()
        && errors.is_empty()
        && !repo.settings.services.is_empty()
        && let Some(text) = read_optional(&repo.root.join(SETTINGS_FILE))?
    {
        let source = SourceFile::new(SETTINGS_FILE, text);
        unknown = repo.settings.unknown_services(&source, |n| names.contains(n), names.iter().map(String::as_str));
    }
    if !errors.is_empty() || !unknown.is_empty() {
        let errors: Vec<Diagnostic> = errors
            .into_iter()
            .map(
                |(d, in_envs)| {
                    if in_envs.len() == envs.len() && envs.len() > 1 { d } else { d.env(in_envs.join("`, `")) }
                },
            )
            .chain(unknown)
            .collect();
        return Err(errors.into());
    }
    // `--quiet`: only errors; the exit code says it is valid.
    if !ctx.printer.quiet {
        ctx.printer.out(&format!("{} The configuration is valid.\n", ctx.printer.paint.green("✓")));
        for line in lines {
            ctx.printer.out(&format!("  {line}\n"));
        }
    }
    Ok(Outcome::Success)
}

pub fn fmt(ctx: &Context, check: bool) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let mut files = vec![(SPEC_FILE.to_string(), FileKind::Base)];
    if let Ok(entries) = std::fs::read_dir(repo.root.join(ENVS_DIR)) {
        let mut overlays: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.ends_with(".json"))
            .map(|n| format!("{ENVS_DIR}/{n}"))
            .collect();
        overlays.sort();
        files.extend(overlays.into_iter().map(|f| (f, FileKind::Overlay)));
    }
    // Parse everything first: a file with an error stops the run before anything is written.
    let mut rewritten = Vec::new();
    let mut errors = Vec::new();
    for (path, kind) in &files {
        let full = repo.root.join(path);
        // Read as written: a byte order mark is not canonical, so `fmt` drops it.
        let text = std::fs::read_to_string(&full).map_err(Error::io("read", &full))?;
        match parse_spec_file(&SourceFile::new(path, text.clone()), *kind) {
            Ok(value) => rewritten.push((path.clone(), text, format::to_text(&format::canonical(&value)))),
            Err(e) => errors.extend(e),
        }
    }
    let settings_path = repo.root.join(SETTINGS_FILE);
    if settings_path.exists() {
        let text = std::fs::read_to_string(&settings_path).map_err(Error::io("read", &settings_path))?;
        let source = SourceFile::new(SETTINGS_FILE, text.clone());
        match serde_json::from_str::<serde_json::Value>(&source.text) {
            Ok(value) => rewritten.push((SETTINGS_FILE.to_string(), text, format::to_text(&value))),
            Err(e) => errors.push(source.syntax_error(&e)),
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let unformatted: Vec<&(String, String, String)> = rewritten.iter().filter(|(_, old, new)| old != new).collect();
    if check {
        for (path, _, _) in &unformatted {
            ctx.printer.out(&format!("{path}\n"));
        }
        if unformatted.is_empty() {
            return Ok(Outcome::Success);
        }
        ctx.printer.error(&format!("{} file(s) are not formatted; run `enact fmt` to rewrite them", unformatted.len()));
        return Ok(Outcome::Failed);
    }
    for (path, _, new) in &unformatted {
        write_atomic(&repo.root.join(path), new.as_bytes())?;
        ctx.printer.out(&format!("{path}\n"));
    }
    Ok(Outcome::Success)
}

pub fn schema(ctx: &Context, file: SchemaFile) -> Result<Outcome> {
    let schema = match file {
        SchemaFile::Chor => crate::spec::schema(),
        SchemaFile::Settings => crate::repo::settings::schema(),
    };
    ctx.printer.out(&format::to_text(&schema));
    Ok(Outcome::Success)
}

pub fn plan(ctx: &Context, args: &PlanArgs) -> Result<Outcome> {
    let repo = crate::timing::phase("repository opened", || ctx.repo())?;
    let env = ctx.env(&repo)?;
    let store = repo.store();
    // Reading the state and loading the spec are independent: one on each core.
    let (effective, state) = std::thread::scope(|scope| {
        let state = scope.spawn(|| crate::timing::phase("state read", || store.read_or_empty(&env)));
        let effective = crate::timing::phase("spec loaded", || repo.load_deployable(&env));
        let state = state.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (effective, state)
    });
    let (effective, state) = (effective?, state?);
    let state = super::operate::leftovers(ctx, &repo, &env, state)?;
    let observed = crate::timing::phase("refresh", || super::operate::refresh(ctx, &repo, &state, args.refresh));
    let untracked = if args.refresh {
        crate::timing::phase("untracked sweep", || super::operate::plan_untracked(ctx, &repo, &env, &state, args.json))
    } else {
        plan::model::UntrackedSummary::default()
    };
    let planned = crate::timing::phase("planned", || {
        plan::plan(PlanInput {
            env: &env,
            spec: &effective.choreography,
            state: &state,
            settings: &repo.settings,
            targets: &args.target,
            observed: observed.as_ref(),
        })
    })?;
    let mut plan = planned.plan;
    plan.untracked = untracked;
    if plan.has_changes() {
        super::operate::last_serial(&env, &state)?;
    }
    if let Some(out) = &args.out {
        let path = ctx.resolve(out);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            return Err(Diagnostic::new(format!(
                "cannot save the plan to {}: {} is not a directory",
                out.display(),
                dir.display()
            ))
            .hint("create the directory first, or pick another path")
            .into());
        }
        write_atomic(&path, plan.to_json().as_bytes())?;
        ctx.printer.info(&format!(
            "Saved the plan to {}; `enact apply {}` carries out exactly this plan.",
            out.display(),
            out.display()
        ));
    }
    crate::timing::phase("plan written", || {
        if args.json {
            ctx.printer.out_with(|w| plan.write_json(&mut &mut *w));
        } else {
            ctx.printer.out(&plan::render::render(&plan, ctx.printer.paint));
        }
    });
    let outcome = if args.detailed_exitcode && plan.has_changes() { Outcome::Changes } else { Outcome::Success };
    // The process ends right after this: freeing the spec, the state and the plan one small
    // allocation at a time would be a fifth of the run at 10,000 services.
    std::mem::forget((effective, state, plan, planned.placement));
    Ok(outcome)
}

/// Reads a saved plan, with errors located in it.
pub fn read_plan(ctx: &Context, file: &Path) -> Result<Plan> {
    let path = ctx.resolve(file);
    let text = std::fs::read_to_string(&path).map(strip_bom).map_err(|e| {
        Diagnostic::new(format!("cannot read plan file {}: {e}", file.display()))
            .hint("save a plan with `enact plan --out FILE` first")
    })?;
    let source = SourceFile::new(file, String::new());
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        Diagnostic::new(format!("not a plan file: {}", strip_position(&e.to_string())))
            .at(Some(source.location_at(e.line(), e.column())))
            .hint("save a plan with `enact plan --out FILE`")
    })?;
    if plan.format_version != plan::model::PLAN_FORMAT_VERSION {
        return Err(Diagnostic::new(format!("plan formatVersion {} is not supported", plan.format_version))
            .in_file(file)
            .hint("make the plan again with this enact")
            .into());
    }
    Ok(plan)
}

/// `enact show [PLANFILE]`: a saved plan, or the recorded state of the environment (as the next
/// locked command will see it).
///
/// # Errors
/// The plan file cannot be read or is not a plan; the repository or the state cannot be read.
pub fn show(ctx: &Context, args: &ShowArgs) -> Result<Outcome> {
    let json = args.json;
    if let Some(file) = &args.planfile {
        let plan = read_plan(ctx, file)?;
        if json {
            ctx.printer.out(&plan.to_json());
        } else {
            ctx.printer.out(&plan::render::render(&plan, ctx.printer.paint));
        }
        return Ok(Outcome::Success);
    }
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let store = repo.store();
    let Some(state) = store.read(&env)? else {
        if let Leftover::Interrupted(_) = crate::apply::session::preview(
            &repo.state_dir(),
            &env,
            &State::empty(&env),
            &repo,
            &ctx.provider_options(&repo),
        )? {
            let state = super::operate::leftovers(ctx, &repo, &env, State::empty(&env))?;
            if json {
                ctx.printer.out(&state.to_json());
            } else {
                ctx.printer.out(&render_state(&state, ctx));
            }
            return Ok(Outcome::Success);
        }
        if json {
            ctx.printer.out(&State::empty(&env).to_json());
        } else {
            ctx.printer.out(&format!("env `{env}` has never been applied: no state/{env}.json.\n"));
        }
        return Ok(Outcome::Success);
    };
    let state = super::operate::leftovers(ctx, &repo, &env, state)?;
    if json {
        ctx.printer.out(&state.to_json());
    } else {
        ctx.printer.out(&render_state(&state, ctx));
    }
    Ok(Outcome::Success)
}

fn render_state(state: &State, ctx: &Context) -> String {
    let paint = ctx.printer.paint;
    let mut out = format!("env `{}` · serial {} · lineage {}\n", state.env, state.serial, state.lineage);
    if state.services.is_empty() && state.nodes.is_empty() {
        let _ = writeln!(out, "\nThe environment is empty: no services and no nodes (`enact apply` deploys its spec).");
    }
    for (name, service) in &state.services {
        match &*service.spec {
            AppliedSpec::Legacy(s) => {
                let _ = writeln!(out, "\n{} (legacy)  {}", paint.bold(name), s.native_uris.join(" "));
            }
            AppliedSpec::Deployable(s) => {
                let _ = writeln!(
                    out,
                    "\n{}  {} instance(s) · {} · version {}{}",
                    paint.bold(name),
                    service.instances.len(),
                    s.memory(),
                    s.version.as_deref().unwrap_or("-"),
                    if service.paused { " · paused" } else { "" }
                );
                for i in &service.instances {
                    let status = format!("{:?}", i.status).to_lowercase();
                    let _ = writeln!(out, "  {:<20} {:<8} {:<12} {}", i.id, status, i.node, i.native_uri);
                }
            }
        }
    }
    if !state.nodes.is_empty() {
        let _ = writeln!(out, "\nnodes:");
        for (id, node) in &state.nodes {
            let size = node.size.clone().or_else(|| node.memory.map(|m| m.to_string())).unwrap_or_default();
            let spare = if node.spare { "  spare" } else { "" };
            let _ = writeln!(out, "  {:<20} {:<10} {:<16} {size}{spare}", id, node.account, node.address);
        }
    }
    out
}

pub fn graph(ctx: &Context, format: GraphFormat) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let effective = repo.load(&env)?;
    let graph = ServiceGraph::build(&effective.choreography);
    let text = match format {
        GraphFormat::Text => graph.to_text(),
        GraphFormat::Dot => graph.to_dot(),
        GraphFormat::Svg => graph.to_svg(),
    };
    ctx.printer.out(&text);
    Ok(Outcome::Success)
}

pub fn export(ctx: &Context, from_state: bool) -> Result<Outcome> {
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let chor =
        if from_state { repo.store().read_or_empty(&env)?.choreography() } else { repo.load(&env)?.choreography };
    ctx.printer.out(&chor.to_canonical_json());
    Ok(Outcome::Success)
}

/// `import-xml FILE`: a CHOReOS ChorSpec to a spec, a Choreography to a recorded state.
///
/// # Errors
/// The file cannot be read, is not CHOReOS XML, or the spec it holds is not valid (located in
/// the XML).
pub fn import_xml(ctx: &Context, args: &ImportXmlArgs) -> Result<Outcome> {
    let (file, spec_only) = (args.file.as_path(), args.spec);
    let path = ctx.resolve(file);
    let text = std::fs::read_to_string(&path)
        .map(strip_bom)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", file.display())).hint("give a CHOReOS XML file"))?;
    // A spec is printed with every field the XML states, and only once it passes the spec's
    // checks, located in the XML.
    let checked = |chor: crate::spec::Choreography| -> Result<String> {
        let errors = crate::spec::xml::check_imported(&text, file, &chor);
        if errors.is_empty() { Ok(format::as_written(&chor)) } else { Err(errors.into()) }
    };
    match crate::spec::xml::root_name(&text).as_deref() {
        Some("choreography") if spec_only => {
            let chor = crate::repo::import::import_choreography_spec(&text, file)?;
            ctx.printer.out(&checked(chor)?);
        }
        Some("choreography") => {
            let env = match &ctx.env_arg {
                Some(env) => env.clone(),
                None => ctx.repo().map(|r| r.default_env()).unwrap_or_else(|_| crate::repo::FALLBACK_ENV.to_string()),
            };
            crate::repo::ConfigRepo::check_env_name(&env)?;
            let state = crate::repo::import::import_choreography(&text, file, &env)?;
            ctx.printer.out(&state.to_json());
            ctx.printer.info(&format!(
                "This is a recorded state of env `{env}`: save it as state/{env}.json to adopt the deployment \
                 (its nodes are in account `{}`: define it in enact.json).",
                crate::repo::import::IMPORTED_ACCOUNT
            ));
        }
        _ => {
            let chor = crate::spec::xml::import_chorspec(&text, file)?;
            ctx.printer.out(&checked(chor)?);
        }
    }
    Ok(Outcome::Success)
}
