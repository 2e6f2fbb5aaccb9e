use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tollbridge::cli::run(tollbridge::cli::Cli::parse())
}
