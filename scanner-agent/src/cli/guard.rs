//! `scanner-agent guard apply | remove | status`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use scanner_agent::{
    config::Config,
    guard::{self, Guard, GuardError, netlink, ruleset},
};

use super::{failure, usage_error};

#[derive(Args)]
pub(crate) struct GuardArgs {
    #[command(subcommand)]
    action: GuardAction,
}

#[derive(Subcommand)]
enum GuardAction {
    /// Install the table, or replace it atomically.
    Apply {
        /// The port to guard (TCP).
        #[arg(long)]
        port: u16,
        /// An address or CIDR range allowed to reach the port (repeat for more).
        #[arg(long)]
        allow: Vec<String>,
        /// Print the ruleset (nft syntax) without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Allow guarding port 22 or the agent's own listening port.
        #[arg(long)]
        force: bool,
        /// The agent's configuration, for its listening port (server.port).
        #[arg(long, default_value = "/etc/scanner-agent/config.yaml")]
        config: PathBuf,
    },
    /// Delete the table (nothing happens if there is none).
    Remove,
    /// Whether the table is installed.
    Status,
}

impl GuardArgs {
    pub(crate) fn run(self) -> ExitCode {
        run(self.action)
    }
}

fn run(action: GuardAction) -> ExitCode {
    match action {
        GuardAction::Apply {
            port,
            allow,
            dry_run,
            force,
            config,
        } => {
            // The agent's own port, so a typo cannot lock its scrapers out;
            // without a config file, the default.
            let own_port = if config.exists() {
                match Config::load(&config) {
                    Ok(c) => c.server.port,
                    Err(e) => return usage_error(e),
                }
            } else {
                Config::default().server.port
            };
            let guard = match Guard::new(port, &allow, own_port, force) {
                Ok(g) => g,
                Err(e) => return usage_error(e),
            };
            if dry_run {
                print!("{}", ruleset::render(&guard));
                return ExitCode::SUCCESS;
            }
            outcome(guard.apply(), || {
                format!(
                    "port {port} guarded: loopback and {} source(s) allowed, everyone else dropped",
                    guard.allow.len()
                )
            })
        }
        GuardAction::Remove => outcome(guard::remove(), || {
            format!("table inet {} removed (if it was there)", guard::TABLE)
        }),
        GuardAction::Status => match netlink::installed() {
            Ok(true) => {
                println!("table inet {} is installed", guard::TABLE);
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("table inet {} is not installed", guard::TABLE);
                ExitCode::from(3)
            }
            Err(e) => failure(e),
        },
    }
}

fn outcome(result: Result<(), GuardError>, ok: impl FnOnce() -> String) -> ExitCode {
    match result {
        Ok(()) => {
            println!("{}", ok());
            ExitCode::SUCCESS
        }
        Err(e) => failure(e),
    }
}
