//! `enact logs`: what a service's instances wrote, from their providers.

use std::fmt::Write as _;

use super::providers_of;
use crate::apply::executor::log_path;
use crate::cli::args::LogsArgs;
use crate::cli::{Context, Outcome};
use crate::diagnostic::Diagnostic;
use crate::error::Result;
use crate::provider::LogPlace;
use crate::state::StateStore;

/// `enact logs SERVICE`: the last `-n` lines of output of each of the service's instances; with
/// `--follow`, then what they write, until interrupted.
///
/// # Errors
/// The repository, the state, a service the state does not have or a legacy service (enact
/// runs none of its instances).
pub fn logs(ctx: &Context, args: &LogsArgs) -> Result<Outcome> {
    let (service, lines) = (args.service.as_str(), usize::try_from(args.lines).unwrap_or(usize::MAX));
    let repo = ctx.repo()?;
    let env = ctx.env(&repo)?;
    let state = repo.store().read_or_empty(&env)?;
    let providers = providers_of(ctx, &repo, &state);
    let Some(recorded) = state.services.get(service) else {
        // Declared but never applied: say so, rather than that it does not exist.
        let declared = repo.load(&env).is_ok_and(|e| e.choreography.services().any(|s| s.name() == service));
        if declared {
            return Err(Diagnostic::new(format!(
                "env `{env}` declares `{service}`, but records no instance of it (not applied yet, or destroyed)"
            ))
            .service(service)
            .hint(format!("`enact -e {env} apply` starts it; `enact -e {env} plan` shows what that does"))
            .into());
        }
        return Err(Diagnostic::new(format!("env `{env}` has no service `{service}`"))
            .hint(crate::suggest::hint(
                service,
                state.services.keys().map(String::as_str),
                "`enact status` lists the services",
            ))
            .into());
    };
    if let crate::state::AppliedSpec::Legacy(_) = &*recorded.spec {
        return Err(Diagnostic::new(format!(
            "`{service}` is a legacy service: it runs elsewhere, and enact keeps no output of it"
        ))
        .service(service)
        .hint("read its logs where it runs; `enact status` shows whether its endpoints answer")
        .into());
    }
    if recorded.instances.is_empty() {
        ctx.printer.info(&format!("Service `{service}` has no instances in env `{env}`."));
        return Ok(Outcome::Success);
    }
    if args.follow {
        return follow(ctx, &repo, &env, &state, &providers, service, lines);
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
                .logs(
                    instance,
                    node,
                    LogPlace {
                        env: &env,
                        lineage: &state.lineage,
                        local: &log_path(&repo.state_dir(), &env, &instance.id),
                    },
                    lines,
                )
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

/// How long `logs --follow` waits between two looks at the logs.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How many looks at the logs between two readings of the state (to drop the instances an
/// apply, `destroy` or a scale-in removed, and to take in the ones a scale-out started): every
/// 2 s.
const STATE_EVERY_LOOKS: u32 = 4;

/// One instance `logs --follow` looks at: how far its log was read, a line begun but not
/// ended, whether a failure was said already, and whether it is still followed.
#[derive(Debug)]
struct Followed {
    instance: crate::state::InstanceState,
    mark: Option<crate::provider::LogMark>,
    partial: String,
    said: bool,
    on: bool,
}

impl Followed {
    fn new(instance: crate::state::InstanceState) -> Followed {
        Followed { instance, mark: None, partial: String::new(), said: false, on: true }
    }

    /// Stops following it. The end of a line it was writing when last looked at is its last
    /// output: it is returned as a whole line (after `[instance] ` when `prefixed`), else "".
    fn leave(&mut self, prefixed: bool) -> String {
        self.on = false;
        let rest = std::mem::take(&mut self.partial);
        match (rest.is_empty(), prefixed) {
            (true, _) => rest,
            (false, true) => format!("[{}] {rest}\n", self.instance.id),
            (false, false) => format!("{rest}\n"),
        }
    }

    /// Its log could not be read (`error`). A stop removes the log with the instance: while a
    /// command holds the lock (an apply that may be stopping it) nothing is said yet, the state
    /// it writes settles it. Once the state no longer records the instance, it is left as a
    /// scale-in leaves it; only a recorded instance's log is said unreadable, once.
    /// What it had not finished writing, when it is left ([`Followed::leave`]).
    fn unreadable(
        &mut self,
        ctx: &Context,
        repo: &crate::repo::ConfigRepo,
        env: &str,
        service: &str,
        error: &str,
        prefixed: bool,
    ) -> String {
        let busy = crate::state::lock::holder(&repo.state_dir(), env).ok().flatten().is_some();
        if self.said || busy {
            return String::new();
        }
        let id = &self.instance.id;
        let recorded = repo
            .store()
            .read_or_empty(env)
            .is_ok_and(|now| now.services.get(service).is_some_and(|s| s.instances.iter().any(|r| &r.id == id)));
        if recorded {
            self.said = true;
            ctx.printer.warn(&format!("{id}: {error}; looking again"));
            String::new()
        } else {
            ctx.printer.info(&format!("{id}: no longer recorded in env `{env}`; not followed any more"));
            self.leave(prefixed)
        }
    }
}

/// `enact logs --follow`: the last `lines` lines of each instance, then what they gain, look
/// after look ([`crate::provider::Provider::log_since`]), whole lines only, each after
/// `[instance] ` once more than one instance is followed. The state is read again every 2 s:
/// an instance it no longer records is said on stderr and left (a line it was still writing,
/// read without its newline, is printed as its last), and one it records anew (a
/// scale-out, a replacement) is said and followed from its last `lines` lines. The command
/// ends (exit 0) when none is left to follow, when stdout's reader goes away, or when
/// interrupted. Instances whose provider keeps no output (simulated ones) say so on stderr
/// once. An instance whose log cannot be read is said once on stderr (unless a command holds
/// the environment's lock, or the state no longer records it: a stop removed it), and looked at
/// again.
fn follow(
    ctx: &Context,
    repo: &crate::repo::ConfigRepo,
    env: &str,
    state: &crate::state::State,
    providers: &std::collections::HashMap<String, Box<dyn crate::provider::Provider>>,
    service: &str,
    lines: usize,
) -> Result<Outcome> {
    use std::io::Write as _;
    let mut followed: Vec<Followed> =
        state.services.get(service).into_iter().flat_map(|s| s.instances.iter().cloned()).map(Followed::new).collect();
    let mut prefixed = followed.len() > 1;
    // The state last read: where new instances' nodes are found.
    let mut latest: Option<crate::state::State> = None;
    let store = repo.store();
    let mut looks = 0_u32;
    loop {
        let nodes = &latest.as_ref().unwrap_or(state).nodes;
        let mut out = String::new();
        for one in followed.iter_mut().filter(|f| f.on) {
            let instance = &one.instance;
            let Some(node) = nodes.get(&instance.node) else {
                one.on = false;
                continue;
            };
            let Some(provider) = providers.get(&node.account) else {
                ctx.printer.warn(&format!("{}: account `{}` is not defined in enact.json", instance.id, node.account));
                one.on = false;
                continue;
            };
            let place =
                LogPlace { env, lineage: &state.lineage, local: &log_path(&repo.state_dir(), env, &instance.id) };
            if !provider.follows_logs() {
                if let Ok(text) = provider.logs(instance, node, place, lines) {
                    ctx.printer.info(text.trim_end());
                }
                one.on = false;
                continue;
            }
            match provider.log_since(instance, node, place, one.mark, lines) {
                Ok((text, mark)) => {
                    // The first look gives whole lines; later ones may stop inside one.
                    let first = one.mark.is_none();
                    one.mark = Some(mark);
                    one.said = false;
                    one.partial.push_str(&text);
                    if first && !one.partial.is_empty() && !one.partial.ends_with('\n') {
                        one.partial.push('\n');
                    }
                    let Some(end) = one.partial.rfind('\n') else { continue };
                    let complete: String = one.partial.drain(..=end).collect();
                    for line in complete.lines() {
                        if prefixed {
                            let _ = write!(out, "[{}] ", instance.id);
                        }
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                Err(e) => out.push_str(&one.unreadable(ctx, repo, env, service, &e.to_string(), prefixed)),
            }
        }
        let mut stdout = std::io::stdout().lock();
        if (!out.is_empty() && stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).is_err()) || reader_gone()
        {
            // Whoever read the output is gone (`| head`): nothing left to do.
            return Ok(Outcome::Success);
        }
        drop(stdout);
        looks += 1;
        if looks.is_multiple_of(STATE_EVERY_LOOKS) {
            let now = store.read_or_empty(env)?;
            let recorded: &[crate::state::InstanceState] =
                now.services.get(service).map_or(&[], |s| s.instances.as_slice());
            // Instances an apply, `destroy` or a scale-in removed meanwhile are followed no more;
            // a line one was still writing is its last.
            let mut last = String::new();
            for one in followed.iter_mut().filter(|f| f.on) {
                if !recorded.iter().any(|r| r.id == one.instance.id) {
                    last.push_str(&one.leave(prefixed));
                    ctx.printer.info(&format!(
                        "{}: no longer recorded in env `{env}`; not followed any more",
                        one.instance.id
                    ));
                }
            }
            let mut stdout = std::io::stdout().lock();
            if !last.is_empty() && stdout.write_all(last.as_bytes()).and_then(|()| stdout.flush()).is_err() {
                return Ok(Outcome::Success);
            }
            drop(stdout);
            // Instances a scale-out or a replacement started meanwhile are followed from now on.
            for instance in recorded {
                if !followed.iter().any(|f| f.instance.id == instance.id) {
                    ctx.printer.info(&format!("{}: recorded in env `{env}`; followed from now on", instance.id));
                    followed.push(Followed::new(instance.clone()));
                }
            }
            prefixed = prefixed || followed.len() > 1;
            latest = Some(now);
        }
        if !followed.iter().any(|f| f.on) {
            ctx.printer.info(&format!("No instance of `{service}` is left to follow."));
            return Ok(Outcome::Success);
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// Whether stdout is a pipe or socket whose reader has gone away (poll(2) says so without a
/// write).
#[allow(unsafe_code)]
fn reader_gone() -> bool {
    let mut fd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
    // SAFETY: one valid pollfd, polled without waiting; poll only writes its `revents`.
    let ready = unsafe { libc::poll(&raw mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}
