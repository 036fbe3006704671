//! Command-line arguments (clap only: no I/O here). Every `///` of a command or an argument
//! is also its `--help` text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Plan and apply service choreographies.
#[derive(Debug, Parser)]
#[command(
    name = "enact",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Every file format (spec, overlay, settings, plan, state, journal, lock): docs/formats.md.\nThe wiring protocol: docs/wiring.md."
)]
pub struct Cli {
    /// Run as if started in DIR (the config repository, or a directory inside it).
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// The environment (default: `defaultEnv` of enact.json, else `dev`).
    #[arg(short = 'e', long = "env", global = true, value_name = "ENV")]
    pub env: Option<String>,
    /// No colour, even on a terminal (NO_COLOR is honoured too).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Trust and record SSH host keys seen for the first time (a changed key is still refused).
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of enact, one per operation.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a config repository here: enact.json, chor.json, envs/, state/, .gitignore.
    Init,
    /// Check enact.json, chor.json and the overlays (every environment, or -e ENV), and what the
    /// settings decide about running each service (docs/formats.md §2).
    Validate,
    /// Rewrite chor.json, envs/*.json and enact.json in canonical layout.
    Fmt {
        /// Change nothing; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Print the JSON Schema of chor.json, or of enact.json.
    Schema {
        /// The file whose schema to print.
        #[arg(value_enum, default_value_t = SchemaFile::Chor)]
        file: SchemaFile,
    },
    /// Show what apply would change in an environment.
    Plan(PlanArgs),
    /// Show a saved plan, or the recorded state of the environment.
    Show(ShowArgs),
    /// Show the service graph, providers first.
    Graph {
        /// How to draw it.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Print the effective spec of the environment, canonical and deterministic.
    Export {
        /// Rebuild the spec from the recorded state instead.
        #[arg(long)]
        from_state: bool,
    },
    /// Carry out a plan: the one computed now (after confirmation), or a saved one; consumers
    /// are wired as docs/wiring.md says.
    Apply(ApplyArgs),
    /// Stop and remove every service of the environment.
    Destroy(DestroyArgs),
    /// Live health of every instance.
    Status {
        /// Print the machine form.
        #[arg(long)]
        json: bool,
    },
    /// The output of a service's instances.
    Logs(LogsArgs),
    /// The recorded states of the environment (serials, times).
    History,
    /// Plan and apply toward the spec recorded at SERIAL.
    Rollback(RollbackArgs),
    /// Stop a service's instances (or every service's) without forgetting them (asks first).
    Pause(PauseArgs),
    /// Start paused instances again and wire them (asks first).
    Resume(ResumeArgs),
    /// Create an environment, or list them (an environment is an overlay envs/ENV.json, an
    /// entry under `envs` in enact.json, or a recorded state; the default one always exists:
    /// docs/formats.md §1).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Inspect or repair recorded state.
    #[command(subcommand)]
    State(StateCommand),
    /// SSH hosts of the ssh accounts.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Merge an exported spec into the environment's overlay (created or updated by name).
    Merge(MergeArgs),
    /// Copy FROM's promotable fields into TO's overlay, three-way against the last promotion.
    Promote(PromoteArgs),
    /// Differences between two environments' effective specs.
    Diff(DiffArgs),
    /// Set instance counts in the environment's overlay, then show the plan.
    Scale {
        /// SERVICE=COUNT
        #[arg(required = true, value_name = "SVC=N")]
        requests: Vec<String>,
    },
    /// Convert a CHOReOS XML document to JSON: a ChorSpec becomes a spec (chor.json), every field
    /// it states kept; a Choreography becomes a recorded state (`state/<env>.json`), to adopt a
    /// running deployment (docs/formats.md §2 and §6).
    ImportXml(ImportXmlArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The most steps `--parallelism` runs at once: each may hold a thread and connections.
pub const MAX_PARALLELISM: u64 = 1000;
/// The longest `--health-timeout`, in seconds (a day): longer waits overflow no clock, but no
/// start takes that long.
pub const MAX_HEALTH_TIMEOUT_SECS: u64 = 86_400;
/// The most lines `logs -n` prints per instance.
pub const MAX_LOG_LINES: u64 = 1_000_000;

/// The arguments of `enact plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Save the plan to FILE, for `enact apply FILE` and `enact show FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the machine form (docs/formats.md) instead of the human one.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 with no changes, 1 on error, 2 with changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Limit the plan to this service and what it depends on (repeatable).
    #[arg(long, value_name = "SVC")]
    pub target: Vec<String>,
    /// Look at every recorded instance first (`--refresh=false`: take the state at its word).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh: bool,
}

/// The arguments of `enact apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// A plan saved with `plan --out`: carried out exactly, if the state did not change since.
    pub planfile: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// How many steps run at once (1–1000).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_PARALLELISM))]
    pub parallelism: u64,
    /// Limit the apply to this service and what it depends on (repeatable).
    #[arg(long, value_name = "SVC")]
    pub target: Vec<String>,
    /// Seconds an instance has to start answering on its port (1–86400, a day); overrides
    /// `timeouts.healthMs` of enact.json (default 30).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_HEALTH_TIMEOUT_SECS))]
    pub health_timeout: Option<u64>,
    /// Look at every recorded instance first (`--refresh=false`: take the state at its word).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh: bool,
    /// Keep the logs of the instances this apply stops for good (replaced, scaled in, or of a
    /// removed service); by default they go with the instance.
    #[arg(long)]
    pub keep_logs: bool,
}

/// The arguments of `enact show`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// Print the machine form.
    #[arg(long)]
    pub json: bool,
    /// A plan saved with `plan --out`.
    pub planfile: Option<PathBuf>,
}

/// The arguments of `enact destroy`.
#[derive(Debug, Clone, clap::Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// How many steps run at once (1–1000).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_PARALLELISM))]
    pub parallelism: u64,
    /// Keep the instances' logs (by default they go with the environment).
    #[arg(long)]
    pub keep_logs: bool,
}

/// The arguments of `enact logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The service whose instances' output to print.
    pub service: String,
    /// How many lines per instance (0–1000000).
    #[arg(short = 'n', long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=MAX_LOG_LINES))]
    pub lines: u64,
    /// Keep printing what the instances write, as `tail -f` does (each line after `[instance]`
    /// when there are several), until interrupted; logs rotated meanwhile are read on.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// The arguments of `enact rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// A serial `enact history` lists (1 or more).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub serial: u64,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Seconds an instance has to start answering on its port (1–86400); overrides
    /// `timeouts.healthMs` of enact.json (default 30).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_HEALTH_TIMEOUT_SECS))]
    pub health_timeout: Option<u64>,
}

/// The arguments of `enact pause`.
#[derive(Debug, Clone, clap::Args)]
pub struct PauseArgs {
    /// The service to pause (default: every deployable service).
    pub service: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// The arguments of `enact resume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResumeArgs {
    /// The service to resume (default: every paused service).
    pub service: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Seconds an instance has to start answering on its port (1–86400); overrides
    /// `timeouts.healthMs` of enact.json (default 30).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_HEALTH_TIMEOUT_SECS))]
    pub health_timeout: Option<u64>,
}

/// The arguments of `enact merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// A spec made by `enact export`.
    pub file: PathBuf,
    /// Also remove services the file does not have.
    #[arg(long)]
    pub prune: bool,
    /// Write without asking.
    #[arg(long)]
    pub yes: bool,
}

/// The arguments of `enact promote`.
#[derive(Debug, Clone, clap::Args)]
pub struct PromoteArgs {
    /// The environment whose fields are promoted.
    pub from: String,
    /// The environment whose overlay receives them.
    pub to: String,
    /// Only these services (repeatable).
    #[arg(long, value_name = "SVC", num_args = 1..)]
    pub only: Vec<String>,
    /// Write without asking.
    #[arg(long)]
    pub yes: bool,
    /// On a conflict, take FROM's value.
    #[arg(long)]
    pub force: bool,
    /// Remove from TO the services FROM no longer has.
    #[arg(long)]
    pub prune: bool,
}

/// The arguments of `enact diff`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// The first environment.
    pub a: String,
    /// The second environment.
    pub b: String,
    /// Print the machine form.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `enact import-xml`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportXmlArgs {
    /// The CHOReOS XML document: a ChorSpec, or a Choreography (a deployment).
    pub file: PathBuf,
    /// From a Choreography document, print its ChorSpec instead of its state.
    #[arg(long)]
    pub spec: bool,
}

/// The commands of `enact hosts`.
#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Connect to every host and record its host key in the account's knownHosts (a key
    /// already recorded must match; a changed key is refused).
    Trust {
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
    },
}

/// The commands of `enact env`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create environment NAME: write an empty overlay envs/NAME.json (the base spec alone).
    New {
        /// Letters, digits, `.`, `_` and `-`, like `staging`.
        name: String,
    },
    /// Every environment, with its overlay, settings and recorded state.
    List,
}

/// The commands of `enact state`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Every environment with a recorded state.
    List,
    /// The recorded state of the environment, as JSON.
    Show,
    /// Remove the environment's lock, whoever holds it.
    Unlock,
    /// Make a backup (`enact history` lists them) the current state again, as a new serial; a
    /// damaged current state is kept beside the backups. Takes the lock.
    Restore {
        /// The serial of the backup.
        serial: u64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Record the machines that carry the environment's lineage but no record names (EC2
    /// instances an interrupted apply or a hand-edited state left out) as spare nodes, instead
    /// of letting the next apply terminate them. The next apply hands them to new instances
    /// that fit and frees those its reservoir does not keep. Takes the lock.
    Adopt {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Which file `enact schema` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaFile {
    /// The choreography spec (and, field for field, an overlay).
    #[value(name = "chor.json")]
    Chor,
    /// The settings.
    #[value(name = "enact.json")]
    Settings,
}

/// How `enact graph` draws the service graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// One line per service in deployment order, with what it calls.
    Text,
    /// Graphviz DOT: edges from provider to consumer labelled with the role.
    Dot,
    /// An SVG drawing, laid out by enact (no Graphviz needed).
    Svg,
}
