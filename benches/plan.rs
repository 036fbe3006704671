//! `cargo bench --bench plan`: how `enact plan` scales with the number of services.
//!
//! For every size N (1,000, 10,000 and 100,000 services, or `ENACT_BENCH_SIZES=1000,10000`) it
//! generates, deterministically, a config repository whose recorded state differs from the spec
//! in about 12% of the services, then measures
//!
//! - in process, phase by phase, what `enact plan` does (median of 5 runs, 3 at 100,000 and more):
//!   load (open + parse + merge + validate), reading the state file, the graph, the diff, and the
//!   two renderings;
//! - end to end, the release binary running `enact -C DIR plan --json > /dev/null` (median of 21
//!   runs, 11 at 100,000 and more) and its peak RSS (`ru_maxrss` from `wait4`).
//!
//! It prints a Markdown table and checks two targets (printed, not asserted): `plan --json` at
//! 10,000 services within 300 ms end to end, and 10× the services within 12× the time.
//! `ENACT_BENCH_KEEP=DIR` keeps the generated repositories in `DIR/<N>` (to profile on them);
//! `ENACT_BENCH_BASELINE=PATH` also runs another `enact` binary end to end, in turn with this
//! one, for a side-by-side table; `ENACT_BENCH_VARIANTS=0` skips the variants.
//! See `benches/README.md`.

#![allow(unsafe_code, reason = "libc::wait4 is the way to read a child's peak RSS")]
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark reports on the terminal")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use enact::graph::ServiceGraph;
use enact::paint::Painter;
use enact::plan::converge::apply_model;
use enact::plan::render::render;
use enact::plan::{PlanInput, plan};
use enact::repo::ConfigRepo;
use enact::repo::settings::Settings;
use enact::spec::model::ResourceImpact;
use enact::spec::validate::validate;
use enact::spec::{Choreography, DeployableServiceSpec, Memory, ServiceDependency};
use enact::state::{FileStore, State, StateStore};

const DEFAULT_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const ENV: &str = "dev";
/// Runs of `plan --json` end to end below 100,000 services (each about 50 ms at 10,000): enough
/// that a median is not moved by the few slow runs a shared machine gives now and then.
const E2E_RUNS: usize = 21;
/// Runs end to end from 100,000 services on (each about half a second).
const E2E_RUNS_LARGE: usize = 11;

/// How many runs end to end at `n` services.
fn e2e_runs(n: usize) -> usize {
    if n >= 100_000 { E2E_RUNS_LARGE } else { E2E_RUNS }
}
/// `plan --json` at 10,000 services, end to end.
const TARGET_10K_MS: f64 = 300.0;
/// `plan --json` end to end at 10,000 and at 100,000 services: the targets of the third round.
const FAST_TARGETS_MS: [(usize, f64); 2] = [(10_000, 50.0), (100_000, 500.0)];
/// time(10 N) / time(N), end to end.
const TARGET_RATIO: f64 = 12.0;

type BenchResult<T> = Result<T, String>;

/// The argument that makes this executable the small process that runs `enact` once.
const CHILD_ARG: &str = "--enact-measure-child";
/// A refreshing plan (every recorded instance looked at, simulated provider) against the offline
/// one on the same inputs.
const TARGET_REFRESH: f64 = 2.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some(CHILD_ARG) => measure_child(&args[2..]),
        _ => run(),
    };
    if let Err(e) = result {
        eprintln!("bench plan: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let sizes = sizes()?;
    let binary = release_binary();
    let baseline = std::env::var_os("ENACT_BENCH_BASELINE").map(PathBuf::from);
    let hwm_reset = reset_hwm();
    let mut rows = Vec::new();
    for &n in &sizes {
        eprintln!("N = {n}: generating the config repository…");
        let started = Instant::now();
        let dir = repo_dir(n)?;
        let workload = generate(dir.path(), n)?;
        eprintln!("N = {n}: generated in {:.1} s: {}", started.elapsed().as_secs_f64(), workload.describe());
        let runs = if n >= 100_000 { 3 } else { 5 };
        reset_hwm();
        let phases = measure_phases(dir.path(), runs)?;
        let hwm = vm_hwm_kib();
        eprintln!("N = {n}: in-process phases: {}", phases.describe());
        let e2e = match &binary {
            Ok(bin) => Some(measure_end_to_end(bin, dir.path(), false, e2e_runs(n))?),
            Err(_) => None,
        };
        if let Some(e) = &e2e {
            eprintln!(
                "N = {n}: `plan --json` end to end: median {:.1} ms (min {:.1}, max {:.1}), CPU {:.1} ms, \
                 peak RSS {:.1} MB; load average {}",
                ms(e.median),
                ms(e.min),
                ms(e.max),
                ms(e.cpu),
                mb(e.max_rss_kib),
                load_average()
            );
        }
        let side_by_side = match (&binary, &baseline) {
            (Ok(bin), Some(base)) => {
                let (b, c) = measure_side_by_side(base, bin, dir.path(), e2e_runs(n))?;
                eprintln!(
                    "N = {n}: side by side, `plan --json`: baseline median {:.1} ms (CPU {:.1}), this build \
                     median {:.1} ms (CPU {:.1}); load average {}",
                    ms(b.median),
                    ms(b.cpu),
                    ms(c.median),
                    ms(c.cpu),
                    load_average()
                );
                Some((b, c))
            }
            _ => None,
        };
        let variants = match &binary {
            Ok(bin) if variants_wanted() => measure_variants(bin, dir.path(), n)?,
            _ => Vec::new(),
        };
        rows.push(Row { n, workload, phases, e2e, in_process_hwm_kib: hwm, variants, side_by_side });
    }
    report(&rows, &binary, hwm_reset);
    Ok(())
}

/// Where the repository of size `n` is generated: a temporary directory, removed at the end,
/// or `$ENACT_BENCH_KEEP/<n>`, kept (to profile the binary on it afterwards).
fn repo_dir(n: usize) -> BenchResult<RepoDir> {
    match std::env::var_os("ENACT_BENCH_KEEP") {
        Some(keep) => {
            let path = PathBuf::from(keep).join(n.to_string());
            if path.exists() {
                fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(RepoDir::Kept(path))
        }
        None => tempfile::tempdir().map(RepoDir::Temp).map_err(|e| format!("temp dir: {e}")),
    }
}

enum RepoDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl RepoDir {
    fn path(&self) -> &Path {
        match self {
            RepoDir::Temp(dir) => dir.path(),
            RepoDir::Kept(path) => path,
        }
    }
}

/// The sizes to run, in increasing order (the in-process peak RSS can only grow).
fn sizes() -> BenchResult<Vec<usize>> {
    let Ok(list) = std::env::var("ENACT_BENCH_SIZES") else {
        return Ok(DEFAULT_SIZES.to_vec());
    };
    let mut sizes = list
        .split(',')
        .map(|s| s.trim().replace('_', ""))
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("ENACT_BENCH_SIZES: `{s}` is not a positive number"))
        })
        .collect::<BenchResult<Vec<usize>>>()?;
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        return Err("ENACT_BENCH_SIZES lists no size".to_string());
    }
    Ok(sizes)
}

// ---------------------------------------------------------------------------------------------
// The workload

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// One generated service, before it becomes a spec.
#[derive(Clone)]
struct Gen {
    instances: i64,
    memory: Memory,
    version: &'static str,
    /// Indices (1-based) of the services it depends on.
    deps: BTreeSet<usize>,
}

const MEMORIES: [Memory; 3] = [Memory::Small, Memory::Medium, Memory::Large];

fn name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn spec_of(i: usize, g: &Gen, excluded: &BTreeSet<usize>) -> DeployableServiceSpec {
    DeployableServiceSpec {
        name: name(i),
        roles: vec![name(i)],
        dependencies: g
            .deps
            .iter()
            .filter(|d| !excluded.contains(d))
            .map(|&d| ServiceDependency { service_spec_name: name(d), service_spec_role: name(d) })
            .collect(),
        package_uri: Some("services/svc.py".to_string()),
        port: Some(20_000 + (i % 40_000) as i64),
        number_of_instances: Some(g.instances),
        resource_impact: Some(ResourceImpact { memory: Some(g.memory), ..ResourceImpact::default() }),
        version: Some(g.version.to_string()),
        ..DeployableServiceSpec::default()
    }
}

/// What was generated, for the report.
#[derive(Debug, Clone, Default)]
struct Workload {
    services: usize,
    dependencies: usize,
    back_edges: usize,
    /// Dependency cycles (groups of more than one service) and the largest one's size.
    cycles: usize,
    largest_cycle: usize,
    state_services: usize,
    changed: [usize; 3],
    added: usize,
    deleted: usize,
    spec_bytes: u64,
    state_bytes: u64,
    /// create, update, replace, destroy of the resulting plan.
    summary: [usize; 4],
}

impl Workload {
    fn describe(&self) -> String {
        let [create, update, replace, destroy] = self.summary;
        format!(
            "{} services, {} dependencies ({} back edges: {} cycles, the largest of {} services), \
             chor.json {:.1} MB; state of {} services, {:.1} MB ({} instance counts, {} versions, {} memory sizes changed; {} added, {} deleted); \
             plan: {create} create, {update} update, {replace} replace, {destroy} destroy",
            self.services,
            self.dependencies,
            self.back_edges,
            self.cycles,
            self.largest_cycle,
            self.spec_bytes as f64 / 1e6,
            self.state_services,
            self.state_bytes as f64 / 1e6,
            self.changed[0],
            self.changed[1],
            self.changed[2],
            self.added,
            self.deleted,
        )
    }
}

/// Writes `chor.json`, `services/svc.py` and `state/dev.json` for `n` services under `root`.
fn generate(root: &Path, n: usize) -> BenchResult<Workload> {
    let mut rng = Rng::new(0x0065_6e61_6374 ^ n as u64);
    let extra = (n / 100).max(1);
    let total = n + extra;

    // The universe: services 1..=total; deps on smaller indices, a few back edges (cycles).
    let mut all: Vec<Gen> = Vec::with_capacity(total + 1);
    all.push(Gen { instances: 0, memory: Memory::Small, version: "", deps: BTreeSet::new() });
    let mut workload = Workload::default();
    // Back edges: `i` depends on a later `j`, and `j` on `i`, so each makes a cycle.
    let mut owed: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for i in 1..=total {
        let mut deps = owed.remove(&i).unwrap_or_default();
        if i > 1 {
            for _ in 0..rng.below(4) {
                deps.insert(1 + rng.below(i - 1));
            }
        }
        if i < total && rng.chance(5) {
            let j = i + 1 + rng.below((total - i).min(20));
            deps.insert(j);
            owed.entry(j).or_default().insert(i);
            workload.back_edges += 1;
        }
        all.push(Gen { instances: 1 + rng.below(3) as i64, memory: MEMORIES[rng.below(3)], version: "1.0", deps });
    }

    // ~1% only in the spec (added), ~1% only in the state (deleted from the spec).
    let mut added = BTreeSet::new();
    while added.len() < extra {
        added.insert(1 + rng.below(total));
    }
    let mut deleted = BTreeSet::new();
    while deleted.len() < extra {
        let i = 1 + rng.below(total);
        if !added.contains(&i) {
            deleted.insert(i);
        }
    }

    let mut spec = Choreography::default();
    for i in (1..=total).filter(|i| !deleted.contains(i)) {
        let s = spec_of(i, &all[i], &deleted);
        workload.dependencies += s.dependencies.len();
        spec.deployable_service_specs.push(s);
    }
    workload.services = spec.deployable_service_specs.len();
    workload.added = added.len();
    workload.deleted = deleted.len();

    // The state's spec: ~10% of the services in both differ, a third in each way.
    let mut applied = Choreography::default();
    for i in (1..=total).filter(|i| !added.contains(i)) {
        let mut g = all[i].clone();
        if !deleted.contains(&i) && rng.chance(100) {
            let way = rng.below(3);
            match way {
                0 => g.instances = g.instances % 3 + 1,
                1 => g.version = "0.9",
                _ => {
                    g.memory = MEMORIES[(MEMORIES.iter().position(|m| *m == g.memory).unwrap_or(0) + 1) % 3];
                }
            }
            workload.changed[way] += 1;
        }
        applied.deployable_service_specs.push(spec_of(i, &g, &added));
    }
    applied.normalize();
    workload.state_services = applied.deployable_service_specs.len();

    let spec_text = serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())? + "\n";
    fs::write(root.join("chor.json"), &spec_text).map_err(|e| format!("write chor.json: {e}"))?;
    fs::create_dir_all(root.join("services")).map_err(|e| e.to_string())?;
    fs::write(root.join("services/svc.py"), "print('a benchmark service')\n").map_err(|e| e.to_string())?;

    // The state: what applying `applied` to an empty environment records.
    let settings = Settings::default();
    let empty = State::empty(ENV);
    let planned =
        plan(PlanInput { env: ENV, spec: &applied, state: &empty, settings: &settings, targets: &[], observed: None })
            .map_err(|d| format!("planning the state: {}", enact::Error::from(d)))?;
    let state = apply_model(&empty, &applied, &planned);
    let store = FileStore::new(root.join("state"));
    store.write(&state).map_err(|e| format!("writing the state: {e}"))?;

    workload.spec_bytes = spec_text.len() as u64;
    workload.state_bytes = fs::metadata(store.path(ENV)).map_err(|e| e.to_string())?.len();

    // The plan the benchmark measures, for the record.
    let repo = ConfigRepo::open(root).map_err(|e| e.to_string())?;
    let effective = repo.load(ENV).map_err(|e| e.to_string())?;
    let state = store.read_or_empty(ENV).map_err(|e| e.to_string())?;
    let planned = plan_of(&repo, &effective.choreography, &state)?;
    let s = &planned.plan.summary;
    workload.summary = [s.create, s.update, s.replace, s.destroy];
    let graph = ServiceGraph::build(&effective.choreography);
    let groups = graph.groups();
    workload.cycles = groups.iter().filter(|g| g.len() > 1).count();
    workload.largest_cycle = groups.iter().map(Vec::len).max().unwrap_or(0);
    Ok(workload)
}

// ---------------------------------------------------------------------------------------------
// Measuring

#[derive(Debug, Clone, Default)]
struct Phases {
    load: Duration,
    /// Parts of `load`, timed apart: reading and parsing `chor.json` into the model, and
    /// validating the model.
    parse: Duration,
    validate: Duration,
    state: Duration,
    graph: Duration,
    diff: Duration,
    json: Duration,
    human: Duration,
    runs: usize,
    json_bytes: usize,
    human_bytes: usize,
}

impl Phases {
    fn total(&self) -> Duration {
        self.load + self.state + self.graph + self.diff + self.json + self.human
    }

    fn describe(&self) -> String {
        format!(
            "load {:.1} ms (parse {:.1} ms, validate {:.1} ms), state {:.1} ms, graph {:.1} ms, diff {:.1} ms, json {:.1} ms ({:.1} MB), \
             human {:.1} ms ({:.1} MB) (median of {})",
            ms(self.load),
            ms(self.parse),
            ms(self.validate),
            ms(self.state),
            ms(self.graph),
            ms(self.diff),
            ms(self.json),
            self.json_bytes as f64 / 1e6,
            ms(self.human),
            self.human_bytes as f64 / 1e6,
            self.runs
        )
    }
}

/// `enact plan` of env `dev`, as the CLI calls it.
fn plan_of(repo: &ConfigRepo, spec: &Choreography, state: &State) -> BenchResult<enact::plan::Planned> {
    plan(PlanInput { env: ENV, spec, state, settings: &repo.settings, targets: &[], observed: None })
        .map_err(|d| enact::Error::from(d).to_string())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Each phase of `enact plan`, in process; the median of `runs` runs per phase.
fn measure_phases(root: &Path, runs: usize) -> BenchResult<Phases> {
    let mut samples: [Vec<Duration>; 8] = Default::default();
    let mut json_bytes = 0;
    let mut human_bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let repo = ConfigRepo::open(root).map_err(|e| e.to_string())?;
        let effective = repo.load(ENV).map_err(|e| e.to_string())?;
        samples[0].push(t.elapsed());

        let t = Instant::now();
        let state = FileStore::new(repo.state_dir()).read_or_empty(ENV).map_err(|e| e.to_string())?;
        samples[1].push(t.elapsed());

        // The two biggest parts of `load`, again, on their own.
        let t = Instant::now();
        let text = fs::read_to_string(root.join("chor.json")).map_err(|e| e.to_string())?;
        let parsed: Choreography = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        samples[6].push(t.elapsed());
        let t = Instant::now();
        let problems = validate(&parsed, &repo.settings, &|_, _, _| None);
        samples[7].push(t.elapsed());
        if !problems.is_empty() {
            return Err(format!("the generated spec is not valid: {}", problems[0]));
        }
        drop((text, parsed));

        let t = Instant::now();
        let graph = ServiceGraph::build(&effective.choreography);
        let groups = graph.groups();
        samples[2].push(t.elapsed());
        std::hint::black_box(groups.len());
        drop((groups, graph));

        let t = Instant::now();
        let planned = plan_of(&repo, &effective.choreography, &state)?;
        samples[3].push(t.elapsed());

        let t = Instant::now();
        let json = planned.plan.to_json();
        samples[4].push(t.elapsed());
        json_bytes = json.len();

        let t = Instant::now();
        let human = render(&planned.plan, Painter::new(false));
        samples[5].push(t.elapsed());
        human_bytes = human.len();

        // Drops (of a 100 MB state, say) are part of the real run too, but not of any phase.
        drop((json, human, planned, state, effective, repo));
    }
    let [load, state, graph, diff, json, human, parse, validate] = samples.map(median);
    Ok(Phases { load, parse, validate, state, graph, diff, json, human, runs, json_bytes, human_bytes })
}

#[derive(Debug, Clone)]
struct EndToEnd {
    median: Duration,
    min: Duration,
    max: Duration,
    /// Median CPU time (user + system) of the child: far less disturbed by other load than wall time.
    cpu: Duration,
    max_rss_kib: u64,
}

/// `enact -C DIR plan --json > /dev/null`, `runs` times after one warm-up run.
fn measure_end_to_end(binary: &Path, root: &Path, refresh: bool, runs: usize) -> BenchResult<EndToEnd> {
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut max_rss_kib = 0;
    for run in 0..=runs {
        let child = run_child(binary, root, refresh)?;
        if run > 0 {
            times.push(child.wall);
            cpu.push(child.cpu);
            max_rss_kib = max_rss_kib.max(child.max_rss_kib);
        }
    }
    Ok(EndToEnd {
        min: times.iter().min().copied().unwrap_or_default(),
        max: times.iter().max().copied().unwrap_or_default(),
        median: median(times),
        cpu: median(cpu),
        max_rss_kib,
    })
}

/// Whether to measure the [`VARIANTS`] (`ENACT_BENCH_VARIANTS=0` skips them).
fn variants_wanted() -> bool {
    std::env::var("ENACT_BENCH_VARIANTS").map_or(true, |v| v != "0")
}

/// `plan --json` end to end of the `baseline` binary and of `binary`, one run of each in turn
/// (so both see the same load on the machine), `count` each after one warm-up of each.
fn measure_side_by_side(
    baseline: &Path,
    binary: &Path,
    root: &Path,
    count: usize,
) -> BenchResult<(EndToEnd, EndToEnd)> {
    let mut runs: [Vec<ChildRun>; 2] = Default::default();
    for run in 0..=count {
        for (i, bin) in [baseline, binary].into_iter().enumerate() {
            let child = run_child(bin, root, false)?;
            if run > 0 {
                runs[i].push(child);
            }
        }
    }
    let [b, c] = runs.map(|runs| {
        let times: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
        EndToEnd {
            min: times.iter().min().copied().unwrap_or_default(),
            max: times.iter().max().copied().unwrap_or_default(),
            median: median(times),
            cpu: median(runs.iter().map(|r| r.cpu).collect()),
            max_rss_kib: runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0),
        }
    });
    Ok((b, c))
}

/// Variants of the workload, each measured end to end: what the column is called, a config
/// file written into the repository for the run (and removed after it), and whether the plan
/// refreshes (every other column plans offline, `--refresh=false`: the generated state records
/// processes that do not run here).
const VARIANTS: [(&str, &str, bool); 5] = [
    ("ROUND_ROBIN", "enact.json", false),
    ("LIMITED_ROUND_ROBIN", "enact.json", false),
    ("with an overlay", "envs/dev.json", false),
    ("simulated, offline", "enact.json", false),
    ("simulated, refresh", "enact.json", true),
];

/// The file of a variant: the two round-robin policies (the workload's state was placed with
/// `ALWAYS_CREATE`, a node per instance, so every new instance has all of them to choose
/// from), and an overlay that scales out one service in a hundred (an overlay that names
/// services takes another load path than none).
fn variant_file(variant: &str, spec: &Choreography) -> String {
    match variant {
        "ROUND_ROBIN" => r#"{"nodeSelector": {"policy": "ROUND_ROBIN"}}"#.to_string(),
        "LIMITED_ROUND_ROBIN" => r#"{"nodeSelector": {"policy": "LIMITED_ROUND_ROBIN", "vmLimit": 1000}}"#.to_string(),
        // The state's nodes are in account `local`: made simulated, a refresh looks at every
        // recorded instance through the simulated provider, which answers from the state.
        "simulated, offline" | "simulated, refresh" => {
            r#"{"accounts": {"local": {"provider": "simulated"}}}"#.to_string()
        }
        _ => {
            let services: Vec<String> = spec
                .deployable_service_specs
                .iter()
                .step_by(100)
                .map(|s| format!(r#"    {{"name": "{}", "numberOfInstances": 4}}"#, s.name))
                .collect();
            format!("{{\n  \"deployableServiceSpecs\": [\n{}\n  ]\n}}\n", services.join(",\n"))
        }
    }
}

/// The same plan end to end under each of [`VARIANTS`].
fn measure_variants(binary: &Path, root: &Path, n: usize) -> BenchResult<Vec<(&'static str, EndToEnd)>> {
    let spec = ConfigRepo::open(root).and_then(|r| r.load(ENV)).map_err(|e| e.to_string())?.choreography;
    let mut out = Vec::new();
    for (variant, file, refresh) in VARIANTS {
        let path = root.join(file);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fs::write(&path, variant_file(variant, &spec)).map_err(|e| format!("write {file}: {e}"))?;
        let e2e = measure_end_to_end(binary, root, refresh, e2e_runs(n));
        fs::remove_file(&path).map_err(|e| format!("remove {file}: {e}"))?;
        let e2e = e2e?;
        eprintln!("N = {n}: `plan --json` {variant}: median {:.1} ms, CPU {:.1} ms", ms(e2e.median), ms(e2e.cpu));
        out.push((variant, e2e));
    }
    Ok(out)
}

/// Runs the binary once, from a fresh, small copy of this executable (see [`measure_child`]);
/// its wall time and peak RSS (KiB).
///
/// Not spawned from here directly: Linux counts the parent's peak RSS at the time of `exec`
/// into the child's `ru_maxrss` (posix_spawn shares the parent's memory until `exec`), and this
/// process holds the whole workload in memory.
fn run_child(binary: &Path, root: &Path, refresh: bool) -> BenchResult<ChildRun> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .arg(CHILD_ARG)
        .arg(binary)
        .arg(root)
        .arg(if refresh { "--refresh=true" } else { "--refresh=false" })
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot re-run the bench as {CHILD_ARG}: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<u64> = text.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    match fields[..] {
        [wall, cpu, max_rss_kib] => {
            Ok(ChildRun { wall: Duration::from_nanos(wall), cpu: Duration::from_micros(cpu), max_rss_kib })
        }
        _ => Err(format!("{CHILD_ARG} printed `{text}`")),
    }
}

/// One run of the binary.
struct ChildRun {
    wall: Duration,
    /// User + system CPU time.
    cpu: Duration,
    max_rss_kib: u64,
}

/// `--enact-measure-child BINARY DIR REFRESH`: runs `BINARY -C DIR plan --json REFRESH > /dev/null`
/// (REFRESH is `--refresh=true` or `--refresh=false`) and prints
/// its wall time in nanoseconds, its CPU time (user + system) in microseconds and its peak RSS
/// in KiB (`ru_utime`, `ru_stime` and `ru_maxrss` from `wait4`).
fn measure_child(args: &[String]) -> BenchResult<()> {
    let [binary, root, refresh] = args else {
        return Err(format!("usage: {CHILD_ARG} BINARY DIR --refresh=BOOL"));
    };
    let root = Path::new(root);
    let stderr_path = root.join("enact.stderr");
    let stderr = fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = Command::new(binary)
        .arg("-C")
        .arg(root)
        .args(["plan", "--json", refresh.as_str()])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run {binary}: {e}"))?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not yet reaped (the `Child` is never waited on), and
        // both pointers point to live, writable locals of the right types.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {error}"));
        }
    }
    let elapsed = started.elapsed();
    drop(child);
    let status = ExitStatus::from_raw(status);
    if !status.success() {
        let text = fs::read_to_string(&stderr_path).unwrap_or_default();
        return Err(format!("`{binary} -C {} plan --json` failed ({status}):\n{text}", root.display()));
    }
    let micros =
        |t: libc::timeval| u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0);
    // ru_maxrss is in KiB on Linux.
    println!(
        "{} {} {}",
        elapsed.as_nanos(),
        micros(usage.ru_utime) + micros(usage.ru_stime),
        u64::try_from(usage.ru_maxrss).unwrap_or(0)
    );
    Ok(())
}

/// The release binary: the one cargo built for this bench, else `target/release/enact` beside
/// this bench executable (`target/release/deps/plan-…`).
fn release_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ENACT_BENCH_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_enact").map(PathBuf::from)
        && path.is_file()
    {
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let candidate = exe
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "release"))
        .map(|release| release.join("enact"));
    match candidate {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(format!(
            "{} does not exist: run `cargo build --release` first (end-to-end figures skipped)",
            path.display()
        )),
        None => Err(format!(
            "cannot find target/release above {}: run `cargo build --release` first, or set \
             ENACT_BENCH_BIN (end-to-end figures skipped)",
            exe.display()
        )),
    }
}

/// Resets this process's peak RSS to its current RSS (Linux ≥ 4.0); whether that worked.
fn reset_hwm() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// VmHWM of /proc/self/status, in KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Reporting

struct Row {
    n: usize,
    workload: Workload,
    phases: Phases,
    e2e: Option<EndToEnd>,
    in_process_hwm_kib: Option<u64>,
    /// End to end, each of [`VARIANTS`].
    variants: Vec<(&'static str, EndToEnd)>,
    /// With `ENACT_BENCH_BASELINE`: the baseline binary and this one, run in turn.
    side_by_side: Option<(EndToEnd, EndToEnd)>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn fmt_ms(d: Duration) -> String {
    let v = ms(d);
    if v < 10.0 { format!("{v:.2}") } else { format!("{v:.1}") }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(rows: &[Row], binary: &Result<PathBuf, String>, hwm_reset: bool) {
    let by_n: BTreeMap<usize, &Row> = rows.iter().map(|r| (r.n, r)).collect();
    let smaller = |r: &Row| r.n.is_multiple_of(10).then(|| by_n.get(&(r.n / 10))).flatten();

    println!();
    println!("## `enact plan` scaling");
    println!();
    for r in rows {
        println!("- N = {}: {}", thousands(r.n), r.workload.describe());
    }
    match binary {
        Ok(path) => println!("- end to end: `{} -C DIR plan --json > /dev/null`", path.display()),
        Err(why) => println!("- **end to end not measured**: {why}"),
    }
    println!();
    println!(
        "| N | load ms | (parse ms) | (validate ms) | state ms | graph ms | diff ms | json ms | human ms | `plan --json` ms (e2e) | peak RSS MB (e2e) | e2e time(N)/time(N/10) | e2e CPU ms | CPU(N)/CPU(N/10) | in-process peak RSS MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let p = &r.phases;
        let (e2e, cpu, rss) = match &r.e2e {
            Some(e) => (fmt_ms(e.median), fmt_ms(e.cpu), format!("{:.1}", mb(e.max_rss_kib))),
            None => ("—".to_string(), "—".to_string(), "—".to_string()),
        };
        let (ratio, cpu_ratio) = match (smaller(r).and_then(|s| s.e2e.as_ref()), &r.e2e) {
            (Some(small), Some(big)) => {
                (format!("{:.2}", ms(big.median) / ms(small.median)), format!("{:.2}", ms(big.cpu) / ms(small.cpu)))
            }
            _ => ("—".to_string(), "—".to_string()),
        };
        let hwm = r.in_process_hwm_kib.map_or("—".to_string(), |k| format!("{:.1}", mb(k)));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {e2e} | {rss} | {ratio} | {cpu} | {cpu_ratio} | {hwm} |",
            thousands(r.n),
            fmt_ms(p.load),
            fmt_ms(p.parse),
            fmt_ms(p.validate),
            fmt_ms(p.state),
            fmt_ms(p.graph),
            fmt_ms(p.diff),
            fmt_ms(p.json),
            fmt_ms(p.human)
        );
    }
    println!();
    println!(
        "In-process phases: median of 5 runs (3 at N ≥ 100,000); (parse) and (validate) are the two biggest \
         parts of load, timed again on their own. End to end: median of {E2E_RUNS} runs \
         ({E2E_RUNS_LARGE} at N ≥ 100,000) after one warm-up (wall time, and CPU time = user + system of the child, which other load \
         on the machine disturbs much less); peak RSS is the largest `ru_maxrss` of those runs. \
         Load average at the end: {}.",
        load_average()
    );
    println!(
        "In-process peak RSS is VmHWM of the bench process after the phases of that N; sizes run in \
         increasing order. {}",
        if hwm_reset {
            "It is reset (`/proc/self/clear_refs`) before each size, but memory the allocator kept \
             from generating the workload still counts."
        } else {
            "It could not be reset, so it accumulates across sizes (and includes generating the workload)."
        }
    );

    // Scaling of each phase, to spot a non-linear one.
    let pairs: Vec<(&Row, &Row)> = rows.iter().filter_map(|r| smaller(r).map(|s| (*s, r))).collect();
    if !pairs.is_empty() {
        println!();
        println!("Scaling per phase, time(N)/time(N/10) (linear ≈ 10):");
        println!();
        println!("| N | load | (parse) | (validate) | state | graph | diff | json | human | in-process total |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (s, b) in pairs {
            let q = |f: fn(&Phases) -> Duration| format!("{:.1}", ms(f(&b.phases)) / ms(f(&s.phases)).max(1e-6));
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(b.n),
                q(|p| p.load),
                q(|p| p.parse),
                q(|p| p.validate),
                q(|p| p.state),
                q(|p| p.graph),
                q(|p| p.diff),
                q(|p| p.json),
                q(|p| p.human),
                q(Phases::total)
            );
        }
    }

    if rows.iter().any(|r| !r.variants.is_empty()) {
        println!();
        println!(
            "Variants, `plan --json` end to end, median ms (time(N)/time(N/10) in brackets): the \
             round-robin node selection policies (`LIMITED_ROUND_ROBIN` with `vmLimit` 1000), and an \
             overlay `envs/dev.json` that scales out one service in a hundred:"
        );
        println!();
        println!("| N | as above | {} |", VARIANTS.map(|(v, _, _)| v).join(" | "));
        println!("|---:|---:|{}", "---:|".repeat(VARIANTS.len()));
        for r in rows {
            let cell = |now: Option<&EndToEnd>, before: Option<&EndToEnd>| match (now, before) {
                (Some(now), Some(before)) => {
                    format!("{} ({:.1}×)", fmt_ms(now.median), ms(now.median) / ms(before.median))
                }
                (Some(now), None) => fmt_ms(now.median),
                _ => "—".to_string(),
            };
            let smaller = smaller(r);
            let mut cells = vec![cell(r.e2e.as_ref(), smaller.and_then(|s| s.e2e.as_ref()))];
            for (variant, e2e) in &r.variants {
                let before = smaller.and_then(|s| s.variants.iter().find(|(v, _)| v == variant)).map(|(_, e)| e);
                cells.push(cell(Some(e2e), before));
            }
            println!("| {} | {} |", thousands(r.n), cells.join(" | "));
        }
    }

    if rows.iter().any(|r| r.side_by_side.is_some()) {
        println!();
        println!(
            "Side by side (`ENACT_BENCH_BASELINE`), `plan --json` end to end, one run of each binary in \
             turn, median of {E2E_RUNS} ({E2E_RUNS_LARGE} at N ≥ 100,000) (min–max):"
        );
        println!();
        println!(
            "| N | baseline ms | this build ms | speed-up | baseline CPU ms | this build CPU ms | baseline peak RSS MB | this build peak RSS MB |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let Some((b, c)) = &r.side_by_side else { continue };
            let range = |e: &EndToEnd| format!("{} ({}–{})", fmt_ms(e.median), fmt_ms(e.min), fmt_ms(e.max));
            println!(
                "| {} | {} | {} | {:.2}× | {} | {} | {:.1} | {:.1} |",
                thousands(r.n),
                range(b),
                range(c),
                ms(b.median) / ms(c.median).max(1e-6),
                fmt_ms(b.cpu),
                fmt_ms(c.cpu),
                mb(b.max_rss_kib),
                mb(c.max_rss_kib)
            );
        }
    }

    println!();
    println!("### Targets");
    println!();
    for (n, target) in FAST_TARGETS_MS {
        if let Some(e) = by_n.get(&n).and_then(|r| r.e2e.as_ref()) {
            println!(
                "- {}: `plan --json` at {} services ≤ {target:.0} ms end to end: {:.1} ms (min {:.1}; CPU time {:.1} ms)",
                pass(ms(e.median) <= target),
                thousands(n),
                ms(e.median),
                ms(e.min),
                ms(e.cpu)
            );
        }
    }
    match by_n.get(&10_000).and_then(|r| r.e2e.as_ref()) {
        Some(e) => println!(
            "- {}: `plan --json` at 10,000 services ≤ {TARGET_10K_MS:.0} ms end to end: {:.1} ms \
             (CPU time {:.1} ms: {})",
            pass(ms(e.median) <= TARGET_10K_MS),
            ms(e.median),
            ms(e.cpu),
            pass(ms(e.cpu) <= TARGET_10K_MS)
        ),
        None => println!(
            "- NOT MEASURED: `plan --json` at 10,000 services ≤ {TARGET_10K_MS:.0} ms end to end \
             (needs N = 10000 and the release binary)"
        ),
    }
    let ratios: Vec<(usize, f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            let small = smaller(r)?.e2e.as_ref()?;
            let big = r.e2e.as_ref()?;
            Some((r.n, ms(big.median) / ms(small.median), ms(big.cpu) / ms(small.cpu)))
        })
        .collect();
    if ratios.is_empty() {
        println!(
            "- NOT MEASURED: 10× services ≤ {TARGET_RATIO:.0}× time (needs sizes N and 10 N and the release binary)"
        );
    } else {
        for (n, ratio, cpu_ratio) in ratios {
            println!(
                "- {}: 10× services ≤ {TARGET_RATIO:.0}× time, {} → {} services: {ratio:.2}× \
                 (CPU time {cpu_ratio:.2}×: {})",
                pass(ratio <= TARGET_RATIO),
                thousands(n / 10),
                thousands(n),
                pass(cpu_ratio <= TARGET_RATIO)
            );
        }
    }
    let variant = |r: &Row, name: &str| r.variants.iter().find(|(v, _)| *v == name).map(|(_, e)| ms(e.median));
    for r in rows.iter().filter(|r| r.n >= 10_000) {
        if let (Some(offline), Some(refresh)) = (variant(r, "simulated, offline"), variant(r, "simulated, refresh")) {
            println!(
                "- {}: `plan` with refresh ≤ {TARGET_REFRESH:.0}× the offline plan, {} simulated services: \
                 {refresh:.1} ms against {offline:.1} ms = {:.2}×",
                pass(refresh <= TARGET_REFRESH * offline),
                thousands(r.n),
                refresh / offline
            );
        }
    }
}

/// The 1-, 5- and 15-minute load averages, to judge how much other work disturbed the run.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}
