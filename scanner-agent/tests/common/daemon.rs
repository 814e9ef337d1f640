//! `scanner-agent run` in a test's scanner namespace, and HTTP requests to it.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    process::{Child, Stdio},
    time::Duration,
};

use super::{Lab, agent, wait_until};

pub const PORT: u16 = 19919;

/// An HTTP GET from inside the scanner namespace.
pub fn get(lab: &Lab, path: &str) -> Option<(u16, String)> {
    request(lab, PORT, path, "").map(|(status, _, body)| (status, body))
}

/// An HTTP GET with extra header lines; returns status, head and body.
pub fn request(lab: &Lab, port: u16, path: &str, headers: &str) -> Option<(u16, String, String)> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n");
    lab.scanner.run(move || {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some((status, head.to_owned(), body.to_owned()))
    })
}

/// An HTTP GET to `addr` (e.g. `[::1]:PORT`) from inside the scanner
/// namespace, with extra header lines; returns status, head and body.
pub fn request_to(
    lab: &Lab,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &str,
) -> Option<(u16, String, String)> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n");
    lab.scanner.run(move || {
        let mut s = TcpStream::connect(addr).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some((status, head.to_owned(), body.to_owned()))
    })
}

/// The body of a GET with extra header lines, or "" when nothing answered
/// (for polling).
pub fn fetch(lab: &Lab, port: u16, path: &str, headers: &str) -> String {
    request(lab, port, path, headers)
        .map(|(_, _, body)| body)
        .unwrap_or_default()
}

/// "STATUS BODY" of a GET with extra header lines, or "" when nothing
/// answered (for polling).
pub fn fetch_status(lab: &Lab, port: u16, path: &str, headers: &str) -> String {
    request(lab, port, path, headers)
        .map(|(status, _, body)| format!("{status} {body}"))
        .unwrap_or_default()
}

/// Fetches with `fetch` until `cond` holds for the body (20 s at most);
/// returns that body, or fails saying `what` did not happen.
pub fn await_body(fetch: impl Fn() -> String, cond: impl Fn(&str) -> bool, what: &str) -> String {
    let mut body = String::new();
    let done = wait_until(Duration::from_secs(20), || {
        body = fetch();
        cond(&body)
    });
    assert!(done, "{what}:\n{body}");
    body
}

pub fn metric(body: &str, line_start: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(line_start))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// A running `scanner-agent run` in the scanner namespace, with its config
/// file; both go away on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: std::path::PathBuf,
}

impl Daemon {
    pub fn start(lab: &Lab, name: &str, config: &str) -> Self {
        Self::start_with(lab, name, config, &[])
    }

    /// Starts the daemon with further files (certificates, a web config)
    /// beside its config file.
    pub fn start_with(lab: &Lab, name: &str, config: &str, files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("scanner-agent-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [("config.yaml", config)].iter().chain(files) {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Self::spawn(lab, dir, &[])
    }

    /// Starts the daemon with further files beside its config file,
    /// through `wrapper` (e.g. `prlimit ...`).
    pub fn start_wrapped(
        lab: &Lab,
        name: &str,
        config: &str,
        files: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("scanner-agent-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [("config.yaml", config)].iter().chain(files) {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Self::spawn(lab, dir, wrapper)
    }

    /// Replaces the config file and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        std::fs::write(self.dir.join("config.yaml"), config).unwrap();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts the daemon on an existing directory (config and state file),
    /// through `wrapper` (e.g. `setpriv ...`) if not empty.
    pub fn spawn(lab: &Lab, dir: std::path::PathBuf, wrapper: &[&str]) -> Self {
        let (config, state) = (dir.join("config.yaml"), dir.join("state.json"));
        let (program, wrapper_args) = match wrapper.split_first() {
            Some((program, args)) => (*program, args),
            None => (agent(), &[][..]),
        };
        let mut command = lab.scanner.command(program);
        if !wrapper.is_empty() {
            command.args(wrapper_args).arg(agent());
        }
        let child = command
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--state-file",
                state.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    /// Stops the daemon as `kill -9` would, keeping its directory.
    pub fn kill(mut self) -> std::path::PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
