//! The node_exporter passthrough under load: `wrk` with 100 connections
//! against the agent's route and, for comparison, against node_exporter
//! directly, on a namespace pair of its own (198.18.0.1 -> 198.18.0.2, no
//! default route). The difference of mean latencies is the passthrough's
//! overhead per request.

use std::{fs, net::Ipv4Addr, path::Path, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use testbed::{Lab, Netns, NodeExporter, daemon::Daemon};

use crate::toolchain;

const AGENT_PORT: u16 = 19950;

pub(super) struct WrkResult {
    pub what: &'static str,
    pub requests_per_s: f64,
    pub mean_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Runs the comparison; returns a Markdown table.
pub(super) fn run(agent: &Path, seconds: u32, out_dir: &Path) -> Result<String> {
    let lab = Lab::build(&[Ipv4Addr::new(198, 18, 0, 2)], 1500)?;
    let _exporter = NodeExporter::launch(
        &lab.target,
        &toolchain::ensure_unpacked()?.join("prometheus-node-exporter"),
        "198.18.0.2:9100".parse()?,
        // Its default of 40 concurrent scrapes would answer 503 to the rest.
        &["--web.max-requests=0"],
    )?;
    let dir = out_dir.join("passthrough");
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("config.yaml"),
        format!(
            "server:\n  port: {AGENT_PORT}\nauth:\n  bearer_tokens: [bench]\ngeneral:\n  sitename: BENCH\n  \
             hostname: bench-host\n  node_exporter: \"198.18.0.2:9100\"\n  node_exporter_passthrough: true\n"
        ),
    )?;
    let daemon = Daemon::try_spawn(&agent.to_string_lossy(), &lab.scanner, dir, &[])
        .context("scanner-agent run")?;
    let route = format!(
        "http://127.0.0.1:{AGENT_PORT}/api/BENCH/monitoring/prometheus/passthrough/bench-host"
    );
    let direct = "http://198.18.0.2:9100/metrics";
    // Both answer before the load starts.
    for url in [route.as_str(), direct] {
        let up = (0..100).any(|_| {
            let ok = lab
                .scanner
                .command("curl")
                .args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-H",
                    "Authorization: Bearer bench",
                    url,
                ])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        if !up {
            bail!("{url} did not answer");
        }
    }
    let results = [
        wrk(&lab.scanner, "node_exporter directly", direct, seconds)?,
        wrk(&lab.scanner, "through the passthrough", &route, seconds)?,
    ];
    // The agent's log stays in the run's directory.
    daemon.kill();
    Ok(markdown(&results))
}

fn wrk(scanner: &Netns, what: &'static str, url: &str, seconds: u32) -> Result<WrkResult> {
    eprintln!("xtask: bench: wrk, 100 connections, {seconds} s: {what}");
    let out = scanner
        .command("wrk")
        .args(["-t2", "-c100", &format!("-d{seconds}s"), "--latency"])
        .args(["-H", "Authorization: Bearer bench", url])
        .output()
        .context("wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}");
    }
    parse(what, &text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

/// wrk's "10.5ms" / "850.00us" / "1.2s" as milliseconds.
fn ms(v: &str) -> Option<f64> {
    let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn parse(what: &'static str, text: &str) -> Option<WrkResult> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(str::trim))
    };
    let mean_ms = ms(field("Latency")?.split_whitespace().next()?)?;
    let p99_ms = ms(field("99%")?)?;
    let requests_per_s = field("Requests/sec:")?.parse().ok()?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").map_or(Some(0), |v| v.parse().ok())?;
    let socket: u64 = field("Socket errors:").map_or(0, |v| {
        v.split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    });
    Some(WrkResult {
        what,
        requests_per_s,
        mean_ms,
        p99_ms,
        errors: non_2xx + socket,
    })
}

fn markdown(rows: &[WrkResult; 2]) -> String {
    let mut out = String::from(
        "| scrape (wrk, 100 connections) | requests/s | mean latency ms | p99 ms | errors |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {} |\n",
            r.what, r.requests_per_s, r.mean_ms, r.p99_ms, r.errors
        ));
    }
    let [direct, route] = rows;
    // Under a closed loop of 100 connections, per-request service time is
    // 1/throughput; its difference is what the passthrough adds.
    let overhead_ms = 1000.0 / route.requests_per_s - 1000.0 / direct.requests_per_s;
    out.push_str(&format!(
        "\nPassthrough overhead: {overhead_ms:.3} ms of service time per request (1/throughput), {:.2} ms of mean latency under 100 connections.\n",
        route.mean_ms - direct.mean_ms
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 5s test @ http://x\n  2 threads and 100 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency    12.50ms    3.00ms  40.00ms   80.00%\n    Req/Sec     4.00k   200.00     5.00k    70.00%\n  Latency Distribution\n     50%   12.00ms\n     75%   14.00ms\n     90%   16.00ms\n     99%  850.00us\n  40000 requests in 5.00s, 1.00GB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:   8000.00\nTransfer/sec:    200.00MB\n";
        let r = parse("x", text).unwrap();
        assert_eq!(
            (r.mean_ms, r.p99_ms, r.requests_per_s, r.errors),
            (12.5, 0.85, 8000.0, 7)
        );
    }
}
