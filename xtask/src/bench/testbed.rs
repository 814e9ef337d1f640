//! The benchmark's test hosts: a scanner and a target network namespace
//! joined by a veth pair, built with the shared testbed (`xtask/testbed`).
//! Every address is in 198.18.0.0/15 (RFC 2544's benchmarking range) and
//! on-link, so neither namespace has any route beyond that /15: no probe
//! can leave the two namespaces. Removed again on drop, also on error or
//! Ctrl-C.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, Result};
pub(super) use testbed::{Netns, SCANNER_ADDR, SCANNER_IF};
use testbed::{TARGET_IF, run_with_input};
/// The scanner (198.18.0.1) and the targets (198.19.0.x) share one on-link
/// /15, so no route has to be added anywhere.
const PREFIX_LEN: u8 = 15;
/// Target hosts are 198.19.0.FIRST_HOST ..= 198.19.0.LAST_HOST.
pub(super) const FIRST_HOST: u8 = 1;
pub(super) const LAST_HOST: u8 = 254;

/// Every target address listens on these ports (bound to 0.0.0.0).
const LISTEN_PORTS: [u16; 10] = [22, 80, 443, 2049, 5201, 8080, 9100, 10000, 50000, 65535];

/// What the target's firewall does to SYNs for some (address, port) pairs,
/// so that "open" is not simply "listening".
#[derive(Clone, Copy)]
enum Verdict {
    /// Silently dropped: filtered, no answer at all.
    Drop,
    /// Answered with ICMP "administratively prohibited": filtered.
    Reject,
}

/// Firewalled `port` on hosts `first..=last` (last octets).
struct Blocked {
    port: u16,
    first: u8,
    last: u8,
    verdict: Verdict,
}

/// Both blocks include 198.19.0.1, so the one-host workload sees them too.
const BLOCKED: [Blocked; 2] = [
    Blocked {
        port: 8080,
        first: 1,
        last: 50,
        verdict: Verdict::Drop,
    },
    Blocked {
        port: 9100,
        first: 1,
        last: 100,
        verdict: Verdict::Reject,
    },
];

pub(super) fn target_addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, host)
}

/// The (address, port) pairs a correct scan of hosts `first..=last` finds
/// open: every listener port on every host, minus the firewalled pairs.
pub(super) fn truth(first: u8, last: u8) -> HashSet<(Ipv4Addr, u16)> {
    let mut open = HashSet::new();
    for host in first..=last {
        for port in LISTEN_PORTS {
            let blocked = BLOCKED
                .iter()
                .any(|b| b.port == port && (b.first..=b.last).contains(&host));
            if !blocked {
                open.insert((target_addr(host), port));
            }
        }
    }
    open
}

pub(super) struct Testbed {
    // Fields drop in order: the heartbeat stops and the listeners close
    // before the namespaces go.
    _heartbeat: Heartbeat,
    _listeners: Vec<TcpListener>,
    pub scanner: Netns,
    target: Netns,
    /// MAC address of the target's veth: the "router" for masscan.
    pub target_mac: String,
    /// MAC address of the scanner's veth (the ceiling's frames come from it).
    pub scanner_mac: String,
}

impl Testbed {
    pub(super) fn up() -> Result<Self> {
        let scanner = Netns::named("sa-bench-scan")?;
        let target = Netns::named("sa-bench-target")?;
        connect(&scanner, &target)?;
        for ns in [&scanner, &target] {
            ns.check_no_default_route()?;
        }
        let target_mac = link_mac(&target, TARGET_IF)?;
        let scanner_mac = link_mac(&scanner, SCANNER_IF)?;
        pin_neighbours(&scanner, &target_mac)?;
        tune_target(&target)?;
        let listeners = target.listen_deep(&LISTEN_PORTS)?;
        let heartbeat = Heartbeat::start(&target)?;
        Ok(Self {
            _heartbeat: heartbeat,
            _listeners: listeners,
            scanner,
            target,
            target_mac,
            scanner_mac,
        })
    }

    /// Packets the veth pair dropped so far, as `ip -s link` counts them:
    /// (scanner rx, scanner tx, target rx, target tx). Printed per run, so
    /// a rate the path cannot carry shows where the loss was.
    pub(super) fn drops(&self) -> Result<[u64; 4]> {
        let read = |ns: &Netns, dev: &str| -> Result<(u64, u64)> {
            let json = ns.try_ip(&["-s", "-j", "link", "show", dev])?;
            let v: serde_json::Value = serde_json::from_str(&json).context("ip -s -j link")?;
            let stats = &v[0]["stats64"];
            Ok((
                stats["rx"]["dropped"].as_u64().unwrap_or(0),
                stats["tx"]["dropped"].as_u64().unwrap_or(0),
            ))
        };
        let (srx, stx) = read(&self.scanner, SCANNER_IF)?;
        let (trx, ttx) = read(&self.target, TARGET_IF)?;
        Ok([srx, stx, trx, ttx])
    }

    /// SYN-ACKs the target sent but that were never answered: half-open
    /// connections a scanner left behind.
    pub(super) fn half_open(&self) -> Result<usize> {
        let out = run_with_input(
            self.target
                .command("ss")
                .args(["-Htn", "state", "syn-recv"]),
            "",
        )?;
        Ok(out.lines().count())
    }
}

/// The veth pair, created directly inside the namespaces, and the
/// addresses: the scanner's and all target hosts', in one on-link /15.
fn connect(scanner: &Netns, target: &Netns) -> Result<()> {
    testbed::veth(scanner, target, 1500)?;
    scanner.ip_batch(&format!(
        "addr add {SCANNER_ADDR}/{PREFIX_LEN} dev {SCANNER_IF}\nlink set {SCANNER_IF} up\n"
    ))?;
    let targets: String = (FIRST_HOST..=LAST_HOST)
        .map(|h| format!("addr add {}/{PREFIX_LEN} dev {TARGET_IF}\n", target_addr(h)))
        .collect();
    target.ip_batch(&format!("{targets}link set {TARGET_IF} up\n"))
}

fn link_mac(ns: &Netns, dev: &str) -> Result<String> {
    let json = ns.try_ip(&["-j", "link", "show", dev])?;
    let links: serde_json::Value = serde_json::from_str(&json).context("ip -j link output")?;
    links[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{dev} has no MAC address"))
}

/// Permanent neighbour entries for every target: every tool then sends
/// straight to the target's MAC (masscan does so anyway, via --router-mac),
/// as it would to a gateway in a real network, instead of the first probes
/// to each of the 254 hosts queueing behind ARP and being dropped.
fn pin_neighbours(scanner: &Netns, mac: &str) -> Result<()> {
    let neighbours: String = (FIRST_HOST..=LAST_HOST)
        .map(|h| {
            format!(
                "neigh replace {} lladdr {mac} dev {SCANNER_IF} nud permanent\n",
                target_addr(h)
            )
        })
        .collect();
    scanner.ip_batch(&neighbours)
}

/// Makes the target answer every probe: no ICMP rate limit (so every
/// reject is sent), deep SYN queues and SYN cookies (so open ports are not
/// lost at high rates), and the firewall of `BLOCKED`.
fn tune_target(target: &Netns) -> Result<()> {
    target.try_sysctl(&[
        "net.ipv4.icmp_ratelimit=0",
        "net.ipv4.icmp_msgs_per_sec=1000000",
        "net.ipv4.icmp_msgs_burst=1000000",
        "net.ipv4.tcp_max_syn_backlog=65536",
        "net.core.somaxconn=65535",
        "net.ipv4.tcp_syncookies=1",
    ])?;
    target.try_nft(&nft_ruleset())
}

/// No rule uses conntrack, so the target keeps no state per probe.
fn nft_ruleset() -> String {
    let rules: String = BLOCKED
        .iter()
        .map(|b| {
            let action = match b.verdict {
                Verdict::Drop => "drop",
                Verdict::Reject => "reject with icmp type admin-prohibited",
            };
            format!(
                "    ip daddr {}-{} tcp dport {} {action}\n",
                target_addr(b.first),
                target_addr(b.last),
                b.port
            )
        })
        .collect();
    format!(
        "table ip sa_bench {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// A tiny UDP datagram from the target to the scanner every 100 ms.
/// masscan's receive thread notices that its `--wait` is over only when a
/// frame arrives (masscan issue #144); a real network always has some
/// traffic, this veth may have none, and masscan then never exits. The
/// scanner answers with an ICMP error; neither disturbs the scans.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    const EVERY: Duration = Duration::from_millis(100);
    /// The discard port: nothing listens there.
    const PORT: u16 = 9;

    fn start(target: &Netns) -> Result<Self> {
        // The socket stays in the target namespace; any thread may use it.
        let socket = target.run_inside(|| Ok(UdpSocket::bind("0.0.0.0:0")?))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let _ = socket.send_to(&[], SocketAddrV4::new(SCANNER_ADDR, Self::PORT));
                thread::sleep(Self::EVERY);
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
