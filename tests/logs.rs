//! Instance logs on the local provider, with real processes: the cap holds whatever a service
//! prints (its log relay rotates the file), the service is never held up, stopping an instance
//! ends its relay, the logs go with their instances and their environment, and `enact logs`
//! reads across a rotation.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::local::*;
use serde_json::{Value, json};

const MAX: u64 = 256 * 1024;
const KEEP: u32 = 3;

fn chatty(port: u16, instances: u32, ticks: bool) -> Value {
    let mut service = deployable("chatty", "chatty.py", "REST", port, instances);
    service["packageType"] = json!("CHATTY");
    if ticks {
        service["packageType"] = json!("TICKING");
    }
    json!({ "deployableServiceSpecs": [service] })
}

fn repo(port: u16, instances: u32, ticks: bool) -> Repo {
    repo_keeping(port, instances, ticks, KEEP)
}

/// [`repo`], its logs keeping `keep` rotated files.
fn repo_keeping(port: u16, instances: u32, ticks: bool, keep: u32) -> Repo {
    let settings = json!({
        "defaultAccount": "local",
        "accounts": { "local": { "provider": "local" } },
        "packageTypes": {
            "CHATTY": { "start": "python3 {package}" },
            "TICKING": { "start": "python3 {package} --ticks" }
        },
        "logs": { "maxBytes": MAX, "keep": keep }
    });
    let repo = Repo::new(&chatty(port, instances, ticks), Some(&settings));
    fs::write(repo.path("services/chatty.py"), common::CHATTY).expect("chatty.py");
    repo
}

/// `enact apply --auto-approve`, without the `--keep-logs` of [`Repo::apply`].
fn apply(repo: &Repo) -> std::process::Output {
    repo.enact_ok(&["apply", "--auto-approve"], 0)
}

fn log_dir(repo: &Repo) -> PathBuf {
    repo.path("state/.logs/dev")
}

/// Where instance `id` of `chatty` answers (`host:port`), as the state records it.
fn address_of(repo: &Repo, id: &str) -> String {
    let instance = instances(&repo.state(), "chatty").into_iter().find(|i| i["id"] == id).expect("the instance");
    let uri = instance["nativeUri"].as_str().expect("nativeUri");
    uri.trim_start_matches("http://").split('/').next().expect("address").to_string()
}

/// The log files of `instance` (`<id>.log`, `<id>.log.1`, …) with their sizes.
fn files_of(repo: &Repo, instance: &str) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = fs::read_dir(log_dir(repo))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == format!("{instance}.log") || name.starts_with(&format!("{instance}.log."));
            ours.then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    files.sort();
    files
}

/// Log relays running for logs under `dir`: (pid, process group, environment).
fn relays_under(dir: &Path) -> Vec<(u32, u32, Vec<u8>)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmdline = String::from_utf8_lossy(&fs::read(entry.path().join("cmdline")).unwrap_or_default()).into_owned();
        if !cmdline.contains("__log-relay") || !cmdline.contains(&needle) || !process_alive(pid) {
            continue;
        }
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let pgrp = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(2)?.parse().ok()).unwrap_or(0);
        found.push((pid, pgrp, fs::read(entry.path().join("environ")).unwrap_or_default()));
    }
    found
}

/// Waits until the log of `instance` ends with the line `<instance> <tag> last …`; that line.
fn wait_last_line(repo: &Repo, instance: &str, tag: &str) -> String {
    let log = log_dir(repo).join(format!("{instance}.log"));
    let prefix = format!("{instance} {tag} last ");
    let mut last = String::new();
    wait_for(&format!("`{prefix}…` at the end of {}", log.display()), Duration::from_secs(60), || {
        last = fs::read_to_string(&log).unwrap_or_default().lines().last().unwrap_or_default().to_string();
        last.starts_with(&prefix)
    });
    last
}

/// No file over the cap, no more than `KEEP` rotated files, (KEEP + 1) × MAX bytes at most.
fn assert_capped(repo: &Repo, instance: &str) -> u64 {
    let files = files_of(repo, instance);
    assert!(files.len() <= KEEP as usize + 1, "{files:?}");
    assert!(files.iter().all(|(_, size)| *size <= MAX), "a file is over {MAX} bytes: {files:?}");
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    assert!(total <= u64::from(KEEP + 1) * MAX, "{total} bytes: {files:?}");
    total
}

#[test]
fn a_service_printing_megabytes_keeps_the_cap_and_its_newest_lines_and_is_not_held_up() {
    let port = 26100;
    let repo = repo(port, 1, false);
    // The service prints 3 MB before it listens: had it been held up, it would never answer.
    apply(&repo);
    let last = wait_last_line(&repo, "chatty-1", "start");
    let total = assert_capped(&repo, "chatty-1");
    assert!(total > 3 * MAX, "the rotated files hold the newest lines: {total} bytes");
    let files = files_of(&repo, "chatty-1");
    assert_eq!(files.len(), KEEP as usize + 1, "{files:?}");

    // The service runs on, and prints 3 MB more on request while the cap holds.
    let address = address_of(&repo, "chatty-1");
    // Under load the client can see the connection reset while the burst is written: ask again,
    // a little later each time (other tests may hold both cores for a second).
    let burst = format!("http://{address}/burst");
    let (status, _) = (0..10u64)
        .find_map(|i| {
            std::thread::sleep(Duration::from_millis(100 * i));
            http_get(&burst).ok()
        })
        .expect("the service answers");
    assert_eq!(status, 200);
    let burst_last = wait_last_line(&repo, "chatty-1", "burst");
    assert_capped(&repo, "chatty-1");

    // `enact logs` reads on into the rotated files: 5,000 lines are more than one file holds.
    let output = repo.enact_ok(&["logs", "chatty", "-n", "5000"], 0);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("chatty-1 ")).collect();
    assert_eq!(lines.len(), 5000, "{}", &text[..text.len().min(500)]);
    assert_eq!(lines.last(), Some(&burst_last.as_str()));
    let numbers: Vec<u64> =
        lines[..4999].iter().map(|l| l.split_whitespace().nth(3).unwrap().parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "consecutive lines across the rotation");
    assert_ne!(last, burst_last);

    // The relay is in the service's process group, without its token; the state's pid is the
    // service's own.
    let pid = pids(&instances(&repo.state(), "chatty"))[0];
    let relays = relays_under(&log_dir(&repo));
    assert_eq!(relays.len(), 1, "one relay");
    assert_eq!(relays[0].1, pid, "in the service's process group");
    assert!(!String::from_utf8_lossy(&relays[0].2).contains("ENACT_TOKEN"), "the relay has no token");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("the service runs");
    assert!(String::from_utf8_lossy(&cmdline).contains("chatty.py"), "the recorded pid is the service");
    assert_all_healthy(&repo.status());

    // Destroy: the service and its relay end, and no log is left.
    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    wait_dead(&[pid]);
    let relay = relays[0].0;
    assert!(!process_alive(relay), "the stop waited for the relay to end");
    assert!(!log_dir(&repo).exists(), "{:?}", files_of(&repo, "chatty-1"));
}

#[test]
fn logs_go_with_their_instances_unless_kept() {
    let port = 26110;
    let repo = repo(port, 2, false);
    apply(&repo);
    wait_last_line(&repo, "chatty-2", "start");
    assert!(!files_of(&repo, "chatty-2").is_empty());

    // Scaled in: the instance that goes takes its log along; the one that stays keeps its.
    repo.write_chor(&chatty(port, 1, false));
    apply(&repo);
    assert_eq!(files_of(&repo, "chatty-2"), Vec::<(String, u64)>::new());
    assert!(!files_of(&repo, "chatty-1").is_empty());
    assert!(relays_under(&log_dir(&repo)).len() == 1, "the scaled-in instance's relay ended");

    // Replaced (a new version): the new instance starts, the old one goes with its log.
    let mut chor = chatty(port, 1, false);
    chor["deployableServiceSpecs"][0]["version"] = json!("1.1");
    repo.write_chor(&chor);
    apply(&repo);
    let ids = field(&instances(&repo.state(), "chatty"), "id");
    assert_eq!(ids, vec!["chatty-2".to_string()]);
    wait_last_line(&repo, "chatty-2", "start");
    assert_eq!(files_of(&repo, "chatty-1"), Vec::<(String, u64)>::new());

    // Scaled in with --keep-logs: kept.
    chor["deployableServiceSpecs"][0]["numberOfInstances"] = json!(2);
    repo.write_chor(&chor);
    apply(&repo);
    wait_last_line(&repo, "chatty-3", "start");
    chor["deployableServiceSpecs"][0]["numberOfInstances"] = json!(1);
    repo.write_chor(&chor);
    repo.enact_ok(&["apply", "--auto-approve", "--keep-logs"], 0);
    assert_eq!(field(&instances(&repo.state(), "chatty"), "id"), vec!["chatty-2".to_string()]);
    assert!(!files_of(&repo, "chatty-3").is_empty(), "--keep-logs keeps them");

    // Destroy --keep-logs keeps every log; destroy without it takes them all, kept ones too.
    repo.enact_ok(&["destroy", "--auto-approve", "--keep-logs"], 0);
    assert!(!files_of(&repo, "chatty-2").is_empty());
    let output = repo.enact_ok(&["logs", "chatty"], 1);
    assert!(
        stderr(&output).contains("records no instance of it (not applied yet, or destroyed)"),
        "{}",
        describe(&output)
    );
    apply(&repo);
    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    assert!(!log_dir(&repo).exists(), "{:?} {:?}", files_of(&repo, "chatty-1"), files_of(&repo, "chatty-2"));
    assert!(relays_under(&repo.path("state/.logs")).is_empty());
}

#[test]
fn a_service_whose_relay_is_killed_gets_sigpipe_and_is_replaced_by_the_next_apply() {
    let port = 26120;
    let repo = repo(port, 1, true);
    apply(&repo);
    let pid = pids(&instances(&repo.state(), "chatty"))[0];
    let relays = relays_under(&log_dir(&repo));
    assert_eq!(relays.len(), 1);
    std::process::Command::new("kill").args(["-KILL", &relays[0].0.to_string()]).status().expect("kill");
    // Its next tick writes to a pipe nobody reads: SIGPIPE ends it (it keeps the default action).
    wait_dead(&[pid]);
    let output = repo.enact_ok(&["status"], 1);
    assert!(stdout(&output).contains("process gone"), "{}", describe(&output));
    let output = apply(&repo);
    assert!(stdout(&output).contains("chatty-1 is not running"), "{}", describe(&output));
    let replaced = pids(&instances(&repo.state(), "chatty"));
    assert_eq!(replaced.len(), 1);
    assert_ne!(replaced[0], pid);
    assert_eq!(relays_under(&log_dir(&repo)).len(), 1, "the new instance has a relay");
    assert_all_healthy(&repo.status());
}

/// The numbers of the lines `[<instance>] <instance> <tag> line <n> …` in `text`, in order.
fn followed_numbers(text: &str, instance: &str, tag: &str) -> Vec<u64> {
    let prefix = format!("[{instance}] {instance} {tag} line ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn logs_follow_prints_what_every_instance_writes_across_rotations_without_a_gap() {
    let port = 26130;
    // Room for what is written between two looks: 40 files of 256 KiB.
    let mut repo = repo_keeping(port, 2, false, 40);
    apply(&repo);
    let starts = [wait_last_line(&repo, "chatty-1", "start"), wait_last_line(&repo, "chatty-2", "start")];
    let pid = repo.spawn_enact(&["logs", "chatty", "-f", "-n", "1"], "follow");
    let followed = || fs::read_to_string(repo.path("follow.out")).unwrap_or_default();
    // First each instance's last line, after its name.
    wait_for("the last line of both instances", Duration::from_secs(30), || {
        let text = followed();
        starts.iter().zip(["chatty-1", "chatty-2"]).all(|(last, id)| text.contains(&format!("[{id}] {last}\n")))
    });
    assert_eq!(followed().lines().count(), 2, "{}", followed());

    // Then 3 MB more of instance 1: its log rotates a dozen times (256 KiB a file) while it is
    // followed, and every line comes out once, in order.
    let address = address_of(&repo, "chatty-1");
    // It listens once it has printed its first burst: ask until it answers (once).
    wait_for("chatty-1 to answer", Duration::from_secs(30), || {
        http_get(&format!("http://{address}/burst")).is_ok_and(|(status, _)| status == 200)
    });
    let last = wait_last_line(&repo, "chatty-1", "burst");
    wait_for("the burst's last line, followed", Duration::from_secs(60), || {
        followed().contains(&format!("[chatty-1] {last}\n"))
    });
    assert!(process_alive(pid), "it follows on until interrupted");
    unsafe_free_kill(pid);

    let text = followed();
    let numbers = followed_numbers(&text, "chatty-1", "burst");
    let end: u64 = last.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("the last line's number");
    assert!(numbers.len() > 20_000, "{} lines", numbers.len());
    assert_eq!(numbers.last(), Some(&end));
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "one line after another, none lost or repeated");
    assert!(followed_numbers(&text, "chatty-2", "burst").is_empty());
    // Whole lines only, each after its instance.
    assert!(
        text.lines().all(|l| l.starts_with("[chatty-1] chatty-1 ") || l.starts_with("[chatty-2] chatty-2 ")),
        "{}",
        &text[..text.len().min(300)]
    );
}

#[test]
fn logs_follow_says_when_output_was_rotated_away_before_it_was_read() {
    // 1 MiB kept: a 3 MB burst rotates past it faster than `--follow` looks.
    let port = 26140;
    let mut repo = repo(port, 1, false);
    apply(&repo);
    let start = wait_last_line(&repo, "chatty-1", "start");
    let pid = repo.spawn_enact(&["logs", "chatty", "--follow", "-n", "1"], "follow");
    let followed = || fs::read_to_string(repo.path("follow.out")).unwrap_or_default();
    wait_for("the last line", Duration::from_secs(30), || followed().contains(&format!("{start}\n")));
    let address = address_of(&repo, "chatty-1");
    // It listens once it has printed its first burst: ask until it answers (once).
    wait_for("the service to answer", Duration::from_secs(30), || {
        http_get(&format!("http://{address}/burst")).is_ok_and(|(status, _)| status == 200)
    });
    let last = wait_last_line(&repo, "chatty-1", "burst");
    wait_for("the burst's last line", Duration::from_secs(60), || followed().contains(&format!("{last}\n")));
    unsafe_free_kill(pid);
    let text = followed();
    // One instance: its lines as they are, no name before them.
    assert!(text.starts_with(&format!("{start}\n")), "{}", &text[..text.len().min(300)]);
    assert!(text.contains("(enact: output rotated away before it was read"), "{}", &text[..text.len().min(300)]);
    // Around the gap, every line is whole and in order.
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("chatty-1 burst line "))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "in order");
    assert!(numbers.len() < 27_000, "some were lost: {}", numbers.len());
}

#[test]
fn logs_follow_ends_when_its_reader_goes_and_when_no_instance_is_left() {
    let port = 26150;
    let mut repo = repo(port, 1, false);
    apply(&repo);
    let start = wait_last_line(&repo, "chatty-1", "start");

    // A reader that goes after the first line, while the instance writes nothing more: enact
    // sees it gone without writing again, and ends.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_enact"))
        .current_dir(&repo.root)
        .args(["logs", "chatty", "-f", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("enact logs -f");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut first)
        .expect("a line");
    assert_eq!(first.trim_end(), start);
    let mut ended = None;
    wait_for("enact to end once its reader is gone", Duration::from_secs(10), || {
        ended = child.try_wait().expect("wait");
        ended.is_some()
    });
    assert_eq!(ended.and_then(|s| s.code()), Some(0));

    // Following while the environment is destroyed: the instance is said gone, and enact ends.
    let pid = repo.spawn_enact(&["logs", "chatty", "-f"], "follow");
    wait_for("the follow to start", Duration::from_secs(30), || {
        fs::read_to_string(repo.path("follow.out")).unwrap_or_default().contains(&start)
    });
    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    let status = repo.wait_child(pid, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let err = fs::read_to_string(repo.path("follow.err")).unwrap_or_default();
    assert!(err.contains("chatty-1: no longer recorded in env `dev`; not followed any more"), "{err}");
    assert!(err.contains("No instance of `chatty` is left to follow."), "{err}");
}

#[test]
fn logs_follow_takes_in_the_instances_a_scale_out_starts_and_leaves_the_ones_a_scale_in_stops() {
    let port = 26160;
    let mut repo = repo(port, 1, false);
    apply(&repo);
    let start = wait_last_line(&repo, "chatty-1", "start");
    let pid = repo.spawn_enact(&["logs", "chatty", "-f", "-n", "1"], "follow");
    let followed = || fs::read_to_string(repo.path("follow.out")).unwrap_or_default();
    wait_for("the follow to start", Duration::from_secs(30), || followed().contains(&format!("{start}\n")));
    // One instance: its lines as they are.
    assert!(followed().starts_with(&format!("{start}\n")), "{}", followed());

    // A second instance while it follows: within a reading of the state it is followed too, its
    // lines after its name.
    repo.write_chor(&chatty(port, 2, false));
    apply(&repo);
    let second = wait_last_line(&repo, "chatty-2", "start");
    wait_for("the new instance's last line, followed", Duration::from_secs(30), || {
        followed().contains(&format!("[chatty-2] {second}\n"))
    });
    let err = || fs::read_to_string(repo.path("follow.err")).unwrap_or_default();
    assert!(err().contains("chatty-2: recorded in env `dev`; followed from now on"), "{}", err());

    // Back to one: the stop removes chatty-2's log before the apply writes the state; that is
    // a scale-in, said as one, not a log that cannot be read.
    repo.write_chor(&chatty(port, 1, false));
    apply(&repo);
    wait_for("the removed instance, said", Duration::from_secs(30), || {
        err().contains("chatty-2: no longer recorded in env `dev`; not followed any more")
    });
    assert!(process_alive(pid), "it follows on until interrupted");
    unsafe_free_kill(pid);
    assert!(!err().contains("no log file"), "{}", err());
    assert!(!err().contains("chatty-1: no longer recorded"), "the first instance stays: {}", err());
}

#[test]
fn logs_follow_prints_the_line_a_removed_instance_was_still_writing() {
    let port = 26170;
    let mut repo = repo(port, 1, false);
    apply(&repo);
    let start = wait_last_line(&repo, "chatty-1", "start");
    let pid = repo.spawn_enact(&["logs", "chatty", "-f", "-n", "1"], "follow");
    let out = repo.path("follow.out");
    let followed = || fs::read_to_string(&out).unwrap_or_default();
    wait_for("the follow to start", Duration::from_secs(30), || followed().contains(&format!("{start}\n")));
    // The instance writes a line without its newline, and is destroyed (its log kept, so that
    // only the missing newline stands between the follow and the text).
    let address = address_of(&repo, "chatty-1");
    wait_for("chatty-1 to take the request", Duration::from_secs(30), || {
        http_get(&format!("http://{address}/partial")).is_ok_and(|(status, _)| status == 200)
    });
    let log = log_dir(&repo).join("chatty-1.log");
    wait_for("the partial line in the log", Duration::from_secs(10), || {
        fs::read_to_string(&log).unwrap_or_default().ends_with("chatty-1 partial, no newline")
    });
    // Two looks (0.5 s each) take it in, unfinished.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!followed().contains("partial"), "a line is printed once whole: {}", followed());
    repo.enact_ok(&["destroy", "--auto-approve", "--keep-logs"], 0);
    let status = repo.wait_child(pid, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert!(
        followed().ends_with("chatty-1 partial, no newline\n"),
        "the removed instance's last words are its last line: {}",
        followed()
    );
}

/// Ends a process as Ctrl-C would (SIGINT), and waits for it./// Ends a process as Ctrl-C would (SIGINT), and waits for it.
fn unsafe_free_kill(pid: u32) {
    let status = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    wait_dead(&[pid]);
}
