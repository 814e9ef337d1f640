//! What a scan found, and how it is printed.

use std::{
    collections::BTreeMap,
    fmt,
    io::{self, Write},
    net::Ipv4Addr,
};

use scanner_common::{ReplyEvent, ReplyKind};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Open,
    Closed,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tcp")
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Closed => "closed",
        })
    }
}

/// One line of output. Field order is the NDJSON field order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortResult {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub state: PortState,
}

/// Port states gathered from replies, one entry per (address, port).
#[derive(Debug, Default)]
pub struct ResultSet {
    states: BTreeMap<(Ipv4Addr, u16), PortState>,
}

impl ResultSet {
    /// Records a reply; returns the state it establishes.
    pub fn record(&mut self, event: &ReplyEvent) -> Option<PortState> {
        let state = match event.kind()? {
            ReplyKind::SynAck => PortState::Open,
            ReplyKind::Rst => PortState::Closed,
        };
        let addr = Ipv4Addr::new(
            event.remote[0],
            event.remote[1],
            event.remote[2],
            event.remote[3],
        );
        // An open answer outranks a closed one for the same port.
        let entry = self
            .states
            .entry((addr, event.remote_port))
            .or_insert(state);
        *entry = (*entry).min(state);
        Some(state)
    }

    /// Results in the given states, sorted by address and port.
    pub fn filtered(&self, wanted: &[PortState]) -> Vec<PortResult> {
        self.states
            .iter()
            .filter(|(_, state)| wanted.contains(state))
            .map(|(&(ip, port), &state)| PortResult {
                ip,
                port,
                protocol: Protocol::Tcp,
                state,
            })
            .collect()
    }

    pub fn count(&self, state: PortState) -> usize {
        self.states.values().filter(|&&s| s == state).count()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per port, for people.
    Text,
    /// One JSON object per line, for tools.
    Ndjson,
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
                "{:<15} {:>5}/{:<3} {}",
                r.ip, r.port, r.protocol, r.state
            )?,
            OutputFormat::Ndjson => {
                serde_json::to_writer(&mut *out, r)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(last: u8, port: u16, kind: ReplyKind) -> ReplyEvent {
        let mut remote = [0; 16];
        remote[..4].copy_from_slice(&[198, 19, 0, last]);
        ReplyEvent {
            remote,
            local: [0; 16],
            remote_port: port,
            local_port: 61000,
            family: 4,
            protocol: 6,
            kind: kind as u8,
            slot: 0,
            ttl: 64,
            _pad: [0; 7],
        }
    }

    #[test]
    fn ndjson_has_exactly_the_documented_shape() {
        let mut set = ResultSet::default();
        set.record(&event(3, 22, ReplyKind::SynAck));
        set.record(&event(3, 23, ReplyKind::Rst));
        let mut out = Vec::new();
        write_results(
            &mut out,
            OutputFormat::Ndjson,
            &set.filtered(&[PortState::Open]),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ip\":\"198.19.0.3\",\"port\":22,\"protocol\":\"tcp\",\"state\":\"open\"}\n"
        );
    }

    #[test]
    fn open_wins_and_results_are_sorted() {
        let mut set = ResultSet::default();
        set.record(&event(9, 80, ReplyKind::SynAck));
        set.record(&event(3, 443, ReplyKind::Rst));
        set.record(&event(3, 443, ReplyKind::SynAck));
        set.record(&event(3, 443, ReplyKind::Rst));
        let open = set.filtered(&[PortState::Open]);
        assert_eq!(open.len(), 2);
        assert_eq!(
            (open[0].ip, open[0].port),
            (Ipv4Addr::new(198, 19, 0, 3), 443)
        );
        assert_eq!(set.count(PortState::Closed), 0);
        let mut out = Vec::new();
        write_results(&mut out, OutputFormat::Text, &open[..1]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "198.19.0.3        443/tcp open\n"
        );
    }
}
