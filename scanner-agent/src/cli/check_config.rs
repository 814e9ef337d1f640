//! `scanner-agent check-config`: every check `run` makes of a
//! configuration, without starting anything.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;
use scanner_agent::daemon;

use super::usage_error;

#[derive(Args)]
pub(crate) struct CheckConfigArgs {
    /// The configuration file (OpenPort Exporter's config.yaml format).
    file: PathBuf,
}

impl CheckConfigArgs {
    pub(crate) fn run(self) -> ExitCode {
        match daemon::check(&self.file) {
            Ok(config) => {
                for w in config.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("{}: OK", self.file.display());
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(e),
        }
    }
}
