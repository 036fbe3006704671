//! Recovering an interrupted apply: the journal it left is replayed onto the recorded state, the
//! instances whose start or stop it did not see the end of are looked for, and the processes
//! of the environment that no record names are found (and, under the lock, stopped).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::apply::journal::{self, JournalDir, JournalError, Journals, OpenIntent, Replay, apply_record};
use crate::apply::untracked::{self, Untracked};
use crate::provider::{self, Provider};
use crate::repo::ConfigRepo;
use crate::state::State;

/// What a journal left behind by an interrupted apply holds, read without changing anything.
#[derive(Debug, Clone)]
pub enum Leftover {
    /// No journal.
    None,
    /// A journal of an apply whose state was recorded after all: nothing is missing.
    Stale(PathBuf),
    /// An apply was interrupted: the state recovery leads to.
    Interrupted(Box<Recovery>),
}

/// What recovering an interrupted apply does.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The state with the journal replayed and the interrupted starts looked for.
    pub state: State,
    /// Instances whose start was interrupted and that were found running (adopted).
    pub found: Vec<String>,
    /// Instances the journal started (their outcome recorded).
    pub started: Vec<String>,
    /// Services that will be redeployed to converge.
    pub incomplete: Vec<String>,
    /// Numbers of the journal's lines that could not be read.
    pub unreadable: Vec<usize>,
    /// Processes carrying the environment's lineage that the recovered state does not record
    /// (the journal lost their records): recovery stops them.
    pub untracked: Untracked,
    /// The requests for nodes the apply made and saw no answer to ([`OpenIntent::Nodes`]).
    pub asked: Vec<OpenIntent>,
    /// The line that says so.
    pub note: String,
}

/// Replays the journal of `env` onto `state`, if one was left behind. Returns the recovered
/// state (to be written) and notes for the user; `None` when there is nothing to recover.
/// A journal that no longer belongs to the state is removed.
///
/// # Errors
/// The journal cannot be read or removed.
pub fn recover(
    state_dir: &Path,
    env: &str,
    state: &State,
    repo: &ConfigRepo,
    options: &provider::ProviderOptions,
) -> Result<Option<(State, Vec<String>)>, JournalError> {
    recover_in(&JournalDir::new(state_dir), env, state, repo, options)
}

/// [`recover`] with the journals kept in `journals`.
///
/// # Errors
/// The journal cannot be read or removed.
pub fn recover_in(
    journals: &dyn Journals,
    env: &str,
    state: &State,
    repo: &ConfigRepo,
    options: &provider::ProviderOptions,
) -> Result<Option<(State, Vec<String>)>, JournalError> {
    match preview_in(journals, env, state, repo, options)? {
        Leftover::None => Ok(None),
        Leftover::Stale(_) => {
            journals.remove(env)?;
            Ok(None)
        }
        Leftover::Interrupted(recovery) => {
            let Recovery { state, note, untracked, asked, .. } = *recovery;
            let mut notes = vec![note];
            if !untracked.orphans.is_empty() {
                let errors = untracked::stop(&repo.settings, &untracked.orphans, options);
                let stopped = untracked.orphans.len() - errors.len();
                notes.push(format!(
                    "stopped {stopped} process(es) this environment started that no record names: {}",
                    untracked::summary(&untracked.orphans)
                ));
                for error in errors {
                    notes.push(format!("could not stop {error}"));
                }
            }
            if !untracked.nodes.is_empty() {
                let errors = untracked::free(&repo.settings, &untracked.nodes, options);
                if errors.is_empty() {
                    notes.push(format!(
                        "terminated {} machine(s) this environment made that no record names: {}",
                        untracked.nodes.len(),
                        untracked.nodes.iter().map(untracked::describe_node).collect::<Vec<_>>().join(", ")
                    ));
                }
                for error in errors {
                    notes.push(format!("could not terminate {error}"));
                }
            }
            notes.extend(node_request_notes(repo, &asked, &untracked));
            for host in &untracked.unreachable {
                notes.push(format!("could not look for processes or EC2 instances no record names on {host}"));
            }
            Ok(Some((state, notes)))
        }
    }
}

/// What recovering `env`'s journal would do, changing nothing (no lock needed): for `plan`,
/// `status` and `show`, which must not be blind to what an interrupted apply left running.
///
/// # Errors
/// The journal cannot be read.
pub fn preview(
    state_dir: &Path,
    env: &str,
    state: &State,
    repo: &ConfigRepo,
    options: &provider::ProviderOptions,
) -> Result<Leftover, JournalError> {
    preview_in(&JournalDir::new(state_dir), env, state, repo, options)
}

/// [`preview`] with the journals kept in `journals`.
///
/// # Errors
/// The journal cannot be read.
pub fn preview_in(
    journals: &dyn Journals,
    env: &str,
    state: &State,
    repo: &ConfigRepo,
    options: &provider::ProviderOptions,
) -> Result<Leftover, JournalError> {
    let Some(replay) = journals.read(env)? else {
        return Ok(Leftover::None);
    };
    // A first apply fixes its lineage before it starts anything; the state records it only
    // when the apply ends.
    let first = state.serial == 0 && state.lineage.is_empty();
    let belongs = match &replay.begin {
        Some((lineage, serial)) => *serial == state.serial && (*lineage == state.lineage || first),
        // Its first line is unreadable: it is taken to belong, and recovery looks for what runs.
        None => !replay.records.is_empty() || !replay.torn.is_empty(),
    };
    if !belongs {
        // The apply that wrote it got as far as recording its state: nothing is missing.
        return Ok(Leftover::Stale(journals.path(env)));
    }
    let mut next = state.clone();
    if let Some((lineage, _)) = replay.begin.as_ref().filter(|_| first) {
        next.lineage.clone_from(lineage);
    }
    for record in &replay.records {
        apply_record(&mut next, record);
    }
    let (found, lost) = look_for_open(&mut next, &replay.open, repo, options);
    let incomplete: Vec<String> = next.services.iter().filter(|(_, s)| s.incomplete).map(|(n, _)| n.clone()).collect();
    let started: Vec<String> = replay
        .records
        .iter()
        .filter_map(|r| match r {
            journal::Record::Started { instance, .. } => Some(instance.id.clone()),
            _ => None,
        })
        .collect();
    let name = journals.path(env).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let note = note(&name, &replay, found.len(), lost, &incomplete);
    let untracked = untracked::find(&repo.settings, &next, options);
    let asked = replay.open.iter().filter(|o| matches!(o, OpenIntent::Nodes { .. })).cloned().collect();
    Ok(Leftover::Interrupted(Box::new(Recovery {
        asked,
        state: next,
        found,
        started,
        incomplete,
        unreadable: replay.torn,
        untracked,
        note,
    })))
}

/// Looks for the instances of the intents left open: one whose start was interrupted and that
/// runs is adopted (its service marked incomplete); one whose stop was interrupted and that no
/// longer runs leaves the state. Returns the ids adopted and how many left.
fn look_for_open(
    next: &mut State,
    open: &[OpenIntent],
    repo: &ConfigRepo,
    options: &provider::ProviderOptions,
) -> (Vec<String>, usize) {
    let mut providers: HashMap<String, Box<dyn Provider>> = HashMap::new();
    for account in next.nodes.values().map(|n| n.account.clone()).collect::<BTreeSet<_>>() {
        if let Some(p) = repo.settings.account(&account).and_then(|a| provider::for_account(&account, a, options).ok())
        {
            providers.insert(account, p);
        }
    }
    let (mut found, mut lost) = (Vec::new(), 0);
    for open in open {
        match open {
            // What a provider made for an unanswered request is found by the sweep.
            OpenIntent::Nodes { .. } => {}
            OpenIntent::Start { service, instance, token } => {
                let Some(node) = next.nodes.get(&instance.node) else { continue };
                let Some(provider) = providers.get(&node.account) else { continue };
                if let Some(started) = provider.find(node, token) {
                    let mut instance = instance.clone();
                    instance.pid = started.pid;
                    instance.start_time = started.start_time;
                    if let Some(s) = next.services.get_mut(service) {
                        s.instances.retain(|i| i.id != instance.id);
                        found.push(instance.id.clone());
                        s.instances.push(instance);
                        s.incomplete = true;
                    }
                }
            }
            OpenIntent::Stop { service, instance } => {
                let Some(i) = next.services.get(service).and_then(|s| s.instances.iter().find(|i| i.id == *instance))
                else {
                    continue;
                };
                let Some(node) = next.nodes.get(&i.node) else { continue };
                let alive = providers.get(&node.account).is_some_and(|p| p.alive(i, node));
                if !alive && let Some(s) = next.services.get_mut(service) {
                    s.instances.retain(|x| x.id != *instance);
                    lost += 1;
                }
            }
        }
    }
    (found, lost)
}

/// What became of each request for nodes the interrupted apply saw no answer to: the machines
/// that carry the request (terminated with the other untracked ones), or, in an ec2 account,
/// that none does.
fn node_request_notes(repo: &ConfigRepo, asked: &[OpenIntent], untracked: &Untracked) -> Vec<String> {
    let mut notes = Vec::new();
    for open in asked {
        let OpenIntent::Nodes { account, request, nodes } = open else { continue };
        if request.is_empty() {
            continue;
        }
        let made: Vec<&str> = untracked
            .nodes
            .iter()
            .filter(|n| n.request.as_deref() == Some(request.as_str()))
            .map(|n| n.provider_id.as_str())
            .collect();
        let ec2 = matches!(repo.settings.account(account), Some(crate::repo::settings::Account::Ec2(_)));
        if !made.is_empty() {
            notes.push(format!(
                "the interrupted apply asked account `{account}` for node(s) {} (request {request}) and did not record the answer: EC2 had made {} ({}), terminated above",
                nodes.join(", "),
                made.len(),
                made.join(", ")
            ));
        } else if ec2 {
            notes.push(format!(
                "the interrupted apply asked account `{account}` for node(s) {} (request {request}) and did not record the answer: no EC2 instance carries that request, so none was made (EC2 may list a new instance late: `enact plan` names any that appears)",
                nodes.join(", ")
            ));
        }
    }
    notes
}

/// The line that tells the user what recovering the journal `name` did.
fn note(name: &str, replay: &Replay, found: usize, lost: usize, incomplete: &[String]) -> String {
    let unreadable = if replay.torn.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = replay.torn.iter().map(ToString::to_string).collect();
        format!(
            ", {} unreadable record(s) skipped (line {}: check `enact status` for instances it does not name)",
            replay.torn.len(),
            lines.join(", ")
        )
    };
    format!(
        "recovered an interrupted apply from {name}: {} record(s){unreadable}{}{}{}",
        replay.records.len(),
        if found == 0 { String::new() } else { format!(", {found} instance(s) found running") },
        if lost > 0 { format!(", {lost} instance(s) found stopped") } else { String::new() },
        if incomplete.is_empty() {
            String::new()
        } else {
            format!("; {} service(s) will be redeployed to converge: {}", incomplete.len(), incomplete.join(", "))
        }
    )
}
