//! xtables targets as `iptables-save` prints them (`-j NAME ...`), from the
//! info structs of compat `target` expressions.

use std::fmt::Write as _;

use super::save_text::{hex, save_string, u32_at};

/// ` -j NAME ...` for a compat target.
pub(super) fn save(out: &mut String, name: &str, rev: u32, info: &[u8], v6: bool) {
    let _ = write!(out, " -j {name}");
    let text = match (name, rev) {
        ("LOG", 0) => log(info),
        ("REJECT", 0) => reject(info, v6),
        ("MARK", 2) => mark(info),
        ("MASQUERADE", 0) if !v6 => masquerade(info),
        ("MASQUERADE", 0) => masquerade6(info),
        _ => None,
    };
    match text {
        Some(text) => out.push_str(&text),
        None => {
            let _ = write!(out, " [rev {rev} info {}]", hex(info));
        }
    }
}

/// ` -j MARK --set-xmark` for iptables-nft's native `meta mark set`.
pub(super) fn save_mark(out: &mut String, mark: u32, mask: u32) {
    let _ = write!(out, " -j MARK --set-xmark 0x{mark:x}/0x{mask:x}");
}

/// `struct xt_log_info`: level, flags, 30-byte prefix.
fn log(info: &[u8]) -> Option<String> {
    let level = *info.first()?;
    let flags = *info.get(1)?;
    let prefix = info.get(2..32)?;
    let end = prefix.iter().position(|&c| c == 0).unwrap_or(prefix.len());
    let prefix = String::from_utf8_lossy(&prefix[..end]);
    let mut out = String::new();
    if !prefix.is_empty() {
        out.push_str(" --log-prefix");
        save_string(&mut out, &prefix);
    }
    // LOG_WARNING is the default level and not printed.
    if level != 4 {
        let _ = write!(out, " --log-level {level}");
    }
    for (bit, option) in [
        (0x01, " --log-tcp-sequence"),
        (0x02, " --log-tcp-options"),
        (0x04, " --log-ip-options"),
        (0x08, " --log-uid"),
        (0x20, " --log-macdecode"),
    ] {
        if flags & bit != 0 {
            out.push_str(option);
        }
    }
    Some(out)
}

fn reject(info: &[u8], v6: bool) -> Option<String> {
    const V4: [&str; 9] = [
        "icmp-net-unreachable",
        "icmp-host-unreachable",
        "icmp-proto-unreachable",
        "icmp-port-unreachable",
        "echo-reply",
        "icmp-net-prohibited",
        "icmp-host-prohibited",
        "tcp-reset",
        "icmp-admin-prohibited",
    ];
    const V6: [&str; 9] = [
        "icmp6-no-route",
        "icmp6-adm-prohibited",
        "icmp6-not-neighbour",
        "icmp6-addr-unreachable",
        "icmp6-port-unreachable",
        "",
        "tcp-reset",
        "icmp6-policy-fail",
        "icmp6-reject-route",
    ];
    let with = u32_at(info, 0)? as usize;
    let table = if v6 { &V6 } else { &V4 };
    let name = table.get(with).filter(|n| !n.is_empty())?;
    Some(format!(" --reject-with {name}"))
}

fn mark(info: &[u8]) -> Option<String> {
    let (mark, mask) = (u32_at(info, 0)?, u32_at(info, 4)?);
    Some(format!(" --set-xmark 0x{mark:x}/0x{mask:x}"))
}

/// `struct nf_nat_ipv4_multi_range_compat` with one range.
fn masquerade(info: &[u8]) -> Option<String> {
    nat_ports(info, 4, 16)
}

/// `struct nf_nat_range` (IPv6): flags, two addresses, then the ports.
fn masquerade6(info: &[u8]) -> Option<String> {
    nat_ports(info, 0, 36)
}

/// libxt_MASQUERADE's save: the flags at `flags_at`, the big-endian port
/// range at `ports_at`.
fn nat_ports(info: &[u8], flags_at: usize, ports_at: usize) -> Option<String> {
    let flags = u32_at(info, flags_at)?;
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(info.get(at..at + 2)?.try_into().ok()?))
    };
    let (min, max) = (port(ports_at)?, port(ports_at + 2)?);
    let mut out = String::new();
    if flags & 0x02 != 0 {
        let _ = write!(out, " --to-ports {min}");
        if max != min {
            let _ = write!(out, "-{max}");
        }
    }
    if flags & 0x04 != 0 {
        out.push_str(" --random");
    }
    if flags & 0x10 != 0 {
        out.push_str(" --random-fully");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(name: &str, rev: u32, info: &[u8], v6: bool) -> String {
        let mut s = String::new();
        save(&mut s, name, rev, info, v6);
        s
    }

    #[test]
    fn log_prints_prefix_level_and_flags_in_libxt_log_order() {
        let mut info = vec![7u8, 0x0f];
        let mut prefix = b"a b".to_vec();
        prefix.resize(30, 0);
        info.extend(prefix);
        assert_eq!(
            saved("LOG", 0, &info, false),
            " -j LOG --log-prefix \"a b\" --log-level 7 --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid"
        );
    }

    #[test]
    fn masquerade_ports_in_both_families() {
        let mut v4 = vec![0u8; 20];
        v4[..4].copy_from_slice(&1u32.to_ne_bytes());
        v4[4..8].copy_from_slice(&0x06u32.to_ne_bytes());
        v4[16..18].copy_from_slice(&1024u16.to_be_bytes());
        v4[18..20].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(
            saved("MASQUERADE", 0, &v4, false),
            " -j MASQUERADE --to-ports 1024-2000 --random"
        );
        let mut v6 = vec![0u8; 40];
        v6[..4].copy_from_slice(&0x12u32.to_ne_bytes());
        v6[36..38].copy_from_slice(&7u16.to_be_bytes());
        v6[38..40].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            saved("MASQUERADE", 0, &v6, true),
            " -j MASQUERADE --to-ports 7 --random-fully"
        );
        assert_eq!(saved("MASQUERADE", 0, &[0; 40], true), " -j MASQUERADE");
    }

    #[test]
    fn reject_names_per_family() {
        assert_eq!(
            saved("REJECT", 0, &3u32.to_ne_bytes(), false),
            " -j REJECT --reject-with icmp-port-unreachable"
        );
        assert_eq!(
            saved("REJECT", 0, &4u32.to_ne_bytes(), true),
            " -j REJECT --reject-with icmp6-port-unreachable"
        );
    }
}
