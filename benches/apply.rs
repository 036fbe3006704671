//! `cargo bench --bench apply`: how long `enact apply` takes on the simulated provider, where
//! nothing runs and every provider operation sleeps the account's `latencyMs`. Only the release
//! binary is measured (no library API is used), so the bench survives changes inside enact.
//!
//! (a) Scale: a random choreography of 10,000 services (0–3 dependencies each on earlier
//!     services, a few back edges that make cycles, 1–3 instances, like `benches/plan.rs`) at
//!     `latencyMs` 0, applied end to end (`enact apply --auto-approve`) from an empty state, then
//!     a second apply that changes 10% of the services (a third each: instance count, version,
//!     memory). Median of 3 runs of each. Targets: the first apply ≤ 10 s (OpenTofu takes 32 s
//!     for 10,000 resources), and ≤ 2.5 s at 10,000 services. Where the time goes is read from the output as it comes (the
//!     plan printed, the first and the last step done, the summary), beside `plan` alone on the
//!     same inputs and `strace -c -f` of one run (when strace is installed).
//! (b) Walk efficiency at `latencyMs` 50, `--parallelism 10`, one instance per service: a
//!     20-deep chain (s1 ← s2 ← … ← s20) against a 20 × 10 grid of the same depth (each service
//!     of a level depends on the one in its column of the level before and, one time in two, on
//!     another service of that level), and a variant grid where each service depends on exactly
//!     one service of the level before. Median of 3 runs each. Target: grid ≤ 1.25 × chain.
//!     Beside the measured times it prints what a perfect walk takes under the cost model (one
//!     `latencyMs` per provider call: the node batch, each start, each wiring call; at most 10
//!     steps at once), and, from one more run with `-v`, how much longer each step took than
//!     its calls, so a miss can be told apart from the workload.
//!
//! (c) One change: N services applied, then `ENACT_BENCH_RUNS` times one service's instance
//!     count changes and its `plan` and its `apply` are timed. Target: the apply ≤ 2× the plan
//!     (`ENACT_BENCH_ONE_CHANGE_SIZES`, default `10000`; `10000,100000` for both sizes).
//!     `ENACT_BENCH_BASELINE=PATH` runs another binary in turn with the measured one (each run:
//!     one change planned and applied by each, the order alternating), for a side-by-side table
//!     (in (a) too: its first apply, in turn with the measured one's);
//!     `ENACT_BENCH_ONE_CHANGE_ONLY=1` skips (a) and (b).
//!
//! It prints Markdown tables and PASS/FAIL per target (printed, not asserted).
//! `ENACT_BENCH_APPLY_N` (default 10000) and `ENACT_BENCH_RUNS` (default 3) change the sizes;
//! `ENACT_BENCH_BIN` names the binary; `ENACT_BENCH_KEEP=DIR` keeps the repositories in `DIR`
//! (with `chor.second.json`, the changed spec, to profile the second apply by hand).
//! See `benches/README.md`.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark reports on the terminal")]
#![allow(unsafe_code, reason = "libc::getrusage is the way to read the CPU time of the children")]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

type BenchResult<T> = Result<T, String>;

const ENV: &str = "dev";
const DEFAULT_N: usize = 10_000;
const DEFAULT_RUNS: usize = 3;
/// The first apply of 10,000 services, end to end.
const TARGET_APPLY_S: f64 = 10.0;
/// The first apply of 10,000 services, the later and tighter target (at 0 ms a simulated
/// provider costs nothing: what is left is enact's own work).
const TARGET_APPLY_FAST_S: f64 = 2.5;
/// grid time / chain time.
const TARGET_WALK_RATIO: f64 = 1.25;
const WALK_LATENCY_MS: u64 = 50;
const WALK_PARALLELISM: usize = 10;
const DEPTH: usize = 20;
const WIDTH: usize = 10;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench apply: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let binary = release_binary()?;
    let n = env_usize("ENACT_BENCH_APPLY_N", DEFAULT_N)?;
    let runs = env_usize("ENACT_BENCH_RUNS", DEFAULT_RUNS)?.max(1);
    eprintln!("binary: {}; load average {}", binary.display(), load_average());

    if std::env::var_os("ENACT_BENCH_ONE_CHANGE_ONLY").is_none_or(|v| v.is_empty() || v == "0") {
        let baseline = std::env::var_os("ENACT_BENCH_BASELINE").map(PathBuf::from);
        let scale = measure_scale(&binary, baseline.as_deref(), n, runs)?;
        let chain = measure_walk(&binary, Shape::Chain, runs)?;
        let grid = measure_walk(&binary, Shape::Grid, runs)?;
        let grid_one = measure_walk(&binary, Shape::GridOne, runs)?;
        let fan_out = measure_walk(&binary, Shape::FanOut, runs)?;
        report(&binary, &scale, &[chain, grid, grid_one, fan_out]);
    }
    let mut binaries = vec![("this", binary)];
    if let Some(baseline) = std::env::var_os("ENACT_BENCH_BASELINE") {
        binaries.insert(0, ("baseline", PathBuf::from(baseline)));
    }
    let sizes = std::env::var("ENACT_BENCH_ONE_CHANGE_SIZES").unwrap_or_else(|_| "10000".to_string());
    let mut one_change = Vec::new();
    for size in sizes.split(',').filter(|s| !s.trim().is_empty()) {
        let size: usize = size.trim().replace('_', "").parse().map_err(|_| format!("`{size}` is not a size"))?;
        one_change.push(measure_one_change(&binaries, size, runs)?);
    }
    report_one_change(&one_change);
    println!();
    println!(
        "Load average at the end: {} (this machine has {} CPUs; other work on it slows every figure).",
        load_average(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    Ok(())
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(v) => v.trim().replace('_', "").parse().map_err(|_| format!("{name}: `{v}` is not a number")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// Repositories

/// A config repository in a temporary directory, or kept under `$ENACT_BENCH_KEEP/<name>`.
enum RepoDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl RepoDir {
    fn new(name: &str) -> BenchResult<RepoDir> {
        match std::env::var_os("ENACT_BENCH_KEEP") {
            Some(keep) => {
                let path = PathBuf::from(keep).join(name);
                if path.exists() {
                    fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(RepoDir::Kept(path))
            }
            None => tempfile::Builder::new()
                .prefix(&format!("enact-bench-{name}-"))
                .tempdir()
                .map(RepoDir::Temp)
                .map_err(|e| format!("temp dir: {e}")),
        }
    }

    fn path(&self) -> &Path {
        match self {
            RepoDir::Temp(dir) => dir.path(),
            RepoDir::Kept(path) => path,
        }
    }
}

fn write(path: &Path, text: &str) -> BenchResult<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `enact.json` with one simulated account, `chor.json`, an empty overlay.
fn write_repo(root: &Path, latency_ms: u64, services: &[Value]) -> BenchResult<()> {
    let settings = json!({
        "defaultEnv": ENV,
        "defaultAccount": "sim",
        "accounts": { "sim": { "provider": "simulated", "latencyMs": latency_ms } },
        "nodeSelector": { "policy": "ALWAYS_CREATE" }
    });
    write(&root.join("enact.json"), &pretty(&settings)?)?;
    write(&root.join("envs").join(format!("{ENV}.json")), "{}\n")?;
    write_chor(root, services)?;
    write(&root.join("services/svc.py"), "print('a benchmark service')\n")
}

fn write_chor(root: &Path, services: &[Value]) -> BenchResult<()> {
    let chor = json!({ "deployableServiceSpecs": services });
    write(&root.join("chor.json"), &pretty(&chor)?)
}

fn pretty(value: &Value) -> BenchResult<String> {
    serde_json::to_string_pretty(value).map(|t| t + "\n").map_err(|e| e.to_string())
}

fn service(name: &str, port: usize, deps: &[String], g: &Gen) -> Value {
    let deps: Vec<Value> = deps.iter().map(|d| json!({ "serviceSpecName": d, "serviceSpecRole": d })).collect();
    json!({
        "name": name,
        "roles": [name],
        "dependencies": deps,
        "packageUri": "services/svc.py",
        "port": port,
        "numberOfInstances": g.instances,
        "resourceImpact": { "memory": MEMORIES[g.memory] },
        "version": format!("1.{}", g.version),
    })
}

/// Removes the recorded state, so the next apply starts from nothing.
fn clear_state(root: &Path) -> BenchResult<()> {
    let dir = root.join("state");
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Randomness and the generated choreography

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

const MEMORIES: [&str; 3] = ["SMALL", "MEDIUM", "LARGE"];

#[derive(Debug, Clone)]
struct Gen {
    instances: usize,
    memory: usize,
    version: usize,
    deps: BTreeSet<usize>,
}

fn name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// What the scale workload holds.
#[derive(Debug, Clone, Default)]
struct Workload {
    services: usize,
    instances: usize,
    dependencies: usize,
    back_edges: usize,
    changed: [usize; 3],
}

/// `n` services, deps on earlier ones (0–3), ~0.5% back edges making 2-cycles; returns the
/// spec and the spec with 10% of the services changed.
fn generate(n: usize) -> (Vec<Value>, Vec<Value>, Workload) {
    let mut rng = Rng::new(0x0061_7070_6c79 ^ n as u64);
    let mut all: Vec<Gen> = Vec::with_capacity(n + 1);
    all.push(Gen { instances: 0, memory: 0, version: 0, deps: BTreeSet::new() });
    let mut workload = Workload::default();
    let mut owed: std::collections::BTreeMap<usize, BTreeSet<usize>> = Default::default();
    for i in 1..=n {
        let mut deps = owed.remove(&i).unwrap_or_default();
        if i > 1 {
            for _ in 0..rng.below(4) {
                deps.insert(1 + rng.below(i - 1));
            }
        }
        if i < n && rng.chance(5) {
            let j = i + 1 + rng.below((n - i).min(20));
            deps.insert(j);
            owed.entry(j).or_default().insert(i);
            workload.back_edges += 1;
        }
        all.push(Gen { instances: 1 + rng.below(3), memory: rng.below(3), version: 0, deps });
    }
    let to_values = |gens: &[Gen]| -> Vec<Value> {
        (1..=n)
            .map(|i| {
                let deps: Vec<String> = gens[i].deps.iter().map(|&d| name(d)).collect();
                service(&name(i), 20_000 + i % 40_000, &deps, &gens[i])
            })
            .collect()
    };
    let first = to_values(&all);
    let mut changed = all.clone();
    for g in changed.iter_mut().skip(1) {
        if rng.chance(100) {
            let way = rng.below(3);
            match way {
                0 => g.instances = g.instances % 3 + 1,
                1 => g.version += 1,
                _ => g.memory = (g.memory + 1) % 3,
            }
            workload.changed[way] += 1;
        }
    }
    let second = to_values(&changed);
    workload.services = n;
    workload.instances = all.iter().map(|g| g.instances).sum();
    workload.dependencies = all.iter().map(|g| g.deps.len()).sum();
    (first, second, workload)
}

// ---------------------------------------------------------------------------------------------
// Running the binary

struct Timed {
    elapsed: Duration,
    /// User + system CPU time of the process and everything it waited for.
    cpu: Duration,
}

/// The user + system CPU time of the children this process has waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct, and `getrusage`
    // only writes into the one it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// `enact -C ROOT ARGS…`, stdout to /dev/null; fails unless it exits `expect`.
fn enact(binary: &Path, root: &Path, args: &[&str], expect: i32) -> BenchResult<Timed> {
    let stderr_path = root.join("enact.stderr");
    let stderr = fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    let cpu_before = children_cpu();
    let started = Instant::now();
    let status = Command::new(binary)
        .arg("-C")
        .arg(root)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let elapsed = started.elapsed();
    let cpu = children_cpu().saturating_sub(cpu_before);
    if status.code() != Some(expect) {
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        return Err(failure(root, args, &status.to_string(), expect, &stderr));
    }
    Ok(Timed { elapsed, cpu })
}

fn failure(root: &Path, args: &[&str], status: &str, expect: i32, stderr: &str) -> String {
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    format!(
        "`enact -C {} {}` exited {status}, expected {expect}:\n{}",
        root.display(),
        args.join(" "),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// When an `apply` reached each of its phases, seen from outside by reading its output as it
/// comes: the plan is printed once loaded, planned and rendered; a `✓` line is printed per
/// step done; the summary (`Apply: …`) once the state is written.
#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    /// Start → the plan printed: lock, state read, load, plan, render.
    plan: Duration,
    /// → the first step done: journal, executor set-up, node creation, the first step.
    setup: Duration,
    /// First → last step done: the walk.
    walk: Duration,
    /// Last step → the summary printed: freeing nodes, the journal flush, the state written,
    /// the journal removed, the summary computed.
    finish: Duration,
    /// Summary → exit.
    exit: Duration,
    total: Duration,
    steps: usize,
}

/// Runs `apply` with its output read as it comes, and times its phases.
fn enact_phased(binary: &Path, root: &Path, args: &[&str]) -> BenchResult<Phases> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("-C")
        .arg(root)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (out_times, err_times) = std::thread::scope(|scope| {
        let out = scope.spawn(move || {
            // The first byte of the plan, and the summary line.
            let mut first = None;
            let mut summary = None;
            let mut buf = vec![0u8; 1 << 16];
            let mut tail = Vec::new();
            loop {
                let n = match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                first.get_or_insert_with(Instant::now);
                tail.extend_from_slice(&buf[..n]);
                if summary.is_none() && contains(&tail, b"\nApply:") {
                    summary = Some(Instant::now());
                }
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
            }
            (first, summary)
        });
        let err = scope.spawn(move || {
            let mut first = None;
            let mut last = None;
            let mut steps = 0;
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.starts_with('✓') {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = Some(now);
                    steps += 1;
                } else if text.len() < 1 << 16 {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            (first, last, steps, text)
        });
        (out.join().unwrap_or_default(), err.join().unwrap_or((None, None, 0, String::new())))
    });
    let status = child.wait().map_err(|e| e.to_string())?;
    let end = Instant::now();
    let (first_out, summary) = out_times;
    let (first_step, last_step, steps, text) = err_times;
    if !status.success() {
        return Err(failure(root, args, &status.to_string(), 0, &text));
    }
    let at = |t: Option<Instant>| t.unwrap_or(end);
    let plan_at = at(first_out);
    let first_at = at(first_step).max(plan_at);
    let last_at = at(last_step).max(first_at);
    let summary_at = at(summary).max(last_at);
    Ok(Phases {
        plan: plan_at - started,
        setup: first_at - plan_at,
        walk: last_at - first_at,
        finish: summary_at - last_at,
        exit: end - summary_at,
        total: end - started,
        steps,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// The run whose total is the median.
fn median_phases(mut runs: Vec<Phases>) -> Phases {
    runs.sort_by_key(|p| p.total);
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// (a) Scale

struct Scale {
    workload: Workload,
    first: Vec<Phases>,
    second: Vec<Phases>,
    /// `plan` alone on the same inputs: from an empty state, and from the first apply's state.
    plan_first: Duration,
    plan_second: Duration,
    state_bytes: u64,
    strace: Option<String>,
    /// `ENACT_BENCH_BASELINE`'s first apply, run in turn with the measured one: (path, phases).
    baseline_first: Option<(PathBuf, Vec<Phases>)>,
}

fn measure_scale(binary: &Path, baseline: Option<&Path>, n: usize, runs: usize) -> BenchResult<Scale> {
    eprintln!("(a) {n} services at latencyMs 0: generating…");
    let dir = RepoDir::new(&format!("apply-{n}"))?;
    let root = dir.path();
    let (first_spec, second_spec, workload) = generate(n);
    write_repo(root, 0, &first_spec)?;
    if matches!(dir, RepoDir::Kept(_)) {
        // To profile the second apply by hand: `cp chor.second.json chor.json`.
        let chor = json!({ "deployableServiceSpecs": second_spec });
        write(&root.join("chor.second.json"), &pretty(&chor)?)?;
    }
    eprintln!(
        "(a) {} services, {} instances, {} dependencies, {} back edges; the second apply changes {} instance counts, {} versions, {} memory sizes",
        workload.services,
        workload.instances,
        workload.dependencies,
        workload.back_edges,
        workload.changed[0],
        workload.changed[1],
        workload.changed[2]
    );

    // What planning alone costs on the same inputs (an apply plans first).
    clear_state(root)?;
    let plan_first = median(
        (0..runs).map(|_| enact(binary, root, &["plan"], 0).map(|t| t.elapsed)).collect::<BenchResult<Vec<_>>>()?,
    );

    let apply = ["apply", "--auto-approve"];
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut plan_second = Duration::ZERO;
    let mut state_bytes = 0;
    let mut baseline_first = Vec::new();
    for run in 0..runs {
        // The baseline's first apply, in turn with the measured one (the order alternating).
        let mut baseline_run = |first_of_pair: bool| -> BenchResult<bool> {
            let Some(baseline) = baseline.filter(|_| first_of_pair == (run % 2 == 0)) else {
                return Ok(false);
            };
            clear_state(root)?;
            write_chor(root, &first_spec)?;
            let p = enact_phased(baseline, root, &apply)?;
            eprintln!("(a) run {}: the baseline's first apply {:.2} s ({})", run + 1, secs(p.total), describe(&p));
            baseline_first.push(p);
            Ok(true)
        };
        baseline_run(true)?;
        clear_state(root)?;
        write_chor(root, &first_spec)?;
        let p = enact_phased(binary, root, &apply)?;
        eprintln!("(a) run {}: first apply {:.2} s ({})", run + 1, secs(p.total), describe(&p));
        first.push(p);
        if baseline_run(false)? {
            // The second apply starts from the measured binary's state.
            clear_state(root)?;
            enact(binary, root, &apply, 0)?;
        }
        if run == 0 {
            enact(binary, root, &["plan", "--detailed-exitcode"], 0)
                .map_err(|e| format!("the first apply did not converge: {e}"))?;
            state_bytes = file_len(&root.join("state/dev.json"));
        }
        write_chor(root, &second_spec)?;
        if run == 0 {
            plan_second = enact(binary, root, &["plan"], 0)?.elapsed;
        }
        let p = enact_phased(binary, root, &apply)?;
        eprintln!("(a) run {}: second apply {:.2} s ({})", run + 1, secs(p.total), describe(&p));
        second.push(p);
        if run == 0 {
            enact(binary, root, &["plan", "--detailed-exitcode"], 0)
                .map_err(|e| format!("the second apply did not converge: {e}"))?;
        }
    }

    clear_state(root)?;
    write_chor(root, &first_spec)?;
    let strace = strace_summary(binary, root)?;
    let baseline_first = baseline.map(|b| (b.to_path_buf(), baseline_first));
    Ok(Scale { workload, first, second, plan_first, plan_second, state_bytes, strace, baseline_first })
}

/// (c) An apply that changes one service of an N-service environment, against the plan of the
/// same change, for each binary measured.
struct OneChange {
    n: usize,
    /// (label, runs) per binary: the baseline first when there is one.
    binaries: Vec<(&'static str, Vec<OneRun>)>,
}

/// One run of (c) with one binary: its plan and its apply of one change.
struct OneRun {
    plan: Timed,
    apply: Timed,
}

/// Applies N services once (with the first binary), then `runs` times for each binary, in an
/// order that alternates from run to run: one service's instance count changes, `plan` is
/// timed, then the `apply` of that change.
fn measure_one_change(binaries: &[(&'static str, PathBuf)], n: usize, runs: usize) -> BenchResult<OneChange> {
    eprintln!("(c) one change of {n} services: generating and applying them all first…");
    let dir = RepoDir::new(&format!("one-change-{n}"))?;
    let root = dir.path();
    let (mut spec, _, _) = generate(n);
    write_repo(root, 0, &spec)?;
    let first = binaries.first().map(|(_, b)| b.as_path()).ok_or("no binary")?;
    enact(first, root, &["apply", "--auto-approve"], 0)?;
    let at = n / 2;
    let mut measured: Vec<(&'static str, Vec<OneRun>)> = binaries.iter().map(|(l, _)| (*l, Vec::new())).collect();
    for run in 0..runs {
        for k in 0..binaries.len() {
            let which = (run + k) % binaries.len();
            let (label, binary) = &binaries[which];
            let count = spec[at]["numberOfInstances"].as_u64().unwrap_or(1);
            spec[at]["numberOfInstances"] = json!(if count >= 3 { 1 } else { count + 1 });
            write_chor(root, &spec)?;
            let plan = enact(binary, root, &["plan"], 0)?;
            let apply = enact(binary, root, &["apply", "--auto-approve"], 0)?;
            eprintln!(
                "(c) {n} services, run {}, {label}: plan {:.1} ms ({:.1} ms CPU), apply {:.1} ms ({:.1} ms CPU)",
                run + 1,
                ms(plan.elapsed),
                ms(plan.cpu),
                ms(apply.elapsed),
                ms(apply.cpu)
            );
            measured[which].1.push(OneRun { plan, apply });
        }
    }
    enact(first, root, &["plan", "--detailed-exitcode"], 0)
        .map_err(|e| format!("the one change did not converge: {e}"))?;
    Ok(OneChange { n, binaries: measured })
}

fn report_one_change(results: &[OneChange]) {
    if results.is_empty() {
        return;
    }
    println!();
    println!("### (c) An apply that changes one service, against the plan of that change");
    println!();
    println!(
        "| services | binary | plan ms (median) | apply ms (median) | apply / plan | plan CPU ms | apply CPU ms | apply runs ms | target ≤ 2× |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---|---|");
    for r in results {
        for (label, runs) in &r.binaries {
            let of = |f: &dyn Fn(&OneRun) -> Duration| median(runs.iter().map(f).collect());
            let (plan, apply) = (of(&|r| r.plan.elapsed), of(&|r| r.apply.elapsed));
            let (plan_cpu, apply_cpu) = (of(&|r| r.plan.cpu), of(&|r| r.apply.cpu));
            let ratio = secs(apply) / secs(plan).max(1e-9);
            let list: Vec<String> = runs.iter().map(|r| format!("{:.0}", ms(r.apply.elapsed))).collect();
            println!(
                "| {} | {label} | {:.1} | {:.1} | {ratio:.2}× | {:.1} | {:.1} | {} | {} |",
                r.n,
                ms(plan),
                ms(apply),
                ms(plan_cpu),
                ms(apply_cpu),
                list.join(", "),
                pass(ratio <= 2.0)
            );
        }
    }
}

fn describe(p: &Phases) -> String {
    format!(
        "plan printed {:.2} s, set-up {:.2} s, walk {:.2} s for {} steps, finish {:.2} s, exit {:.2} s",
        secs(p.plan),
        secs(p.setup),
        secs(p.walk),
        p.steps,
        secs(p.finish),
        secs(p.exit)
    )
}

/// `strace -c -f` of one first apply: the system calls it makes. `None` without strace.
fn strace_summary(binary: &Path, root: &Path) -> BenchResult<Option<String>> {
    let available = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        return Ok(None);
    }
    let out = root.join("strace.txt");
    let status = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(&out)
        .arg(binary)
        .arg("-C")
        .arg(root)
        .args(["apply", "--auto-approve"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Ok(None);
    }
    let text = fs::read_to_string(&out).unwrap_or_default();
    let top: Vec<&str> = text.lines().take(10).collect();
    Ok(Some(top.join("\n")))
}

// ---------------------------------------------------------------------------------------------
// (b) Walk efficiency

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chain,
    /// Each service depends on the one in its column and, one time in two, on another.
    Grid,
    /// Each service depends on exactly one service of the level before, in a random column.
    GridOne,
    /// One provider, ten consumers: how steps that share a provider get along.
    FanOut,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::Chain => "chain 20 × 1",
            Shape::Grid => "grid 20 × 10, 1–2 dependencies",
            Shape::GridOne => "grid 20 × 10, 1 dependency",
            Shape::FanOut => "fan-out: 1 provider, 10 consumers",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::Grid => "grid",
            Shape::GridOne => "grid-one",
            Shape::FanOut => "fan-out",
        }
    }

    /// deps[i] = the services `i` depends on (indices), in level order.
    fn deps(self) -> Vec<Vec<usize>> {
        if self == Shape::Chain {
            return (0..DEPTH).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
        }
        if self == Shape::FanOut {
            return (0..=WIDTH).map(|i| if i == 0 { vec![] } else { vec![0] }).collect();
        }
        let mut rng = Rng::new(match self {
            Shape::GridOne => 0x006f_6e65,
            _ => 0x6772_6964,
        });
        let mut deps = Vec::new();
        for level in 0..DEPTH {
            for column in 0..WIDTH {
                if level == 0 {
                    deps.push(vec![]);
                    continue;
                }
                let before = (level - 1) * WIDTH;
                let d = match self {
                    Shape::GridOne => vec![before + rng.below(WIDTH)],
                    _ => {
                        let mut d = vec![before + column];
                        if rng.chance(500) {
                            let other = (column + 1 + rng.below(WIDTH - 1)) % WIDTH;
                            d.push(before + other);
                        }
                        d
                    }
                };
                deps.push(d);
            }
        }
        deps
    }

    fn name(self, i: usize) -> String {
        match self {
            Shape::Chain => format!("s{}", i + 1),
            Shape::FanOut if i == 0 => "provider".to_string(),
            Shape::FanOut => format!("consumer-{i}"),
            _ => format!("g{:02}-{}", i / WIDTH + 1, i % WIDTH),
        }
    }
}

struct Walk {
    shape: Shape,
    services: usize,
    dependencies: usize,
    times: Vec<Duration>,
    /// An ideal walk under the cost model, and the longest dependency path alone.
    ideal: Duration,
    critical_path: Duration,
    steps: StepStats,
}

fn measure_walk(binary: &Path, shape: Shape, runs: usize) -> BenchResult<Walk> {
    let deps = shape.deps();
    let dir = RepoDir::new(shape.dir())?;
    let root = dir.path();
    let one = Gen { instances: 1, memory: 0, version: 0, deps: BTreeSet::new() };
    let services: Vec<Value> = deps
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let names: Vec<String> = d.iter().map(|&j| shape.name(j)).collect();
            service(&shape.name(i), 21_000 + i, &names, &one)
        })
        .collect();
    write_repo(root, WALK_LATENCY_MS, &services)?;
    let parallelism = WALK_PARALLELISM.to_string();
    let mut times = Vec::new();
    for run in 0..runs {
        clear_state(root)?;
        let t = enact(binary, root, &["apply", "--auto-approve", "--parallelism", &parallelism], 0)?;
        eprintln!("(b) {}: run {}: {:.3} s", shape.label(), run + 1, secs(t.elapsed));
        times.push(t.elapsed);
    }
    clear_state(root)?;
    let steps = walk_traced(binary, root, shape, &deps)?;
    let (ideal, critical_path) = ideal_walk(&deps);
    Ok(Walk {
        shape,
        services: deps.len(),
        dependencies: deps.iter().map(Vec::len).sum(),
        times,
        ideal,
        critical_path,
        steps,
    })
}

/// The cost of a create step under the model: one latency for the start, one per wiring call
/// (one instance, one role per dependency).
fn step_cost_ms(deps: usize) -> u64 {
    WALK_LATENCY_MS * (1 + deps as u64)
}

/// The makespan of an ideal walk under the cost model (one latency for the node batch, then
/// each step's cost; a step starts as soon as its dependencies are done, at most
/// `WALK_PARALLELISM` at once, first ready first served), and the longest dependency path alone.
fn ideal_walk(deps: &[Vec<usize>]) -> (Duration, Duration) {
    let n = deps.len();
    let cost: Vec<u64> = deps.iter().map(|d| step_cost_ms(d.len())).collect();
    let mut finish_cp = vec![0u64; n];
    for i in 0..n {
        let ready = deps[i].iter().map(|&j| finish_cp[j]).max().unwrap_or(0);
        finish_cp[i] = ready + cost[i];
    }
    let cp = finish_cp.iter().copied().max().unwrap_or(0);
    let mut done_at: Vec<Option<u64>> = vec![None; n];
    let mut started = vec![false; n];
    let mut workers: Vec<(u64, Option<usize>)> = vec![(0, None); WALK_PARALLELISM];
    let mut now = 0u64;
    loop {
        for w in &mut workers {
            if let (t, Some(i)) = *w
                && t <= now
            {
                done_at[i] = Some(t);
                *w = (t, None);
            }
        }
        if done_at.iter().all(Option::is_some) {
            break;
        }
        let mut ready: Vec<(u64, usize)> = (0..n)
            .filter(|&i| !started[i])
            .filter_map(|i| {
                deps[i].iter().map(|&j| done_at[j]).try_fold(0u64, |acc, d| d.map(|d| acc.max(d))).map(|r| (r, i))
            })
            .collect();
        ready.sort_unstable();
        for (_, i) in ready {
            if let Some(w) = workers.iter_mut().find(|w| w.1.is_none()) {
                *w = (now + cost[i], Some(i));
                started[i] = true;
            }
        }
        now = workers.iter().filter(|w| w.1.is_some()).map(|w| w.0).min().unwrap_or(now);
    }
    let makespan = done_at.iter().flatten().copied().max().unwrap_or(0);
    let node_batch = WALK_LATENCY_MS;
    (Duration::from_millis(node_batch + makespan), Duration::from_millis(node_batch + cp))
}

/// Each step's duration against its cost under the model, from one traced apply.
#[derive(Debug, Clone, Default)]
struct StepStats {
    wall: Duration,
    steps: usize,
    /// Σ (measured − model) over the steps, and the largest.
    excess_total: Duration,
    excess_max: Duration,
    /// Steps that took ≥ 25 ms more than the model.
    slow: usize,
    /// Mean excess of steps whose provider has other consumers, and of the others.
    excess_shared: (Duration, usize),
    excess_alone: (Duration, usize),
}

/// Runs `enact -v apply` once and times every step from its output as it comes: `-v` prints
/// `NAME: creating…` when a step starts and `✓ NAME: created […]` when it is done (stderr,
/// one line each, unbuffered).
fn walk_traced(binary: &Path, root: &Path, shape: Shape, deps: &[Vec<usize>]) -> BenchResult<StepStats> {
    let parallelism = WALK_PARALLELISM.to_string();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("-C")
        .arg(root)
        .arg("-v")
        .args(["apply", "--auto-approve", "--parallelism", &parallelism])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut begun: HashMap<String, Instant> = HashMap::new();
    let mut durations: Vec<(String, Duration)> = Vec::new();
    let mut other = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let now = Instant::now();
        if let Some(rest) = line.strip_prefix("✓ ") {
            if let Some((name, _)) = rest.split_once(": ")
                && let Some(at) = begun.get(name)
            {
                durations.push((name.to_string(), now - *at));
            }
        } else if let Some(name) = line.strip_suffix(": creating…") {
            begun.insert(name.to_string(), now);
        } else if other.len() < 1 << 14 {
            other.push_str(&line);
            other.push('\n');
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let wall = started.elapsed();
    if !status.success() {
        return Err(failure(root, &["-v", "apply"], &status.to_string(), 0, &other));
    }
    if durations.len() != deps.len() {
        return Err(format!(
            "the traced apply of the {} timed {} steps of {} (did `-v` change its lines?)",
            shape.label(),
            durations.len(),
            deps.len()
        ));
    }
    // How many consumers each provider has.
    let mut consumers = vec![0usize; deps.len()];
    for d in deps {
        for &j in d {
            consumers[j] += 1;
        }
    }
    let index: HashMap<String, usize> = (0..deps.len()).map(|i| (shape.name(i), i)).collect();
    let mut stats = StepStats { wall, ..StepStats::default() };
    for (service, elapsed) in &durations {
        let Some(&i) = index.get(service) else {
            continue;
        };
        let model = Duration::from_millis(step_cost_ms(deps[i].len()));
        let excess = elapsed.saturating_sub(model);
        stats.steps += 1;
        stats.excess_total += excess;
        stats.excess_max = stats.excess_max.max(excess);
        if excess >= Duration::from_millis(25) {
            stats.slow += 1;
        }
        let shared = deps[i].iter().any(|&j| consumers[j] > 1);
        let bucket = if shared { &mut stats.excess_shared } else { &mut stats.excess_alone };
        bucket.0 += excess;
        bucket.1 += 1;
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// Reporting

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mean_ms(bucket: (Duration, usize)) -> String {
    if bucket.1 == 0 { "—".to_string() } else { format!("{:.0} ({})", ms(bucket.0) / bucket.1 as f64, bucket.1) }
}

fn spread(samples: &[Duration]) -> String {
    let list: Vec<String> = samples.iter().map(|d| format!("{:.2}", secs(*d))).collect();
    list.join(", ")
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn report(binary: &Path, scale: &Scale, walks: &[Walk]) {
    let w = &scale.workload;
    let first = median_phases(scale.first.clone());
    let second = median_phases(scale.second.clone());
    println!();
    println!("## `enact apply` on the simulated provider");
    println!();
    println!(
        "- binary: `{}`; figures are wall times of `enact -C DIR apply --auto-approve` (median of {} runs)",
        binary.display(),
        scale.first.len()
    );
    println!(
        "- (a): {} services, {} instances, {} dependencies ({} back edges), latencyMs 0, from an empty state; then a second apply that changes {} instance counts, {} versions and {} memory sizes",
        w.services, w.instances, w.dependencies, w.back_edges, w.changed[0], w.changed[1], w.changed[2]
    );
    println!(
        "- (b): latencyMs {WALK_LATENCY_MS}, `--parallelism {WALK_PARALLELISM}`, 1 instance per service. \"ideal\" is what a perfect walk takes under the cost model (1 latency per provider call: the node batch, each start, each wiring call)"
    );
    println!();
    println!(
        "| (a) apply | services | steps | wall s (median) | runs s | `plan` alone s | plan printed s | set-up s | walk s | finish s | exit s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, p, runs, plan_alone) in [
        ("first, empty state", &first, &scale.first, scale.plan_first),
        ("second, 10% changed", &second, &scale.second, scale.plan_second),
    ] {
        let totals: Vec<Duration> = runs.iter().map(|p| p.total).collect();
        println!(
            "| {label} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            w.services,
            p.steps,
            secs(p.total),
            spread(&totals),
            secs(plan_alone),
            secs(p.plan),
            secs(p.setup),
            secs(p.walk),
            secs(p.finish),
            secs(p.exit)
        );
    }
    if let Some((path, runs)) = &scale.baseline_first {
        let totals: Vec<Duration> = runs.iter().map(|p| p.total).collect();
        let b = median_phases(runs.clone());
        println!(
            "| first, empty state: baseline `{}` (in turn) | {} | {} | {:.2} | {} | | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            path.display(),
            w.services,
            b.steps,
            secs(b.total),
            spread(&totals),
            secs(b.plan),
            secs(b.setup),
            secs(b.walk),
            secs(b.finish),
            secs(b.exit)
        );
    }
    println!();
    println!(
        "Phases are read from the output as it comes (of the median run): \"plan printed\" = lock, state read, load, plan and render; \"set-up\" = up to the first step done (journal, executor, node creation); \"walk\" = first to last step done; \"finish\" = last step to the summary (freeing nodes, journal flush, state write, summary); \"exit\" = summary to exit. State file after the first apply: {:.1} MB.",
        scale.state_bytes as f64 / 1e6
    );
    println!();
    println!(
        "| (b) walk | services | dependencies | wall s (median) | runs s | ideal s | longest path s | wall / ideal | traced run: wall s | Σ step excess s | max excess ms | steps ≥ 25 ms over | mean excess ms, shared provider (n) | mean excess ms, own provider (n) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for walk in walks {
        let m = median(walk.times.clone());
        let s = &walk.steps;
        println!(
            "| {} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {:.2} | {:.3} | {:.2} | {:.0} | {} of {} | {} | {} |",
            walk.shape.label(),
            walk.services,
            walk.dependencies,
            secs(m),
            spread(&walk.times),
            secs(walk.ideal),
            secs(walk.critical_path),
            secs(m) / secs(walk.ideal).max(1e-9),
            secs(s.wall),
            secs(s.excess_total),
            ms(s.excess_max),
            s.slow,
            s.steps,
            mean_ms(s.excess_shared),
            mean_ms(s.excess_alone)
        );
    }
    println!();
    println!(
        "\"excess\" is how much longer a step took, in one more run with `-v` (each step timed from its `creating…` line to its `✓` line as they come), than its calls under the cost model ({WALK_LATENCY_MS} ms × (1 + dependencies)): time spent waiting inside the step. \"shared provider\": a step whose provider has other consumers."
    );
    if let Some(strace) = &scale.strace {
        println!();
        println!("`strace -c -f` of one first apply of (a):");
        println!();
        println!("```");
        println!("{strace}");
        println!("```");
    }
    println!();
    println!("### Targets");
    println!();
    println!(
        "- {}: apply of {} services from an empty state ≤ {TARGET_APPLY_S:.0} s: {:.2} s (OpenTofu: 32 s for 10,000 resources)",
        pass(secs(first.total) <= TARGET_APPLY_S),
        w.services,
        secs(first.total)
    );
    if w.services == 10_000 {
        println!(
            "- {}: apply of 10000 services from an empty state ≤ {TARGET_APPLY_FAST_S} s: {:.2} s",
            pass(secs(first.total) <= TARGET_APPLY_FAST_S),
            secs(first.total)
        );
    }
    let chain = walks.iter().find(|w| w.shape == Shape::Chain);
    for grid in walks.iter().filter(|w| matches!(w.shape, Shape::Grid | Shape::GridOne)) {
        let Some(chain) = chain else { break };
        let c = median(chain.times.clone());
        let g = median(grid.times.clone());
        let ratio = secs(g) / secs(c).max(1e-9);
        let ideal = secs(grid.ideal) / secs(chain.ideal).max(1e-9);
        let target = if grid.shape == Shape::Grid { "" } else { " (a variant, for comparison)" };
        println!(
            "- {}: walk efficiency{target}, {} ≤ {TARGET_WALK_RATIO}× chain: {:.3} s / {:.3} s = {ratio:.2}× (a perfect walk under the cost model: {ideal:.2}×)",
            pass(ratio <= TARGET_WALK_RATIO),
            grid.shape.label(),
            secs(g),
            secs(c)
        );
    }
}

/// The release binary: `ENACT_BENCH_BIN`, the one cargo built for this bench, or
/// `target/release/enact` above this bench executable.
fn release_binary() -> BenchResult<PathBuf> {
    if let Some(path) = std::env::var_os("ENACT_BENCH_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_enact").map(PathBuf::from)
        && path.is_file()
    {
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "release"))
        .map(|release| release.join("enact"))
        .filter(|p| p.is_file())
        .ok_or_else(|| "no release binary: run `cargo build --release` first, or set ENACT_BENCH_BIN".to_string())
}
