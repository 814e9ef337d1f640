//! The scanners compared: how each is started on the testbed and how its
//! results are read back.

use std::{
    collections::HashSet,
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::testbed::{SCANNER_ADDR, SCANNER_IF, Testbed, target_addr};

/// Open (address, port) pairs a scanner reported.
pub(super) type Found = HashSet<(Ipv4Addr, u16)>;

#[derive(Clone, Copy)]
pub(super) enum NmapProfile {
    /// As fast as nmap reasonably goes.
    MinRate100k,
    /// The tuning the OpenPort exporter runs nmap with in production.
    Exporter,
}

impl NmapProfile {
    fn args(self) -> &'static [&'static str] {
        match self {
            Self::MinRate100k => &["--min-rate", "100000"],
            Self::Exporter => &[
                "--min-rate",
                "1500",
                "--max-rate",
                "2000",
                "--min-parallelism",
                "1200",
                "--max-retries",
                "4",
                "--host-timeout",
                "180s",
                "--initial-rtt-timeout",
                "100ms",
                "--max-rtt-timeout",
                "1500ms",
                "--min-rtt-timeout",
                "50ms",
            ],
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Scanner {
    Agent { rate: u64 },
    Masscan { rate: u64 },
    Nmap(NmapProfile),
}

/// Where one run leaves its files (kept under target/bench/runs/ to look at).
pub(super) struct RunFiles {
    /// The scanner's result output.
    pub results: PathBuf,
    /// Everything else it printed.
    pub log: PathBuf,
}

impl Scanner {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Agent { .. } => "scanner-agent",
            Self::Masscan { .. } => "masscan",
            Self::Nmap(_) => "nmap",
        }
    }

    /// A file-name-safe label, e.g. `masscan-100000`.
    pub(super) fn slug(self) -> String {
        match self {
            Self::Agent { rate } => format!("agent-{rate}"),
            Self::Masscan { rate } => format!("masscan-{rate}"),
            Self::Nmap(NmapProfile::MinRate100k) => "nmap-min-rate".into(),
            Self::Nmap(NmapProfile::Exporter) => "nmap-exporter".into(),
        }
    }

    pub(super) fn requested_rate(self) -> String {
        match self {
            Self::Agent { rate } | Self::Masscan { rate } => rate.to_string(),
            Self::Nmap(NmapProfile::MinRate100k) => "min 100000".into(),
            Self::Nmap(NmapProfile::Exporter) => "1500-2000 (exporter tuning)".into(),
        }
    }

    /// The rate the scanner is expected to keep, to bound how long it may run.
    pub(super) fn nominal_rate(self) -> u64 {
        match self {
            Self::Agent { rate } | Self::Masscan { rate } => rate,
            Self::Nmap(NmapProfile::MinRate100k) => 100_000,
            Self::Nmap(NmapProfile::Exporter) => 1_500,
        }
    }

    /// The scan of all ports of hosts `first..=last`, run inside the
    /// scanner namespace.
    pub(super) fn command(
        self,
        testbed: &Testbed,
        agent: &Path,
        (first, last): (u8, u8),
        files: &RunFiles,
    ) -> Result<Command> {
        let log = File::create(&files.log)?;
        let mut c = match self {
            Self::Agent { rate } => {
                let mut c = testbed.scanner.command(&agent.to_string_lossy());
                // Like masscan and `nmap -Pn`: no host discovery round.
                c.args(["scan", "-p", "1-65535", "--rate", &rate.to_string()])
                    .args([
                        "--format",
                        "ndjson",
                        "--interface",
                        SCANNER_IF,
                        "--disable-host-discovery",
                    ])
                    .args(cidr_cover(target_addr(first), target_addr(last)))
                    .stdout(File::create(&files.results)?);
                c
            }
            Self::Masscan { rate } => {
                let mut c = testbed.scanner.command("masscan");
                c.arg(format!("{}-{}", target_addr(first), target_addr(last)))
                    .args(["-p1-65535", "--rate", &rate.to_string(), "--wait", "2"])
                    .arg("-oL")
                    .arg(&files.results)
                    .args(["--interface", SCANNER_IF])
                    // masscan sends raw frames: it needs the next hop's MAC
                    // and its own address given, as on any real network.
                    .args(["--router-mac", &testbed.target_mac])
                    .args(["--adapter-ip", &SCANNER_ADDR.to_string()])
                    .stdout(log.try_clone()?);
                c
            }
            Self::Nmap(profile) => {
                let mut c = testbed.scanner.command("nmap");
                c.args(["-sS", "-p-", "-n", "-Pn"])
                    .args(profile.args())
                    .arg("-oG")
                    .arg(&files.results)
                    .arg(format!("{}-{last}", target_addr(first)))
                    .stdout(log.try_clone()?);
                c
            }
        };
        // masscan writes paused.conf into its working directory on Ctrl-C.
        if let Some(dir) = files.log.parent() {
            c.current_dir(dir);
        }
        c.stdin(Stdio::null()).stderr(log);
        Ok(c)
    }

    /// Reads the open ports from the scanner's result output.
    pub(super) fn parse(self, results: &str) -> Result<Found> {
        match self {
            Self::Agent { .. } => parse_ndjson(results),
            Self::Masscan { .. } => parse_masscan_list(results),
            Self::Nmap(_) => parse_nmap_grepable(results),
        }
    }
}

/// The fewest CIDR blocks covering `first..=last`: the agent takes
/// addresses and CIDR ranges, and must probe exactly the same hosts as the
/// other tools (not .0 and .255 of a /24).
fn cidr_cover(first: Ipv4Addr, last: Ipv4Addr) -> Vec<String> {
    let (mut lo, hi) = (u64::from(u32::from(first)), u64::from(u32::from(last)));
    let mut blocks = Vec::new();
    while lo <= hi {
        // The largest block aligned at `lo` that does not run past `hi`.
        let mut size = if lo == 0 {
            1 << 32
        } else {
            1 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size /= 2;
        }
        let addr = Ipv4Addr::from(u32::try_from(lo).expect("an IPv4 address"));
        blocks.push(format!("{addr}/{}", 32 - size.trailing_zeros()));
        lo += size;
    }
    blocks
}

/// `{"ip":"198.19.0.3","port":22,"protocol":"tcp","state":"open"}` per line.
fn parse_ndjson(text: &str) -> Result<Found> {
    let mut found = Found::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("bad NDJSON line {line:?}"))?;
        if v["state"] != "open" {
            continue;
        }
        let ip = v["ip"].as_str().and_then(|s| s.parse().ok());
        let port = v["port"].as_u64().and_then(|p| u16::try_from(p).ok());
        let (Some(ip), Some(port)) = (ip, port) else {
            bail!("bad NDJSON line {line:?}");
        };
        found.insert((ip, port));
    }
    Ok(found)
}

/// masscan's `-oL`: `open tcp 22 198.19.0.1 1700000000` per line.
fn parse_masscan_list(text: &str) -> Result<Found> {
    let mut found = Found::new();
    for line in text.lines().filter(|l| l.starts_with("open tcp ")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(Ok(port)), Some(Ok(ip))) = (
            fields.get(2).map(|p| p.parse()),
            fields.get(3).map(|a| a.parse()),
        ) else {
            bail!("bad masscan line {line:?}");
        };
        found.insert((ip, port));
    }
    Ok(found)
}

/// nmap's `-oG`: `Host: 198.19.0.1 ()<TAB>Ports: 22/open/tcp//ssh///, ...`.
fn parse_nmap_grepable(text: &str) -> Result<Found> {
    let mut found = Found::new();
    for line in text.lines() {
        let Some(host) = line.strip_prefix("Host: ") else {
            continue;
        };
        let Some(ports) = line.split('\t').find_map(|f| f.strip_prefix("Ports: ")) else {
            continue;
        };
        let ip: Ipv4Addr = host
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("bad nmap line {line:?}"))?;
        for entry in ports.split(", ") {
            let mut fields = entry.split('/');
            let port = fields.next().and_then(|p| p.trim().parse().ok());
            let state = fields.next();
            match (port, state) {
                (Some(port), Some("open")) => {
                    found.insert((ip, port));
                }
                (Some(_), Some(_)) => {}
                _ => bail!("bad nmap port entry {entry:?}"),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_cover_is_exact() {
        let a = |h| Ipv4Addr::new(198, 19, 0, h);
        assert_eq!(cidr_cover(a(1), a(1)), ["198.19.0.1/32"]);
        assert_eq!(cidr_cover(a(0), a(255)), ["198.19.0.0/24"]);
        let blocks = cidr_cover(a(1), a(254));
        assert_eq!(blocks.first().map(String::as_str), Some("198.19.0.1/32"));
        assert_eq!(blocks.last().map(String::as_str), Some("198.19.0.254/32"));
        assert_eq!(blocks.len(), 14);
    }

    #[test]
    fn parses_each_format() {
        let ip = Ipv4Addr::new(198, 19, 0, 1);
        let agent = "{\"ip\":\"198.19.0.1\",\"port\":22,\"protocol\":\"tcp\",\"state\":\"open\"}\n";
        assert_eq!(parse_ndjson(agent).unwrap(), Found::from([(ip, 22)]));
        let masscan = "#masscan\nopen tcp 22 198.19.0.1 1795316687\n# end\n";
        assert_eq!(
            parse_masscan_list(masscan).unwrap(),
            Found::from([(ip, 22)])
        );
        let nmap = "# Nmap\nHost: 198.19.0.1 ()\tStatus: Up\nHost: 198.19.0.1 ()\tPorts: \
                    22/open/tcp//ssh///, 8080/filtered/tcp//http-proxy///\tIgnored State: closed (65533)\n";
        assert_eq!(parse_nmap_grepable(nmap).unwrap(), Found::from([(ip, 22)]));
    }
}
