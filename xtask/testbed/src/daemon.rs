//! `scanner-agent run` in a namespace (a [`Lab`]'s scanner side or a lone
//! [`Netns`]), the HTTP requests that talk to it, and [`FastScan`], the
//! configuration of a daemon that scans a testbed quickly.

use std::{
    fmt,
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use base64::Engine as _;

#[cfg(doc)]
use super::Lab;
use super::{Netns, wait_until};

pub const PORT: u16 = 19919;

/// An HTTP GET from inside `host`'s namespace.
pub fn get(host: &impl AsRef<Netns>, path: &str) -> Option<(u16, String)> {
    request(host, PORT, path, "").map(|(status, _, body)| (status, body))
}

/// An HTTP GET on loopback inside `host`'s namespace, with extra header
/// lines; returns status, head and body.
pub fn request(
    host: &impl AsRef<Netns>,
    port: u16,
    path: &str,
    headers: &str,
) -> Option<(u16, String, String)> {
    request_to(host, (Ipv4Addr::LOCALHOST, port).into(), path, headers)
}

/// An HTTP GET to `addr` (e.g. `[::1]:PORT`) from inside `host`'s
/// namespace, with extra header lines; returns status, head and body.
pub fn request_to(
    host: &impl AsRef<Netns>,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &str,
) -> Option<(u16, String, String)> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n");
    host.as_ref().run(move || {
        let mut s = TcpStream::connect(addr).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some((status, head.to_owned(), body.to_owned()))
    })
}

/// The header line of HTTP basic authentication as `user`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The header line of a bearer token.
pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Waits (10 s at most) until something answers a GET of `/healthz` with
/// extra header lines on loopback `port` (a daemon just started); fails
/// if nothing did.
pub fn await_up(host: &impl AsRef<Netns>, port: u16, headers: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || request(
            host, port, "/healthz", headers
        )
        .is_some()),
        "nothing answered GET /healthz on port {port}"
    );
}

/// curl inside `host`'s namespace, run in `dir`; the HTTP status, or None
/// when no HTTP exchange happened (refused handshake, plain HTTP to a TLS
/// port).
pub fn curl(host: &impl AsRef<Netns>, dir: &Path, args: &[&str]) -> Option<u16> {
    let out = host
        .as_ref()
        .command("curl")
        .current_dir(dir)
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(args)
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&out.stdout).parse().ok()?;
    (out.status.success() && code != 0).then_some(code)
}

/// The body of a GET with extra header lines, or "" when nothing answered
/// (for polling).
pub fn fetch(host: &impl AsRef<Netns>, port: u16, path: &str, headers: &str) -> String {
    request(host, port, path, headers)
        .map(|(_, _, body)| body)
        .unwrap_or_default()
}

/// "STATUS BODY" of a GET with extra header lines, or "" when nothing
/// answered (for polling).
pub fn fetch_status(host: &impl AsRef<Netns>, port: u16, path: &str, headers: &str) -> String {
    request(host, port, path, headers)
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

/// The sum of every series whose line starts with `prefix` (a family over
/// all its label sets).
pub fn metric_sum(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A running `scanner-agent run` (the binary `agent`) in a namespace, with
/// its config file and its log (`stderr.log`) in a directory of its own;
/// all go away on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(agent: &str, host: &impl AsRef<Netns>, name: &str, config: &str) -> Self {
        Self::start_with(agent, host, name, config, &[])
    }

    /// Starts the daemon with further files (certificates, a web config)
    /// beside its config file.
    pub fn start_with(
        agent: &str,
        host: &impl AsRef<Netns>,
        name: &str,
        config: &str,
        files: &[(&str, &str)],
    ) -> Self {
        Self::start_wrapped(agent, host, name, config, files, &[])
    }

    /// Starts the daemon with further files beside its config file,
    /// through `wrapper` (e.g. `prlimit ...`).
    pub fn start_wrapped(
        agent: &str,
        host: &impl AsRef<Netns>,
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
        Self::spawn(agent, host, dir, wrapper)
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
    pub fn spawn(agent: &str, host: &impl AsRef<Netns>, dir: PathBuf, wrapper: &[&str]) -> Self {
        Self::try_spawn(agent, host.as_ref(), dir, wrapper).unwrap()
    }

    /// [`Daemon::spawn`], failing with an error.
    pub fn try_spawn(
        agent: &str,
        ns: &Netns,
        dir: PathBuf,
        wrapper: &[&str],
    ) -> std::io::Result<Self> {
        let (config, state) = (dir.join("config.yaml"), dir.join("state.json"));
        let (program, wrapper_args) = match wrapper.split_first() {
            Some((program, args)) => (*program, args),
            None => (agent, &[][..]),
        };
        let mut command = ns.command(program);
        if !wrapper.is_empty() {
            command.args(wrapper_args).arg(agent);
        }
        let child = command
            .args(["run", "--config"])
            .arg(&config)
            .arg("--state-file")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("stderr.log"))?)
            .spawn()?;
        Ok(Self { child, dir })
    }

    /// Stops the daemon; what it logged.
    pub fn stderr(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Stops the daemon as `kill -9` would, keeping its directory.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.dir)
    }

    /// Its directory (config, state file, log).
    pub fn dir(&self) -> &Path {
        &self.dir
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

/// The `config.yaml` of a daemon that scans a small testbed quickly: on
/// `server.port`, `min_rate: 5000` and round-trip timeouts of 100 to
/// 200 ms; by default every 2 s, ports 20-30 of 198.18.0.0/30.
#[derive(Clone, Debug)]
pub struct FastScan {
    port: u16,
    interval: u64,
    ports: String,
    scanning: Vec<String>,
    sections: String,
    targets: Vec<String>,
}

impl FastScan {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            interval: 2,
            ports: "20-30".into(),
            scanning: Vec::new(),
            sections: String::new(),
            targets: vec!["198.18.0.0/30".into()],
        }
    }

    /// `scanning.interval`, in seconds.
    pub fn interval(mut self, seconds: u64) -> Self {
        self.interval = seconds;
        self
    }

    /// `scanning.port_range`.
    pub fn ports(mut self, spec: &str) -> Self {
        self.ports = spec.into();
        self
    }

    /// A further `scanning:` key, e.g. `"rate_limit: 7"`.
    pub fn scanning(mut self, key_and_value: &str) -> Self {
        self.scanning.push(key_and_value.into());
        self
    }

    /// Further top-level sections (e.g. `auth:`), as YAML text.
    pub fn with(mut self, yaml: &str) -> Self {
        self.sections.push_str(yaml);
        self
    }

    /// `targets` instead of 198.18.0.0/30.
    pub fn targets(mut self, targets: &[&str]) -> Self {
        self.targets = targets.iter().map(|&t| t.into()).collect();
        self
    }
}

impl fmt::Display for FastScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server:\n  port: {}\nscanning:\n  interval: {}\n  port_range: \"{}\"\n",
            self.port, self.interval, self.ports
        )?;
        for key in &self.scanning {
            writeln!(f, "  {key}")?;
        }
        f.write_str("  min_rate: 5000\n  initial_rtt_timeout: 100\n  max_rtt_timeout: 200\n")?;
        f.write_str(&self.sections)?;
        f.write_str("targets:\n")?;
        for t in &self.targets {
            writeln!(f, "  - {t}")?;
        }
        Ok(())
    }
}
