//! The firewall counters' scrape latency: the agent's netlink reader (a
//! running `scanner-agent run`, scraped over HTTP on its drop-in listener:
//! read, encode, transfer) against what iptables_exporter did per scrape
//! (run `iptables-save -c`, parse it, encode the same families as
//! OpenMetrics text; not served, so that side skips the HTTP transfer), at
//! 100 and 10,000 iptables-nft rules in a namespace of its own; and the
//! agent's resident memory across repeated scrapes. The ruleset is loaded
//! once per size, so every timed scrape but the first after loading finds
//! an unchanged ruleset generation, as scrapes of a live host mostly do.

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

use super::measure;

const NAMESPACE: &str = "sa-bench-fw";
const DROP_IN_PORT: u16 = 19911;

/// A rule set of `n` rules of the kinds operators write, in iptables-restore
/// form. Loopback is accepted first, as real rule sets do: the agent's side
/// of the bench transfers its answer over loopback, and filtering that
/// through thousands of rules would charge the agent for the firewall's
/// packet path, which the iptables-save side never takes.
fn ruleset(n: usize) -> String {
    let mut text = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:SVC - [0:0]\n-A INPUT -i lo -j ACCEPT\n-A OUTPUT -o lo -j ACCEPT\n",
    );
    for i in 2..n {
        let (a, b) = (i / 250 % 250, i % 250 + 1);
        let port = 1024 + i % 60_000;
        let rule = match i % 5 {
            0 => format!("-A INPUT -s 198.18.{a}.{b}/32 -p tcp -m tcp --dport {port} -j ACCEPT"),
            1 => format!(
                "-A INPUT -p udp -m udp --sport {port} -m comment --comment \"rule {i}\" -j DROP"
            ),
            2 => format!(
                "-A SVC -m conntrack --ctstate NEW -p tcp -m multiport --dports {port},{} -j ACCEPT",
                port + 1
            ),
            3 => format!(
                "-A OUTPUT -d 198.19.{a}.{b}/32 -m limit --limit {}/min -j LOG --log-prefix \"r{i} \"",
                i % 50 + 1
            ),
            _ => format!("-A INPUT -i lo -m mark --mark 0x{i:x}/0xffff -j SVC"),
        };
        text.push_str(&rule);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// An HTTP GET of /metrics on loopback (from a thread inside the
/// namespace); the body.
fn scrape_here() -> Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, DROP_IN_PORT))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
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

    let mut table = String::from(
        "| rules | agent scrape (median) | of which the agent's netlink read | agent scrape after a ruleset change | iptables-save -c + parse + encode (median) | ratio | agent RSS after 10 / after all scrapes |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for n in [100usize, 10_000] {
        eprintln!("xtask: bench: firewall counters at {n} rules");
        sh(ns.command("iptables-restore").arg("-c"), &ruleset(n))?;
        let runs = match (quick, n) {
            (true, _) => 5,
            (false, 100) => 50,
            (false, _) => 20,
        };
        // Each side's calls all run on one thread inside the namespace.
        let (agent_times, bodies) = ns.run_inside(move || time(runs, scrape_here))?;
        let reads = bodies
            .iter()
            .map(|b| read_seconds(b))
            .collect::<Result<Vec<f64>>>()?;
        // A commit that leaves the rules as they were still moves the
        // ruleset generation: the next scrape reads and renders everything.
        let (changed_times, _) = ns.run_inside(move || {
            let mut times = Vec::new();
            for _ in 0..runs.min(10) {
                sh(
                    Command::new("nft").arg("-f").arg("-"),
                    "add table inet sa_bench_bump\ndelete table inet sa_bench_bump\n",
                )?;
                let start = Instant::now();
                scrape_here()?;
                times.push(start.elapsed());
            }
            Ok((times, ()))
        })?;
        let (save_times, _) = ns.run_inside(move || time(runs, iptables_save_here))?;
        let (agent_time, save_time) = (median(agent_times), median(save_times));
        // Memory across many scrapes: it must not grow with their number.
        let repeat = if quick { 20 } else { 200 };
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
        table.push_str(&format!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} KiB / {} KiB ({} scrapes) |\n",
            agent_time.as_secs_f64() * 1e3,
            median(reads) * 1e3,
            median(changed_times).as_secs_f64() * 1e3,
            save_time.as_secs_f64() * 1e3,
            ratio(save_time.as_secs_f64() / agent_time.as_secs_f64()),
            rss.0,
            rss.1,
            1 + runs + runs.min(10) + 10 + repeat,
        ));
    }
    drop(daemon);
    drop(ns);
    Ok(table)
}
