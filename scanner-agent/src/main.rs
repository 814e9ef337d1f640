//! `scanner-agent`: reads the command line and hands it to its command
//! (see [`cli`]).

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};

use self::cli::{Cli, Command};

fn main() -> ExitCode {
    // nmap's `-oX FILE` style flags, which clap cannot parse, become long flags.
    let cli = Cli::parse_from(cli::scan::nmap_argv(std::env::args_os()));
    cli::init_logging(cli.verbose);
    match cli.command {
        Command::Scan(args) => args.run(),
        Command::Run(args) => args.run(),
        Command::Guard(args) => args.run(),
        Command::CheckConfig(args) => args.run(),
        Command::Completions(args) => args.run(Cli::command()),
        Command::Manpage => cli::docs::manpage(Cli::command()),
    }
}
