//! An iptables-nft rule as the text `iptables-save` prints after `-A CHAIN`
//! (the `rule` label of iptables_exporter). Like iptables' own
//! `nft_rule_to_iptables_command_state`, it walks the expressions keeping
//! track of what each register holds, turns native meta/payload/cmp/bitwise/
//! range expressions back into `-s/-d/-i/-o/-p/-f` and tcp/udp/icmp/mark/
//! limit matches, and decodes compat match/target info structs; then it
//! prints in iptables-save's order. What iptables would not understand is
//! shown as `[nft ...]` with its raw values, so distinct rules stay distinct.

use std::{collections::HashMap, fmt::Write as _, net::Ipv4Addr, sync::OnceLock};

use super::{
    ruleset::{Expr, Family, Rule},
    save_text::{hex, v4_mask_suffix, v6_addr, v6_mask_suffix},
    xt_match::{INV_DSTPT, INV_FLAGS, INV_SRCPT, Match, PortMatch},
    xt_target,
};

const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LT: u32 = 2;
const CMP_LTE: u32 = 3;
const CMP_GT: u32 = 4;
const CMP_GTE: u32 = 5;

const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_L4PROTO: u32 = 16;
const META_PKTTYPE: u32 = 19;

const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// What a register was loaded with.
#[derive(Clone, Debug, Default)]
enum Loaded {
    #[default]
    Nothing,
    Meta(u32),
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Immediate(Vec<u8>),
}

#[derive(Clone, Debug, Default)]
struct Register {
    loaded: Loaded,
    /// The mask of a bitwise expression applied to it.
    mask: Option<Vec<u8>>,
}

/// An address selector: `-s`/`-d` with its mask.
pub(super) struct Address {
    pub addr: Vec<u8>,
    pub mask: Vec<u8>,
    pub invert: bool,
}

/// What `iptables_command_state` holds, in print order. Legacy x_tables
/// rules (`legacy::entries`) fill it straight from `ipt_entry`.
#[derive(Default)]
pub(super) struct Command {
    pub src: Option<Address>,
    pub dst: Option<Address>,
    pub iniface: Option<(String, bool)>,
    pub outiface: Option<(String, bool)>,
    pub proto: u8,
    pub proto_invert: bool,
    /// `-f`; true when inverted.
    pub fragment: Option<bool>,
    pub matches: Vec<Match>,
    /// ` -j ...` / ` -g ...` with its leading space.
    pub target: Option<String>,
}

/// `iptables-save`'s text for `rule` (without counters and `-A CHAIN`).
pub(super) fn iptables_rule(rule: &Rule) -> String {
    let v6 = rule.family == Family::IPV6;
    let mut cmd = Command::default();
    let mut regs: HashMap<u32, Register> = HashMap::new();
    for expr in &rule.exprs {
        match expr {
            Expr::Meta {
                key,
                reg,
                set: false,
            } => {
                regs.insert(
                    *reg,
                    Register {
                        loaded: Loaded::Meta(*key),
                        mask: None,
                    },
                );
            }
            Expr::Meta {
                key: META_MARK,
                reg,
                set: true,
            } => match regs.get(reg) {
                Some(Register {
                    loaded: Loaded::Immediate(data),
                    mask,
                }) => {
                    let mark = u32_of(data);
                    let mask = mask.as_deref().map_or(u32::MAX, u32_of);
                    let mut text = String::new();
                    xt_target::save_mark(&mut text, mark, mask);
                    cmd.target = Some(text);
                }
                _ => native(&mut cmd, format!("[nft meta set {META_MARK}]")),
            },
            Expr::Meta { key, set: true, .. } => native(&mut cmd, format!("[nft meta set {key}]")),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                regs.insert(
                    *dreg,
                    Register {
                        loaded: Loaded::Payload {
                            base: *base,
                            offset: *offset,
                            len: *len,
                        },
                        mask: None,
                    },
                );
            }
            Expr::Bitwise {
                sreg, dreg, mask, ..
            } => {
                let mut r = regs.get(sreg).cloned().unwrap_or_default();
                r.mask = Some(mask.clone());
                regs.insert(*dreg, r);
            }
            Expr::Cmp { sreg, op, data } => {
                let r = regs.get(sreg).cloned().unwrap_or_default();
                cmp(&mut cmd, &r, *op, data, v6);
            }
            Expr::Range { sreg, op, from, to } => {
                let r = regs.get(sreg).cloned().unwrap_or_default();
                range(&mut cmd, &r, *op, from, to);
            }
            Expr::Immediate {
                dreg,
                verdict,
                chain,
                data,
            } => match verdict {
                None => {
                    regs.insert(
                        *dreg,
                        Register {
                            loaded: Loaded::Immediate(data.clone()),
                            mask: None,
                        },
                    );
                }
                Some(v) => verdict_target(&mut cmd, *v, chain.as_deref()),
            },
            Expr::Counter => {}
            Expr::Limit {
                rate, unit, burst, ..
            } => {
                let avg = if *rate == 0 {
                    0
                } else {
                    (10_000u64.saturating_mul(*unit) / rate).min(u64::from(u32::MAX)) as u32
                };
                cmd.matches.push(Match::Limit { avg, burst: *burst });
            }
            Expr::Match { name, rev, info } => {
                cmd.matches.push(Match::from_compat(name, *rev, info, v6));
            }
            Expr::Target { name, rev, info } => {
                let mut text = String::new();
                xt_target::save(&mut text, name, *rev, info, v6);
                cmd.target = Some(text);
            }
            Expr::Other { name } => native(&mut cmd, format!("[nft {name}]")),
        }
    }
    if let Some(comment) = &rule.comment {
        cmd.matches.push(Match::Comment(comment.clone()));
    }
    print(&cmd, v6)
}

fn native(cmd: &mut Command, text: String) {
    cmd.matches.push(Match::Native(text));
}

fn u32_of(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_ne_bytes(b)
}

fn u16_be(data: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(..2)?.try_into().ok()?))
}

fn verdict_target(cmd: &mut Command, verdict: i32, chain: Option<&str>) {
    let text = match verdict {
        NF_ACCEPT => " -j ACCEPT".to_owned(),
        NF_DROP => " -j DROP".to_owned(),
        NFT_RETURN => " -j RETURN".to_owned(),
        NFT_JUMP => format!(" -j {}", chain.unwrap_or_default()),
        NFT_GOTO => format!(" -g {}", chain.unwrap_or_default()),
        other => format!(" [nft verdict {other}]"),
    };
    cmd.target = Some(text);
}

/// A cmp on a register: the heart of the native-to-iptables translation.
fn cmp(cmd: &mut Command, r: &Register, op: u32, data: &[u8], v6: bool) {
    let invert = op == CMP_NEQ;
    match &r.loaded {
        Loaded::Meta(META_L4PROTO) if op <= CMP_NEQ => {
            cmd.proto = data.first().copied().unwrap_or(0);
            cmd.proto_invert = invert;
        }
        Loaded::Meta(key @ (META_IIFNAME | META_OIFNAME)) if op <= CMP_NEQ => {
            let name = interface(data);
            if *key == META_IIFNAME {
                cmd.iniface = Some((name, invert));
            } else {
                cmd.outiface = Some((name, invert));
            }
        }
        Loaded::Meta(META_MARK) if op <= CMP_NEQ => cmd.matches.push(Match::Mark {
            mark: u32_of(data),
            mask: r.mask.as_deref().map_or(u32::MAX, u32_of),
            invert,
        }),
        Loaded::Meta(META_PKTTYPE) if op <= CMP_NEQ => cmd.matches.push(Match::Pkttype {
            kind: u32::from(data.first().copied().unwrap_or(0)),
            invert,
        }),
        Loaded::Payload {
            base: BASE_NETWORK,
            offset,
            len,
        } => network(cmd, r, (*offset, *len), op, data, v6),
        Loaded::Payload {
            base: BASE_TRANSPORT,
            offset,
            ..
        } => transport(cmd, r, *offset, op, data, v6),
        _ => native(cmd, describe_cmp(r, op, data)),
    }
}

fn describe_cmp(r: &Register, op: u32, data: &[u8]) -> String {
    let what = match &r.loaded {
        Loaded::Nothing => "reg".to_owned(),
        Loaded::Meta(key) => format!("meta {key}"),
        Loaded::Payload { base, offset, len } => format!("payload {base}+{offset}/{len}"),
        Loaded::Immediate(d) => format!("imm 0x{}", hex(d)),
    };
    let mask = r
        .mask
        .as_ref()
        .map(|m| format!(" & 0x{}", hex(m)))
        .unwrap_or_default();
    format!("[nft {what}{mask} cmp {op} 0x{}]", hex(data))
}

/// An interface name from cmp data: a trailing NUL means an exact name,
/// none means a prefix (`eth+`).
fn interface(data: &[u8]) -> String {
    match data.split_last() {
        Some((0, name)) => String::from_utf8_lossy(name).into_owned(),
        Some(_) => {
            let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
            format!("{}+", String::from_utf8_lossy(&data[..end]))
        }
        None => String::new(),
    }
}

fn network(
    cmd: &mut Command,
    r: &Register,
    (offset, len): (u32, u32),
    op: u32,
    data: &[u8],
    v6: bool,
) {
    let invert = op == CMP_NEQ;
    let (src, dst, proto, addr_len) = if v6 { (8, 24, 6, 16) } else { (12, 16, 9, 4) };
    let address = || {
        let mut addr = vec![0u8; addr_len];
        let n = data.len().min(addr_len);
        addr[..n].copy_from_slice(&data[..n]);
        let mask = match &r.mask {
            Some(m) => {
                let mut mask = vec![0u8; addr_len];
                let n = m.len().min(addr_len);
                mask[..n].copy_from_slice(&m[..n]);
                mask
            }
            None => {
                let mut mask = vec![0u8; addr_len];
                let n = (len as usize).min(addr_len);
                mask[..n].fill(0xff);
                mask
            }
        };
        Address { addr, mask, invert }
    };
    match offset {
        o if o == src && op <= CMP_NEQ => cmd.src = Some(address()),
        o if o == dst && op <= CMP_NEQ => cmd.dst = Some(address()),
        o if o == proto && op <= CMP_NEQ => {
            cmd.proto = data.first().copied().unwrap_or(0);
            cmd.proto_invert = invert;
        }
        // IPv4 fragment offset: `-f` is "offset != 0", `! -f` is "offset == 0".
        6 if !v6 && r.mask.is_some() => cmd.fragment = Some(op == CMP_EQ),
        8 if !v6 => hop_limit(cmd, r, op, data, false),
        7 if v6 => hop_limit(cmd, r, op, data, true),
        _ => native(cmd, describe_cmp(r, op, data)),
    }
}

fn hop_limit(cmd: &mut Command, r: &Register, op: u32, data: &[u8], v6: bool) {
    let value = data.first().copied().unwrap_or(0);
    let (mode, value) = match op {
        CMP_EQ => (0, value),
        CMP_NEQ => (1, value),
        CMP_LT => (2, value),
        CMP_GT => (3, value),
        CMP_LTE if value < 255 => (2, value + 1),
        CMP_GTE if value > 0 => (3, value - 1),
        _ => return native(cmd, describe_cmp(r, op, data)),
    };
    cmd.matches.push(Match::HopLimit { v6, mode, value });
}

/// The tcp or udp match the rule already has (iptables reuses one), or a new one.
fn port_match(cmd: &mut Command, tcp: bool) -> &mut PortMatch {
    let at = cmd.matches.iter().position(|m| match m {
        Match::Tcp(_) => tcp,
        Match::Udp(_) => !tcp,
        _ => false,
    });
    let at = at.unwrap_or_else(|| {
        cmd.matches.push(if tcp {
            Match::Tcp(PortMatch::default())
        } else {
            Match::Udp(PortMatch::default())
        });
        cmd.matches.len() - 1
    });
    match &mut cmd.matches[at] {
        Match::Tcp(p) | Match::Udp(p) => p,
        _ => unreachable!("position() found a tcp or udp match"),
    }
}

fn single_port(ports: &mut [u16; 2], invflags: &mut u8, op: u32, port: u16, inv: u8) {
    match op {
        CMP_NEQ | CMP_EQ => {
            if op == CMP_NEQ {
                *invflags |= inv;
            }
            *ports = [port, port];
        }
        CMP_LT => ports[1] = port.saturating_sub(1).max(1),
        CMP_LTE => ports[1] = port,
        CMP_GT => ports[0] = port.saturating_add(1),
        CMP_GTE => ports[0] = port,
        _ => {}
    }
}

fn transport(cmd: &mut Command, r: &Register, offset: u32, op: u32, data: &[u8], v6: bool) {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;
    const ICMPV6: u8 = 58;
    let proto = cmd.proto;
    match (proto, offset, data.len()) {
        (TCP | UDP, 0 | 2, 2) => {
            let Some(port) = u16_be(data) else { return };
            let p = port_match(cmd, proto == TCP);
            if offset == 0 {
                single_port(&mut p.spts, &mut p.invflags, op, port, INV_SRCPT);
            } else {
                single_port(&mut p.dpts, &mut p.invflags, op, port, INV_DSTPT);
            }
        }
        (TCP | UDP, 0, 4) => {
            let sport = u16_be(data).unwrap_or(0);
            let dport = u16_be(&data[2..]).unwrap_or(0);
            let p = port_match(cmd, proto == TCP);
            single_port(&mut p.spts, &mut p.invflags, op, sport, INV_SRCPT);
            single_port(&mut p.dpts, &mut p.invflags, op, dport, INV_DSTPT);
        }
        (TCP, 13, 1) => {
            let mask = r
                .mask
                .as_ref()
                .and_then(|m| m.first().copied())
                .unwrap_or(0xff);
            let p = port_match(cmd, true);
            if op == CMP_NEQ {
                p.invflags |= INV_FLAGS;
            }
            p.flg_cmp = data[0];
            p.flg_mask = mask;
        }
        (ICMP | ICMPV6, 0 | 1, 1 | 2) if op <= CMP_NEQ => {
            let (kind, code) = if offset == 0 {
                (data[0], data.get(1).copied())
            } else {
                (0xff, Some(data[0]))
            };
            let code = code.map_or([0, 0xff], |c| [c, c]);
            cmd.matches.push(Match::Icmp {
                v6,
                kind,
                code,
                invert: op == CMP_NEQ,
            });
        }
        _ => native(cmd, describe_cmp(r, op, data)),
    }
}

fn range(cmd: &mut Command, r: &Register, op: u32, from: &[u8], to: &[u8]) {
    let proto = cmd.proto;
    match (&r.loaded, u16_be(from), u16_be(to)) {
        (
            Loaded::Payload {
                base: BASE_TRANSPORT,
                offset: offset @ (0 | 2),
                len: 2,
            },
            Some(low),
            Some(high),
        ) if proto == 6 || proto == 17 => {
            let p = port_match(cmd, proto == 6);
            let (ports, inv) = if *offset == 0 {
                (&mut p.spts, INV_SRCPT)
            } else {
                (&mut p.dpts, INV_DSTPT)
            };
            if op == CMP_NEQ {
                p.invflags |= inv;
            }
            *ports = [low, high];
        }
        _ => native(
            cmd,
            format!("[nft range {op} 0x{}-0x{}]", hex(from), hex(to)),
        ),
    }
}

/// The rule text `iptables-save` prints for `cmd` after `-A CHAIN`.
pub(super) fn print(cmd: &Command, v6: bool) -> String {
    let mut out = String::new();
    for (letter, addr) in [('s', &cmd.src), ('d', &cmd.dst)] {
        if let Some(a) = addr {
            save_address(&mut out, letter, a, v6);
        }
    }
    for (letter, iface) in [('i', &cmd.iniface), ('o', &cmd.outiface)] {
        if let Some((name, invert)) = iface
            && !name.is_empty()
            && (name != "+" || *invert)
        {
            let _ = write!(out, "{} -{letter} {name}", if *invert { " !" } else { "" });
        }
    }
    if cmd.proto > 0 {
        if cmd.proto_invert {
            out.push_str(" !");
        }
        match protocol_name(cmd.proto) {
            Some(name) => {
                let _ = write!(out, " -p {name}");
            }
            None => {
                let _ = write!(out, " -p {}", cmd.proto);
            }
        }
    }
    if let Some(invert) = cmd.fragment {
        out.push_str(if invert { " ! -f" } else { " -f" });
    }
    for m in &cmd.matches {
        m.save(&mut out);
    }
    if let Some(target) = &cmd.target {
        out.push_str(target);
    }
    out.strip_prefix(' ').unwrap_or(&out).to_owned()
}

fn save_address(out: &mut String, letter: char, a: &Address, v6: bool) {
    if v6 {
        let (Ok(addr), Ok(mask)) = (
            <[u8; 16]>::try_from(a.addr.as_slice()),
            <[u8; 16]>::try_from(a.mask.as_slice()),
        ) else {
            return;
        };
        if !a.invert && mask == [0; 16] {
            return;
        }
        let _ = write!(
            out,
            "{} -{letter} {}{}",
            if a.invert { " !" } else { "" },
            v6_addr(addr),
            v6_mask_suffix(mask, true)
        );
    } else {
        let (Ok(addr), Ok(mask)) = (
            <[u8; 4]>::try_from(a.addr.as_slice()),
            <[u8; 4]>::try_from(a.mask.as_slice()),
        ) else {
            return;
        };
        if mask == [0; 4] && !a.invert && addr == [0; 4] {
            return;
        }
        let _ = write!(
            out,
            "{} -{letter} {}{}",
            if a.invert { " !" } else { "" },
            Ipv4Addr::from(addr),
            v4_mask_suffix(mask, true)
        );
    }
}

/// The protocol name iptables prints for `-p`: `/etc/protocols` (what
/// `getprotobynumber` reads), else libxtables' built-in list.
fn protocol_name(number: u8) -> Option<&'static str> {
    static NAMES: OnceLock<HashMap<u8, String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        let mut names = HashMap::new();
        let text = std::fs::read_to_string("/etc/protocols").unwrap_or_default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            if let (Some(name), Some(Ok(n))) = (fields.next(), fields.next().map(str::parse::<u8>))
            {
                names.entry(n).or_insert_with(|| name.to_owned());
            }
        }
        for (n, name) in [
            (6, "tcp"),
            (132, "sctp"),
            (17, "udp"),
            (136, "udplite"),
            (1, "icmp"),
            (58, "icmpv6"),
            (50, "esp"),
            (51, "ah"),
            (135, "mh"),
        ] {
            names.entry(n).or_insert_with(|| name.to_owned());
        }
        names
    });
    names.get(&number).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(exprs: Vec<Expr>) -> Rule {
        Rule {
            family: Family::IPV4,
            table: "filter".into(),
            chain: "INPUT".into(),
            handle: 1,
            exprs,
            comment: None,
            digest: 0,
            text: crate::firewall::ruleset::RuleText::default(),
        }
    }

    fn meta(key: u32) -> Expr {
        Expr::Meta {
            key,
            reg: 1,
            set: false,
        }
    }

    fn payload(base: u32, offset: u32, len: u32) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg: 1,
        }
    }

    fn cmp(op: u32, data: &[u8]) -> Expr {
        Expr::Cmp {
            sreg: 1,
            op,
            data: data.to_vec(),
        }
    }

    fn verdict(v: i32) -> Expr {
        Expr::Immediate {
            dreg: 0,
            verdict: Some(v),
            chain: None,
            data: vec![],
        }
    }

    /// The seed's Cassandra rule, as iptables-nft 1.8.9 stores it.
    #[test]
    fn tcp_dport_accept() {
        let r = rule(vec![
            meta(META_L4PROTO),
            cmp(CMP_EQ, &[6]),
            payload(BASE_TRANSPORT, 2, 2),
            cmp(CMP_EQ, &7000u16.to_be_bytes()),
            Expr::Counter,
            verdict(NF_ACCEPT),
        ]);
        assert_eq!(iptables_rule(&r), "-p tcp -m tcp --dport 7000 -j ACCEPT");
    }

    #[test]
    fn addresses_interfaces_and_ranges() {
        let r = rule(vec![
            meta(META_IIFNAME),
            cmp(CMP_NEQ, b"lo\0"),
            meta(META_L4PROTO),
            cmp(CMP_EQ, &[17]),
            payload(BASE_NETWORK, 12, 3),
            cmp(CMP_EQ, &[198, 18, 0]),
            payload(BASE_TRANSPORT, 2, 2),
            Expr::Range {
                sreg: 1,
                op: CMP_EQ,
                from: 1000u16.to_be_bytes().to_vec(),
                to: 2000u16.to_be_bytes().to_vec(),
            },
            verdict(NF_DROP),
        ]);
        assert_eq!(
            iptables_rule(&r),
            "-s 198.18.0.0/24 ! -i lo -p udp -m udp --dport 1000:2000 -j DROP"
        );
    }

    #[test]
    fn unknown_expressions_keep_rules_apart() {
        let a = rule(vec![payload(BASE_NETWORK, 1, 1), cmp(CMP_EQ, &[4])]);
        let b = rule(vec![payload(BASE_NETWORK, 1, 1), cmp(CMP_EQ, &[8])]);
        assert_ne!(iptables_rule(&a), iptables_rule(&b));
        assert!(iptables_rule(&a).starts_with("[nft payload 1+1/1"));
    }
}
