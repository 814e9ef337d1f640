//! `scanner-agent completions <shell>` and `scanner-agent manpage`: what
//! the packages install, generated from the clap definitions. Checked with
//! the tools that read them: bash's completion machinery and nroff.
mod common;

use std::process::{Command, Output};

use common::agent;

fn run(args: &[&str]) -> Output {
    Command::new(agent()).args(args).output().unwrap()
}

fn stdout(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The words bash would offer after `line` (ending in the word completed),
/// from the function the script registers for `scanner-agent`.
fn bash_completes(script: &str, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let program = format!(
        "source /dev/stdin <<'COMPLETION'\n{script}\nCOMPLETION\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         complete=$(complete -p scanner-agent) || exit 1\n\
         function=${{complete#*-F }}; function=${{function%% *}}\n\
         \"$function\" scanner-agent '{last}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        last = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags() {
    let script = stdout(&["completions", "bash"]);
    assert_eq!(bash_completes(&script, "scanner-agent sc"), ["scan"]);
    let flags = bash_completes(&script, "scanner-agent scan --max-r");
    for flag in ["--max-rate", "--max-retries", "--max-rtt-timeout"] {
        assert!(flags.iter().any(|f| f == flag), "{flag} not in {flags:?}");
    }
    // A subcommand's own options (broken upstream for hyphenated names).
    assert_eq!(
        bash_completes(&script, "scanner-agent completions z"),
        ["zsh"]
    );
}

#[test]
fn zsh_and_fish_scripts_name_the_program() {
    let zsh = stdout(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef scanner-agent"), "{zsh}");
    assert!(zsh.contains("--max-retries"));
    let fish = stdout(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c scanner-agent") && fish.contains("max-retries"),
        "{fish}"
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());
}

/// The long flags a command's `--help` lists.
fn long_flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|w| w.trim_end_matches([',', '.']).to_owned())
        .filter(|w| w != "--help" && w != "--version")
        .collect()
}

#[test]
fn the_man_page_renders_and_documents_every_flag() {
    let page = stdout(&["manpage"]);
    // Roff escapes hyphens; the flags are looked for in the source, so a
    // line break nroff puts inside a long flag does not hide it.
    let source = page.replace("\\-", "-");
    assert!(page.contains("\n.TH scanner-agent 1 "), "{page}");
    // nroff renders it, warning about nothing.
    let out = Command::new("nroff")
        .args(["-man", "-ww", "-Tutf8"])
        .env("MANWIDTH", "200")
        .stdin(std::fs::File::open(write_temp(&page)).unwrap())
        .output()
        .expect("nroff is not on PATH (`cargo xtask test` installs groff-base)");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // Overstrikes (bold, underline) out, so the text reads as printed.
    let text = strip_overstrike(&String::from_utf8_lossy(&out.stdout));
    for command in ["scan", "run", "guard", "check-config", "completions"] {
        let heading = format!("SCANNER-AGENT {}", command.to_uppercase());
        assert!(text.contains(&heading), "no {heading} section:\n{text}");
        let help = stdout(&[command, "--help"]);
        let flags = long_flags(&help);
        assert!(!flags.is_empty() || command == "completions", "{help}");
        for flag in flags {
            assert!(
                source.contains(&flag),
                "{flag} of {command} missing:\n{page}"
            );
        }
    }
}

fn strip_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

fn write_temp(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("scanner-agent-{}.1", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}
