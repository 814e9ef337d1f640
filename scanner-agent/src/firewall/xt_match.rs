//! xtables matches as `iptables-save` prints them (`-m NAME ...`): the ones
//! iptables-nft rebuilds from native expressions (tcp, udp, icmp, mark,
//! limit, ...) and the binary info structs of compat `match` expressions.
//! Formats follow libxtables' `save` printers byte for byte.

use std::fmt::Write as _;

use super::save_text::{
    cstr, hex, save_string, u16_at, u32_at, v4_mask_suffix, v6_addr, v6_mask_suffix,
};

/// Ports, flags and inversions of the tcp and udp matches (`struct xt_tcp` /
/// `xt_udp` without the option byte for udp).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PortMatch {
    pub spts: [u16; 2],
    pub dpts: [u16; 2],
    pub option: u8,
    pub flg_mask: u8,
    pub flg_cmp: u8,
    pub invflags: u8,
}

pub(super) const INV_SRCPT: u8 = 0x01;
pub(super) const INV_DSTPT: u8 = 0x02;
pub(super) const INV_FLAGS: u8 = 0x04;
const INV_OPTION: u8 = 0x08;

impl Default for PortMatch {
    fn default() -> Self {
        Self {
            spts: [0, u16::MAX],
            dpts: [0, u16::MAX],
            option: 0,
            flg_mask: 0,
            flg_cmp: 0,
            invflags: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Match {
    Tcp(PortMatch),
    Udp(PortMatch),
    /// `icmp` or `icmp6`: type, code range, inverted.
    Icmp {
        v6: bool,
        kind: u8,
        code: [u8; 2],
        invert: bool,
    },
    Mark {
        mark: u32,
        mask: u32,
        invert: bool,
    },
    Limit {
        avg: u32,
        burst: u32,
    },
    Pkttype {
        kind: u32,
        invert: bool,
    },
    /// `ttl` (IPv4) or `hl` (IPv6): mode 0 eq, 1 ne, 2 lt, 3 gt.
    HopLimit {
        v6: bool,
        mode: u8,
        value: u8,
    },
    Comment(String),
    /// A compat match not decoded above, or decoded from its info struct.
    Compat {
        name: String,
        rev: u32,
        info: Vec<u8>,
        v6: bool,
    },
    /// A native expression iptables would not turn into a match: shown as is.
    Native(String),
}

impl Match {
    /// A compat match expression, decoded where its struct is known.
    pub(super) fn from_compat(name: &str, rev: u32, info: &[u8], v6: bool) -> Self {
        let decoded = match (name, rev) {
            ("tcp", 0) => Some(Self::Tcp(PortMatch {
                spts: [u16_at(info, 0).unwrap_or(0), u16_at(info, 2).unwrap_or(0)],
                dpts: [u16_at(info, 4).unwrap_or(0), u16_at(info, 6).unwrap_or(0)],
                option: info.get(8).copied().unwrap_or(0),
                flg_mask: info.get(9).copied().unwrap_or(0),
                flg_cmp: info.get(10).copied().unwrap_or(0),
                invflags: info.get(11).copied().unwrap_or(0),
            })),
            ("udp", 0) => Some(Self::Udp(PortMatch {
                spts: [u16_at(info, 0).unwrap_or(0), u16_at(info, 2).unwrap_or(0)],
                dpts: [u16_at(info, 4).unwrap_or(0), u16_at(info, 6).unwrap_or(0)],
                invflags: info.get(8).copied().unwrap_or(0),
                ..PortMatch::default()
            })),
            ("icmp" | "icmp6", 0) if info.len() >= 4 => Some(Self::Icmp {
                v6: name == "icmp6",
                kind: info[0],
                code: [info[1], info[2]],
                invert: info[3] & 1 != 0,
            }),
            ("mark", 1) if info.len() >= 9 => Some(Self::Mark {
                mark: u32_at(info, 0).unwrap_or(0),
                mask: u32_at(info, 4).unwrap_or(0),
                invert: info[8] != 0,
            }),
            ("limit", 0) => Some(Self::Limit {
                avg: u32_at(info, 0).unwrap_or(0),
                burst: u32_at(info, 4).unwrap_or(0),
            }),
            ("comment", 0) => Some(Self::Comment(cstr(info))),
            // iptables-nft turns these three into native expressions;
            // legacy x_tables keep their structs (`struct xt_pkttype_info`,
            // `ipt_ttl_info`, `ip6t_hl_info`).
            ("pkttype", 0) if info.len() >= 8 => Some(Self::Pkttype {
                kind: u32_at(info, 0).unwrap_or(0),
                invert: u32_at(info, 4).unwrap_or(0) != 0,
            }),
            ("ttl" | "hl", 0) if info.len() >= 2 && info[0] <= 3 => Some(Self::HopLimit {
                v6: name == "hl",
                mode: info[0],
                value: info[1],
            }),
            _ => None,
        };
        decoded.unwrap_or_else(|| Self::Compat {
            name: name.to_owned(),
            rev,
            info: info.to_vec(),
            v6,
        })
    }

    /// Appends ` -m NAME ...` as iptables-save prints it.
    pub(super) fn save(&self, out: &mut String) {
        match self {
            Self::Tcp(p) => save_ports(out, "tcp", p, true),
            Self::Udp(p) => save_ports(out, "udp", p, false),
            Self::Icmp {
                v6,
                kind,
                code,
                invert,
            } => {
                out.push_str(if *v6 { " -m icmp6" } else { " -m icmp" });
                if *invert {
                    out.push_str(" !");
                }
                if !v6 && *kind == 0xff {
                    out.push_str(" --icmp-type any");
                } else {
                    let option = if *v6 { "--icmpv6-type" } else { "--icmp-type" };
                    let _ = write!(out, " {option} {kind}");
                    if code[0] != 0 || code[1] != 0xff {
                        let _ = write!(out, "/{}", code[0]);
                    }
                }
            }
            Self::Mark { mark, mask, invert } => {
                out.push_str(" -m mark");
                if *invert {
                    out.push_str(" !");
                }
                if *mask == u32::MAX {
                    let _ = write!(out, " --mark 0x{mark:x}");
                } else {
                    let _ = write!(out, " --mark 0x{mark:x}/0x{mask:x}");
                }
            }
            Self::Limit { avg, burst } => {
                out.push_str(" -m limit --limit");
                save_rate(out, *avg);
                if *burst != 5 {
                    let _ = write!(out, " --limit-burst {burst}");
                }
            }
            Self::Pkttype { kind, invert } => {
                out.push_str(" -m pkttype");
                if *invert {
                    out.push_str(" !");
                }
                let name = match kind {
                    0 => "unicast".to_owned(),
                    1 => "broadcast".to_owned(),
                    2 => "multicast".to_owned(),
                    3 => "otherhost".to_owned(),
                    4 => "outgoing".to_owned(),
                    5 => "loopback".to_owned(),
                    other => other.to_string(),
                };
                let _ = write!(out, " --pkt-type {name}");
            }
            Self::HopLimit { v6, mode, value } => {
                let (m, option) = if *v6 { ("hl", "hl") } else { ("ttl", "ttl") };
                let _ = write!(out, " -m {m}");
                let op = match mode {
                    0 => format!(" --{option}-eq"),
                    1 => format!(" ! --{option}-eq"),
                    2 => format!(" --{option}-lt"),
                    _ => format!(" --{option}-gt"),
                };
                let _ = write!(out, "{op} {value}");
            }
            Self::Comment(text) => {
                out.push_str(" -m comment --comment");
                save_string(out, text);
            }
            Self::Compat {
                name,
                rev,
                info,
                v6,
            } => save_compat(out, name, *rev, info, *v6),
            Self::Native(text) => {
                out.push(' ');
                out.push_str(text);
            }
        }
    }
}

fn save_ports(out: &mut String, name: &str, p: &PortMatch, tcp: bool) {
    let _ = write!(out, " -m {name}");
    for (ports, inv, option) in [
        (p.spts, INV_SRCPT, "--sport"),
        (p.dpts, INV_DSTPT, "--dport"),
    ] {
        if ports != [0, u16::MAX] {
            if p.invflags & inv != 0 {
                out.push_str(" !");
            }
            if ports[0] == ports[1] {
                let _ = write!(out, " {option} {}", ports[0]);
            } else {
                let _ = write!(out, " {option} {}:{}", ports[0], ports[1]);
            }
        }
    }
    if !tcp {
        return;
    }
    if p.option != 0 || p.invflags & INV_OPTION != 0 {
        if p.invflags & INV_OPTION != 0 {
            out.push_str(" !");
        }
        let _ = write!(out, " --tcp-option {}", p.option);
    }
    if p.flg_mask != 0 || p.invflags & INV_FLAGS != 0 {
        if p.invflags & INV_FLAGS != 0 {
            out.push_str(" !");
        }
        out.push_str(" --tcp-flags ");
        tcp_flags(out, p.flg_mask);
        out.push(' ');
        tcp_flags(out, p.flg_cmp);
    }
}

fn tcp_flags(out: &mut String, mut flags: u8) {
    const NAMES: [(&str, u8); 6] = [
        ("FIN", 0x01),
        ("SYN", 0x02),
        ("RST", 0x04),
        ("PSH", 0x08),
        ("ACK", 0x10),
        ("URG", 0x20),
    ];
    let mut first = true;
    for (name, bit) in NAMES {
        if flags & bit != 0 {
            if !first {
                out.push(',');
            }
            out.push_str(name);
            first = false;
            flags &= !bit;
        }
    }
    if first {
        out.push_str("NONE");
    }
}

/// libxt_limit's `print_rate`: the largest unit that still divides evenly enough.
fn save_rate(out: &mut String, period: u32) {
    const SCALE: u32 = 10_000;
    const RATES: [(&str, u32); 4] = [
        ("day", SCALE * 24 * 60 * 60),
        ("hour", SCALE * 60 * 60),
        ("min", SCALE * 60),
        ("sec", SCALE),
    ];
    if period == 0 {
        out.push_str(" inf");
        return;
    }
    let mut i = 1;
    while i < RATES.len() {
        let mult = RATES[i].1;
        if period > mult || mult / period < mult % period {
            break;
        }
        i += 1;
    }
    let (name, mult) = RATES[i - 1];
    let _ = write!(out, " {}/{name}", mult / period);
}

/// Compat matches decoded from their info structs, or shown raw.
fn save_compat(out: &mut String, name: &str, rev: u32, info: &[u8], v6: bool) {
    let text = match (name, rev) {
        ("conntrack", 2 | 3) => conntrack(info, v6, rev == 3),
        ("multiport", 0 | 1) => multiport(info, rev == 1),
        _ => None,
    };
    match text {
        Some((alias, text)) => {
            let _ = write!(out, " -m {alias}{text}");
        }
        None => {
            let _ = write!(out, " -m {name} [rev {rev} info {}]", hex(info));
        }
    }
}

fn multiport(info: &[u8], v1: bool) -> Option<(&'static str, String)> {
    let flags = *info.first()?;
    let count = usize::from(*info.get(1)?).min(15);
    let ports: Vec<u16> = (0..15)
        .map(|i| u16_at(info, 2 + 2 * i).unwrap_or(0))
        .collect();
    let (pflags, invert) = if v1 {
        (info.get(32..47)?, info.get(47).copied().unwrap_or(0) != 0)
    } else {
        (&[0u8; 15][..], false)
    };
    let mut out = String::new();
    if invert {
        out.push_str(" !");
    }
    out.push_str(match flags {
        0 => " --sports ",
        1 => " --dports ",
        _ => " --ports ",
    });
    let mut i = 0;
    while i < count {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", ports[i]);
        if pflags[i] != 0 && i + 1 < 15 {
            i += 1;
            let _ = write!(out, ":{}", ports[i]);
        }
        i += 1;
    }
    Some(("multiport", out))
}

const CT_STATE: u16 = 1 << 0;
const CT_PROTO: u16 = 1 << 1;
const CT_ORIGSRC: u16 = 1 << 2;
const CT_ORIGDST: u16 = 1 << 3;
const CT_REPLSRC: u16 = 1 << 4;
const CT_REPLDST: u16 = 1 << 5;
const CT_STATUS: u16 = 1 << 6;
const CT_EXPIRES: u16 = 1 << 7;
const CT_ORIGSRC_PORT: u16 = 1 << 8;
const CT_ORIGDST_PORT: u16 = 1 << 9;
const CT_REPLSRC_PORT: u16 = 1 << 10;
const CT_REPLDST_PORT: u16 = 1 << 11;
const CT_DIRECTION: u16 = 1 << 12;
const CT_STATE_ALIAS: u16 = 1 << 13;

/// `struct xt_conntrack_mtinfo2/3`, as libxt_conntrack's `conntrack_dump`.
fn conntrack(info: &[u8], v6: bool, v3: bool) -> Option<(&'static str, String)> {
    let flags = u16_at(info, 146)?;
    let inv = u16_at(info, 148)?;
    let mut out = String::new();
    let bang = |out: &mut String, bit: u16| {
        if inv & bit != 0 {
            out.push_str(" !");
        }
    };
    if flags & CT_STATE != 0 {
        bang(&mut out, CT_STATE);
        out.push_str(if flags & CT_STATE_ALIAS != 0 {
            " --state"
        } else {
            " --ctstate"
        });
        let states = u16_at(info, 150)?;
        let names = [
            (1 << 0, "INVALID"),
            (1 << 3, "NEW"),
            (1 << 2, "RELATED"),
            (1 << 1, "ESTABLISHED"),
            (1 << 8, "UNTRACKED"),
            (1 << 6, "SNAT"),
            (1 << 7, "DNAT"),
        ];
        join_flags(&mut out, u32::from(states), &names, false);
    }
    if flags & CT_PROTO != 0 {
        bang(&mut out, CT_PROTO);
        let _ = write!(out, " --ctproto {}", u16_at(info, 136)?);
    }
    for (bit, option, at) in [
        (CT_ORIGSRC, "ctorigsrc", 0),
        (CT_ORIGDST, "ctorigdst", 32),
        (CT_REPLSRC, "ctreplsrc", 64),
        (CT_REPLDST, "ctrepldst", 96),
    ] {
        if flags & bit != 0 {
            bang(&mut out, bit);
            let addr = info.get(at..at + 16)?;
            let mask = info.get(at + 16..at + 32)?;
            let _ = write!(out, " --{option} ");
            if v6 {
                let (a, m): ([u8; 16], [u8; 16]) = (addr.try_into().ok()?, mask.try_into().ok()?);
                out.push_str(&v6_addr(a));
                out.push_str(&v6_mask_suffix(m, false));
            } else {
                let a: [u8; 4] = addr.get(..4)?.try_into().ok()?;
                let m: [u8; 4] = mask.get(..4)?.try_into().ok()?;
                out.push_str(&std::net::Ipv4Addr::from(a).to_string());
                out.push_str(&v4_mask_suffix(m, false));
            }
        }
    }
    for (bit, option, low_at, high_at) in [
        (CT_ORIGSRC_PORT, "ctorigsrcport", 138, 154),
        (CT_ORIGDST_PORT, "ctorigdstport", 140, 156),
        (CT_REPLSRC_PORT, "ctreplsrcport", 142, 158),
        (CT_REPLDST_PORT, "ctrepldstport", 144, 160),
    ] {
        if flags & bit != 0 {
            bang(&mut out, bit);
            let raw = u16_at(info, low_at)?;
            let (low, high) = if v3 {
                (raw, u16_at(info, high_at)?)
            } else {
                (u16::from_be(raw), 0)
            };
            if high == 0 || low == high {
                let _ = write!(out, " --{option} {low}");
            } else {
                let _ = write!(out, " --{option} {low}:{high}");
            }
        }
    }
    if flags & CT_STATUS != 0 {
        bang(&mut out, CT_STATUS);
        out.push_str(" --ctstatus");
        let names = [
            (1, "EXPECTED"),
            (2, "SEEN_REPLY"),
            (4, "ASSURED"),
            (8, "CONFIRMED"),
        ];
        join_flags(&mut out, u32::from(u16_at(info, 152)?), &names, true);
    }
    if flags & CT_EXPIRES != 0 {
        bang(&mut out, CT_EXPIRES);
        let (min, max) = (u32_at(info, 128)?, u32_at(info, 132)?);
        if min == max {
            let _ = write!(out, " --ctexpire {min}");
        } else {
            let _ = write!(out, " --ctexpire {min}:{max}");
        }
    }
    if flags & CT_DIRECTION != 0 {
        out.push_str(if inv & CT_DIRECTION != 0 {
            " --ctdir REPLY"
        } else {
            " --ctdir ORIGINAL"
        });
    }
    let alias = if flags & CT_STATE_ALIAS != 0 {
        "state"
    } else {
        "conntrack"
    };
    Some((alias, out))
}

/// ` A,B,C` for the bits set, in table order (` NONE` when asked and none is).
fn join_flags(out: &mut String, value: u32, names: &[(u32, &str)], none: bool) {
    let mut sep = ' ';
    for (bit, name) in names {
        if value & bit != 0 {
            out.push(sep);
            out.push_str(name);
            sep = ',';
        }
    }
    if none && value == 0 {
        out.push_str(" NONE");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(m: &Match) -> String {
        let mut s = String::new();
        m.save(&mut s);
        s
    }

    #[test]
    fn limit_rates_pick_libxt_limits_unit() {
        let limit = |avg| saved(&Match::Limit { avg, burst: 5 });
        assert_eq!(limit(120_000), " -m limit --limit 5/min");
        assert_eq!(limit(12_000_000), " -m limit --limit 3/hour");
        assert_eq!(limit(100), " -m limit --limit 100/sec");
        assert_eq!(
            saved(&Match::Limit {
                avg: 10_000,
                burst: 10
            }),
            " -m limit --limit 1/sec --limit-burst 10"
        );
    }

    #[test]
    fn tcp_flags_and_ports() {
        let m = Match::Tcp(PortMatch {
            spts: [1, 1023],
            flg_mask: 0x3f,
            flg_cmp: 0,
            invflags: INV_SRCPT,
            ..PortMatch::default()
        });
        assert_eq!(
            saved(&m),
            " -m tcp ! --sport 1:1023 --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE"
        );
    }

    /// The structs legacy x_tables keep where iptables-nft uses native expressions.
    #[test]
    fn pkttype_ttl_and_hl_structs() {
        let mut pkttype = 1u32.to_ne_bytes().to_vec();
        pkttype.extend(1u32.to_ne_bytes());
        assert_eq!(
            saved(&Match::from_compat("pkttype", 0, &pkttype, false)),
            " -m pkttype ! --pkt-type broadcast"
        );
        assert_eq!(
            saved(&Match::from_compat("ttl", 0, &[2, 5], false)),
            " -m ttl --ttl-lt 5"
        );
        assert_eq!(
            saved(&Match::from_compat("hl", 0, &[1, 64], true)),
            " -m hl ! --hl-eq 64"
        );
        // Too short, or a mode iptables does not have: shown raw, no panic.
        assert_eq!(
            saved(&Match::from_compat("ttl", 0, &[9, 5], false)),
            " -m ttl [rev 0 info 0905]"
        );
        assert_eq!(
            saved(&Match::from_compat("pkttype", 0, &[1], false)),
            " -m pkttype [rev 0 info 01]"
        );
    }

    #[test]
    fn unknown_compat_matches_stay_readable_and_distinct() {
        let a = Match::from_compat("hashlimit", 3, &[1, 2, 0, 0], false);
        let b = Match::from_compat("hashlimit", 3, &[1, 3, 0, 0], false);
        assert_eq!(saved(&a), " -m hashlimit [rev 3 info 0102]");
        assert_ne!(saved(&a), saved(&b));
    }
}
