//! The command line. Each subcommand is one module.

mod admin;
mod build;
mod check;
mod cron;
mod data;
mod deploy;
mod files;
mod new;
mod serve;
mod users;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kiln::engine::compiler::{self, CompileSettings};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Serverless functions as WebAssembly components"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (embedded storage in the data directory; no other setup).
    Serve(Box<serve::ServeArgs>),
    /// Build an app's functions into components.
    Build {
        /// The app folder (with kiln.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Skip type-checking TypeScript functions.
        #[arg(long)]
        no_typecheck: bool,
    },
    /// Build an app and deploy it to a running server.
    Deploy(deploy::DeployArgs),
    /// Read an app's kiln.toml and warn of collections open to anyone.
    Check(check::CheckArgs),
    /// Create a new app with one HTTP function (Rust, JavaScript or TypeScript).
    New(new::NewArgs),
    /// A running server's cron triggers.
    #[command(subcommand)]
    Cron(cron::CronCommand),
    /// A running server's recent cron runs and one-off jobs.
    Runs(cron::RunsArgs),
    /// An app's users and their sessions.
    Users(users::UsersArgs),
    /// An app's stored files.
    Files(files::FilesArgs),
    /// An app's collections, rules passed (admin).
    Data(data::DataArgs),
    /// An app's token signing keys.
    Keys(users::KeysArgs),
    /// Compiles a component from stdin for `kiln serve` (internal).
    #[command(name = compiler::CHILD_COMMAND, hide = true)]
    CompileComponent {
        #[arg(long)]
        max_instances: u32,
        #[arg(long)]
        max_memory_bytes: usize,
        #[arg(long, value_parser = |s: &str| compiler::Tier::from_arg(s).ok_or("optimized or quick"))]
        tier: compiler::Tier,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Build { dir, no_typecheck } => {
            let options = build::BuildOptions {
                typecheck: !no_typecheck,
            };
            let app = build::build_app(&dir, options)?;
            for f in &app.functions {
                println!("{}: {}", f.name, f.path.display());
            }
            Ok(())
        }
        Command::Deploy(args) => deploy::run(args),
        Command::Check(args) => check::run(args),
        Command::New(args) => new::run(args),
        Command::Cron(cron::CronCommand::List { app, server }) => cron::list(&app, &server),
        Command::Runs(args) => cron::runs(args),
        Command::Users(args) => users::run(args),
        Command::Files(args) => files::run(args),
        Command::Data(args) => data::run(args),
        Command::Keys(args) => users::keys(args),
        Command::CompileComponent {
            max_instances,
            max_memory_bytes,
            tier,
        } => {
            let settings = CompileSettings {
                max_instances,
                max_memory_bytes,
                tier,
            };
            // The reason, if any, is on stderr for the server to read.
            if !compiler::run_child(settings) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
