//! What a scan found: port states with nmap's meanings and the reply that
//! decided each, and how they are printed.

use std::{
    collections::BTreeMap,
    fmt,
    io::{self, Write},
    net::IpAddr,
};

use scanner_common::{ReplyEvent, ReplyKind};
use serde::Serialize;

use crate::scan::probes::Protocol;

/// Port states as nmap defines them. The order is the precedence when a
/// port gets several answers: a definite answer beats silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
pub enum PortState {
    #[serde(rename = "open")]
    #[value(name = "open")]
    Open,
    #[serde(rename = "closed")]
    #[value(name = "closed")]
    Closed,
    #[serde(rename = "filtered")]
    #[value(name = "filtered")]
    Filtered,
    /// UDP silence: open, or a firewall dropped the probe.
    #[serde(rename = "open|filtered")]
    #[value(name = "open|filtered")]
    OpenFiltered,
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Filtered => "filtered",
            Self::OpenFiltered => "open|filtered",
        })
    }
}

/// Why a port has its state: the reply (or its absence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    SynAck,
    Rst,
    /// A UDP answer matched on its ports only (with a 16-bit id at most):
    /// below 32 bits, an off-path sender could forge it.
    UdpResponse,
    /// A UDP answer that echoed the probe's request id: 32 bits or more.
    UdpResponseVerified,
    /// ICMP (family 4) or ICMPv6 (family 6) destination unreachable.
    Unreachable {
        family: u8,
        code: u8,
    },
    NoResponse,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::SynAck => f.write_str("syn-ack"),
            Self::Rst => f.write_str("rst"),
            Self::UdpResponse => f.write_str("udp-response"),
            Self::UdpResponseVerified => f.write_str("udp-response-verified"),
            Self::NoResponse => f.write_str("no-response"),
            Self::Unreachable { family: 4, code } => match code {
                0 => f.write_str("icmp-net-unreach"),
                1 => f.write_str("icmp-host-unreach"),
                2 => f.write_str("icmp-proto-unreach"),
                3 => f.write_str("icmp-port-unreach"),
                9 => f.write_str("icmp-net-prohibited"),
                10 => f.write_str("icmp-host-prohibited"),
                13 => f.write_str("icmp-admin-prohibited"),
                c => write!(f, "icmp-unreach-{c}"),
            },
            Self::Unreachable { code, .. } => match code {
                0 => f.write_str("icmp6-no-route"),
                1 => f.write_str("icmp6-admin-prohibited"),
                3 => f.write_str("icmp6-addr-unreach"),
                4 => f.write_str("icmp6-port-unreach"),
                c => write!(f, "icmp6-unreach-{c}"),
            },
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The state a reply establishes for the probed port, by nmap's rules, or
/// `None` for replies that say nothing about the port.
pub fn classify(event: &ReplyEvent, protocol: Protocol) -> Option<(PortState, Reason)> {
    let v4 = event.family == 4;
    Some(match (event.kind()?, protocol) {
        (ReplyKind::SynAck, Protocol::Tcp) => (PortState::Open, Reason::SynAck),
        (ReplyKind::Rst, Protocol::Tcp) => (PortState::Closed, Reason::Rst),
        (ReplyKind::Udp, Protocol::Udp) if event.verified != 0 => {
            (PortState::Open, Reason::UdpResponseVerified)
        }
        (ReplyKind::Udp, Protocol::Udp) => (PortState::Open, Reason::UdpResponse),
        (ReplyKind::Unreachable, protocol) => {
            let reason = Reason::Unreachable {
                family: event.family,
                code: event.icmp_code,
            };
            let port_unreachable = if v4 {
                event.icmp_code == 3
            } else {
                event.icmp_code == 4
            };
            let filtering = if v4 {
                matches!(event.icmp_code, 0..=3 | 9 | 10 | 13)
            } else {
                event.icmp_code <= 6
            };
            match protocol {
                Protocol::Udp if port_unreachable => (PortState::Closed, reason),
                Protocol::Tcp | Protocol::Udp if filtering => (PortState::Filtered, reason),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// One line of output. Field order is the NDJSON field order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortResult {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub state: PortState,
    pub reason: Reason,
    /// The TTL / hop limit of the reply that decided the state (masscan's
    /// `ttl`); absent when silence decided it (`no-response`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
}

/// A port's state, the reply that decided it and that reply's TTL.
pub type Decided = (PortState, Reason, Option<u8>);

/// Results in the wanted states (others are only counted, so memory is
/// bounded by what is reported), sorted by address, protocol and port.
#[derive(Debug)]
pub struct ResultSet {
    wanted: Vec<PortState>,
    entries: BTreeMap<(IpAddr, Protocol, u16), Decided>,
    counts: [u64; 4],
}

impl ResultSet {
    pub fn new(wanted: &[PortState]) -> Self {
        Self {
            wanted: wanted.to_vec(),
            entries: BTreeMap::new(),
            counts: [0; 4],
        }
    }

    /// Records a state for a port, with the TTL of the reply that decided
    /// it. A port's first state is counted; a later, more definite one (a
    /// late answer after silence) replaces it.
    pub fn record(
        &mut self,
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
        state: PortState,
        reason: Reason,
        ttl: Option<u8>,
    ) {
        let key = (ip, protocol, port);
        let Some(&(old, ..)) = self.entries.get(&key) else {
            return self.record_first(ip, protocol, port, state, reason, ttl);
        };
        if state >= old {
            return;
        }
        self.counts[old as usize] -= 1;
        self.counts[state as usize] += 1;
        if self.wanted.contains(&state) {
            self.entries.insert(key, (state, reason, ttl));
        } else {
            self.entries.remove(&key);
        }
    }

    /// Records the first state of a port that has none yet, as the engine
    /// decides each probe once: without the lookup [`Self::record`] needs
    /// (one per closed port, most of a scan's answers).
    pub fn record_first(
        &mut self,
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
        state: PortState,
        reason: Reason,
        ttl: Option<u8>,
    ) {
        debug_assert!(
            !self.entries.contains_key(&(ip, protocol, port)),
            "{ip} {protocol} {port} decided twice"
        );
        self.counts[state as usize] += 1;
        if self.wanted.contains(&state) {
            self.entries
                .insert((ip, protocol, port), (state, reason, ttl));
        }
    }

    /// Records a late answer for a port already recorded as `silence` (its
    /// retries ran out first), which may have been counted but not kept.
    pub fn record_after_silence(
        &mut self,
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
        silence: PortState,
        (state, reason, ttl): Decided,
    ) {
        if !self.entries.contains_key(&(ip, protocol, port)) && state < silence {
            self.counts[silence as usize] = self.counts[silence as usize].saturating_sub(1);
        }
        self.record(ip, protocol, port, state, reason, ttl);
    }

    pub fn results(&self) -> Vec<PortResult> {
        self.entries
            .iter()
            .map(
                |(&(ip, protocol, port), &(state, reason, ttl))| PortResult {
                    ip,
                    port,
                    protocol,
                    state,
                    reason,
                    ttl,
                },
            )
            .collect()
    }

    pub fn count(&self, state: PortState) -> u64 {
        self.counts[state as usize]
    }

    pub fn is_wanted(&self, state: PortState) -> bool {
        self.wanted.contains(&state)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per port, for people.
    Text,
    /// One JSON object per line, for tools.
    Ndjson,
    /// nmap's XML (`-oX`), for nmap's tools (ndiff, zenmap, importers).
    Xml,
}

pub fn write_results(
    out: &mut impl Write,
    format: OutputFormat,
    results: &[PortResult],
) -> io::Result<()> {
    for r in results {
        match format {
            OutputFormat::Text => writeln!(
                out,
                "{:<15} {:>5}/{:<3} {:<13} {}",
                r.ip.to_string(),
                r.port,
                r.protocol,
                r.state.to_string(),
                r.reason
            )?,
            OutputFormat::Ndjson => {
                serde_json::to_writer(&mut *out, r)?;
                out.write_all(b"\n")?;
            }
            OutputFormat::Xml => {
                return Err(io::Error::other(
                    "XML needs the scan's report: use xml::write_xml",
                ));
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanner_common::Addr;

    fn event(kind: ReplyKind, family: u8, code: u8) -> ReplyEvent {
        let remote = if family == 4 {
            Addr::v4([198, 19, 0, 3]).bytes
        } else {
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]
        };
        ReplyEvent {
            remote,
            local: [0; 16],
            remote_port: 22,
            local_port: 61000,
            family,
            protocol: 6,
            kind: kind as u8,
            slot: 0,
            ttl: 64,
            icmp_type: 3,
            icmp_code: code,
            verified: 0,
            _pad: [0; 4],
        }
    }

    #[test]
    fn nmap_state_rules() {
        use PortState::*;
        use Protocol::*;
        let c =
            |k, fam, code, p| classify(&event(k, fam, code), p).map(|(s, r)| (s, r.to_string()));
        assert_eq!(
            c(ReplyKind::SynAck, 4, 0, Tcp),
            Some((Open, "syn-ack".into()))
        );
        assert_eq!(c(ReplyKind::Rst, 4, 0, Tcp), Some((Closed, "rst".into())));
        assert_eq!(
            c(ReplyKind::Udp, 4, 0, Udp),
            Some((Open, "udp-response".into()))
        );
        let verified = ReplyEvent {
            verified: 1,
            ..event(ReplyKind::Udp, 6, 0)
        };
        assert_eq!(
            classify(&verified, Udp).map(|(s, r)| (s, r.to_string())),
            Some((Open, "udp-response-verified".into()))
        );
        assert_eq!(
            c(ReplyKind::Unreachable, 4, 13, Tcp),
            Some((Filtered, "icmp-admin-prohibited".into()))
        );
        assert_eq!(
            c(ReplyKind::Unreachable, 4, 3, Tcp),
            Some((Filtered, "icmp-port-unreach".into()))
        );
        assert_eq!(
            c(ReplyKind::Unreachable, 4, 3, Udp),
            Some((Closed, "icmp-port-unreach".into()))
        );
        assert_eq!(
            c(ReplyKind::Unreachable, 4, 10, Udp),
            Some((Filtered, "icmp-host-prohibited".into()))
        );
        assert_eq!(
            c(ReplyKind::Unreachable, 4, 4, Tcp),
            None,
            "fragmentation needed says nothing"
        );
        assert_eq!(
            c(ReplyKind::Unreachable, 6, 4, Udp),
            Some((Closed, "icmp6-port-unreach".into()))
        );
        assert_eq!(
            c(ReplyKind::Unreachable, 6, 1, Tcp),
            Some((Filtered, "icmp6-admin-prohibited".into()))
        );
        for code in [0u8, 1, 2, 9, 10, 13] {
            assert_eq!(
                c(ReplyKind::Unreachable, 4, code, Udp).map(|x| x.0),
                Some(Filtered),
                "code {code}"
            );
        }
    }

    #[test]
    fn ndjson_has_exactly_the_documented_shape() {
        let mut set = ResultSet::new(&[PortState::Open, PortState::Filtered]);
        let ip: IpAddr = "198.19.0.3".parse().unwrap();
        set.record(
            ip,
            Protocol::Tcp,
            22,
            PortState::Open,
            Reason::SynAck,
            Some(61),
        );
        set.record(
            ip,
            Protocol::Tcp,
            23,
            PortState::Closed,
            Reason::Rst,
            Some(61),
        );
        set.record(
            ip,
            Protocol::Udp,
            53,
            PortState::Filtered,
            Reason::Unreachable {
                family: 4,
                code: 13,
            },
            Some(254),
        );
        set.record(
            ip,
            Protocol::Udp,
            54,
            PortState::Filtered,
            Reason::NoResponse,
            None,
        );
        let mut out = Vec::new();
        write_results(&mut out, OutputFormat::Ndjson, &set.results()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ip\":\"198.19.0.3\",\"port\":22,\"protocol\":\"tcp\",\"state\":\"open\",\"reason\":\"syn-ack\",\"ttl\":61}\n\
             {\"ip\":\"198.19.0.3\",\"port\":53,\"protocol\":\"udp\",\"state\":\"filtered\",\"reason\":\"icmp-admin-prohibited\",\"ttl\":254}\n\
             {\"ip\":\"198.19.0.3\",\"port\":54,\"protocol\":\"udp\",\"state\":\"filtered\",\"reason\":\"no-response\"}\n"
        );
        assert_eq!(
            (set.count(PortState::Open), set.count(PortState::Closed)),
            (1, 1)
        );
    }

    #[test]
    fn definite_answers_win_over_silence() {
        let mut set = ResultSet::new(&[PortState::Open, PortState::Filtered]);
        let ip: IpAddr = "2001:db8::3".parse().unwrap();
        set.record(
            ip,
            Protocol::Tcp,
            443,
            PortState::Filtered,
            Reason::NoResponse,
            None,
        );
        set.record(
            ip,
            Protocol::Tcp,
            443,
            PortState::Open,
            Reason::SynAck,
            Some(64),
        );
        set.record(
            ip,
            Protocol::Tcp,
            443,
            PortState::Filtered,
            Reason::NoResponse,
            None,
        );
        let r = set.results();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].state, r[0].reason), (PortState::Open, Reason::SynAck));
        assert_eq!(
            (set.count(PortState::Open), set.count(PortState::Filtered)),
            (1, 0)
        );
        let mut out = Vec::new();
        write_results(&mut out, OutputFormat::Text, &r).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2001:db8::3       443/tcp open          syn-ack\n"
        );
    }
}
