//! `scanner-agent scan`'s progress line, in a real terminal: a private tmux
//! server started inside the scanner namespace of a testbed runs the scan
//! (of a target namespace host in 198.18.0.0/15) with stderr on its pane,
//! and `capture-pane` reads the line while the scan runs. Off a terminal
//! (stderr a pipe) nothing of it appears; stdout never carries it.
mod common;

use std::{fs, net::Ipv4Addr, path::PathBuf, process::Output, time::Duration};

use common::{Lab, Netns, agent, wait_until};

const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// What stdout holds: the one open port, nothing else.
const RESULT: &str = "{\"ip\":\"198.18.0.2\",\"port\":22,\"protocol\":\"tcp\",\"state\":\"open\",\"reason\":\"syn-ack\",\"ttl\":64}\n";

/// A tmux server of the test's own (`-L`), in `ns`; killed on drop.
struct Tmux<'a> {
    ns: &'a Netns,
    socket: String,
}

impl<'a> Tmux<'a> {
    fn new(ns: &'a Netns) -> Self {
        Self {
            ns,
            socket: format!("sa-progress-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self
            .ns
            .command("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux is not on PATH (`cargo xtask test` installs it)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        out
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "scan"]).stdout)
            .into_owned()
    }
}

impl Drop for Tmux<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .command("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The scan both tests run: 20,000 ports of one host at 5,000 probes/s,
/// about 4 s, so the line is on screen long enough to be read.
fn scan_args() -> Vec<String> {
    [
        "scan",
        "--disable-host-discovery",
        "-p",
        "1-20000",
        "--rate",
        "5000",
        "--max-retries",
        "0",
        "--wait",
        "0.5",
        "--format",
        "ndjson",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([TARGET.to_string()])
    .collect()
}

/// The `N pkt/s` of a progress line (0 if none).
fn rate(line: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1] == "pkt/s")
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_terminal_shows_the_progress_line_on_stderr() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 1500);
    let _open = lab.target.listen(&[(TARGET, 22)]);
    let dir = TempDir(std::env::temp_dir().join(format!("sa-progress-{}", std::process::id())));
    fs::create_dir_all(&dir.0).unwrap();
    let (out, status) = (dir.0.join("stdout"), dir.0.join("status"));
    // stdout to a file (to show nothing of the line goes there), stderr the pane.
    let command = format!(
        "{} {} > {}; echo $? > {}; sleep 30",
        agent(),
        scan_args().join(" "),
        out.display(),
        status.display()
    );
    let tmux = Tmux::new(&lab.scanner);
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "scan",
        "-x",
        "160",
        "-y",
        "20",
        &command,
    ]);
    let mut line = String::new();
    let seen = wait_until(Duration::from_secs(10), || {
        let screen = tmux.screen();
        line = screen
            .lines()
            .find(|l| l.starts_with("ports [") && l.contains("/20000 probes"))
            .unwrap_or_default()
            .to_owned();
        // Half a second in, the rate is measured (5000/s asked).
        rate(&line) > 1000
    });
    assert!(seen, "no progress line on the terminal:\n{}", tmux.screen());
    eprintln!("progress line: {line}");
    for part in ["pkt/s", "retries", "open", "ETA"] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    assert!(
        wait_until(Duration::from_secs(20), || status.exists()),
        "the scan did not end:\n{}",
        tmux.screen()
    );
    assert_eq!(fs::read_to_string(&status).unwrap().trim(), "0");
    // The line is cleared once the scan ends, before the summary.
    let screen = tmux.screen();
    assert!(!screen.contains("/20000 probes"), "{screen}");
    assert!(screen.contains("scan finished"), "{screen}");
    // Stdout holds the result alone.
    assert_eq!(fs::read_to_string(&out).unwrap(), RESULT);
}

#[test]
fn off_a_terminal_there_is_no_progress_line() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 1500);
    let _open = lab.target.listen(&[(TARGET, 22)]);
    let out = lab
        .scanner
        .command(agent())
        .args(scan_args())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("scan finished"), "{stderr}");
    for part in ["probes  ", "ETA", "\r", "\u{1b}["] {
        assert!(
            !stderr.contains(part),
            "{part:?} on a non-terminal: {stderr}"
        );
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout), RESULT);
}
