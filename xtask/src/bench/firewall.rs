//! The firewall counters' scrape latency: the agent's netlink reader (a
//! running `scanner-agent run`, scraped over HTTP on its drop-in listener
//! as Prometheus scrapes: read, encode OpenMetrics, transfer) against the
//! floor (the same netlink dumps, received and thrown away:
//! [`netlink_floor`]) and against what iptables_exporter did per scrape
//! (run `iptables-save -c`, parse it, encode the same families as
//! OpenMetrics text; not served, so that side skips the HTTP transfer), at
//! 100, 10,000 and 100,000 iptables-nft rules (chains of at most 1,000) in
//! a namespace of its own; and the agent's resident memory across repeated
//! scrapes. Scrapes of an unchanged ruleset (most scrapes of a live host)
//! are timed apart from scrapes right after one rule changed and right
//! after only set elements changed (a fail2ban host).

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use testbed::{Netns, daemon::Daemon, run_with_input as sh};

use super::{measure, netlink_floor};

const NAMESPACE: &str = "sa-bench-fw";
const DROP_IN_PORT: u16 = 19911;

/// Rules per chain at most: rulesets spread their rules over chains, and
/// the agent (like `iptables-save`) dumps chain by chain.
const CHAIN_RULES: usize = 1000;

/// A rule set of `n` rules of the kinds operators write, in iptables-restore
/// form, spread over user chains of at most [`CHAIN_RULES`] rules that
/// INPUT jumps to. Loopback is accepted first, as real rule sets do: the
/// agent's side of the bench transfers its answer over loopback, and
/// filtering that through thousands of rules would charge the agent for
/// the firewall's packet path, which the iptables-save side never takes.
fn ruleset(n: usize) -> String {
    let chains = n.div_ceil(CHAIN_RULES);
    let mut text =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in 0..chains {
        text.push_str(&format!(":R{c} - [0:0]\n"));
    }
    text.push_str("-A INPUT -i lo -j ACCEPT\n-A OUTPUT -o lo -j ACCEPT\n");
    for c in 0..chains {
        text.push_str(&format!("-A INPUT -j R{c}\n"));
    }
    let body = n.saturating_sub(2 + chains);
    for i in 0..body {
        let chain = format!("R{}", i * chains / body.max(1));
        let (a, b) = (i / 250 % 250, i % 250 + 1);
        let port = 1024 + i % 60_000;
        let rule = match i % 5 {
            0 => format!("-A {chain} -s 198.18.{a}.{b}/32 -p tcp -m tcp --dport {port} -j ACCEPT"),
            1 => format!(
                "-A {chain} -p udp -m udp --sport {port} -m comment --comment \"rule {i}\" -j DROP"
            ),
            2 => format!(
                "-A {chain} -m conntrack --ctstate NEW -p tcp -m multiport --dports {port},{} -j ACCEPT",
                port + 1
            ),
            3 => format!(
                "-A {chain} -d 198.19.{a}.{b}/32 -m limit --limit {}/min -j LOG --log-prefix \"r{i} \"",
                i % 50 + 1
            ),
            _ => format!("-A {chain} -i lo -m mark --mark 0x{i:x}/0xffff -j RETURN"),
        };
        text.push_str(&rule);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// A native table with a named set, as fail2ban keeps its bans: the
/// bench adds elements to it to change nothing but set elements.
const SET_TABLE: &str = "table inet sa_bench_sets {\n set banned { type ipv4_addr; }\n chain input {\n  type filter hook input priority 10; policy accept;\n  ip saddr @banned counter drop\n }\n}\n";

/// An HTTP GET of /metrics on loopback (from a thread inside the
/// namespace); the body.
fn scrape_here() -> Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, DROP_IN_PORT))?;
    // As Prometheus asks (it prefers OpenMetrics).
    s.write_all(
        b"GET /metrics HTTP/1.0\r\nHost: localhost\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        bail!(
            "scrape failed: {}",
            &response[..response.floor_char_boundary(200)]
        );
    }
    Ok(response)
}

fn scrape(ns: &Netns) -> Result<String> {
    ns.run_inside(scrape_here)
}

/// The agent's own `iptables_scrape_duration_seconds` in a scrape: its
/// netlink read (and, after a ruleset change, the rendering of the labels).
fn read_seconds(body: &str) -> Result<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix("iptables_scrape_duration_seconds "))
        .context("no iptables_scrape_duration_seconds")?
        .parse()
        .context("iptables_scrape_duration_seconds")
}

/// What iptables_exporter does per scrape, short of serving it: run
/// `iptables-save -c`, parse it, and encode the same families as
/// OpenMetrics text (from a thread inside the namespace); the text.
fn iptables_save_here() -> Result<String> {
    // A child of a thread inside the namespace starts inside it too.
    let out = Command::new("iptables-save").arg("-c").output()?;
    if !out.status.success() {
        bail!("iptables-save failed");
    }
    let text = String::from_utf8(out.stdout)?;
    // (table, chain, policy or rule) -> (packets, bytes), duplicates summed.
    let mut policies = BTreeMap::new();
    let mut rules: BTreeMap<(&str, &str, &str), (u64, u64)> = BTreeMap::new();
    let mut table = "";
    let counters = |c: &str| -> Result<(u64, u64)> {
        let (p, b) = c
            .trim_matches(|c| c == '[' || c == ']')
            .split_once(':')
            .context("p:b")?;
        Ok((p.parse()?, b.parse()?))
    };
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else if let Some(chain) = line.strip_prefix(':') {
            let mut f = chain.split(' ');
            let (name, policy) = (f.next().context("chain")?, f.next().context("policy")?);
            policies.insert((table, name, policy), counters(f.next().context("[p:b]")?)?);
        } else if line.starts_with('[') {
            let (c, rest) = line.split_once(" -A ").context("-A")?;
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            let (p, b) = counters(c)?;
            let sum = rules.entry((table, chain, rule)).or_default();
            sum.0 += p;
            sum.1 += b;
        }
    }
    let mut exposition = String::with_capacity(text.len() * 2);
    for (family, series, label) in [
        ("iptables_default", &policies, "policy"),
        ("iptables_rule", &rules, "rule"),
    ] {
        for (kind, pick) in [("bytes", 1), ("packets", 0)] {
            exposition.push_str(&format!(
                "# HELP {family}_{kind} iptables_exporter: ...\n# TYPE {family}_{kind} counter\n"
            ));
            for ((table, chain, value), (p, b)) in series {
                exposition.push_str(&format!(
                    "{family}_{kind}_total{{chain=\"{}\",{label}=\"{}\",table=\"{}\"}} {}\n",
                    escape(chain),
                    escape(value),
                    escape(table),
                    if pick == 0 { p } else { b }
                ));
            }
        }
    }
    exposition.push_str("# EOF\n");
    Ok(exposition)
}

/// An OpenMetrics label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn ratio(faster: f64) -> String {
    if faster >= 1.0 {
        format!("{faster:.1}x faster")
    } else {
        format!("{:.1}x slower", 1.0 / faster)
    }
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// `runs` timed calls of `f` after one untimed; the durations, and what
/// each call returned.
fn time<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Vec<Duration>, Vec<T>)> {
    f()?;
    let (mut times, mut outputs) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        measure::check_interrupted()?;
        let start = Instant::now();
        outputs.push(f()?);
        times.push(start.elapsed());
    }
    Ok((times, outputs))
}

/// `runs` rounds of: `change(i)` then a timed scrape, `change(i + runs)`
/// then a timed bare dump. The scrapes' times and the floor's.
fn after_changes(
    runs: usize,
    mut change: impl FnMut(usize) -> Result<()>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut agent, mut floor) = (Vec::new(), Vec::new());
    for i in 0..runs {
        measure::check_interrupted()?;
        change(i)?;
        let start = Instant::now();
        scrape_here()?;
        agent.push(start.elapsed());
        change(i + runs)?;
        let start = Instant::now();
        netlink_floor::read()?;
        floor.push(start.elapsed());
    }
    Ok((agent, floor))
}

/// The process's user and system CPU time so far, all its threads (those
/// that ended included), in clock ticks of 10 ms turned into seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces): utime is the 12th.
    let after = stat.rsplit_once(')').context("no command in stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
    };
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Runs the firewall section; returns its Markdown report.
pub(super) fn run(agent: &Path, quick: bool, out_dir: &Path) -> Result<String> {
    let ns = Netns::named(NAMESPACE)?;
    let dir = out_dir.join("firewall-agent");
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("config.yaml"),
        format!("server:\n  port: 19910\nfirewall:\n  listen: \"127.0.0.1:{DROP_IN_PORT}\"\n"),
    )?;
    let daemon = Daemon::try_spawn(&agent.display().to_string(), &ns, dir, &[])
        .context("starting the agent")?;
    let pid = daemon.child.id();
    let start = Instant::now();
    while scrape(&ns).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the agent's drop-in listener never answered");
        }
        thread::sleep(Duration::from_millis(100));
    }

    sh(ns.command("nft").args(["-f", "-"]), SET_TABLE)?;
    let mut table = String::from(
        "| rules | floor: bare netlink dump (median) | agent scrape, unchanged ruleset | ÷ floor | of which the agent's read | agent CPU per unchanged scrape (mean) | ÷ floor | agent scrape after one rule changed | ÷ floor after the same change | agent scrape after set elements changed | ÷ floor after the same change | iptables-save -c + parse + encode | agent (unchanged) vs iptables-save | agent RSS after 10 / after all scrapes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let sizes: &[usize] = if quick {
        &[100, 10_000]
    } else {
        &[100, 10_000, 100_000]
    };
    for &n in sizes {
        eprintln!("xtask: bench: firewall counters at {n} rules");
        sh(ns.command("iptables-restore").arg("-c"), &ruleset(n))?;
        let runs = match (quick, n) {
            (true, _) => 5,
            (false, 100) => 50,
            (false, 10_000) => 20,
            (false, _) => 7,
        };
        // The floor and the agent alternate on one thread inside the
        // namespace, so both see the same load of a shared machine.
        // The agent's CPU time over these scrapes too: its read dumps
        // chains on both cores, so its wall time may go below the
        // single-threaded floor while its CPU time cannot.
        let (floor_times, agent_times, bodies, agent_cpu) = ns.run_inside(move || {
            scrape_here()?;
            netlink_floor::read()?;
            let (mut floor, mut agent, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
            let cpu_before = cpu_seconds(pid)?;
            for _ in 0..runs {
                measure::check_interrupted()?;
                let start = Instant::now();
                netlink_floor::read()?;
                floor.push(start.elapsed());
                let start = Instant::now();
                bodies.push(scrape_here()?);
                agent.push(start.elapsed());
            }
            let cpu = (cpu_seconds(pid)? - cpu_before) / runs as f64;
            Ok((floor, agent, bodies, cpu))
        })?;
        let reads = bodies
            .iter()
            .map(|b| read_seconds(b))
            .collect::<Result<Vec<f64>>>()?;
        // One rule replaced (other expressions, the same handle): the next
        // scrape parses and renders that rule only. The floor is timed
        // right after the same kind of change too: the first dump after a
        // commit is slower for any reader (caches the commit evicted).
        let (changed_times, changed_floor) = ns.run_inside(move || {
            after_changes(runs.min(10), |i| {
                sh(
                    Command::new("iptables")
                        .args(["-R", "R0", "1", "-p", "tcp", "-m", "tcp", "--dport"])
                        .arg((2000 + i).to_string())
                        .args(["-j", "ACCEPT"]),
                    "",
                )
                .map(drop)
            })
        })?;
        // Only set elements (fail2ban's bans): the generation moves, no
        // rule changes.
        let (set_times, set_floor) = ns.run_inside(move || {
            after_changes(runs.min(10), |i| {
                sh(
                    Command::new("nft").arg("-f").arg("-"),
                    &format!(
                        "add element inet sa_bench_sets banned {{ 198.18.{}.{} }}\n",
                        n.ilog10(),
                        i + 1
                    ),
                )
                .map(drop)
            })
        })?;
        let (save_times, _) = ns.run_inside(move || time(runs, iptables_save_here))?;
        let floor_time = median(floor_times).as_secs_f64();
        let (agent_time, save_time) = (median(agent_times), median(save_times));
        let (changed_time, set_time) = (
            median(changed_times).as_secs_f64(),
            median(set_times).as_secs_f64(),
        );
        let (changed_floor, set_floor) = (
            median(changed_floor).as_secs_f64(),
            median(set_floor).as_secs_f64(),
        );
        // Memory across many scrapes: it must not grow with their number.
        let repeat = if quick || n > 10_000 { 20 } else { 200 };
        let rss = ns.run_inside(move || {
            for _ in 0..10 {
                scrape_here()?;
            }
            let early = rss_kib(pid)?;
            for _ in 0..repeat {
                measure::check_interrupted()?;
                scrape_here()?;
            }
            Ok((early, rss_kib(pid)?))
        })?;
        let ms = |s: f64| format!("{:.2} ms", s * 1e3);
        let over = |s: f64, floor: f64| format!("{:.2}x", s / floor);
        table.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} (floor {}) | {} | {} (floor {}) | {} | {} | {} | {} KiB / {} KiB ({} scrapes) |\n",
            ms(floor_time),
            ms(agent_time.as_secs_f64()),
            over(agent_time.as_secs_f64(), floor_time),
            ms(median(reads)),
            ms(agent_cpu),
            over(agent_cpu, floor_time),
            ms(changed_time),
            ms(changed_floor),
            over(changed_time, changed_floor),
            ms(set_time),
            ms(set_floor),
            over(set_time, set_floor),
            ms(save_time.as_secs_f64()),
            ratio(save_time.as_secs_f64() / agent_time.as_secs_f64()),
            rss.0,
            rss.1,
            2 + runs + 2 * runs.min(10) + 10 + repeat,
        ));
    }
    drop(daemon);
    drop(ns);
    Ok(table)
}
