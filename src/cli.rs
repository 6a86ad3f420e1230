//! The command line: one definition per flag (clap derive), and the dispatch to each
//! part. Exit codes are pinned here and tested.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The run completed (whatever level it reached).
pub const EXIT_OK: i32 = 0;
/// The run or command could not be carried out (bad config, no docker, lock timeout...).
pub const EXIT_ERROR: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "cc-ci",
    version,
    about = "Continuous integration for Co-op Cloud recipes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Climb the level ladder for one recipe on the local swarm.
    Run(RunArgs),
    /// Mask secret values in a stream (stdin, or a command's output).
    Redact(RedactArgs),
    /// Watch enrolled Gitea repos for `!testme` comments, start runs, report back.
    Poll(PollArgs),
    /// Remove what runs that are gone left: swarm objects, scratch dirs, stale locks.
    Janitor(JanitorArgs),
    /// Check a config file and the recipe meta beside it; exit 1 naming the problem.
    CheckConfig(CheckConfigArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Recipe: a name (resolved in runner.recipes_dir) or a path to its git repository.
    #[arg(required_unless_present_any = ["request", "instance"])]
    pub recipe: Option<String>,
    /// Git ref to test (branch, tag or commit); default: the repository's HEAD.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Pull request number (names the app domain `<recipe>-pr<N>`).
    #[arg(long, value_name = "N")]
    pub pr: Option<u64>,
    /// CI config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where artifacts go; default `<state.dir>/runs/<run-id>`.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// A run request written by the poller (replaces RECIPE, --ref and --pr).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["recipe", "git_ref", "pr", "instance"])]
    pub request: Option<PathBuf>,
    /// A systemd instance name (`cc-ci-runner@NAME`): the run request
    /// `<state.dir>/requests/NAME.json` if it exists, else the recipe NAME.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["recipe", "git_ref", "pr"])]
    pub instance: Option<String>,
}

#[derive(Debug, Args)]
pub struct RedactArgs {
    /// Directory whose regular files (recursively) are secrets. Repeatable.
    #[arg(
        long = "secrets-dir",
        value_name = "DIR",
        default_value = "/run/secrets"
    )]
    pub secrets_dirs: Vec<PathBuf>,
    /// Values shorter than this many bytes are not masked.
    #[arg(long, value_name = "N", default_value_t = crate::redact::DEFAULT_MIN_LEN)]
    pub min_len: usize,
    /// Command to run with its stdout and stderr filtered.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct PollArgs {
    /// CI config file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Do one poll cycle and exit 0.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// CI config file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct JanitorArgs {
    /// CI config file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print what would be removed and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Run the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => crate::runner::main(args),
        Command::Redact(args) => crate::redact::main(args),
        Command::Poll(args) => crate::poll::main(args),
        Command::Janitor(args) => crate::janitor::main(args),
        Command::CheckConfig(args) => {
            crate::config::check_file(&args.config)?;
            println!("config OK: {}", args.config.display());
            Ok(EXIT_OK)
        }
    }
}
