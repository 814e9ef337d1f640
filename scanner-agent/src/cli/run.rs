//! `scanner-agent run`: the exporter daemon.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;
use scanner_agent::daemon::{self, DaemonError};

use super::{failure, usage_error};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The configuration file (OpenPort Exporter's config.yaml format).
    #[arg(long, default_value = "/etc/scanner-agent/config.yaml")]
    config: PathBuf,
    /// Where open ports and last-scan times are kept across restarts.
    #[arg(long, default_value = "/var/lib/scanner-agent/state.json")]
    state_file: PathBuf,
}

impl RunArgs {
    pub(crate) fn run(self) -> ExitCode {
        match daemon::run(&self.config, Some(&self.state_file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(
                e @ (DaemonError::Config(_)
                | DaemonError::Listen { .. }
                | DaemonError::Targets { .. }
                | DaemonError::Guard(_)),
            ) => usage_error(e),
            Err(DaemonError::Scan(e)) if e.is_usage() => usage_error(e),
            Err(e) => failure(e),
        }
    }
}
