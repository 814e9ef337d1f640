//! `scanner-agent guard apply | remove | status`.

use std::process::ExitCode;

use scanner_agent::{
    config::Config,
    guard::{self, Guard, GuardError, netlink, ruleset},
};

use crate::{GuardAction, usage_error};

pub(crate) fn run(action: GuardAction) -> ExitCode {
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

fn failure(e: GuardError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
