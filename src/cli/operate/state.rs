//! `enact history` and `enact state`: the recorded states of an environment, listed, shown,
//! unlocked and restored, and the machines it made but does not record adopted.

use std::fmt::Write as _;

use crate::cli::args::StateCommand;
use crate::cli::{Ask, Context, Outcome, interrupt};
use crate::error::Result;
use crate::repo::ConfigRepo;
use crate::state::lock;
use crate::state::{State, StateStore};

/// `enact history`: every recorded state of the environment (its backups, then the current
/// one), damaged ones included.
///
/// # Errors
/// The repository, or the backups cannot be listed.
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

/// `enact state list|show|unlock|restore|adopt`.
///
/// # Errors
/// The repository, the state, the lock, no backup of the serial, no confirmation.
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
            let question = format!(
                "\nMake the backup of serial {serial} the current state of env `{env}`? {what}. Instances started since that serial are not in it: `enact status` and `plan` show what runs."
            );
            ctx.printer.confirm(Ask::Change { question: &question, flag: "--yes" }, *yes)?;
            let (written, replaced) = store.restore(&env, *serial)?;
            ctx.printer.out(&format!(
                "Restored env `{env}` from the backup of serial {serial} as serial {}{}.\n",
                written.serial,
                replaced.map(|r| format!(" (it replaces serial {r})")).unwrap_or_default()
            ));
        }
        StateCommand::Adopt { yes } => return adopt(ctx, &repo, *yes),
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

/// `enact state adopt`: records the machines carrying `env`'s lineage that its state does not
/// (found as `plan` and `status` find them) as spare nodes, under the lock, as a new serial.
/// Processes no record names are only named: the next apply stops them.
///
/// # Errors
/// The lock, the state, no confirmation, or the state cannot be written.
fn adopt(ctx: &Context, repo: &ConfigRepo, yes: bool) -> Result<Outcome> {
    let env = ctx.env(repo)?;
    let _guard = interrupt::guard();
    let session = super::open_session(ctx, repo, &env, &format!("enact state adopt -e {env}"))?;
    let found = crate::apply::untracked::find(&repo.settings, &session.state, &ctx.provider_options(repo));
    for place in &found.unreachable {
        ctx.printer.warn(&format!("could not look for machines or processes no record names: {place}"));
    }
    if !found.orphans.is_empty() {
        ctx.printer.warn(&format!(
            "{} process(es) carry env `{env}`'s lineage but no record names them: {}; `state adopt` takes in machines only, and the next `enact apply` stops them",
            found.orphans.len(),
            crate::apply::untracked::summary(&found.orphans)
        ));
    }
    if found.nodes.is_empty() {
        let ec2: Vec<&str> = repo
            .settings
            .accounts()
            .filter(|(_, a)| matches!(a, crate::repo::settings::Account::Ec2(_)))
            .map(|(name, _)| name)
            .collect();
        let partial = !found.unreachable.is_empty();
        let why = if ec2.is_empty() {
            "`state adopt` takes in EC2 instances, and enact.json has no ec2 account".to_string()
        } else if session.state.lineage.is_empty() {
            format!("env `{env}` has never been applied, so no machine carries its lineage")
        } else if partial {
            "no EC2 instance was found, but not every account could be asked (see above): try again once they answer"
                .to_string()
        } else {
            format!(
                "every EC2 instance that carries env `{env}`'s lineage is recorded (looked in account{} {})",
                if ec2.len() == 1 { "" } else { "s" },
                ec2.join(", ")
            )
        };
        ctx.printer.out(&format!("Nothing to adopt: {why}.\n"));
        return Ok(if partial { Outcome::Failed } else { Outcome::Success });
    }
    let mut next = session.state.clone();
    let ids = crate::apply::untracked::adopt(&repo.settings, &mut next, &found.nodes);
    let mut listing = String::new();
    for (id, node) in ids.iter().zip(&found.nodes) {
        let _ = writeln!(
            listing,
            "  {} {id:<12} {} ({}, {}, account {})",
            ctx.printer.paint.green("+"),
            node.provider_id,
            node.size,
            if node.address.is_empty() { "no address yet" } else { node.address.as_str() },
            node.account
        );
    }
    ctx.printer.out(&format!(
        "{} machine(s) carry env `{env}`'s lineage but no record names them; adopted, they become spare nodes:\n{listing}",
        ids.len()
    ));
    let question = format!(
        "\nRecord them in env `{env}`'s state? The next apply hands them to new instances that fit before it makes nodes, and frees those the reservoir does not keep."
    );
    ctx.printer.confirm(Ask::Change { question: &question, flag: "--yes" }, yes)?;
    let written = session.store.write(&next)?;
    ctx.printer.out(&format!(
        "Adopted {} machine(s) into env `{env}` as spare nodes: {}. State serial {}.\n",
        ids.len(),
        ids.join(", "),
        written.serial
    ));
    Ok(Outcome::Success)
}
