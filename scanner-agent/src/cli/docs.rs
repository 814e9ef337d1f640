//! `scanner-agent completions <shell>` and the hidden `scanner-agent
//! manpage`: shell completions and the man page, generated from the clap
//! definitions themselves so they can never disagree with the parser. The
//! packages install what these print (`cargo xtask package` runs them).

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use clap::Args;
use clap_complete::Shell;

use super::failure;

#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

impl CompletionsArgs {
    /// Prints the completion script for `cli` (the whole command line).
    pub(crate) fn run(self, mut cli: clap::Command) -> ExitCode {
        let name = cli.get_name().to_owned();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut cli, name.clone(), &mut out);
        if self.shell == Shell::Bash {
            out = fix_bash_states(&out, &name);
        }
        emit(&out)
    }
}

/// clap_complete's bash script spells the states of a hyphenated program's
/// subcommands one way where it sets them (`scanner__agent__subcmd__scan`)
/// and another in the `case` arms (`scanner__subcmd__agent__subcmd__scan`),
/// so no subcommand's options would ever complete (clap-rs/clap#6421, open
/// at clap_complete 4.6.12). The arms are respelt as the loop spells them.
fn fix_bash_states(script: &[u8], name: &str) -> Vec<u8> {
    let wrong = name.replace('-', "__subcmd__");
    let right = name.replace('-', "__");
    String::from_utf8_lossy(script)
        .replace(&format!("{wrong}__subcmd__"), &format!("{right}__subcmd__"))
        .into_bytes()
}

/// Prints the man page of `cli`: the top-level page, then one section per
/// command with its synopsis and options, so `man scanner-agent` documents
/// every flag in one page.
pub(crate) fn manpage(cli: clap::Command) -> ExitCode {
    match render(cli) {
        Ok(page) => emit(&page),
        Err(e) => failure(format_args!("rendering the man page: {e}")),
    }
}

fn render(mut cli: clap::Command) -> io::Result<Vec<u8>> {
    cli.build();
    let mut page = Vec::new();
    // Every section of clap_mangen's page but its list of subcommands, which
    // points at one page per command: here each command is a section below.
    let man = clap_mangen::Man::new(cli.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let commands = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in commands {
        let name = format!("{} {}", cli.get_name(), sub.get_name());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(page, "{}", roff_text(&about.to_string()))?;
        }
        // The subcommand's own sections, one level down (.SS) under its name.
        let man = clap_mangen::Man::new(sub.clone().bin_name(name.clone()));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_options_section(&mut part)?;
        let part = String::from_utf8_lossy(&part).replace(".SH ", ".SS ");
        page.extend_from_slice(part.as_bytes());
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// Plain text as a roff paragraph: a line starting with `.` or `'` would be
/// read as a request.
fn roff_text(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l.replace('\\', "\\\\")
            }
        })
        .collect();
    lines.join("\n")
}

fn emit(bytes: &[u8]) -> ExitCode {
    match io::stdout().lock().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => failure(format_args!("writing to standard output: {e}")),
    }
}
