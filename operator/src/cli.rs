//! The `tollbridge` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::source::files;
use crate::translate::{self, Statuses};
use crate::{crds, providers};

/// Gateway API objects, API keys and quotas on Amazon API Gateway, Azure API Management or a
/// built-in proxy.
#[derive(Parser, Debug)]
#[command(name = "tollbridge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Translate YAML files and print the status of every object; exit 1 when any is invalid.
    Check {
        /// A YAML file or a directory of them (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
        /// Also print the gateway IR (secrets redacted).
        #[arg(long)]
        ir: bool,
    },
    /// Print tollbridge's CustomResourceDefinitions.
    Crds,
    /// Print the version and the Gateway API release it implements.
    Version,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// The Gateway API release whose standard channel tollbridge implements.
pub const GATEWAY_API_VERSION: &str = "v1.6.3";

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { paths, output, ir } => check(&paths, output, ir),
        Command::Crds => {
            let docs: Vec<String> = crds::all().iter().map(crds::to_yaml).collect();
            print!("{}", docs.join("---\n"));
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!(
                "tollbridge {} (Gateway API {GATEWAY_API_VERSION}, standard channel)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
    }
}

#[derive(Serialize)]
struct CheckOutput<'a> {
    #[serde(flatten)]
    statuses: &'a Statuses,
    #[serde(rename = "ir", skip_serializing_if = "Option::is_none")]
    gateways_ir: Option<&'a [tollbridge_provider::GatewayIr]>,
}

fn check(paths: &[PathBuf], format: Format, with_ir: bool) -> ExitCode {
    let mut loaded = match files::load_paths(paths) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("error: {} problem(s) loading the files:", errors.0.len());
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    loaded.snapshot.now = jiff::Timestamp::now();
    let translation = translate::translate(&loaded.snapshot, &providers::capabilities);
    let output = CheckOutput {
        statuses: &translation.statuses,
        gateways_ir: with_ir.then_some(translation.gateways.as_slice()),
    };
    let text = match format {
        Format::Yaml => serde_yaml::to_string(&output).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_string_pretty(&output).map(|t| t + "\n").map_err(|e| e.to_string()),
    };
    match text {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
        Err(e) => {
            eprintln!("error: cannot print the statuses: {e}");
            return ExitCode::FAILURE;
        }
    }
    let problems = translation.statuses.problems();
    if problems.is_empty() {
        eprintln!("ok: every object is valid");
        ExitCode::SUCCESS
    } else {
        eprintln!("{} problem(s):", problems.len());
        for p in &problems {
            eprintln!("  {p}");
        }
        ExitCode::FAILURE
    }
}
