//! `cargo bench --bench backups`: what the backups of replaced states cost on disk and per apply.
//!
//! For each size N (10,000 and 100,000 services, or `ENACT_BENCH_SIZES`) it generates a spec and
//! the state that applying it records (each instance with a pid and a start time, as the local
//! provider records them), then runs W applies that each change one service (its version)
//! through the real store, as `enact apply` does: read the state, prepare the backup, plan,
//! apply the model, write the state, wait for the backup. W is 100 at 10,000 services (the
//! backups kept) and `ENACT_BENCH_WRITES_100K` (default 5) at 100,000. It does so on two stores
//! in the same process, their applies interleaved so that both see the same load:
//!
//! - **plain**: `FileStore::with_plain_backups`, the uncompressed hard-linked copies enact kept
//!   before (the baseline);
//! - **compressed**: the store as enact runs it.
//!
//! It prints one state's bytes, the bytes of the backups, their ratio (target at 10,000
//! services: 100 backups ≤ 10× one state), the time per apply and per write of each run, the
//! CPU time per apply, and the time to read every backup (`enact history`). Nothing is
//! asserted. `ENACT_BENCH_PLAIN=0` skips the plain run, `=only` runs it alone;
//! `ENACT_BENCH_PREPARE=0` compresses each backup in the write instead of on a second thread;
//! `ENACT_BENCH_KEEP=DIR` keeps the state directories. See `benches/README.md`.

#![allow(unsafe_code, reason = "libc::getrusage reads the process's CPU time")]
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark reports on the terminal")]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use enact::plan::converge::apply_model;
use enact::plan::{PlanInput, plan};
use enact::repo::settings::Settings;
use enact::spec::model::ResourceImpact;
use enact::spec::{Choreography, DeployableServiceSpec, Memory, ServiceDependency};
use enact::state::backup;
use enact::state::{FileStore, State, StateStore};

// As the `enact` binary: the allocator changes how the two threads of an apply get along.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENV: &str = "dev";
const DEFAULT_SIZES: [usize; 2] = [10_000, 100_000];
/// 100 backups of a 10,000-service environment within this many times one state file.
const TARGET_RATIO: f64 = 10.0;

type BenchResult<T> = Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench backups: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let sizes = match std::env::var("ENACT_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().replace('_', "").parse::<usize>().map_err(|e| format!("ENACT_BENCH_SIZES: {e}")))
            .collect::<BenchResult<Vec<_>>>()?,
        Err(_) => DEFAULT_SIZES.to_vec(),
    };
    let writes_100k: usize = match std::env::var("ENACT_BENCH_WRITES_100K") {
        Ok(n) => n.parse().map_err(|e| format!("ENACT_BENCH_WRITES_100K: {e}"))?,
        Err(_) => 5,
    };
    let modes: Vec<bool> = match std::env::var("ENACT_BENCH_PLAIN").as_deref() {
        Ok("0") => vec![true],
        Ok("only") => vec![false],
        _ => vec![false, true],
    };
    println!("# Backups: 100 writes of one changed service through the store\n");
    println!("load average at the start: {}\n", load_average());
    let mut rows = Vec::new();
    for &n in &sizes {
        let writes = if n >= 100_000 { writes_100k } else { 100 };
        eprintln!("N = {n}: generating the spec and its state…");
        let started = Instant::now();
        let (spec, state) = generate(n)?;
        eprintln!("N = {n}: generated in {:.1} s", started.elapsed().as_secs_f64());
        let codec = measure_codec(&state)?;
        for (compressed, run) in run_lanes(n, &spec, &state, writes, &modes)? {
            eprintln!("N = {n}, {}: {}", mode(compressed), run.describe());
            rows.push((n, compressed, run, codec.clone()));
        }
    }
    report(&rows);
    println!("\nload average at the end: {}", load_average());
    Ok(())
}

fn mode(compressed: bool) -> &'static str {
    if compressed { "compressed" } else { "plain" }
}

// ---------------------------------------------------------------------------------------------
// The workload (like benches/plan.rs: a seeded xorshift64*, no extra crates)

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

const MEMORIES: [Memory; 3] = [Memory::Small, Memory::Medium, Memory::Large];

fn name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// `n` services `svc-00001`…, each with 0–3 dependencies on earlier ones, 1–3 instances, a
/// memory size and version `1.0`; and the state applying it to an empty environment records,
/// with a pid and a start time per instance.
fn generate(n: usize) -> BenchResult<(Choreography, State)> {
    let mut rng = Rng::new(0x6261_636b_7570 ^ n as u64);
    let mut spec = Choreography::default();
    for i in 1..=n {
        let mut deps: Vec<usize> = (0..if i > 1 { rng.below(4) } else { 0 }).map(|_| 1 + rng.below(i - 1)).collect();
        deps.sort_unstable();
        deps.dedup();
        spec.deployable_service_specs.push(DeployableServiceSpec {
            name: name(i),
            roles: vec![name(i)],
            dependencies: deps
                .iter()
                .map(|&d| ServiceDependency { service_spec_name: name(d), service_spec_role: name(d) })
                .collect(),
            package_uri: Some("services/svc.py".to_string()),
            port: Some(20_000 + (i % 40_000) as i64),
            number_of_instances: Some(1 + rng.below(3) as i64),
            resource_impact: Some(ResourceImpact { memory: Some(MEMORIES[rng.below(3)]), ..ResourceImpact::default() }),
            version: Some("1.0".to_string()),
            ..DeployableServiceSpec::default()
        });
    }
    spec.normalize();
    let empty = State::empty(ENV);
    let mut state = apply(&empty, &spec)?;
    state.lineage = enact::state::store::new_lineage();
    with_processes(&mut state, &mut rng);
    Ok((spec, state))
}

/// What applying `spec` to `state` records (the simulated apply: every step succeeds).
fn apply(state: &State, spec: &Choreography) -> BenchResult<State> {
    let settings = Settings::default();
    let planned = plan(PlanInput { env: ENV, spec, state, settings: &settings, targets: &[], observed: None })
        .map_err(|d| format!("planning: {}", enact::Error::from(d)))?;
    Ok(apply_model(state, spec, &planned))
}

/// A pid and a start time for every instance that has none, as the local provider records.
fn with_processes(state: &mut State, rng: &mut Rng) {
    for service in state.services.values_mut() {
        for instance in service.instances.iter_mut().filter(|i| i.pid.is_none()) {
            instance.pid = Some(1_000 + rng.below(4_000_000) as u32);
            instance.start_time = Some(100_000 + rng.below(100_000_000) as u64);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

#[derive(Debug, Clone, Default)]
struct Run {
    writes: usize,
    state_bytes: u64,
    backups: usize,
    full_backups: usize,
    backup_bytes: u64,
    applies: Vec<Duration>,
    write_times: Vec<Duration>,
    /// What the exit waits for: a backup still being compressed when the state was written.
    exit_waits: Vec<Duration>,
    /// CPU time of the whole process (the backup thread included), and of the thread that
    /// applies (the critical path, whatever the load of the machine).
    cpu: Duration,
    main_cpu: Duration,
    history: Duration,
    history_ok: usize,
}

impl Run {
    fn ratio(&self) -> f64 {
        self.backup_bytes as f64 / self.state_bytes.max(1) as f64
    }

    fn describe(&self) -> String {
        format!(
            "{} writes; state {:.2} MB, {} backups ({} full) {:.2} MB = {:.2}× one state; apply median {:.1} ms, \
             write median {:.1} ms, wait at exit median {:.1} ms (max {:.1}), CPU {:.1} ms per apply ({:.1} ms on the \
             applying thread); reading every backup {:.0} ms ({} readable)",
            self.writes,
            self.state_bytes as f64 / 1e6,
            self.backups,
            self.full_backups,
            self.backup_bytes as f64 / 1e6,
            self.ratio(),
            ms(median(&self.applies)),
            ms(median(&self.write_times)),
            ms(median(&self.exit_waits)),
            ms(self.exit_waits.iter().max().copied().unwrap_or_default()),
            ms(self.cpu) / self.writes.max(1) as f64,
            ms(self.main_cpu) / self.writes.max(1) as f64,
            ms(self.history),
            self.history_ok,
        )
    }
}

/// Where a run's `state/` lives: a temporary directory, or `$ENACT_BENCH_KEEP/<n>-<mode>`.
fn work_dir(n: usize, compressed: bool) -> BenchResult<WorkDir> {
    match std::env::var_os("ENACT_BENCH_KEEP") {
        Some(keep) => {
            let path = PathBuf::from(keep).join(format!("{n}-{}", mode(compressed)));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
            Ok(WorkDir::Kept(path))
        }
        None => tempfile::tempdir().map(WorkDir::Temp).map_err(|e| format!("temporary directory: {e}")),
    }
}

enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

/// One store under test: its own state directory, spec and random numbers.
struct Lane {
    compressed: bool,
    _dir: WorkDir,
    store: FileStore,
    spec: Choreography,
    rng: Rng,
    run: Run,
}

impl Lane {
    /// A state directory with the first write done (not timed).
    fn new(n: usize, spec: &Choreography, initial: &State, writes: usize, compressed: bool) -> BenchResult<Lane> {
        let dir = work_dir(n, compressed)?;
        let path = dir.path().join("state");
        let store = if compressed { FileStore::new(&path) } else { FileStore::new(&path).with_plain_backups() };
        let mut first = initial.clone();
        first.serial = 0;
        store.write(&first).map_err(|e| e.to_string())?;
        let run = Run { writes, ..Run::default() };
        Ok(Lane { compressed, _dir: dir, store, spec: spec.clone(), rng: Rng::new(0x7772_6974_6573), run })
    }

    /// Apply number `w`: one service changed, as `enact apply` does it: the session reads the
    /// state and prepares its backup, the plan is made and carried out (here: the model of a
    /// successful apply), the state written; the end of the command waits for the backup.
    fn apply_one(&mut self, w: usize) -> BenchResult<()> {
        let n = self.spec.deployable_service_specs.len();
        let index = self.rng.below(n);
        self.spec.deployable_service_specs[index].version = Some(format!("2.{w}"));
        let cpu = cpu_time();
        let main_cpu = thread_cpu_time();
        let started = Instant::now();
        let state = self.store.read_or_empty(ENV).map_err(|e| e.to_string())?;
        if prepare() {
            self.store.prepare_backup(ENV, &state);
        }
        let mut next = apply(&state, &self.spec)?;
        with_processes(&mut next, &mut self.rng);
        next.serial = state.serial;
        next.applied_at = Some(format!("2026-12-01T00:{:02}:{:02}Z", w / 60, w % 60));
        let write_started = Instant::now();
        self.store.write(&next).map_err(|e| e.to_string())?;
        self.run.write_times.push(write_started.elapsed());
        self.run.applies.push(started.elapsed());
        let exit = Instant::now();
        self.store.finish_backup();
        self.run.exit_waits.push(exit.elapsed());
        self.run.main_cpu += thread_cpu_time().saturating_sub(main_cpu);
        self.run.cpu += cpu_time().saturating_sub(cpu);
        Ok(())
    }

    /// Sizes, and every backup read (`enact history`).
    fn finish(mut self) -> BenchResult<Run> {
        let store = &self.store;
        let run = &mut self.run;
        run.state_bytes = fs::metadata(store.path(ENV)).map_err(|e| e.to_string())?.len();
        let backups = store.backups(ENV).map_err(|e| e.to_string())?;
        run.backups = backups.len();
        for b in &backups {
            run.backup_bytes += fs::metadata(&b.path).map_err(|e| e.to_string())?.len();
            let full = !b.is_compressed() || backup::read_header(&b.path).is_ok_and(|h| h.reference.is_none());
            run.full_backups += usize::from(full);
        }
        let started = Instant::now();
        let rows = store.read_backups(ENV).map_err(|e| e.to_string())?;
        run.history = started.elapsed();
        run.history_ok = rows.iter().filter(|(_, r)| r.is_ok()).count();
        Ok(self.run)
    }
}

/// Whether the applies prepare their backup on a second thread, as `enact` does
/// (`ENACT_BENCH_PREPARE=0`: the write compresses it on the spot instead).
fn prepare() -> bool {
    std::env::var("ENACT_BENCH_PREPARE").map_or(true, |v| v != "0")
}

/// `writes` applies on each store, interleaved (the two in turn, the first of each pair
/// alternating) so that both see the same load on the machine.
fn run_lanes(
    n: usize,
    spec: &Choreography,
    initial: &State,
    writes: usize,
    modes: &[bool],
) -> BenchResult<Vec<(bool, Run)>> {
    let mut lanes = modes
        .iter()
        .map(|&compressed| Lane::new(n, spec, initial, writes, compressed))
        .collect::<BenchResult<Vec<_>>>()?;
    for w in 0..writes {
        let count = lanes.len();
        for k in 0..count {
            lanes[(w + k) % count].apply_one(w)?;
        }
    }
    lanes.into_iter().map(|lane| Ok((lane.compressed, lane.finish()?))).collect()
}

/// The codec alone on one state: compress it whole and as a delta against a state one service
/// apart, and read both back (median of 5 each).
#[derive(Debug, Clone, Default)]
struct Codec {
    full: Duration,
    full_bytes: usize,
    delta: Duration,
    delta_bytes: usize,
    read_full: Duration,
    read_delta: Duration,
}

fn measure_codec(state: &State) -> BenchResult<Codec> {
    let base = state.to_json().into_bytes();
    let mut changed = state.clone();
    if let Some(service) = changed.services.values_mut().nth(state.services.len() / 2) {
        for instance in &mut service.instances {
            instance.pid = instance.pid.map(|p| p + 1);
        }
    }
    changed.serial += 1;
    let next = changed.to_json().into_bytes();
    let never = AtomicBool::new(false);
    let header = |reference: Option<backup::Reference>| backup::Header {
        format: backup::FORMAT,
        serial: 1,
        lineage: state.lineage.clone(),
        id: backup::new_id(),
        reference,
    };
    let reference = backup::Reference { serial: 1, id: "bench".to_string() };
    let mut codec = Codec::default();
    let (mut full, mut delta, mut read_full, mut read_delta) = (vec![], vec![], vec![], vec![]);
    for _ in 0..5 {
        let t = Instant::now();
        let bytes = backup::encode(&base, &header(None), None, &never).map_err(|e| e.to_string())?.unwrap_or_default();
        full.push(t.elapsed());
        codec.full_bytes = bytes.len();
        let t = Instant::now();
        let (_, frame) = backup::split_header(&bytes).map_err(|e| e.to_string())?;
        let decoded = backup::decode(frame, None).map_err(|e| e.to_string())?;
        read_full.push(t.elapsed());
        if decoded != base {
            return Err("a full backup did not read back".to_string());
        }
        let t = Instant::now();
        let bytes = backup::encode(&next, &header(Some(reference.clone())), Some(&base), &never)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        delta.push(t.elapsed());
        codec.delta_bytes = bytes.len();
        let t = Instant::now();
        let (_, frame) = backup::split_header(&bytes).map_err(|e| e.to_string())?;
        let decoded = backup::decode(frame, Some(&base)).map_err(|e| e.to_string())?;
        read_delta.push(t.elapsed());
        if decoded != next {
            return Err("a delta did not read back".to_string());
        }
    }
    codec.full = median(&full);
    codec.delta = median(&delta);
    codec.read_full = median(&read_full);
    codec.read_delta = median(&read_delta);
    Ok(codec)
}

/// User + system CPU time of this process so far (the backup threads included).
fn cpu_time() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// User + system CPU time of the calling thread so far.
fn thread_cpu_time() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
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

fn report(rows: &[(usize, bool, Run, Codec)]) {
    println!(
        "| N | backups | writes | state MB | backups MB (full ones) | backups ÷ state | apply ms (median) | of which write ms | wait at exit ms (median, max) | CPU ms per apply (applying thread) | read every backup ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, compressed, run, _) in rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} ({}) | {:.2}× | {:.1} | {:.1} | {:.1}, {:.1} | {:.1} ({:.1}) | {:.0} ({} of {}) |",
            thousands(*n),
            mode(*compressed),
            run.writes,
            run.state_bytes as f64 / 1e6,
            run.backup_bytes as f64 / 1e6,
            run.full_backups,
            run.ratio(),
            ms(median(&run.applies)),
            ms(median(&run.write_times)),
            ms(median(&run.exit_waits)),
            ms(run.exit_waits.iter().max().copied().unwrap_or_default()),
            ms(run.cpu) / run.writes.max(1) as f64,
            ms(run.main_cpu) / run.writes.max(1) as f64,
            ms(run.history),
            run.history_ok,
            run.backups,
        );
    }
    println!("\nThe codec alone on one state (median of 5; a delta against a state one service apart):\n");
    println!(
        "| N | full: compress ms | full bytes | ratio | delta: compress ms | delta bytes | read full ms | read delta ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut seen = Vec::new();
    for (n, _, run, codec) in rows {
        if seen.contains(n) {
            continue;
        }
        seen.push(*n);
        println!(
            "| {} | {:.1} | {} | {:.1}× | {:.1} | {} | {:.1} | {:.1} |",
            thousands(*n),
            ms(codec.full),
            thousands(codec.full_bytes),
            run.state_bytes as f64 / codec.full_bytes.max(1) as f64,
            ms(codec.delta),
            thousands(codec.delta_bytes),
            ms(codec.read_full),
            ms(codec.read_delta),
        );
    }
    println!();
    for (n, compressed, run, _) in rows.iter().filter(|(_, c, _, _)| *c) {
        let plain = rows.iter().find(|(m, c, _, _)| m == n && !c).map(|(_, _, r, _)| r);
        if let Some(plain) = plain {
            let total = |r: &Run| {
                let all: Vec<Duration> = r.applies.iter().zip(&r.exit_waits).map(|(a, w)| *a + *w).collect();
                median(&all)
            };
            println!(
                "- N = {}: with compressed backups an apply takes {:+.1} ms until the state is written ({:.1} against \
                 {:.1} ms, medians; the write {:+.1} ms), {:+.1} ms with the wait at exit ({:.1} against {:.1} ms), \
                 {:+.1} ms of CPU, {:+.1} ms of it on the applying thread",
                thousands(*n),
                ms(median(&run.applies)) - ms(median(&plain.applies)),
                ms(median(&run.applies)),
                ms(median(&plain.applies)),
                ms(median(&run.write_times)) - ms(median(&plain.write_times)),
                ms(total(run)) - ms(total(plain)),
                ms(total(run)),
                ms(total(plain)),
                (ms(run.cpu) - ms(plain.cpu)) / run.writes.max(1) as f64,
                (ms(run.main_cpu) - ms(plain.main_cpu)) / run.writes.max(1) as f64,
            );
        }
        if *n == 10_000 && run.writes >= 100 && *compressed {
            println!(
                "- {}: 100 backups of a 10,000-service environment ≤ {TARGET_RATIO}× one state: {:.2}×",
                if run.ratio() <= TARGET_RATIO { "PASS" } else { "FAIL" },
                run.ratio()
            );
        }
    }
}
