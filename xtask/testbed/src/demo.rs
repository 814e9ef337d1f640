//! The demo `cargo xtask run` starts: `scanner-agent run` on a configuration
//! that touches nothing outside the machine. It scans loopback only
//! (127.0.0.1 and ::1), where demo listeners opened here give "open"
//! something to show; firewall counters are on; the node_exporter
//! passthrough points at a node_exporter started on loopback when one is
//! installed (Debian's, as `cargo xtask test` unpacks it); a bearer token is
//! made for the run; the port guard is never on. [`Demo::stop`] undoes it
//! all. Here rather than in xtask so that a test runs the same demo inside
//! a namespace of its own.

use std::{
    fmt::Write as _,
    fs,
    io::Read as _,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::Netns;

/// The ports the demo asks for first; taken ones are swapped for free ones.
const AGENT_PORT: u16 = 9919;
const NODE_EXPORTER_PORT: u16 = 19100;
const TCP_V4_PORT: u16 = 18080;
const TCP_V6_PORT: u16 = 18443;
const UDP_PORT: u16 = 18053;
/// Seconds between two scans: short, so a change shows within a minute.
const INTERVAL: u64 = 60;
/// How long the agent and node_exporter get to exit after a signal.
const GRACE: Duration = Duration::from_secs(5);

/// Where the demo runs: this host, or a test's namespace.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    Host,
    Netns(&'a Netns),
}

impl Place<'_> {
    fn command(&self, program: &Path) -> Command {
        match self {
            Self::Host => Command::new(program),
            Self::Netns(ns) => ns.command(&program.to_string_lossy()),
        }
    }

    /// Runs `f` where the demo's sockets must live.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self {
            Self::Host => f(),
            Self::Netns(ns) => ns.run(f),
        }
    }
}

/// What the demo opened, and where to reach it.
pub struct Demo {
    /// The agent's HTTP port (all addresses, bearer token required).
    pub port: u16,
    /// The bearer token of this run.
    pub token: String,
    /// The passthrough route, when a node_exporter runs.
    pub passthrough: Option<String>,
    /// The node_exporter started for the passthrough, and where it listens.
    pub node_exporter: Option<SocketAddr>,
    /// The demo listeners: TCP on 127.0.0.1 and ::1, UDP (answering) on 127.0.0.1.
    pub tcp_v4: SocketAddr,
    pub tcp_v6: SocketAddr,
    pub udp: SocketAddr,
    /// The configuration, state file and logs, removed by [`Demo::stop`].
    pub dir: PathBuf,
    /// The agent's command until [`Demo::launch`], then its process.
    pending: Option<Command>,
    agent: Option<Child>,
    exporter: Option<Child>,
    listeners: Vec<TcpListener>,
    udp_stop: Arc<AtomicBool>,
    udp_thread: Option<JoinHandle<()>>,
}

/// How the demo ended.
#[derive(Debug)]
pub struct Stopped {
    /// The agent's exit: by SIGINT (sent here, or by the terminal's
    /// Ctrl-C), or on its own.
    pub agent: ExitStatus,
}

impl Demo {
    /// [`Demo::prepare`], then [`Demo::launch`].
    pub fn start(agent: &Path, place: Place<'_>, quiet: bool) -> Result<Self> {
        let mut demo = Self::prepare(agent, place, quiet)?;
        demo.launch()?;
        Ok(demo)
    }

    /// Opens the demo listeners, starts node_exporter (if installed) and
    /// writes the configuration, in `place`; the agent (`agent`) is started
    /// by [`Demo::launch`], so the banner can come before its first log
    /// line. When `quiet`, the agent's output goes to `agent.log` in
    /// [`Demo::dir`] instead of this process's.
    pub fn prepare(agent: &Path, place: Place<'_>, quiet: bool) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("scanner-agent-demo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        match Self::prepare_in(agent, place, quiet, dir.clone()) {
            Ok(demo) => Ok(demo),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn prepare_in(agent: &Path, place: Place<'_>, quiet: bool, dir: PathBuf) -> Result<Self> {
        let (listeners, udp) = place.inside(|| -> Result<_> {
            let v4 = tcp((Ipv4Addr::LOCALHOST, TCP_V4_PORT).into())?;
            let v6 = tcp((Ipv6Addr::LOCALHOST, TCP_V6_PORT).into())?;
            let udp = match UdpSocket::bind((Ipv4Addr::LOCALHOST, UDP_PORT)) {
                Ok(s) => s,
                Err(_) => UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?,
            };
            Ok((vec![v4, v6], udp))
        })?;
        let (tcp_v4, tcp_v6, udp_addr) = (
            listeners[0].local_addr()?,
            listeners[1].local_addr()?,
            udp.local_addr()?,
        );
        let udp_stop = Arc::new(AtomicBool::new(false));
        let udp_thread = Some(udp_echo(udp, Arc::clone(&udp_stop))?);
        let port = place.inside(|| free_port(AGENT_PORT, true))?;
        let token = random_token()?;
        let mut demo = Self {
            port,
            token,
            passthrough: None,
            node_exporter: None,
            tcp_v4,
            tcp_v6,
            udp: udp_addr,
            dir,
            pending: None,
            agent: None,
            exporter: None,
            listeners,
            udp_stop,
            udp_thread,
        };
        if let Some(program) = node_exporter_program() {
            let addr = SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                place.inside(|| free_port(NODE_EXPORTER_PORT, false))?,
            ));
            let log = fs::File::create(demo.dir.join("node_exporter.log"))?;
            let child = place
                .command(&program)
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", program.display()))?;
            demo.exporter = Some(child);
            demo.node_exporter = Some(addr);
            demo.passthrough = Some("/api/demo/monitoring/prometheus/passthrough/localhost".into());
        }
        let config = demo.dir.join("config.yaml");
        fs::write(&config, demo.config())?;
        let mut command = place.command(agent);
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--state-file")
            .arg(demo.dir.join("state.json"))
            .stdin(Stdio::null());
        if quiet {
            let log = fs::File::create(demo.dir.join("agent.log"))?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        demo.pending = Some(command);
        Ok(demo)
    }

    /// Starts the agent prepared by [`Demo::prepare`].
    pub fn launch(&mut self) -> Result<()> {
        let mut command = self
            .pending
            .take()
            .context("the agent was launched already")?;
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        self.agent = Some(child);
        Ok(())
    }

    /// The ports scanned: the well-known ones, the demo listeners', and the
    /// agent's and node_exporter's own (the agent sees itself listen).
    pub fn port_range(&self) -> String {
        let mut ports = vec![
            "1-1024".to_owned(),
            self.port.to_string(),
            self.tcp_v4.port().to_string(),
            self.tcp_v6.port().to_string(),
            self.udp.port().to_string(),
        ];
        ports.extend(self.node_exporter.map(|a| a.port().to_string()));
        ports.join(",")
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> String {
        let mut c = format!(
            "# scanner-agent demo (cargo xtask run): loopback only, removed on exit.\n\
             server:\n  port: {port}\n\
             targets: [127.0.0.1, \"::1\"]\n\
             scanning:\n  interval: {INTERVAL}\n  port_range: \"{ports}\"\n  udp_scan: true\n  \
             min_rate: 2000\n  max_rate: 20000\n  max_retries: 1\n  duration_metrics: true\n\
             auth:\n  bearer_tokens: [\"{token}\"]\n\
             firewall:\n  enabled: true\n\
             guard:\n  enabled: false\n",
            port = self.port,
            ports = self.port_range(),
            token = self.token,
        );
        if let Some(addr) = self.node_exporter {
            let _ = write!(
                c,
                "general:\n  sitename: demo\n  hostname: localhost\n  \
                 node_exporter: \"{addr}\"\n  node_exporter_passthrough: true\n"
            );
        }
        c
    }

    /// What the user reads first: the URLs and ready-to-paste curl lines.
    pub fn banner(&self) -> String {
        let url = format!("http://localhost:{}", self.port);
        let curl = format!("curl -sH 'Authorization: Bearer {}'", self.token);
        let mut b = String::new();
        let _ = writeln!(
            b,
            "scanner-agent demo: scans 127.0.0.1 and ::1 only (tcp and udp ports {}, every {INTERVAL} s)",
            self.port_range()
        );
        let _ = writeln!(
            b,
            "  demo listeners: tcp {}, tcp {}, udp {} (answers)",
            self.tcp_v4, self.tcp_v6, self.udp
        );
        let _ = writeln!(b, "  firewall counters on; port guard off");
        match self.node_exporter {
            Some(addr) => {
                let _ = writeln!(b, "  passthrough: node_exporter on {addr}");
            }
            None => {
                let _ = writeln!(
                    b,
                    "  passthrough: off (no node_exporter found; `cargo xtask test` unpacks Debian's)"
                );
            }
        }
        let _ = writeln!(b, "  files: {} (removed on exit)", self.dir.display());
        let _ = writeln!(
            b,
            "\n{url}/metrics (and /healthz, /-/ready, /query, the passthrough) on every address, with this run's bearer token:\n"
        );
        let _ = writeln!(
            b,
            "  {curl} {url}/metrics | grep -E '^(open_port_status|open_ports_total)'"
        );
        let _ = writeln!(b, "  {curl} {url}/healthz");
        let _ = writeln!(
            b,
            "  {curl} '{url}/query?ip=127.0.0.1&ports={}&protocol=tcp'",
            self.tcp_v4.port()
        );
        if let Some(route) = &self.passthrough {
            let _ = writeln!(b, "  {curl} {url}{route} | head");
        }
        let _ = writeln!(
            b,
            "\nCtrl-C stops it: the XDP program is detached, the listeners closed, node_exporter stopped, the files removed.\n"
        );
        b
    }

    /// The agent's process id (to signal it).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Whether the agent still runs.
    pub fn running(&mut self) -> bool {
        self.agent
            .as_mut()
            .is_some_and(|a| matches!(a.try_wait(), Ok(None)))
    }

    /// The agent's log, when [`Demo::start`] was quiet.
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Stops everything: SIGINT to the agent (SIGKILL after [`GRACE`]),
    /// SIGTERM to node_exporter, the listeners closed, the files removed.
    pub fn stop(mut self) -> Result<Stopped> {
        let mut agent = self.agent.take().context("the agent never started")?;
        let agent = stop_child(&mut agent, Signal::SIGINT)?;
        self.stop_exporter();
        self.udp_stop.store(true, Ordering::Release);
        if let Some(t) = self.udp_thread.take() {
            let _ = t.join();
        }
        self.listeners.clear();
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))?;
        Ok(Stopped { agent })
    }

    fn stop_exporter(&mut self) {
        if let Some(mut child) = self.exporter.take() {
            let _ = stop_child(&mut child, Signal::SIGTERM);
        }
    }
}

/// A demo dropped without [`Demo::stop`] (a failing test) leaves nothing
/// running either.
impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        self.stop_exporter();
        self.udp_stop.store(true, Ordering::Release);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Stopped {
    /// Whether the agent ended as asked: by SIGINT (it keeps the default
    /// action: the kernel detaches its XDP link with the process), or
    /// exiting with success.
    pub fn clean(&self) -> bool {
        self.agent.signal() == Some(Signal::SIGINT as i32) || self.agent.success()
    }
}

/// Sends `signal` to `child` unless it has exited; waits [`GRACE`], then kills it.
fn stop_child(child: &mut Child, signal: Signal) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    let _ = kill(pid, signal);
    let until = Instant::now() + GRACE;
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    Ok(child.wait()?)
}

/// A TCP listener on `addr`, or on a free port of its address when taken.
fn tcp(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .or_else(|_| TcpListener::bind(SocketAddr::new(addr.ip(), 0)))
        .with_context(|| format!("cannot listen on {}", addr.ip()))
}

/// `wanted` if nothing listens there (on all addresses when `any`, else on
/// 127.0.0.1), else a port the kernel says is free.
fn free_port(wanted: u16, any: bool) -> Result<u16> {
    let ip: std::net::IpAddr = if any {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let probe = TcpListener::bind((ip, wanted)).or_else(|_| TcpListener::bind((ip, 0)))?;
    Ok(probe.local_addr()?.port())
}

/// A UDP service that answers every datagram, so a UDP scan finds it open.
fn udp_echo(socket: UdpSocket, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Acquire) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    }))
}

/// 128 random bits, hex: the bearer token of one run.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the demo's token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// node_exporter where `cargo xtask test` unpacks Debian's, or on PATH.
fn node_exporter_program() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    let unpacked = data.join("scanner-agent/unpacked/prometheus-node-exporter");
    if unpacked.is_file() {
        return Some(unpacked);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["prometheus-node-exporter", "node_exporter"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Fails, pointing at the agent's `log`, unless it stopped as asked.
pub fn ensure_clean(stopped: &Stopped, log: &str) -> Result<()> {
    if !stopped.clean() {
        bail!("the agent stopped by itself ({}): {log}", stopped.agent);
    }
    Ok(())
}
