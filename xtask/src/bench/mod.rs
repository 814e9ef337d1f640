//! `cargo xtask bench`: scanner-agent against masscan and nmap, all TCP
//! ports of one host and of 254 hosts, on a namespace testbed whose open
//! ports are known (see `testbed`). Prints a Markdown table to stdout and
//! writes it to target/bench/results.md; progress goes to stderr, and each
//! run's output stays in target/bench/runs/. A second section times the
//! firewall counters' scrapes against `iptables-save -c` (see `firewall`).

mod ceiling;
mod firewall;
mod measure;
mod netlink_floor;
mod passthrough;
mod report;
mod testbed;
mod tools;

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use self::{
    report::{Metrics, Row},
    testbed::{FIRST_HOST, Testbed},
    tools::{NmapProfile, RunFiles, Scanner},
};
use crate::{build::build, exec::workspace_root, toolchain};

/// Every workload scans all ports of its hosts.
const PORTS: u64 = 65_535;

struct Workload {
    name: &'static str,
    /// File-name-safe label.
    id: &'static str,
    /// Last octets of the first and last target host (198.19.0.x).
    hosts: (u8, u8),
    /// Requested rates (probes per second); `--quick` takes the first of each.
    agent_rates: &'static [u64],
    masscan_rates: &'static [u64],
    nmap: &'static [NmapProfile],
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "W1: 1 host x 65535 ports",
        id: "w1",
        hosts: (FIRST_HOST, FIRST_HOST),
        agent_rates: &[200_000, 1_000_000],
        masscan_rates: &[100_000],
        nmap: &[NmapProfile::MinRate100k, NmapProfile::Exporter],
    },
    Workload {
        name: "W2: 254 hosts x 65535 ports",
        id: "w2",
        hosts: (FIRST_HOST, testbed::LAST_HOST),
        agent_rates: &[300_000, 1_000_000, 2_000_000],
        masscan_rates: &[100_000, 300_000, 1_000_000],
        // nmap would take hours here.
        nmap: &[],
    },
];

impl Workload {
    fn probes(&self) -> u64 {
        (u64::from(self.hosts.1) - u64::from(self.hosts.0) + 1) * PORTS
    }

    fn scanners(&self, quick: bool, tools: &[Tool]) -> Vec<Scanner> {
        let take = |tool| match (tools.is_empty() || tools.contains(&tool), quick) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => usize::MAX,
        };
        let agent = self.agent_rates.iter().map(|&rate| Scanner::Agent { rate });
        let masscan = self
            .masscan_rates
            .iter()
            .map(|&rate| Scanner::Masscan { rate });
        let nmap = self.nmap.iter().map(|&p| Scanner::Nmap(p));
        agent
            .take(take(Tool::Agent))
            .chain(masscan.take(take(Tool::Masscan)))
            .chain(nmap.take(take(Tool::Nmap)))
            .collect()
    }
}

/// A tool of the scan comparison, for `--tool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Tool {
    Agent,
    Masscan,
    Nmap,
}

#[derive(Args)]
pub(crate) struct Options {
    /// Only the one-host workload, one rate per tool: a smoke check.
    #[arg(long)]
    quick: bool,
    /// Benchmark this scanner-agent binary instead of building one.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Only the firewall counters' scrape latency against iptables-save.
    #[arg(long, conflicts_with = "passthrough_only")]
    firewall: bool,
    /// Only the node_exporter passthrough comparison.
    #[arg(long)]
    passthrough_only: bool,
    /// Only these tools' scans (repeatable; the ceiling is still measured,
    /// the passthrough and firewall parts are skipped): a developer's
    /// quick look, not a comparison.
    #[arg(long, value_enum)]
    tool: Vec<Tool>,
    /// Only this workload's scans (`w1` or `w2`; the other parts are
    /// skipped as with `--tool`).
    #[arg(long, value_parser = ["w1", "w2"])]
    workload: Option<String>,
}

pub(crate) fn run_task(o: Options) -> Result<()> {
    let only = match (o.firewall, o.passthrough_only) {
        (true, _) => Only::Firewall,
        (_, true) => Only::Passthrough,
        _ if !o.tool.is_empty() || o.workload.is_some() => Only::Scans {
            tools: o.tool,
            workload: o.workload,
        },
        _ => Only::Everything,
    };
    run(o.quick, o.agent, only)
}

/// Which parts of the bench to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Only {
    Everything,
    Firewall,
    Passthrough,
    /// Some scans only: these tools (all when empty), this workload.
    Scans {
        tools: Vec<Tool>,
        workload: Option<String>,
    },
}

/// Runs the bench; `agent` is a prebuilt binary to use instead of a fresh
/// release build (e.g. to compare with an older version).
pub(crate) fn run(quick: bool, agent: Option<PathBuf>, only: Only) -> Result<()> {
    if !toolchain::is_root() {
        bail!("the bench creates network namespaces and runs raw-socket scanners: run it as root");
    }
    measure::catch_interrupts()?;
    toolchain::ensure_packages(toolchain::BENCH_PACKAGES)?;
    let agent = match agent {
        Some(path) => fs::canonicalize(&path)
            .with_context(|| format!("no scanner-agent at {}", path.display()))?,
        None => build(true)?,
    };
    let out_dir = workspace_root().join("target").join("bench");
    fs::create_dir_all(out_dir.join("runs"))?;

    let started = Instant::now();
    if only == Only::Firewall {
        let table = firewall::run(&agent, quick, &out_dir)?;
        print!("{table}");
        fs::write(out_dir.join("firewall.md"), &table)?;
        return Ok(());
    }
    let (tools, only_workload) = match &only {
        Only::Scans { tools, workload } => (&tools[..], workload.as_deref()),
        _ => (&[][..], None),
    };
    let workloads: Vec<&Workload> = if only == Only::Passthrough {
        Vec::new()
    } else if let Some(id) = only_workload {
        WORKLOADS.iter().filter(|w| w.id == id).collect()
    } else if quick {
        WORKLOADS[..1].iter().collect()
    } else {
        WORKLOADS.iter().collect()
    };
    let mut ceiling_pps = None;
    let rows = if workloads.is_empty() {
        Vec::new()
    } else {
        eprintln!("xtask: bench: setting up the namespace testbed");
        let testbed = Testbed::up()?;
        eprintln!("xtask: bench: the testbed's ceiling (prebuilt SYN frames, every core, 3 s)");
        let c = ceiling::measure(&testbed, Duration::from_secs(3))?;
        eprintln!(
            "xtask: bench:   {:.0} kpps sent, {:.0} kpps answered",
            c.sent_pps / 1e3,
            c.answered_pps / 1e3
        );
        ceiling_pps = Some(c.answered_pps);
        thread::sleep(Duration::from_secs(1));
        let mut rows = Vec::new();
        for workload in workloads {
            for scanner in workload.scanners(quick, tools) {
                measure::check_interrupted()?;
                rows.push(bench_one(&testbed, &agent, workload, scanner, &out_dir)?);
            }
        }
        rows
        // The testbed is torn down here (and on every early return above).
    };

    let mut table = if rows.is_empty() {
        String::new()
    } else {
        report::markdown(&rows, ceiling_pps)
    };
    if matches!(only, Only::Scans { .. }) {
        print!("{table}");
        fs::write(out_dir.join("scans.md"), &table)?;
        return Ok(());
    }
    eprintln!("xtask: bench: node_exporter passthrough");
    match passthrough::run(&agent, if quick { 5 } else { 15 }, &out_dir) {
        Ok(t) => table.push_str(&format!("\n{t}")),
        Err(e) => table.push_str(&format!("\nPassthrough bench failed: {e:#}\n")),
    }
    print!("{table}");
    fs::write(out_dir.join("results.md"), &table)?;
    let firewall = firewall::run(&agent, quick, &out_dir)?;
    print!("\n{firewall}");
    fs::write(out_dir.join("firewall.md"), &firewall)?;
    eprintln!(
        "xtask: bench: done in {:.0} s; table written to {}",
        started.elapsed().as_secs_f64(),
        out_dir.join("results.md").display()
    );
    Ok(())
}

/// One scan, as a table row; a scanner that fails gives a "failed" row,
/// only Ctrl-C ends the bench.
fn bench_one(
    testbed: &Testbed,
    agent: &Path,
    workload: &Workload,
    scanner: Scanner,
    out_dir: &Path,
) -> Result<Row> {
    let tag = format!("{}-{}", workload.id, scanner.slug());
    eprintln!(
        "xtask: bench: {} with {} at {}",
        workload.name,
        scanner.name(),
        scanner.requested_rate()
    );
    let files = RunFiles {
        results: out_dir.join("runs").join(format!("{tag}.out")),
        log: out_dir.join("runs").join(format!("{tag}.log")),
    };
    let before = testbed.drops()?;
    let outcome = scan(testbed, agent, workload, scanner, &files);
    measure::check_interrupted()?;
    let after = testbed.drops()?;
    let dropped: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    match &outcome {
        Ok(m) => eprintln!(
            "xtask: bench:   {:.1} s, {} of {} open ports found, {} wrong; {} half-open on the target; veth drops (scanner rx/tx, target rx/tx) {dropped:?}",
            m.wall.as_secs_f64(),
            m.correct,
            m.truth,
            m.found - m.correct,
            testbed.half_open()?
        ),
        Err(e) => eprintln!("xtask: bench:   failed: {e}"),
    }
    // Lets the target's queues drain so runs do not disturb each other.
    thread::sleep(Duration::from_secs(1));
    Ok(Row {
        workload: workload.name,
        tool: scanner.name(),
        rate: scanner.requested_rate(),
        outcome: outcome.map_err(|e| format!("{e:#}")),
    })
}

fn scan(
    testbed: &Testbed,
    agent: &Path,
    workload: &Workload,
    scanner: Scanner,
    files: &RunFiles,
) -> Result<Metrics> {
    let probes = workload.probes();
    // Generous: a scanner at a third of its requested rate (or of 100 kpps)
    // still finishes and shows up as slow; only a hung one is cut off.
    // (masscan asked for 100 kpps keeps about 50 kpps on two cores.)
    let timeout = Duration::from_secs(3 * probes / scanner.nominal_rate().min(100_000) + 120);
    let mut c = scanner.command(testbed, agent, workload.hosts, files)?;
    let run = measure::run(&mut c, timeout)?;
    if !run.status.success() {
        bail!("{}: {}", run.status, last_error(&files.log));
    }
    let found = scanner.parse(&fs::read_to_string(&files.results)?)?;
    let truth = testbed::truth(workload.hosts.0, workload.hosts.1);
    Ok(Metrics::new(run.wall, run.cpu, probes, &found, &truth))
}

/// The line of a failed tool's log that most likely says why: the last
/// one mentioning an error, else the last one (masscan's progress lines
/// end in `\r`, so those count as line ends too).
fn last_error(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mentions_error = |l: &&&str| {
        let l = l.to_lowercase();
        l.contains("error") || l.contains("fail")
    };
    lines
        .iter()
        .rev()
        .find(mentions_error)
        .or(lines.last())
        .map_or_else(|| "no output".to_owned(), |l| (*l).to_owned())
}
