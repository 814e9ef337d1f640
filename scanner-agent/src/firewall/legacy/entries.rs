//! The entries blob `*_SO_GET_ENTRIES` returns, parsed the way libiptc's
//! `parse_table` does (iptables, libiptc/libiptc.c), and each rule rendered
//! the way `iptables-legacy-save` prints it (`print_rule4`/`print_rule6`):
//! the address, interface and protocol part from `ipt_ip`/`ip6t_ip6`, then
//! the matches and the target through the same printers the nftables path
//! uses for nft_compat's copies of the very same structs.
//!
//! The blob is kernel data read into a byte slice: every offset is checked
//! against its bounds before use (no `unsafe`, no indexing that can panic);
//! what does not fit is [`LegacyError::Malformed`]. The `#[repr(C)]`
//! structs below are never read through a pointer: they give the field
//! offsets (`offset_of!`) and sizes the parser reads at, checked at compile
//! time against the kernel's.
//!
//! Layout of a table (libiptc's view): each built-in chain starts at its
//! `hook_entry` offset; a user chain starts with an entry whose target is
//! `ERROR` carrying the chain's name; every chain ends with its policy
//! entry (built-in chains: the policy and its counters; user chains: an
//! unconditional RETURN); one last `ERROR` entry ends the table. A
//! standard target (name "") holds a verdict: negative for
//! ACCEPT/DROP/QUEUE/RETURN, else the offset jumped to, or the next
//! entry's offset for a rule without a target.

use std::mem::{offset_of, size_of};

use super::{
    super::{
        render::{self, Address, Command},
        ruleset::Counters,
        save_text::{cstr, u16_at, u32_at},
        xt_match::Match,
        xt_target,
    },
    Chain, Family, LegacyError, Rule,
    sockopt::{GetInfo, HOOKS},
};

/// `IFNAMSIZ` (include/uapi/linux/if.h).
const IFNAMSIZ: usize = 16;
/// `XT_EXTENSION_MAXNAMELEN` (include/uapi/linux/netfilter/x_tables.h).
const EXTENSION_NAME_LEN: usize = 29;

/// `struct xt_counters` (include/uapi/linux/netfilter/x_tables.h).
#[repr(C)]
struct XtCounters {
    pcnt: u64,
    bcnt: u64,
}

/// `struct ipt_ip` (include/uapi/linux/netfilter_ipv4/ip_tables.h);
/// addresses and masks in network order.
#[repr(C)]
struct IptIp {
    src: u32,
    dst: u32,
    smsk: u32,
    dmsk: u32,
    iniface: [u8; IFNAMSIZ],
    outiface: [u8; IFNAMSIZ],
    iniface_mask: [u8; IFNAMSIZ],
    outiface_mask: [u8; IFNAMSIZ],
    proto: u16,
    flags: u8,
    invflags: u8,
}

/// `struct ipt_entry` (include/uapi/linux/netfilter_ipv4/ip_tables.h); its
/// matches and then its target follow it (`elems[]`).
#[repr(C)]
struct IptEntry {
    ip: IptIp,
    nfcache: u32,
    target_offset: u16,
    next_offset: u16,
    comefrom: u32,
    counters: XtCounters,
}

/// `struct ip6t_ip6` (include/uapi/linux/netfilter_ipv6/ip6_tables.h);
/// `struct in6_addr` is four u32 words.
#[repr(C)]
struct Ip6tIp6 {
    src: [u32; 4],
    dst: [u32; 4],
    smsk: [u32; 4],
    dmsk: [u32; 4],
    iniface: [u8; IFNAMSIZ],
    outiface: [u8; IFNAMSIZ],
    iniface_mask: [u8; IFNAMSIZ],
    outiface_mask: [u8; IFNAMSIZ],
    proto: u16,
    tos: u8,
    flags: u8,
    invflags: u8,
}

/// `struct ip6t_entry` (include/uapi/linux/netfilter_ipv6/ip6_tables.h).
#[repr(C)]
struct Ip6tEntry {
    ipv6: Ip6tIp6,
    nfcache: u32,
    target_offset: u16,
    next_offset: u16,
    comefrom: u32,
    counters: XtCounters,
}

/// The user view of `struct xt_entry_match` and `struct xt_entry_target`
/// (include/uapi/linux/netfilter/x_tables.h): the size of the whole
/// extension (this header and its data), its name and revision. The C
/// union is 32 bytes too; the data follows.
#[repr(C)]
struct XtEntryHeader {
    size: u16,
    name: [u8; EXTENSION_NAME_LEN],
    revision: u8,
}

const _: () = assert!(size_of::<IptEntry>() == 112);
const _: () = assert!(size_of::<Ip6tEntry>() == 168);
const _: () = assert!(size_of::<XtEntryHeader>() == 32);
const _: () = assert!(offset_of!(IptEntry, counters) == 96);
const _: () = assert!(offset_of!(Ip6tEntry, counters) == 152);

/// `IPT_F_FRAG`, `IPT_F_GOTO` (ip_tables.h); `IP6T_F_GOTO` (ip6_tables.h).
const IPT_F_FRAG: u8 = 0x01;
const IPT_F_GOTO: u8 = 0x02;
const IP6T_F_GOTO: u8 = 0x04;
/// `IPT_INV_*` (ip_tables.h); `IP6T_INV_*` (ip6_tables.h) are the same bits.
const INV_VIA_IN: u8 = 0x01;
const INV_VIA_OUT: u8 = 0x02;
const INV_SRCIP: u8 = 0x08;
const INV_DSTIP: u8 = 0x10;
const INV_FRAG: u8 = 0x20;
const INV_PROTO: u8 = 0x40;

/// Standard verdicts (include/uapi/linux/netfilter.h, x_tables.h):
/// `-NF_DROP - 1`, `-NF_ACCEPT - 1`, `-NF_QUEUE - 1`, `XT_RETURN`.
const VERDICT_DROP: i32 = -1;
const VERDICT_ACCEPT: i32 = -2;
const VERDICT_QUEUE: i32 = -4;
const VERDICT_RETURN: i32 = -5;

/// The built-in chain of each hook (`NF_INET_PRE_ROUTING` ... `POST_ROUTING`).
const HOOK_CHAINS: [&str; HOOKS] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Where a family's fields are.
struct Geometry {
    entry: usize,
    target_offset: usize,
    next_offset: usize,
    counters: usize,
    /// src, dst, smsk, dmsk, and their length.
    addresses: [usize; 4],
    address_len: usize,
    ifaces: [usize; 4],
    proto: usize,
    flags: usize,
    invflags: usize,
    goto_flag: u8,
}

/// The geometry of an entry struct `$entry` whose match part is `$ip`.
macro_rules! geometry {
    ($entry:ty, $ip:ty, $address_len:expr, $goto_flag:expr) => {
        Geometry {
            entry: size_of::<$entry>(),
            target_offset: offset_of!($entry, target_offset),
            next_offset: offset_of!($entry, next_offset),
            counters: offset_of!($entry, counters),
            addresses: [
                offset_of!($ip, src),
                offset_of!($ip, dst),
                offset_of!($ip, smsk),
                offset_of!($ip, dmsk),
            ],
            address_len: $address_len,
            ifaces: [
                offset_of!($ip, iniface),
                offset_of!($ip, outiface),
                offset_of!($ip, iniface_mask),
                offset_of!($ip, outiface_mask),
            ],
            proto: offset_of!($ip, proto),
            flags: offset_of!($ip, flags),
            invflags: offset_of!($ip, invflags),
            goto_flag: $goto_flag,
        }
    };
}

const V4: Geometry = geometry!(IptEntry, IptIp, 4, IPT_F_GOTO);
const V6: Geometry = geometry!(Ip6tEntry, Ip6tIp6, 16, IP6T_F_GOTO);

/// A match or target: name, revision and its info struct.
struct Extension<'a> {
    name: String,
    revision: u8,
    data: &'a [u8],
}

/// One entry of the blob, its fixed part still as bytes.
struct Entry<'a> {
    offset: usize,
    next_offset: usize,
    /// The `ipt_ip` / `ip6t_ip6` part.
    ip: &'a [u8],
    counters: Counters,
    matches: Vec<Extension<'a>>,
    target: Extension<'a>,
}

impl Entry<'_> {
    /// The verdict of a standard target.
    fn verdict(&self) -> Option<i32> {
        if !self.target.name.is_empty() {
            return None;
        }
        u32_at(self.target.data, 0).map(|v| v as i32)
    }
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A parse failure at `offset`.
struct Bad {
    offset: usize,
    what: &'static str,
}

fn bad(offset: usize, what: &'static str) -> Bad {
    Bad { offset, what }
}

/// The header and data of the extension at `at`, which must end by `end`.
fn extension(blob: &[u8], at: usize, end: usize) -> Result<(Extension<'_>, usize), Bad> {
    let header = size_of::<XtEntryHeader>();
    let size = usize::from(u16_at(blob, at).ok_or(bad(at, "extension header"))?);
    let stop = at
        .checked_add(size)
        .filter(|&s| size >= header && s <= end)
        .ok_or(bad(at, "extension size"))?;
    let name = blob
        .get(at + 2..at + 2 + EXTENSION_NAME_LEN)
        .ok_or(bad(at, "extension name"))?;
    let revision = *blob
        .get(at + offset_of!(XtEntryHeader, revision))
        .ok_or(bad(at, "extension revision"))?;
    let data = blob
        .get(at + header..stop)
        .ok_or(bad(at, "extension data"))?;
    Ok((
        Extension {
            name: cstr(name),
            revision,
            data,
        },
        stop,
    ))
}

/// The entry at `offset`, bounds-checked.
fn entry<'a>(g: &Geometry, blob: &'a [u8], offset: usize) -> Result<Entry<'a>, Bad> {
    let fixed = blob
        .get(offset..offset.checked_add(g.entry).ok_or(bad(offset, "offset"))?)
        .ok_or(bad(offset, "entry truncated"))?;
    let target_offset = usize::from(u16_at(fixed, g.target_offset).ok_or(bad(offset, "entry"))?);
    let next_offset = usize::from(u16_at(fixed, g.next_offset).ok_or(bad(offset, "entry"))?);
    let header = size_of::<XtEntryHeader>();
    if target_offset < g.entry
        || target_offset + header > next_offset
        || offset + next_offset > blob.len()
    {
        return Err(bad(offset, "entry offsets"));
    }
    let end = offset + next_offset;
    let target_at = offset + target_offset;
    let mut matches = Vec::new();
    let mut at = offset + g.entry;
    while at < target_at {
        let (m, stop) = extension(blob, at, target_at)?;
        matches.push(m);
        at = stop;
    }
    let (target, _) = extension(blob, target_at, end)?;
    Ok(Entry {
        offset,
        next_offset,
        ip: fixed,
        counters: Counters {
            packets: u64_at(fixed, g.counters).unwrap_or(0),
            bytes: u64_at(fixed, g.counters + 8).unwrap_or(0),
        },
        matches,
        target,
    })
}

/// A chain being collected: its entries (the policy entry last).
struct Building {
    name: String,
    builtin: bool,
    head: usize,
    entries: Vec<usize>,
}

/// A chain of the table: where it spans (for jumps) and its entries.
struct Span {
    name: String,
    builtin: bool,
    head: usize,
    foot: usize,
    rules: Vec<usize>,
    policy: usize,
}

fn close(
    current: Option<Building>,
    entries: &[Entry<'_>],
    spans: &mut Vec<Span>,
) -> Result<(), Bad> {
    let Some(mut chain) = current else {
        return Ok(());
    };
    let policy = chain
        .entries
        .pop()
        .ok_or(bad(chain.head, "chain without its policy entry"))?;
    spans.push(Span {
        name: chain.name,
        builtin: chain.builtin,
        head: chain.head,
        foot: entries[policy].offset,
        rules: chain.entries,
        policy,
    });
    Ok(())
}

/// The table's chains, with each rule rendered as `iptables-legacy-save`
/// prints it (after `-A CHAIN`).
pub(super) fn parse(
    family: Family,
    table: &str,
    blob: &[u8],
    info: &GetInfo,
) -> Result<Parsed, LegacyError> {
    parse_blob(family, blob, info.valid_hooks, &info.hook_entry).map_err(|b| {
        LegacyError::Malformed {
            family: family.label(),
            table: table.to_owned(),
            offset: b.offset,
            what: b.what,
        }
    })
}

/// [`parse`] with the table's built-in chains: the hooks `valid_hooks`
/// names start at their `hook_entry` offsets.
fn parse_blob(
    family: Family,
    blob: &[u8],
    valid_hooks: u32,
    hook_entry: &[u32; HOOKS],
) -> Result<Parsed, Bad> {
    let g = match family {
        Family::Ipv4 => &V4,
        Family::Ipv6 => &V6,
    };
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < blob.len() {
        let e = entry(g, blob, offset)?;
        offset += e.next_offset;
        entries.push(e);
    }
    let hook_at = |offset: usize| {
        (0..HOOKS).find(|&h| valid_hooks & (1 << h) != 0 && hook_entry[h] as usize == offset)
    };
    let mut spans = Vec::new();
    let mut current: Option<Building> = None;
    for (index, e) in entries.iter().enumerate() {
        if e.offset + e.next_offset == blob.len() {
            // The table's end marker: the last entry, whatever it holds.
            close(current.take(), &entries, &mut spans)?;
            break;
        }
        if e.target.name == "ERROR" {
            close(current.take(), &entries, &mut spans)?;
            current = Some(Building {
                name: cstr(e.target.data),
                builtin: false,
                head: e.offset,
                entries: Vec::new(),
            });
            continue;
        }
        if let Some(hook) = hook_at(e.offset) {
            close(current.take(), &entries, &mut spans)?;
            current = Some(Building {
                name: HOOK_CHAINS[hook].to_owned(),
                builtin: true,
                head: e.offset,
                entries: Vec::new(),
            });
        }
        current
            .as_mut()
            .ok_or(bad(e.offset, "rule outside any chain"))?
            .entries
            .push(index);
    }
    let v6 = family == Family::Ipv6;
    let mut slots = vec![Slot::Skip; entries.len()];
    for (c, span) in spans.iter().enumerate() {
        for (r, &i) in span.rules.iter().enumerate() {
            slots[i] = Slot::Rule(c, r);
        }
        if span.builtin {
            slots[span.policy] = Slot::Policy(c);
        }
    }
    let chains = spans
        .iter()
        .map(|span| {
            let policy = &entries[span.policy];
            Chain {
                name: span.name.clone(),
                policy: span.builtin.then(|| {
                    policy
                        .verdict()
                        .map_or_else(|| "-".to_owned(), verdict_name)
                }),
                counters: if span.builtin {
                    policy.counters
                } else {
                    Counters::default()
                },
                rules: span
                    .rules
                    .iter()
                    .map(|&i| Rule {
                        text: render_entry(g, &entries[i], &spans, v6),
                        counters: entries[i].counters,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Parsed { chains, slots })
}

/// Where the counters of an entry go in [`Parsed::chains`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// A chain head, a user chain's RETURN, the end marker.
    Skip,
    /// The policy of built-in chain `.0`.
    Policy(usize),
    /// Rule `.1` of chain `.0`.
    Rule(usize, usize),
}

/// A table's chains and, for every entry in blob order, where its
/// counters go: what [`counters`] of a later read of the same structure
/// updates.
#[derive(Clone, Debug)]
pub(super) struct Parsed {
    pub chains: Vec<Chain>,
    pub slots: Vec<Slot>,
}

impl Parsed {
    /// Sets every counter from `counters` (one per entry, in blob order);
    /// false, changing nothing, when they are not one per entry.
    pub(super) fn set_counters(&mut self, counters: &[Counters]) -> bool {
        if counters.len() != self.slots.len() {
            return false;
        }
        for (slot, &c) in self.slots.iter().zip(counters) {
            match *slot {
                Slot::Skip => {}
                Slot::Policy(chain) => {
                    if let Some(chain) = self.chains.get_mut(chain) {
                        chain.counters = c;
                    }
                }
                Slot::Rule(chain, rule) => {
                    if let Some(rule) = self
                        .chains
                        .get_mut(chain)
                        .and_then(|chain| chain.rules.get_mut(rule))
                    {
                        rule.counters = c;
                    }
                }
            }
        }
        true
    }
}

/// The blob with every entry's counters zeroed (its structure: equal
/// structures render equally), and those counters in blob order. `None`
/// when the entries do not chain up to the blob's end: [`parse`] says why.
pub(super) fn counters(family: Family, blob: &[u8]) -> Option<(Vec<u8>, Vec<Counters>)> {
    let g = match family {
        Family::Ipv4 => &V4,
        Family::Ipv6 => &V6,
    };
    let mut structure = blob.to_vec();
    let mut counters = Vec::new();
    let mut offset = 0;
    while offset < blob.len() {
        let next = usize::from(u16_at(blob, offset.checked_add(g.next_offset)?)?);
        let at = offset + g.counters;
        if next < g.entry || offset + next > blob.len() {
            return None;
        }
        counters.push(Counters {
            packets: u64_at(blob, at)?,
            bytes: u64_at(blob, at + 8)?,
        });
        structure.get_mut(at..at + 16)?.fill(0);
        offset += next;
    }
    Some((structure, counters))
}

/// libiptc's `standard_target_map`, with any other verdict shown as a number.
fn verdict_name(verdict: i32) -> String {
    match verdict {
        VERDICT_ACCEPT => "ACCEPT".into(),
        VERDICT_DROP => "DROP".into(),
        VERDICT_QUEUE => "QUEUE".into(),
        VERDICT_RETURN => "RETURN".into(),
        other => format!("[verdict {other}]"),
    }
}

/// xshared.c's `save_iface`: the name up to the mask's end, `+` when the
/// mask stops before the name does.
fn iface(name: &[u8], mask: &[u8], invert: bool) -> Option<(String, bool)> {
    if mask.first().copied().unwrap_or(0) == 0 {
        return None;
    }
    let mut text = Vec::new();
    for (i, (&c, &m)) in name.iter().zip(mask).enumerate() {
        if m != 0 {
            if c != 0 {
                text.push(c);
            }
        } else {
            if i > 0 && name[i - 1] != 0 {
                text.push(b'+');
            }
            break;
        }
    }
    Some((String::from_utf8_lossy(&text).into_owned(), invert))
}

/// The rule text of entry `e`, as `print_rule4`/`print_rule6` print it.
fn render_entry(g: &Geometry, e: &Entry<'_>, spans: &[Span], v6: bool) -> String {
    let byte = |at: usize| e.ip.get(at).copied().unwrap_or(0);
    let field = |at: usize, len: usize| e.ip.get(at..at + len).unwrap_or_default().to_vec();
    let (flags, invflags) = (byte(g.flags), byte(g.invflags));
    let address = |addr: usize, mask: usize, inv: u8| Address {
        addr: field(g.addresses[addr], g.address_len),
        mask: field(g.addresses[mask], g.address_len),
        invert: invflags & inv != 0,
    };
    let mut cmd = Command {
        src: Some(address(0, 2, INV_SRCIP)),
        dst: Some(address(1, 3, INV_DSTIP)),
        iniface: iface(
            &field(g.ifaces[0], IFNAMSIZ),
            &field(g.ifaces[2], IFNAMSIZ),
            invflags & INV_VIA_IN != 0,
        ),
        outiface: iface(
            &field(g.ifaces[1], IFNAMSIZ),
            &field(g.ifaces[3], IFNAMSIZ),
            invflags & INV_VIA_OUT != 0,
        ),
        ..Command::default()
    };
    let proto = u16_at(e.ip, g.proto).unwrap_or(0);
    match u8::try_from(proto) {
        Ok(p) => {
            cmd.proto = p;
            cmd.proto_invert = invflags & INV_PROTO != 0;
        }
        Err(_) => cmd.matches.push(Match::Native(format!("[proto {proto}]"))),
    }
    if !v6 && flags & IPT_F_FRAG != 0 {
        cmd.fragment = Some(invflags & INV_FRAG != 0);
    }
    for m in &e.matches {
        cmd.matches.push(Match::from_compat(
            &m.name,
            u32::from(m.revision),
            m.data,
            v6,
        ));
    }
    cmd.target = target(g, e, flags, spans, v6);
    render::print(&cmd, v6)
}

/// ` -j NAME ...`, ` -g CHAIN`, or nothing for a rule that only counts.
fn target(g: &Geometry, e: &Entry<'_>, flags: u8, spans: &[Span], v6: bool) -> Option<String> {
    let Some(verdict) = e.verdict() else {
        let mut text = String::new();
        xt_target::save(
            &mut text,
            &e.target.name,
            u32::from(e.target.revision),
            e.target.data,
            v6,
        );
        return Some(text);
    };
    let name = if verdict < 0 {
        verdict_name(verdict)
    } else if verdict as usize == e.offset + e.next_offset {
        // Falls through to the next rule: no target.
        return None;
    } else {
        // libiptc's `iptcc_find_chain_by_offset`.
        spans
            .iter()
            .find(|s| (s.head..=s.foot).contains(&(verdict as usize)))
            .map_or_else(|| format!("[offset {verdict}]"), |s| s.name.clone())
    };
    let letter = if flags & g.goto_flag != 0 { 'g' } else { 'j' };
    Some(format!(" -{letter} {name}"))
}

#[cfg(test)]
mod tests;
