//! The test hosts that the agent's tests and `cargo xtask bench` share:
//! network namespaces with no default route, joined by veth pairs and
//! addressed from 198.18.0.0/15 and 2001:db8::/32, so no probe can leave
//! them; their sysctls, listeners and firewalls; node_exporter and
//! Prometheus; and `scanner-agent run` with the HTTP helpers that talk to it ([`daemon`]);
//! and the loopback demo of `cargo xtask run` ([`demo`]), here so a test runs it too.
//! Everything is torn down on drop (also when a test fails).
//!
//! Privileged tests begin with [`require_root!`]: without root they say
//! they were skipped, unless `SCANNER_AGENT_REQUIRE_PRIVILEGED=1` (set by
//! `cargo xtask test`) makes a skip a failure.

pub mod daemon;
pub mod demo;

use std::{
    fs::File,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use nix::{
    sched::{CloneFlags, setns},
    sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
        sockopt,
    },
};

pub const SCANNER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SCANNER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const SCANNER_IF: &str = "veth-scan";
pub const TARGET_IF: &str = "veth-target";

/// The variable that turns a skipped privileged test into a failure.
pub const REQUIRE_PRIVILEGED: &str = "SCANNER_AGENT_REQUIRE_PRIVILEGED";

/// Whether this process may build namespaces, attach XDP programs and send
/// raw packets: root with its capabilities (not a root whose capabilities
/// were dropped).
pub fn privileged() -> bool {
    // CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_BPF.
    const NEEDED: u64 = 1 << 12 | 1 << 13 | 1 << 21 | 1 << 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
    // Real, effective, saved and file-system user ids.
    let root = field("Uid:").and_then(|ids| ids.split_whitespace().nth(1)) == Some("0");
    let effective = field("CapEff:")
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    root && effective & NEEDED == NEEDED
}

/// Reports that the running test needs root: on standard error (past the
/// test harness's capture), or as a failure when
/// `SCANNER_AGENT_REQUIRE_PRIVILEGED=1`.
pub fn skip(module: &str) {
    let thread = thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or(module);
    if std::env::var(REQUIRE_PRIVILEGED).is_ok_and(|v| v == "1") {
        panic!("{test} needs root, and {REQUIRE_PRIVILEGED}=1 forbids skipping it");
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: it needs root (namespaces, XDP, raw sockets)"
    );
}

/// Returns from the calling test, after saying why, unless it runs as root
/// (see [`privileged`] and [`skip`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::privileged() {
            $crate::skip(module_path!());
            return;
        }
    };
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `promtool check metrics` on an exposition in the classic text format
/// (from PATH: `cargo xtask test` provides it): whether it passed, and the
/// lines it reported (its warnings), stderr and stdout together.
pub fn promtool_lint(exposition: &str) -> (bool, Vec<String>) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not on PATH (`cargo xtask test` provides it)");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(exposition.as_bytes())
        .expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool ran");
    let report =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let lines = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (out.status.success(), lines)
}

/// Runs a command to completion with `stdin` as its input; its stdout, or
/// an error carrying its stderr.
pub fn run_with_input(c: &mut Command, stdin: &str) -> Result<String> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {c:?}"))?;
    child
        .stdin
        .take()
        .context("stdin is piped")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `cond` for up to `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A network namespace, removed on drop.
pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// A lone namespace (only loopback, up), with a name of its own.
    pub fn new(prefix: &str) -> Self {
        Self::named(&format!(
            "sa-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A fresh namespace called `name` (one left over by a killed earlier
    /// run is removed first), with loopback up.
    pub fn named(name: &str) -> Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run_with_input(Command::new("ip").args(["netns", "add", name]), "")?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.try_ip(&["link", "set", "lo", "up"])?;
        // No duplicate address detection: a fresh link's link-local address
        // would stay tentative for a second, stalling neighbour discovery.
        ns.try_sysctl(&[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ])?;
        Ok(ns)
    }

    /// Waits (2 s at most) until `dev` has a usable IPv6 link-local address,
    /// as a real host's interface has: before, the kernel sends no neighbour
    /// solicitation that is not for a packet with a source address of its
    /// own, so the first IPv6 contact would stall until its next retry.
    pub fn await_link_local(&self, dev: &str) -> Result<()> {
        let ready = wait_until(Duration::from_secs(2), || {
            self.try_ip(&["-6", "addr", "show", "dev", dev, "scope", "link"])
                .is_ok_and(|out| out.contains("inet6 fe80") && !out.contains("tentative"))
        });
        if ready {
            Ok(())
        } else {
            anyhow::bail!(
                "{dev} in {} got no usable link-local address within 2 s",
                self.name
            )
        }
    }

    /// Sets kernel parameters of the namespace (`key=value`).
    pub fn sysctl(&self, settings: &[&str]) {
        self.try_sysctl(settings)
            .unwrap_or_else(|e| panic!("sysctl: {e:#}"));
    }

    /// [`Netns::sysctl`], failing with an error.
    pub fn try_sysctl(&self, settings: &[&str]) -> Result<()> {
        run_with_input(self.command("sysctl").arg("-qw").args(settings), "").map(drop)
    }

    /// `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// [`Netns::ip`], failing with an error; its output.
    pub fn try_ip(&self, args: &[&str]) -> Result<String> {
        run_with_input(Command::new("ip").args(["-n", &self.name]).args(args), "")
    }

    /// Many `ip` commands, one per line, in a single `ip -batch`.
    pub fn ip_batch(&self, commands: &str) -> Result<()> {
        run_with_input(
            Command::new("ip").args(["-n", &self.name, "-batch", "-"]),
            commands,
        )
        .map(drop)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Fails unless the namespace has no default route (IPv4 and IPv6):
    /// nothing sent inside may leave the testbed.
    pub fn check_no_default_route(&self) -> Result<()> {
        for family in ["-4", "-6"] {
            let routes = self.try_ip(&[family, "route", "show", "default"])?;
            ensure!(
                routes.trim().is_empty(),
                "test namespace {} has a default route: refusing to go on",
                self.name
            );
        }
        Ok(())
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it
    /// creates stay in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("netns thread")
    }

    /// [`Netns::run`] for fallible work: an error if `f` fails or panics.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.spawn(f)
            .join()
            .map_err(|_| anyhow::anyhow!("the thread inside {} panicked", self.name))?
    }

    /// Starts `f` on a thread that has entered the namespace, without
    /// waiting for it (for clients that run side by side).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let ns = File::open(&path).expect("open netns");
            setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// Opens TCP listeners on the given (address, port) pairs in the namespace.
    pub fn listen<A: Into<IpAddr> + Copy>(&self, endpoints: &[(A, u16)]) -> Vec<TcpListener> {
        let endpoints: Vec<SocketAddr> = endpoints
            .iter()
            .map(|&(a, p)| SocketAddr::new(a.into(), p))
            .collect();
        self.run(move || {
            endpoints
                .iter()
                .map(|a| TcpListener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}")))
                .collect()
        })
    }

    /// Listeners on 0.0.0.0 at `ports` with the largest backlog the
    /// namespace's somaxconn allows (std's TcpListener fixes it at 128).
    pub fn listen_deep(&self, ports: &'static [u16]) -> Result<Vec<TcpListener>> {
        self.run_inside(|| ports.iter().map(|&p| deep_listener(p)).collect())
    }

    /// A UDP service on `addr` that answers every datagram (a stand-in for
    /// DNS, NTP, ...); it ends with the test process.
    pub fn udp_echo(&self, addr: SocketAddr) {
        let socket = self
            .run(move || UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}")));
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        });
    }

    /// Installs `rules` in an input-hook chain of a table of the namespace.
    pub fn firewall(&self, rules: &[&str]) {
        let ruleset = format!(
            "table inet test {{\n chain input {{\n  type filter hook input priority 0;\n  {}\n }}\n}}\n",
            rules.join("\n  ")
        );
        self.nft(&ruleset);
    }

    /// Loads an nftables ruleset into the namespace.
    pub fn nft(&self, ruleset: &str) {
        self.try_nft(ruleset)
            .unwrap_or_else(|e| panic!("nft rejected:\n{ruleset}\n{e:#}"));
    }

    /// [`Netns::nft`], failing with an error.
    pub fn try_nft(&self, ruleset: &str) -> Result<()> {
        run_with_input(self.command("nft").args(["-f", "-"]), ruleset).map(drop)
    }

    /// The packets a named nftables counter of `table` (family inet) has
    /// counted.
    pub fn nft_counter(&self, table: &str, counter: &str) -> u64 {
        let out = self
            .command("nft")
            .args(["list", "counter", "inet", table, counter])
            .output()
            .unwrap_or_else(|e| panic!("nft: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("packets ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter {table} {counter} in {text}"))
    }

    /// The XDP program id attached to `dev`, if any.
    pub fn xdp_prog(&self, dev: &str) -> Option<u32> {
        let out = self.ip(&["-d", "link", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = text.split("prog/xdp id ").nth(1)?;
        after.split_whitespace().next()?.parse().ok()
    }
}

impl AsRef<Self> for Netns {
    fn as_ref(&self) -> &Self {
        self
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth end inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A TCP listener on 0.0.0.0:`port` with the largest backlog allowed.
fn deep_listener(port: u16) -> Result<TcpListener> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    bind(fd.as_raw_fd(), &addr).with_context(|| format!("bind :{port}"))?;
    listen(&fd, Backlog::MAXALLOWABLE)?;
    Ok(TcpListener::from(fd))
}

/// A veth pair from [`SCANNER_IF`] in `scanner` to [`TARGET_IF`] in
/// `target`, created directly inside the namespaces, with the given MTU.
pub fn veth(scanner: &Netns, target: &Netns, mtu: u32) -> Result<()> {
    veth_named(scanner, target, TARGET_IF, mtu)
}

/// [`veth`] with the target's end called `target_if` (several scanners
/// into one target namespace each need their own name there).
pub fn veth_named(scanner: &Netns, target: &Netns, target_if: &str, mtu: u32) -> Result<()> {
    let link = format!(
        "link add {SCANNER_IF} netns {} mtu {mtu} type veth peer name {target_if} netns {} mtu {mtu}",
        scanner.name, target.name
    );
    run_with_input(Command::new("ip").args(link.split_whitespace()), "")?;
    // The pair is made in the caller's namespace and moved, so it keeps the
    // caller's duplicate address detection: without this, its link-local
    // address stays tentative for a second after the link comes up, and
    // neighbour discovery of the first IPv6 target stalls until then.
    scanner.try_sysctl(&[&format!("net.ipv6.conf.{SCANNER_IF}.accept_dad=0")])?;
    target.try_sysctl(&[&format!("net.ipv6.conf.{target_if}.accept_dad=0")])
}

/// A scanner and a target namespace joined by a veth pair.
pub struct Lab {
    pub scanner: Netns,
    pub target: Netns,
}

impl Lab {
    /// A scanner and a target namespace; the target answers on `targets`
    /// (in 198.18.0.0/24 or 2001:db8::/64, on its veth) and the link has the
    /// given MTU. ICMP error rate limits are off in the target, so ICMP-based
    /// port states are exact.
    pub fn new<A: Into<IpAddr> + Copy>(targets: &[A], mtu: u32) -> Self {
        Self::build(targets, mtu).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Lab::new`], failing with an error.
    pub fn build<A: Into<IpAddr> + Copy>(targets: &[A], mtu: u32) -> Result<Self> {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Self {
            scanner: Netns::named(&format!("sa-scan-{tag}"))?,
            target: Netns::named(&format!("sa-target-{tag}"))?,
        };
        veth(&lab.scanner, &lab.target, mtu)?;
        let mut scanner = format!("addr add {SCANNER_ADDR}/24 dev {SCANNER_IF}\n");
        scanner.push_str(&format!(
            "addr add {SCANNER_ADDR6}/64 dev {SCANNER_IF} nodad\n"
        ));
        lab.scanner.ip_batch(&scanner)?;
        let target: String = targets
            .iter()
            .map(|a| match (*a).into() {
                IpAddr::V4(a) => format!("addr add {a}/24 dev {TARGET_IF}\n"),
                IpAddr::V6(a) => format!("addr add {a}/64 dev {TARGET_IF} nodad\n"),
            })
            .collect();
        lab.target.ip_batch(&target)?;
        lab.target.try_sysctl(&[
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=1000000",
            "net.ipv6.icmp.ratelimit=0",
        ])?;
        lab.scanner
            .ip_batch(&format!("link set {SCANNER_IF} up\n"))?;
        lab.target.ip_batch(&format!("link set {TARGET_IF} up\n"))?;
        for (ns, dev) in [(&lab.scanner, SCANNER_IF), (&lab.target, TARGET_IF)] {
            ns.check_no_default_route()?;
            ns.await_link_local(dev)?;
        }
        Ok(lab)
    }
}

/// Several scanner namespaces (a fleet of agents sharing one target list),
/// each with its own veth pair into one target namespace. Scanner `i`
/// (from 0) is `198.18.(10+i).1/24` on its [`SCANNER_IF`]; the target's end,
/// `veth-t{i}`, is `198.18.(10+i).2`, and the target addresses (each a /32
/// on the target's loopback, in 198.18.0.0/24) are reached
/// through it: a route to 198.18.0.0/24 only, never a default route.
pub struct Fleet {
    pub scanners: Vec<Netns>,
    pub target: Netns,
}

impl Fleet {
    pub fn new(scanners: u8, targets: &[Ipv4Addr]) -> Self {
        Self::build(scanners, targets).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Fleet::new`], failing with an error.
    pub fn build(scanners: u8, targets: &[Ipv4Addr]) -> Result<Self> {
        ensure!(scanners <= 100, "at most 100 scanners");
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let target = Netns::named(&format!("sa-fleet-t-{tag}"))?;
        let mut fleet = Self {
            scanners: Vec::new(),
            target,
        };
        // On loopback: local addresses of the target, reached through each
        // scanner's veth (not a dummy interface: not every kernel has one).
        let mut hosts = String::new();
        for a in targets {
            ensure!(
                a.octets()[..3] == [198, 18, 0],
                "{a}: fleet targets are in 198.18.0.0/24"
            );
            hosts.push_str(&format!("addr add {a}/32 dev lo\n"));
        }
        fleet.target.ip_batch(&hosts)?;
        fleet.target.try_sysctl(&[
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=1000000",
        ])?;
        for i in 0..scanners {
            let scanner = Netns::named(&format!("sa-fleet-s{i}-{tag}"))?;
            let peer = format!("veth-t{i}");
            veth_named(&scanner, &fleet.target, &peer, 1500)?;
            let net = 10 + i;
            scanner.ip_batch(&format!(
                "addr add 198.18.{net}.1/24 dev {SCANNER_IF}\n\
                 link set {SCANNER_IF} up\n\
                 route add 198.18.0.0/24 via 198.18.{net}.2\n"
            ))?;
            fleet.target.ip_batch(&format!(
                "addr add 198.18.{net}.2/24 dev {peer}\nlink set {peer} up\n"
            ))?;
            scanner.check_no_default_route()?;
            scanner.await_link_local(SCANNER_IF)?;
            fleet.scanners.push(scanner);
        }
        fleet.target.check_no_default_route()?;
        Ok(fleet)
    }
}

/// The scanner side: where the daemon runs and its clients connect from.
impl AsRef<Netns> for Lab {
    fn as_ref(&self) -> &Netns {
        &self.scanner
    }
}

/// A node_exporter in a namespace, stopped on drop.
pub struct NodeExporter(Child);

impl NodeExporter {
    /// `prometheus-node-exporter` (from PATH: `cargo xtask test` provides
    /// it) on `addr` in `ns`, with a few collectors: a realistic body, a
    /// quick start.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        Self::launch(ns, Path::new("prometheus-node-exporter"), addr, &[])
            .expect("prometheus-node-exporter is not on PATH (`cargo xtask test` provides it)")
    }

    /// `program` on `addr` in `ns` with the collectors of
    /// [`NodeExporter::start`] and `extra` arguments.
    pub fn launch(ns: &Netns, program: &Path, addr: SocketAddr, extra: &[&str]) -> Result<Self> {
        let child = ns
            .command(&program.to_string_lossy())
            .args([
                &format!("--web.listen-address={addr}"),
                "--collector.disable-defaults",
                "--collector.cpu",
                "--collector.meminfo",
                "--collector.loadavg",
                "--collector.netdev",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self(child))
    }

    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus server (Debian's binary, from PATH: `cargo xtask test`
/// provides it) in a namespace, killed on drop.
pub struct Prometheus(Child);

impl Prometheus {
    /// Writes `config` as `dir/prometheus.yml` (rule files it names are
    /// read from `dir`) and starts Prometheus on `127.0.0.1:port` in `ns`,
    /// its database in `dir/tsdb`.
    pub fn start(ns: &Netns, dir: &Path, config: &str, port: u16) -> Self {
        Command::new("prometheus")
            .arg("--version")
            .output()
            .expect("prometheus is not on PATH (`cargo xtask test` provides it)");
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("writing prometheus.yml");
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus");
        Self(child)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
