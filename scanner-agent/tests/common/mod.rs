//! Test hosts in network namespaces: a scanner and a target joined by a
//! veth pair, addressed from 198.18.0.0/15 and 2001:db8::/32, with no default
//! route, torn down on drop (also when the test fails).
#![allow(dead_code, unreachable_pub)]

use std::{
    fs::File,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

pub mod daemon;

pub const SCANNER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SCANNER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const SCANNER_IF: &str = "veth-scan";
pub const TARGET_IF: &str = "veth-target";

pub fn agent() -> &'static str {
    env!("CARGO_BIN_EXE_scanner-agent")
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

pub struct Netns {
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Self {
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection: a fresh link's link-local address
        // would stay tentative for a second, stalling neighbour discovery.
        ns.sysctl(&[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        ns
    }

    /// Sets kernel parameters of the namespace.
    pub fn sysctl(&self, settings: &[&str]) {
        let out = self
            .command("sysctl")
            .arg("-qw")
            .args(settings)
            .output()
            .expect("sysctl");
        assert!(
            out.status.success(),
            "sysctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it
    /// creates stay in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let ns = File::open(&path).expect("open netns");
            setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
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
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft rejected:\n{ruleset}");
    }

    /// The XDP program id attached to `dev`, if any.
    pub fn xdp_prog(&self, dev: &str) -> Option<u32> {
        let out = self.ip(&["-d", "link", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = text.split("prog/xdp id ").nth(1)?;
        after.split_whitespace().next()?.parse().ok()
    }
}

impl Netns {
    /// A lone namespace (only loopback, up), removed on drop.
    pub fn new(prefix: &str) -> Self {
        Self::create(format!(
            "sa-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub struct Lab {
    pub scanner: Netns,
    pub target: Netns,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// A scanner and a target namespace; the target answers on `targets`
    /// (in 198.18.0.0/24 or 2001:db8::/64, on its veth) and the link has the
    /// given MTU. ICMP error rate limits are off in the target, so ICMP-based
    /// port states are exact.
    pub fn new<A: Into<IpAddr> + Copy>(targets: &[A], mtu: u32) -> Self {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let scanner = Netns::create(format!("sa-scan-{tag}"));
        let target = Netns::create(format!("sa-target-{tag}"));
        let mtu = mtu.to_string();
        sh(
            "ip",
            &[
                "link",
                "add",
                SCANNER_IF,
                "netns",
                &scanner.name,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                TARGET_IF,
                "netns",
                &target.name,
                "mtu",
                &mtu,
            ],
        );
        scanner.ip(&[
            "addr",
            "add",
            &format!("{SCANNER_ADDR}/24"),
            "dev",
            SCANNER_IF,
        ]);
        scanner.ip(&[
            "addr",
            "add",
            &format!("{SCANNER_ADDR6}/64"),
            "dev",
            SCANNER_IF,
            "nodad",
        ]);
        for addr in targets {
            match (*addr).into() {
                IpAddr::V4(a) => target.ip(&["addr", "add", &format!("{a}/24"), "dev", TARGET_IF]),
                IpAddr::V6(a) => {
                    target.ip(&["addr", "add", &format!("{a}/64"), "dev", TARGET_IF, "nodad"])
                }
            };
        }
        let sysctl = [
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=1000000",
            "net.ipv6.icmp.ratelimit=0",
        ];
        target.sysctl(&sysctl);
        scanner.ip(&["link", "set", SCANNER_IF, "up"]);
        target.ip(&["link", "set", TARGET_IF, "up"]);
        let lab = Self { scanner, target };
        for ns in [&lab.scanner, &lab.target] {
            for family in ["-4", "-6"] {
                let routes =
                    String::from_utf8_lossy(&ns.ip(&[family, "route", "show", "default"]).stdout)
                        .into_owned();
                assert!(
                    routes.trim().is_empty(),
                    "test namespace {} has a default route",
                    ns.name
                );
            }
        }
        lab
    }
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
