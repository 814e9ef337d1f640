//! The text pieces of `iptables-save` output that the rule printer
//! ([`super::render`]) and the extensions' printers ([`super::xt_match`],
//! [`super::xt_target`]) share: quoting, masks, addresses, hex, and the
//! fixed-offset reads of the extensions' info structs. A leaf: it uses
//! nothing of the firewall module.

use std::{fmt::Write as _, net::Ipv4Addr};

/// The host-order `u16` at byte `at` of an extension's info struct.
pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The host-order `u32` at byte `at` of an extension's info struct.
pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A NUL-padded C string of an info struct.
pub(super) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Hex of binary data, without the trailing zero padding.
pub(super) fn hex(b: &[u8]) -> String {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    b[..end].iter().fold(String::new(), |mut s, c| {
        let _ = write!(s, "{c:02x}");
        s
    })
}

fn prefix_len(mask: &[u8]) -> Option<u32> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
        .skip(ones as usize)
        .all(|bit| bit == 0);
    contiguous.then_some(ones)
}

/// `/N`, or `/a.b.c.d` for a non-contiguous mask; `/32` only when `full`
/// (iptables-save prints it, the extensions' printers leave it out).
pub(super) fn v4_mask_suffix(mask: [u8; 4], full: bool) -> String {
    match prefix_len(&mask) {
        Some(32) if !full => String::new(),
        Some(n) => format!("/{n}"),
        None => format!("/{}", Ipv4Addr::from(mask)),
    }
}

/// As [`v4_mask_suffix`] for IPv6.
pub(super) fn v6_mask_suffix(mask: [u8; 16], full: bool) -> String {
    match prefix_len(&mask) {
        Some(128) if !full => String::new(),
        Some(n) => format!("/{n}"),
        None => format!("/{}", v6_addr(mask)),
    }
}

/// An IPv6 address as glibc's `inet_ntop` writes it (which differs from
/// Rust's for IPv4-compatible addresses such as `::198.18.0.4`).
pub(super) fn v6_addr(bytes: [u8; 16]) -> String {
    let addr = std::net::Ipv6Addr::from(bytes);
    let seg = addr.segments();
    if seg[..6] == [0; 6] && seg[6] != 0 {
        return format!(
            "::{}",
            Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15])
        );
    }
    addr.to_string()
}

/// libxtables' `xtables_save_string`: bare when safe, else double-quoted
/// with `"`, `\` and `'` escaped.
pub(super) fn save_string(out: &mut String, value: &str) {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !value.is_empty() && value.chars().all(safe) {
        out.push(' ');
        out.push_str(value);
        return;
    }
    out.push_str(" \"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_addresses_print_like_libxtables() {
        assert_eq!(v4_mask_suffix([255, 255, 0, 255], true), "/255.255.0.255");
        assert_eq!(v4_mask_suffix([255; 4], true), "/32");
        assert_eq!(v4_mask_suffix([255; 4], false), "");
        let mut m = [0u8; 16];
        m[..2].fill(0xff);
        m[4..6].fill(0xff);
        assert_eq!(v6_mask_suffix(m, true), "/ffff:0:ffff::");
        let mut a = [0u8; 16];
        a[12..].copy_from_slice(&[198, 18, 0, 4]);
        assert_eq!(v6_addr(a), "::198.18.0.4");
    }

    #[test]
    fn strings_are_quoted_like_xtables_save_string() {
        let q = |s: &str| {
            let mut out = String::new();
            save_string(&mut out, s);
            out
        };
        assert_eq!(q("simple_word-1"), " simple_word-1");
        assert_eq!(q(""), " \"\"");
        assert_eq!(q(r#"a "b" \c 'd'"#), r#" "a \"b\" \\c \'d\'""#);
    }
}
