//! `scanner-agent scan`: its flags, how they combine with a config file,
//! and the closing summary; nmap's output files are in [`output`].

mod output;

use std::{
    io,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime},
};

use clap::Args;
use scanner_agent::{
    config::Config,
    scan::{
        self, Attachment, ScanOptions, ScanReport,
        capture::ModeSetting,
        engine::tuning::{NmapTimings, Rate, Tuning},
        exclude_file,
        probes::{Protocol, Shard},
        results::{OutputFormat, PortResult, PortState, write_results},
        services::{self, SERVICES_FILE, Services},
        targets::PortList,
        transmit::LinkPolicy,
        xml::{XmlRun, write_xml},
    },
};

pub(crate) use self::output::nmap_argv;
use self::output::{OutputFiles, write_atomically};
use super::{failure, progress::Reporter, usage_error};
use scanner_agent::scan::engine::progress::Progress;

/// Flags override the `scanning:` section of `--config`, which overrides
/// the built-in defaults (those of the replaced exporter, except that the
/// command line discovers hosts, resolves names and sends at a fixed rate
/// unless told otherwise, like nmap and masscan).
#[derive(Args)]
pub(crate) struct ScanArgs {
    /// IPv4/IPv6 addresses, CIDR ranges, first-last ranges or hostnames
    /// (default: the config's targets).
    #[arg(required_unless_present = "config")]
    targets: Vec<String>,
    /// Take targets and scan settings from this configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Ports: lists, ranges and service names from /etc/services, e.g. 22,80,8000-8100 or ssh,https [default: 1-65535].
    #[arg(short, long)]
    ports: Option<String>,
    /// Also scan UDP (with service payloads for common ports).
    #[arg(long)]
    udp: bool,
    /// Addresses or ranges never to probe (wins over targets). Repeatable, comma-separated.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// File of addresses or ranges never to probe: one per line, # comments (zmap's blocklist format).
    #[arg(long, value_name = "FILE")]
    exclude_file: Option<PathBuf>,
    /// Port states to print.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "open")]
    states: Vec<PortState>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Also write nmap's XML to FILE (nmap -oX FILE).
    #[arg(long = "output-xml", value_name = "FILE")]
    output_xml: Option<PathBuf>,
    /// Also write the text results to FILE (nmap -oN FILE).
    #[arg(long = "output-normal", value_name = "FILE")]
    output_normal: Option<PathBuf>,
    /// Also write NDJSON to FILE (-oJ FILE).
    #[arg(long = "output-json", value_name = "FILE")]
    output_json: Option<PathBuf>,
    /// Write BASE.xml, BASE.nmap and BASE.json (nmap -oA BASE).
    #[arg(long = "output-all", value_name = "BASE")]
    output_all: Option<PathBuf>,
    /// An nmap output letter the agent does not write (from -oG and the like).
    #[arg(long = "nmap-output-unsupported", hide = true)]
    nmap_output_unsupported: Option<String>,
    /// Interface to send on and capture from (default: by route lookup).
    #[arg(short, long)]
    interface: Option<String>,
    /// This agent's share i/N of a scan split over N agents.
    #[arg(long, default_value = "1/1")]
    shard: Shard,
    /// Seed of the probe order (shards of one scan must agree; derived from the command line when sharding).
    #[arg(long)]
    seed: Option<u64>,
    /// Skip host discovery: treat every target as up (nmap -Pn).
    #[arg(long = "disable-host-discovery")]
    no_discovery: bool,
    /// Do not resolve hostnames given as targets (nmap -n).
    #[arg(long = "disable-dns-resolution", short = 'n')]
    no_dns: bool,
    /// Largest IPv6 range accepted, as a prefix length [default: 112].
    #[arg(long)]
    max_ipv6_prefix: Option<u8>,
    /// Packets per second, fixed [default: 10000 unless a min/max rate is given].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with_all = ["min_rate", "max_rate"])]
    rate: Option<u64>,
    /// Adaptive rate: start here, never go below (nmap --min-rate).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    min_rate: Option<u64>,
    /// Adaptive rate: never go above (0 = no fixed ceiling).
    #[arg(long)]
    max_rate: Option<u64>,
    /// Probes that may await an answer at once, at least [default: 1000].
    #[arg(long)]
    min_parallelism: Option<usize>,
    /// Retransmissions of an unanswered probe, at most [default: 6]: as in
    /// nmap, a probe gets one attempt more than the most any answer of the
    /// scan needed (at least 2), unless --fixed-retries.
    #[arg(long)]
    max_retries: Option<u8>,
    /// Every unanswered probe gets all --max-retries retries (as masscan's
    /// --retries) [default: off, or the config's scanning.fixed_retries].
    #[arg(long)]
    fixed_retries: bool,
    /// Seconds after which a host that answered nothing gets no more probes (0 = never) [default: 300].
    #[arg(long)]
    host_timeout: Option<u64>,
    /// Minimum milliseconds between probes to one host [default: 0].
    #[arg(long)]
    scan_delay: Option<u64>,
    /// Largest per-host delay (ms) backing off may reach (0 = no limit) [default: 0].
    #[arg(long)]
    max_scan_delay: Option<u64>,
    /// Retry timeout (ms) before any round trip was measured (0 = 1000).
    #[arg(long)]
    initial_rtt_timeout: Option<u64>,
    /// Upper bound of the retry timeout (ms, 0 = 10000).
    #[arg(long)]
    max_rtt_timeout: Option<u64>,
    /// Lower bound of the retry timeout (ms, 0 = 100).
    #[arg(long)]
    min_rtt_timeout: Option<u64>,
    /// Most seconds to keep listening for late replies after the last probe
    /// [default: one retry timeout, from the measured round trip].
    #[arg(long)]
    wait: Option<f64>,
    /// Largest share of the interface's speed the probes may take
    /// [default: 0.05, or the config's scanning.max_link_share].
    #[arg(long, value_parser = share)]
    max_link_share: Option<f64>,
    /// While the interface's other traffic is above this share of its
    /// speed, probe at the floor rate (1 = never) [default: 0.7].
    #[arg(long, value_parser = share)]
    yield_above: Option<f64>,
    /// The interface's speed (Mbit/s) for links that report none.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    link_speed_mbps: Option<u64>,
    /// How the XDP program attaches: auto (driver mode where the driver has
    /// it, SKB mode on veth), driver or skb [default: auto, or the
    /// config's scanning.xdp_mode].
    #[arg(long, value_name = "MODE")]
    xdp_mode: Option<ModeSetting>,
}

/// A share above 0 and at most 1, as the config's share keys take it.
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s} is not a share above 0 and at most 1")),
    }
}

impl ScanArgs {
    fn options(self) -> Result<ScanOptions, String> {
        let config = match &self.config {
            Some(path) => {
                let config = Config::load(path).map_err(|e| e.to_string())?;
                config.warnings().iter().for_each(|w| tracing::warn!("{w}"));
                Some(config)
            }
            None => None,
        };
        let mut section = config
            .as_ref()
            .map(|c| c.scanning.clone())
            .unwrap_or_default();
        // Without a config file the command line behaves like nmap/masscan.
        if config.is_none() {
            section.disable_host_discovery = false;
            section.disable_dns_resolution = false;
        }
        let mut tuning = if config.is_some() {
            section.tuning()
        } else {
            Tuning::default()
        };
        tuning.rate = match (self.rate, self.min_rate, self.max_rate) {
            (Some(r), ..) => Rate::Fixed(r),
            (None, None, None) => tuning.rate,
            (None, min, max) => {
                let min = min.unwrap_or(section.min_rate.0);
                match Rate::adaptive(min, max.unwrap_or(0)) {
                    Rate::Adaptive { max: Some(max), .. } if max < min => {
                        return Err(format!("--max-rate {max} is below --min-rate {min}"));
                    }
                    rate => rate,
                }
            }
        };
        tuning.min_parallelism = self.min_parallelism.unwrap_or(tuning.min_parallelism);
        tuning.max_retries = self.max_retries.unwrap_or(tuning.max_retries);
        tuning.fixed_retries |= self.fixed_retries;
        let mut tuning = tuning.with_nmap_timings(NmapTimings {
            host_timeout: self.host_timeout,
            scan_delay: self.scan_delay,
            max_scan_delay: self.max_scan_delay,
            initial_rtt_timeout: self.initial_rtt_timeout,
            max_rtt_timeout: self.max_rtt_timeout,
            min_rtt_timeout: self.min_rtt_timeout,
        });
        tuning.wait = self
            .wait
            .map(|w| {
                Duration::try_from_secs_f64(w)
                    .map_err(|_| format!("invalid --wait {w}: expected seconds, e.g. 1 or 0.5"))
            })
            .transpose()?;

        let udp = self.udp || section.udp_scan;
        let ports = match &self.ports {
            Some(spec) => {
                // Names are resolved for the protocols scanned (`-p domain --udp`).
                let protocols = [Protocol::Tcp, Protocol::Udp];
                let spec = services::resolve_names(
                    spec,
                    &protocols[..if udp { 2 } else { 1 }],
                    Path::new(SERVICES_FILE),
                )
                .map_err(|e| format!("-p: {e}"))?;
                PortList::parse(&spec).map_err(|e| e.to_string())?
            }
            None => section.port_range.list.clone(),
        };
        let include = if self.targets.is_empty() {
            let configured: Vec<String> = config
                .iter()
                .flat_map(|c| c.targets.iter().flat_map(|e| e.ranges()))
                .map(|t| t.0.clone())
                .collect();
            if configured.is_empty() {
                return Err(
                    "no targets: give them on the command line or in the config's `targets`".into(),
                );
            }
            configured
        } else {
            self.targets
        };
        let mut targets = section.target_spec(include);
        targets.exclude.extend(self.exclude);
        if let Some(file) = &self.exclude_file {
            targets
                .exclude
                .extend(exclude_file::read(file).map_err(|e| format!("--exclude-file: {e}"))?);
        }
        targets.max_v6_prefix = self.max_ipv6_prefix.unwrap_or(targets.max_v6_prefix);
        targets.resolve_dns &= !self.no_dns;
        let udp = self.udp || section.udp_scan;
        let link = section.link_policy();
        Ok(ScanOptions {
            targets,
            ports,
            protocols: if udp {
                vec![Protocol::Tcp, Protocol::Udp]
            } else {
                vec![Protocol::Tcp]
            },
            tuning,
            interface: self.interface,
            host_discovery: !(self.no_discovery || section.disable_host_discovery),
            shard: self.shard,
            seed: self.seed,
            states: self.states,
            deadline: None,
            cancel: None,
            budget: None,
            link: LinkPolicy {
                max_share: self.max_link_share.unwrap_or(link.max_share),
                yield_above: self.yield_above.unwrap_or(link.yield_above),
                speed_mbps: self.link_speed_mbps.or(link.speed_mbps),
            },
            xdp_mode: self.xdp_mode.unwrap_or(section.xdp_mode),
        })
    }
}

impl ScanArgs {
    pub(crate) fn run(mut self) -> ExitCode {
        let format = self.format;
        let files = match OutputFiles::new(
            self.output_xml.take(),
            self.output_normal.take(),
            self.output_json.take(),
            self.output_all.take(),
            self.nmap_output_unsupported.as_deref(),
        ) {
            Ok(f) => f,
            Err(e) => return usage_error(e),
        };
        let opts = match self.options() {
            Ok(o) => o,
            Err(e) => return usage_error(e),
        };
        let start = SystemTime::now();
        // The progress line (a terminal on stderr only) is gone before the summary.
        let progress = Arc::new(Progress::default());
        let reporter = Reporter::start(&progress);
        let counted = reporter.is_some().then_some(progress);
        let outcome = scan::run_reporting(&opts, Attachment::Own, counted);
        if let Some(reporter) = reporter {
            reporter.finish();
        }
        let report = match outcome {
            Ok(r) => r,
            Err(e) if e.is_usage() => return usage_error(e),
            Err(e) => return failure(e),
        };
        let run = Finished {
            args: command_line(),
            start,
            end: SystemTime::now(),
            results: report.results.results(),
            report: &report,
            opts: &opts,
            services: Services::system(),
        };
        summarize(&report, &opts);
        // The files first: a closed pipe on stdout must not lose them.
        for (path, format) in [
            (&files.xml, OutputFormat::Xml),
            (&files.normal, OutputFormat::Text),
            (&files.json, OutputFormat::Ndjson),
        ] {
            let Some(path) = path else { continue };
            if let Err(e) = write_atomically(path, |w| run.write(w, format, true)) {
                return failure(format_args!("writing {}: {e}", path.display()));
            }
        }
        match run.write(&mut io::stdout().lock(), format, false) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => failure(format_args!("writing results: {e}")),
        }
    }
}

/// The command line as typed, for nmap's `args` and the text file's header.
fn command_line() -> String {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A finished scan and what its outputs need.
struct Finished<'a> {
    args: String,
    start: SystemTime,
    end: SystemTime,
    results: Vec<PortResult>,
    report: &'a ScanReport,
    opts: &'a ScanOptions,
    services: Option<Services>,
}

impl Finished<'_> {
    /// Writes the results in `format`; a text file (`-oN`) gets nmap's
    /// comment lines around them, saying what ran and when.
    fn write(&self, out: &mut impl io::Write, format: OutputFormat, file: bool) -> io::Result<()> {
        let (results, up) = (&self.results, &self.report.answered);
        let total = self.report.hosts.values().map(|(u, d)| u + d).sum();
        if format == OutputFormat::Xml {
            return write_xml(
                out,
                &XmlRun {
                    args: &self.args,
                    start: self.start,
                    end: self.end,
                    protocols: &self.opts.protocols,
                    ports: &self.opts.ports,
                    results,
                    up,
                    total_hosts: total,
                    host_discovery: self.opts.host_discovery,
                    services: self.services.as_ref(),
                },
            );
        }
        let text = file && format == OutputFormat::Text;
        if text {
            writeln!(
                out,
                "# scanner-agent {} scan initiated {} as: {}",
                env!("CARGO_PKG_VERSION"),
                scan::xml::timestr(self.start),
                self.args
            )?;
        }
        write_results(out, format, results)?;
        if text {
            writeln!(
                out,
                "# scanner-agent done at {} -- {total} IP addresses ({} hosts up) scanned in {:.2} seconds",
                scan::xml::timestr(self.end),
                up.len(),
                self.end
                    .duration_since(self.start)
                    .unwrap_or_default()
                    .as_secs_f64()
            )?;
        }
        out.flush()
    }
}

/// The closing summary on stderr, so a lossy or slow scan never looks clean.
fn summarize(r: &ScanReport, opts: &ScanOptions) {
    for (target, (up, down)) in &r.hosts {
        tracing::info!(target = target.as_str(), up, down, "hosts");
    }
    let p = &r.ports;
    let count = |s| r.results.count(s);
    tracing::info!(
        probes = p.sent,
        retries = p.retries,
        given_up_early = p.capped,
        seconds = format_args!("{:.2}", r.total_time.as_secs_f64()),
        startup_seconds = format_args!("{:.3}", r.startup.as_secs_f64()),
        yielded_seconds = format_args!("{:.1}", p.yielded.as_secs_f64()),
        rate = format_args!("{:.0}", p.achieved_rate()),
        final_rate = format_args!("{:.0}", p.final_rate),
        open = count(PortState::Open),
        closed = count(PortState::Closed),
        filtered = count(PortState::Filtered),
        open_filtered = count(PortState::OpenFiltered),
        hosts_timed_out = p.hosts_timed_out,
        xdp_mode = %r.mode,
        transmit_path = %r.transmit.path,
        ring_frames = r.transmit.ring_frames,
        raw_packets = r.transmit.raw_packets,
        xdp_frames = r.xdp.frames,
        xdp_matched = r.xdp.matched,
        xdp_lost = r.xdp.ringbuf_full,
        "scan finished"
    );
    if let Rate::Fixed(asked) = opts.tuning.rate
        && p.held_periods > 0
        && p.achieved_rate() < asked as f64 * 0.95
    {
        tracing::info!(
            asked,
            achieved = format_args!("{:.0}", p.achieved_rate()),
            held_seconds = format_args!("{:.1}", p.held_periods as f64 * 0.1),
            "the path carried less than the asked rate: the sender held just below what it carried (faster would only cost retries)"
        );
    } else if let Rate::Fixed(asked) = opts.tuning.rate
        && p.sent > 10_000
        && p.achieved_rate() < asked as f64 * 0.9
    {
        tracing::warn!(
            asked,
            achieved = format_args!("{:.0}", p.achieved_rate()),
            "the requested rate was not reached"
        );
    }
    if let Some(why) = &r.transmit.why_raw {
        tracing::info!(reason = why.as_str(), "probes left through raw sockets");
    }
    if r.xdp.ringbuf_full > 0 {
        tracing::warn!(
            lost = r.xdp.ringbuf_full,
            "replies were lost because the ring buffer was full: results are incomplete; lower the rate"
        );
    }
    if p.hosts_timed_out > 0 {
        tracing::warn!(
            hosts = p.hosts_timed_out,
            "hosts timed out (host_timeout) and were not fully scanned"
        );
    }
}
