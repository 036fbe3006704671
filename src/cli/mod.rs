//! The command line: parse arguments, resolve the repository and environment once, run one
//! command, print through one [`Printer`], and map the outcome to an exit code
//! (0 success, 1 error, 2 changes present with `--detailed-exitcode`).

pub mod args;
mod commands;
mod envs;
pub mod interrupt;
mod operate;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::error::{Error, Result};
use crate::paint::Painter;
use crate::repo::ConfigRepo;
use args::{Cli, Command};

/// Where every line of output goes.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub paint: Painter,
    pub quiet: bool,
    pub verbose: bool,
}

impl Printer {
    /// Writes to stdout; a closed pipe is not an error worth a message.
    pub fn out(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    /// Streams the command's output to stdout.
    pub fn out_with(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
        let mut stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        // As with `out`: a closed pipe (`| head`) is not an error of the command.
        let _ = write(&mut stdout);
        let _ = stdout.flush();
    }

    /// A status line on stderr, unless `--quiet`.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    pub fn warn(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{} {text}", self.paint.yellow("warning:"));
    }

    pub fn error(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{} {text}", self.paint.red("error:"));
    }
}

/// What a command reports back besides its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// `--detailed-exitcode` and there are changes.
    Changes,
    /// The command ran but found a problem it already reported (`fmt --check`).
    Failed,
    /// A signal stopped the command cleanly after it changed something (exit 130).
    Interrupted,
}

/// Everything a command needs, resolved once from the arguments and the environment.
#[derive(Debug)]
pub struct Context {
    /// The directory commands run in (`-C`, else the current directory).
    pub cwd: PathBuf,
    pub env_arg: Option<String>,
    pub printer: Printer,
    /// Record unknown SSH host keys instead of refusing them.
    pub accept_new_host_keys: bool,
}

impl Context {
    /// The config repository, found by walking up from the working directory.
    pub fn repo(&self) -> Result<ConfigRepo> {
        let root = ConfigRepo::discover(&self.cwd)?;
        ConfigRepo::open(&root)
    }

    /// The environment: `-e`, else the repository's default; it must exist
    /// ([`ConfigRepo::require_env`]).
    pub fn env(&self, repo: &ConfigRepo) -> Result<String> {
        let env = self.env_arg.clone().unwrap_or_else(|| repo.default_env());
        repo.require_env(&env)?;
        Ok(env)
    }

    pub fn provider_options(&self, repo: &ConfigRepo) -> crate::provider::ProviderOptions {
        crate::provider::ProviderOptions {
            repo_root: repo.root.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            env: self.env_arg.clone().unwrap_or_default(),
            lineage: String::new(),
        }
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
        Ok(Outcome::Interrupted) => ExitCode::from(interrupt::EXIT_INTERRUPTED),
        Err(err @ Error::Interrupted) => {
            err_printer.error(&err.to_string());
            ExitCode::from(interrupt::EXIT_INTERRUPTED)
        }
        Err(err) => {
            err_printer.error(&err.to_string());
            ExitCode::from(1)
        }
    }
}

/// Runs one command.
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
        Command::Show { json, planfile } => commands::show(&ctx, json, planfile.as_deref()),
        Command::Graph { format } => commands::graph(&ctx, format),
        Command::Export { from_state } => commands::export(&ctx, from_state),
        Command::Apply(args) => operate::apply(&ctx, &args),
        Command::Destroy { auto_approve, parallelism, keep_logs } => {
            operate::destroy(&ctx, auto_approve, parallelism, keep_logs)
        }
        Command::Status { json } => operate::status(&ctx, json),
        Command::Logs { service, lines } => operate::logs(&ctx, &service, usize::try_from(lines).unwrap_or(usize::MAX)),
        Command::History => operate::history(&ctx),
        Command::Rollback { serial, auto_approve, health_timeout } => {
            operate::rollback(&ctx, serial, auto_approve, health_timeout)
        }
        Command::Pause { service, yes } => operate::pause(&ctx, service.as_deref(), true, yes, None),
        Command::Resume { service, yes, health_timeout } => {
            operate::pause(&ctx, service.as_deref(), false, yes, health_timeout)
        }
        Command::State(command) => operate::state(&ctx, &command),
        Command::Env(args::EnvCommand::New { name }) => envs::new_env(&ctx, &name),
        Command::Env(args::EnvCommand::List) => envs::list_envs(&ctx),
        Command::Hosts(args::HostsCommand::Trust { account }) => operate::trust_hosts(&ctx, account.as_deref()),
        Command::Merge { file, prune, yes } => envs::merge(&ctx, &file, prune, yes),
        Command::Promote { from, to, only, yes, force, prune } => {
            envs::promote(&ctx, &envs::PromoteArgs { from: &from, to: &to, only: &only, yes, force, prune })
        }
        Command::Diff { a, b, json } => envs::diff(&ctx, &a, &b, json),
        Command::Scale { requests } => envs::scale(&ctx, &requests),
        Command::ImportXml { file, spec } => commands::import_xml(&ctx, &file, spec),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut buffer = Vec::new();
            clap_complete::generate(shell, &mut command, "enact", &mut buffer);
            ctx.printer.out(&String::from_utf8_lossy(&buffer));
            Ok(Outcome::Success)
        }
    }
}
