//! The firewall counters' scrape latency: the agent's netlink reader (a
//! running `scanner-agent run`, scraped on its drop-in listener) against
//! what iptables_exporter did per scrape (run `iptables-save -c` and parse
//! it), at 100 and 10,000 iptables-nft rules in a namespace of its own; and
//! the agent's resident memory across repeated scrapes.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    measure,
    testbed::{Netns, sh},
};

const NAMESPACE: &str = "sa-bench-fw";
const DROP_IN_PORT: u16 = 19911;

/// A rule set of `n` rules of the kinds operators write, in iptables-restore form.
fn ruleset(n: usize) -> String {
    let mut text = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:SVC - [0:0]\n",
    );
    for i in 0..n {
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

/// An HTTP GET of /metrics on loopback, from inside the namespace; the body size.
fn scrape(ns: &Netns) -> Result<usize> {
    ns.run_inside(|| {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, DROP_IN_PORT))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)?;
        if !body.starts_with(b"HTTP/1.0 200") && !body.starts_with(b"HTTP/1.1 200") {
            bail!(
                "scrape failed: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        Ok(body.len())
    })
}

/// What iptables_exporter did per scrape: run `iptables-save -c` and parse it.
fn iptables_save(ns: &Netns) -> Result<usize> {
    ns.run_inside(|| {
        // A child of a thread inside the namespace starts inside it too.
        let out = Command::new("iptables-save").arg("-c").output()?;
        if !out.status.success() {
            bail!("iptables-save failed");
        }
        let text = String::from_utf8(out.stdout)?;
        // The series iptables_exporter built: (chain, rule, packets, bytes).
        let mut series = Vec::new();
        for line in text.lines().filter(|l| l.starts_with('[')) {
            let (counters, rest) = line.split_once(' ').context("counters")?;
            let (p, b) = counters
                .trim_matches(|c| c == '[' || c == ']')
                .split_once(':')
                .context("p:b")?;
            let rest = rest.strip_prefix("-A ").context("-A")?;
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            series.push((
                chain.to_owned(),
                rule.to_owned(),
                p.parse::<u64>()?,
                b.parse::<u64>()?,
            ));
        }
        Ok(series.len())
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut() -> Result<usize>) -> Result<Duration> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        measure::check_interrupted()?;
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    Ok(median(times))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .context("no VmRSS")
}

struct Daemon(Child, std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = fs::remove_dir_all(&self.1);
    }
}

/// Runs the firewall section; returns its Markdown report.
pub fn run(agent: &Path, quick: bool, out_dir: &Path) -> Result<String> {
    let ns = Netns::create(NAMESPACE)?;
    let dir = out_dir.join("firewall-agent");
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("config.yaml"),
        format!("server:\n  port: 19910\nfirewall:\n  listen: \"127.0.0.1:{DROP_IN_PORT}\"\n"),
    )?;
    let child = ns
        .command(&agent.display().to_string())
        .args(["run", "--config"])
        .arg(dir.join("config.yaml"))
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let pid = child.id();
    let daemon = Daemon(child, dir);
    let start = Instant::now();
    while scrape(&ns).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the agent's drop-in listener never answered");
        }
        thread::sleep(Duration::from_millis(100));
    }

    let mut table = String::from(
        "| rules | agent scrape (median) | iptables-save -c + parse (median) | ratio | agent RSS after 10 / after all scrapes |\n| --- | --- | --- | --- | --- |\n",
    );
    for n in [100usize, 10_000] {
        eprintln!("xtask: bench: firewall counters at {n} rules");
        sh(ns.command("iptables-restore").arg("-c"), &ruleset(n))?;
        let runs = match (quick, n) {
            (true, _) => 5,
            (false, 100) => 50,
            (false, _) => 20,
        };
        let agent_time = time(runs, || scrape(&ns))?;
        let save_time = time(runs, || iptables_save(&ns))?;
        // Memory across many scrapes: it must not grow with their number.
        for _ in 0..10 {
            scrape(&ns)?;
        }
        let rss_early = rss_kib(pid)?;
        let repeat = if quick { 20 } else { 200 };
        for _ in 0..repeat {
            measure::check_interrupted()?;
            scrape(&ns)?;
        }
        let rss_late = rss_kib(pid)?;
        table.push_str(&format!(
            "| {n} | {:.2} ms | {:.2} ms | {:.1}x faster | {rss_early} KiB / {rss_late} KiB ({} scrapes) |\n",
            agent_time.as_secs_f64() * 1e3,
            save_time.as_secs_f64() * 1e3,
            save_time.as_secs_f64() / agent_time.as_secs_f64(),
            repeat + 10 + runs + 1,
        ));
    }
    drop(daemon);
    drop(ns);
    Ok(table)
}
