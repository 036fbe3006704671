//! The command line: parse arguments, resolve the repository and environment once, run one
//! command, print through one [`Printer`], and map the outcome to an exit code
//! (0 success, 1 error, 2 changes present with `--detailed-exitcode`, 128 + the signal when a
//! signal stopped it: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
//!
//! The top of the layering: may use every module of enact.

pub mod args;
mod commands;
mod envs;
pub mod interrupt;
mod operate;
mod printer;
mod progress;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::error::{Error, Result};
use crate::paint::Painter;
use crate::repo::ConfigRepo;
use args::{Cli, Command};
pub use printer::{Ask, Printer};
pub use progress::Progress;

/// What a command reports back besides its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (exit 0).
    Success,
    /// `--detailed-exitcode` and there are changes (exit 2).
    Changes,
    /// The command ran but found a problem it already reported (`fmt --check`; exit 1).
    Failed,
    /// A signal stopped the command cleanly after it changed something (exit 128 + the signal).
    Interrupted,
}

/// Everything a command needs, resolved once from the arguments and the environment.
#[derive(Debug)]
pub struct Context {
    /// The directory commands run in (`-C`, else the current directory).
    pub cwd: PathBuf,
    /// `-e ENV`, if given.
    pub env_arg: Option<String>,
    /// Where the output goes.
    pub printer: Printer,
    /// Record unknown SSH host keys instead of refusing them.
    pub accept_new_host_keys: bool,
}

impl Context {
    /// The config repository, found by walking up from the working directory; a warning on
    /// stderr when its `stateDir` leads out of it ([`ConfigRepo::state_dir_warning`]).
    ///
    /// # Errors
    /// No `chor.json` in the directory or above it, or its `enact.json` is not valid.
    pub fn repo(&self) -> Result<ConfigRepo> {
        let root = ConfigRepo::discover(&self.cwd)?;
        let repo = ConfigRepo::open(&root)?;
        if let Some(warning) = repo.state_dir_warning() {
            self.printer
                .warn(&format!("{warning}; point `stateDir` inside the repository, or remove it to use state/"));
        }
        Ok(repo)
    }

    /// The environment: `-e`, else the repository's default; it must exist
    /// ([`ConfigRepo::require_env`]).
    ///
    /// # Errors
    /// A name that is not one, or an environment the repository does not have.
    pub fn env(&self, repo: &ConfigRepo) -> Result<String> {
        let env = self.env_arg.clone().unwrap_or_else(|| repo.default_env());
        repo.require_env(&env)?;
        Ok(env)
    }

    /// What every provider is made with: the repository's root, whether new SSH host keys are
    /// accepted, and the environment of `-e`.
    pub fn provider_options(&self, repo: &ConfigRepo) -> crate::provider::ProviderOptions {
        crate::provider::ProviderOptions {
            repo_root: repo.root.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            env: self.env_arg.clone().unwrap_or_default(),
            lineage: String::new(),
            notify: self.provider_options_notify(),
        }
    }

    /// Where providers' notices go: stderr, one line each, unless `--quiet`.
    pub fn provider_options_notify(&self) -> Option<fn(&str)> {
        fn say(line: &str) {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr().lock(), "  {line}");
        }
        (!self.printer.quiet).then_some(say as fn(&str))
    }

    /// A path given on the command line, relative to where enact was started.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.cwd.join(path) }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // The log relay of a local instance (this binary run again by the local provider): not a
    // command of the command line, and Ctrl-C handling is its own, not that of the commands.
    if std::env::args_os().nth(1).is_some_and(|a| a == crate::provider::logfile::RELAY_COMMAND) {
        return crate::provider::logfile::relay_main(std::env::args_os().skip(1));
    }
    crate::timing::start();
    // Ctrl-C ends a command that only reads at once, and stops one that holds a lock cleanly.
    interrupt::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            };
        }
    };
    let colour = !cli.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let printer = Printer {
        paint: Painter::new(colour && std::io::stdout().is_terminal()),
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let err_printer = Printer { paint: Painter::new(colour && std::io::stderr().is_terminal()), ..printer };
    match run(cli, printer) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Changes) => ExitCode::from(2),
        Ok(Outcome::Failed) => ExitCode::from(1),
        Ok(Outcome::Interrupted) => ExitCode::from(interrupt::exit_code()),
        Err(err @ Error::Interrupted) => {
            err_printer.error(&err.to_string());
            ExitCode::from(interrupt::exit_code())
        }
        Err(err) => {
            err_printer.error(&err.to_string());
            ExitCode::from(1)
        }
    }
}

/// Runs one command.
///
/// # Errors
/// Whatever stops the command, for [`main`] to print (exit 1, or 128 + the signal when interrupted).
pub fn run(cli: Cli, printer: Printer) -> Result<Outcome> {
    let cwd = match &cli.directory {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => std::env::current_dir().map_err(Error::io("read", "the current directory"))?.join(dir),
        None => std::env::current_dir().map_err(Error::io("read", "the current directory"))?,
    };
    let ctx = Context { cwd, env_arg: cli.env, printer, accept_new_host_keys: cli.accept_new_host_keys };
    match cli.command {
        Command::Init => commands::init(&ctx),
        Command::Validate => commands::validate(&ctx),
        Command::Fmt { check } => commands::fmt(&ctx, check),
        Command::Schema { file } => commands::schema(&ctx, file),
        Command::Plan(args) => commands::plan(&ctx, &args),
        Command::Show(args) => commands::show(&ctx, &args),
        Command::Graph { format } => commands::graph(&ctx, format),
        Command::Export { from_state } => commands::export(&ctx, from_state),
        Command::Apply(args) => operate::apply(&ctx, &args),
        Command::Destroy(args) => operate::destroy(&ctx, &args),
        Command::Status { json } => operate::status(&ctx, json),
        Command::Logs(args) => operate::logs(&ctx, &args),
        Command::History => operate::history(&ctx),
        Command::Rollback(args) => operate::rollback(&ctx, &args),
        Command::Pause(args) => operate::pause(&ctx, &(&args).into()),
        Command::Resume(args) => operate::pause(&ctx, &(&args).into()),
        Command::State(command) => operate::state(&ctx, &command),
        Command::Env(args::EnvCommand::New { name }) => envs::new_env(&ctx, &name),
        Command::Env(args::EnvCommand::List) => envs::list_envs(&ctx),
        Command::Hosts(args::HostsCommand::Trust { account }) => operate::trust_hosts(&ctx, account.as_deref()),
        Command::Merge(args) => envs::merge(&ctx, &args),
        Command::Promote(args) => envs::promote(&ctx, &args),
        Command::Diff(args) => envs::diff(&ctx, &args),
        Command::Scale { requests } => envs::scale(&ctx, &requests),
        Command::ImportXml(args) => commands::import_xml(&ctx, &args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut buffer = Vec::new();
            clap_complete::generate(shell, &mut command, "enact", &mut buffer);
            ctx.printer.out(&String::from_utf8_lossy(&buffer));
            Ok(Outcome::Success)
        }
    }
}
