//! nmap's XML output (`-oX`, `--format xml`): the subset of nmap's DTD
//! (`nmap.dtd`, `xmloutputversion` 1.05) that says what a SYN or UDP scan
//! found, so nmap's tools read it: `ndiff` compares two scans, importers
//! (Metasploit, Faraday, DefectDojo) load them. Written with an escaping
//! XML writer, so no target or argument can break the document.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use quick_xml::{
    Writer,
    events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event},
};

use crate::scan::{
    probes::Protocol,
    results::{PortResult, Reason},
    services::Services,
    targets::PortList,
};

/// The DTD version the document follows (nmap 7.x's).
const XML_OUTPUT_VERSION: &str = "1.05";

/// What one scan run was, besides its port results.
pub struct XmlRun<'a> {
    /// The command line as given (nmap's `args`).
    pub args: &'a str,
    pub start: SystemTime,
    pub end: SystemTime,
    pub protocols: &'a [Protocol],
    pub ports: &'a PortList,
    pub results: &'a [PortResult],
    /// Hosts found up (those with results are up too).
    pub up: &'a [IpAddr],
    /// Target addresses in all, up or down.
    pub total_hosts: u64,
    /// Whether hosts were discovered (else every target counts as up,
    /// nmap's `-Pn`, and its status reason is `user-set`).
    pub host_discovery: bool,
    /// `/etc/services`, for `<service name>`; none when unreadable.
    pub services: Option<&'a Services>,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `22,80-90`: the port list as nmap's `scaninfo services` writes it.
fn ranges(ports: &PortList) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u16, u16)> = None;
    let flush = |out: &mut Vec<String>, (lo, hi): (u16, u16)| {
        out.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
    };
    for &p in ports.as_slice() {
        run = match run {
            Some((lo, hi)) if u32::from(hi) + 1 == u32::from(p) => Some((lo, p)),
            Some(r) => {
                flush(&mut out, r);
                Some((p, p))
            }
            None => Some((p, p)),
        };
    }
    if let Some(r) = run {
        flush(&mut out, r);
    }
    out.join(",")
}

/// nmap's `startstr`/`timestr` form, in UTC (`Sat Dec  5 11:29:04 2026`).
pub fn timestr(t: SystemTime) -> String {
    let s = secs(t);
    let days = (s / 86_400) as i64;
    let rem = s % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday} {} {day:>2} {:02}:{:02}:{:02} {year}",
        months[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn empty<W: Write>(w: &mut Writer<W>, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
    w.write_event(Event::Empty(
        BytesStart::new(name).with_attributes(attrs.iter().copied()),
    ))
}

fn start<W: Write>(w: &mut Writer<W>, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
    w.write_event(Event::Start(
        BytesStart::new(name).with_attributes(attrs.iter().copied()),
    ))
}

fn end<W: Write>(w: &mut Writer<W>, name: &str) -> io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(name)))
}

/// Writes the whole document.
pub fn write_xml(out: &mut impl Write, run: &XmlRun<'_>) -> io::Result<()> {
    let mut w = Writer::new_with_indent(&mut *out, b' ', 0);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.write_event(Event::DocType(BytesText::from_escaped("nmaprun")))?;
    let (start_s, end_s) = (secs(run.start), secs(run.end));
    let version = format!("scanner-agent {}", env!("CARGO_PKG_VERSION"));
    start(
        &mut w,
        "nmaprun",
        &[
            ("scanner", "nmap"),
            ("args", run.args),
            ("start", &start_s.to_string()),
            ("startstr", &timestr(run.start)),
            ("version", &version),
            ("xmloutputversion", XML_OUTPUT_VERSION),
        ],
    )?;
    let services = ranges(run.ports);
    let count = run.ports.len().to_string();
    for p in run.protocols {
        let (kind, proto) = match p {
            Protocol::Tcp => ("syn", "tcp"),
            Protocol::Udp => ("udp", "udp"),
            Protocol::Icmp => continue,
        };
        empty(
            &mut w,
            "scaninfo",
            &[
                ("type", kind),
                ("protocol", proto),
                ("numservices", &count),
                ("services", &services),
            ],
        )?;
    }
    empty(&mut w, "verbose", &[("level", "0")])?;
    empty(&mut w, "debugging", &[("level", "0")])?;

    let mut hosts: BTreeMap<IpAddr, Vec<&PortResult>> =
        run.up.iter().map(|&ip| (ip, Vec::new())).collect();
    for r in run.results {
        hosts.entry(r.ip).or_default().push(r);
    }
    let status_reason = if run.host_discovery {
        "response"
    } else {
        "user-set"
    };
    for (ip, ports) in &hosts {
        start(
            &mut w,
            "host",
            &[
                ("starttime", &start_s.to_string()),
                ("endtime", &end_s.to_string()),
            ],
        )?;
        empty(
            &mut w,
            "status",
            &[
                ("state", "up"),
                ("reason", status_reason),
                ("reason_ttl", "0"),
            ],
        )?;
        let addrtype = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        empty(
            &mut w,
            "address",
            &[("addr", &ip.to_string()), ("addrtype", addrtype)],
        )?;
        empty(&mut w, "hostnames", &[])?;
        start(&mut w, "ports", &[])?;
        for r in ports {
            start(
                &mut w,
                "port",
                &[
                    ("protocol", &r.protocol.to_string()),
                    ("portid", &r.port.to_string()),
                ],
            )?;
            // nmap writes reason_ttl 0 when silence decided the state.
            let ttl = r.ttl.unwrap_or(0).to_string();
            let reason = match r.reason {
                // nmap's own word for a RST reply.
                Reason::Rst => "reset".to_owned(),
                other => other.to_string(),
            };
            empty(
                &mut w,
                "state",
                &[
                    ("state", &r.state.to_string()),
                    ("reason", &reason),
                    ("reason_ttl", &ttl),
                ],
            )?;
            if let Some(name) = run.services.and_then(|s| s.name_of(r.protocol, r.port)) {
                empty(
                    &mut w,
                    "service",
                    &[("name", name), ("method", "table"), ("conf", "3")],
                )?;
            }
            end(&mut w, "port")?;
        }
        end(&mut w, "ports")?;
        end(&mut w, "host")?;
    }

    let up = hosts.len() as u64;
    let total = run.total_hosts.max(up);
    let elapsed = run
        .end
        .duration_since(run.start)
        .unwrap_or_default()
        .as_secs_f64();
    let summary = format!(
        "scanner-agent done at {}; {total} IP address{} ({up} host{} up) scanned in {elapsed:.2} seconds",
        timestr(run.end),
        if total == 1 { "" } else { "es" },
        if up == 1 { "" } else { "s" },
    );
    start(&mut w, "runstats", &[])?;
    empty(
        &mut w,
        "finished",
        &[
            ("time", &end_s.to_string()),
            ("timestr", &timestr(run.end)),
            ("summary", &summary),
            ("elapsed", &format!("{elapsed:.2}")),
            ("exit", "success"),
        ],
    )?;
    empty(
        &mut w,
        "hosts",
        &[
            ("up", &up.to_string()),
            ("down", &(total - up).to_string()),
            ("total", &total.to_string()),
        ],
    )?;
    end(&mut w, "runstats")?;
    end(&mut w, "nmaprun")?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scan::results::PortState;

    #[test]
    fn port_lists_are_written_as_ranges() {
        let p = PortList::parse("22,80-90,91,443,1000").unwrap();
        assert_eq!(ranges(&p), "22,80-91,443,1000");
    }

    #[test]
    fn times_are_written_as_nmap_does() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_470_144);
        assert_eq!(timestr(t), "Sat Dec  5 11:29:04 2026");
        assert_eq!(timestr(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn the_document_escapes_what_it_quotes_and_carries_the_ttl() {
        let ip: IpAddr = "198.18.0.3".parse().unwrap();
        let results = [PortResult {
            ip,
            port: 22,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            reason: Reason::SynAck,
            ttl: Some(63),
        }];
        let services = Services::parse("ssh 22/tcp\n");
        let ports = PortList::parse("22").unwrap();
        let start = UNIX_EPOCH + Duration::from_secs(1_796_470_144);
        let run = XmlRun {
            args: "scanner-agent scan \"<&>\"",
            start,
            end: start + Duration::from_secs(2),
            protocols: &[Protocol::Tcp],
            ports: &ports,
            results: &results,
            up: &["198.18.0.4".parse().unwrap()],
            total_hosts: 4,
            host_discovery: true,
            services: Some(&services),
        };
        let mut out = Vec::new();
        write_xml(&mut out, &run).unwrap();
        let xml = String::from_utf8(out).unwrap();
        assert!(
            xml.contains(r#"args="scanner-agent scan &quot;&lt;&amp;&gt;&quot;""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<state state="open" reason="syn-ack" reason_ttl="63"/>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<service name="ssh" method="table" conf="3"/>"#));
        assert!(
            xml.contains(r#"<hosts up="2" down="2" total="4"/>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<address addr="198.18.0.4" addrtype="ipv4"/>"#));
    }
}
