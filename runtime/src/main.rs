//! `kiln`: serve apps, build and deploy them, scaffold new functions.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    kiln::install_crypto_provider();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes.
            eprintln!("kiln: {err:#}");
            ExitCode::FAILURE
        }
    }
}
