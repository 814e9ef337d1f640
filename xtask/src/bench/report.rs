//! One table row per run, and the Markdown table of them all.

use std::{fmt::Write as _, time::Duration};

use super::tools::Found;

/// What a finished run measured.
pub(super) struct Metrics {
    pub wall: Duration,
    pub cpu: Duration,
    /// Ports x hosts: every tool is asked for one probe per pair
    /// (retransmissions are not counted).
    pub probes: u64,
    pub found: usize,
    /// Found pairs that are really open.
    pub correct: usize,
    pub truth: usize,
}

impl Metrics {
    pub(super) fn new(
        wall: Duration,
        cpu: Duration,
        probes: u64,
        found: &Found,
        truth: &Found,
    ) -> Self {
        Self {
            wall,
            cpu,
            probes,
            found: found.len(),
            correct: found.intersection(truth).count(),
            truth: truth.len(),
        }
    }
}

pub(super) struct Row {
    pub workload: &'static str,
    pub tool: &'static str,
    pub rate: String,
    /// The metrics, or why the run failed.
    pub outcome: Result<Metrics, String>,
}

const HEADER: [&str; 10] = [
    "workload",
    "tool",
    "requested rate (pps)",
    "wall s",
    "achieved kpps",
    "of ceiling",
    "CPU s",
    "CPU s / Mprobe",
    "recall",
    "precision",
];

/// The table; `ceiling` is the testbed's ceiling in probes per second
/// (see `ceiling`), which every achieved rate is also given as a share of.
pub(super) fn markdown(rows: &[Row], ceiling: Option<f64>) -> String {
    let mut out = String::new();
    if let Some(c) = ceiling {
        let _ = writeln!(
            out,
            "Testbed ceiling (prebuilt SYN frames from every core, answers counted): {:.0} kpps\n",
            c / 1e3
        );
    }
    line(&mut out, HEADER.map(String::from));
    line(&mut out, HEADER.map(|_| "---".to_owned()));
    for row in rows {
        line(&mut out, cells(row, ceiling));
    }
    out.push_str(&ratios(rows));
    out
}

/// Per workload, the agent's fastest run that found every open port
/// against masscan's fastest run, as ratios (below 1: the agent is
/// better).
fn ratios(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = rows.iter().map(|r| r.workload).collect();
    workloads.dedup();
    for w in workloads {
        let fastest = |tool: &str, complete: bool| {
            rows.iter()
                .filter(|r| r.workload == w && r.tool == tool)
                .filter_map(|r| r.outcome.as_ref().ok().map(|m| (r, m)))
                .filter(|(_, m)| !complete || m.correct == m.truth)
                .min_by(|a, b| a.1.wall.cmp(&b.1.wall))
        };
        let (Some((ar, a)), Some((mr, m))) =
            (fastest("scanner-agent", true), fastest("masscan", false))
        else {
            continue;
        };
        let per_mprobe = |m: &Metrics| m.cpu.as_secs_f64() / (m.probes as f64 / 1e6);
        let _ = writeln!(
            out,
            "\n{w}: scanner-agent at {} (recall 1.0) against masscan's fastest run at {} (recall {:.4}): wall time {:.2}x, CPU per million probes {:.2}x.",
            ar.rate,
            mr.rate,
            m.correct as f64 / m.truth.max(1) as f64,
            a.wall.as_secs_f64() / m.wall.as_secs_f64(),
            per_mprobe(a) / per_mprobe(m),
        );
    }
    out
}

fn line(out: &mut String, cells: [String; 10]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn cells(row: &Row, ceiling: Option<f64>) -> [String; 10] {
    let (workload, tool, rate) = (
        row.workload.to_owned(),
        row.tool.to_owned(),
        row.rate.clone(),
    );
    let m = match &row.outcome {
        Ok(m) => m,
        Err(reason) => {
            // Keep the table intact whatever the tool printed.
            let reason: String = reason.replace(['|', '\n'], " ").chars().take(100).collect();
            let dash = || "-".to_owned();
            return [
                workload,
                tool,
                rate,
                format!("failed: {reason}"),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
            ];
        }
    };
    let wall = m.wall.as_secs_f64();
    let cpu = m.cpu.as_secs_f64();
    let achieved = m.probes as f64 / wall;
    [
        workload,
        tool,
        rate,
        format!("{wall:.1}"),
        format!("{:.0}", achieved / 1e3),
        ceiling.map_or_else(
            || "-".to_owned(),
            |c| format!("{:.0}%", 100.0 * achieved / c),
        ),
        format!("{cpu:.2}"),
        format!("{:.2}", cpu / (m.probes as f64 / 1e6)),
        ratio(m.correct, m.truth),
        ratio(m.correct, m.found),
    ]
}

/// `0.9996 (2389/2390)`; `-` when nothing was there to count.
fn ratio(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.4} ({part}/{whole})", part as f64 / whole as f64)
}
