//! The guard's table, built once as a netlink batch and once as nft text
//! (for `--dry-run`); both come from [`rules`], so they cannot disagree.
//!
//! The batch starts with "add table; delete table": the first makes the
//! second succeed when there is no table yet, and inside one transaction
//! the old table is replaced atomically, with no moment unguarded.

use std::{ffi::CString, fmt::Write as _};

use ipnet::IpNet;
use nftnl::{
    Batch, Chain, FinalizedBatch, Hook, MsgType, Policy, ProtoFamily, Rule, Table, nft_expr,
    nftnl_sys::libc,
};

use super::{Guard, TABLE};

const CHAIN: &str = "input";
/// The loopback interface's index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// One rule of the chain, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Loopback always reaches the port (the agent itself fetches from localhost).
    Loopback,
    Allow(IpNet),
    Drop,
}

pub fn rules(guard: &Guard) -> Vec<Line> {
    std::iter::once(Line::Loopback)
        .chain(guard.allow.iter().copied().map(Line::Allow))
        .chain([Line::Drop])
        .collect()
}

fn names() -> (CString, CString) {
    (
        CString::new(TABLE).expect("constant without NUL"),
        CString::new(CHAIN).expect("constant without NUL"),
    )
}

/// The table, replacing any earlier one, in one transaction.
pub fn apply_batch(guard: &Guard) -> FinalizedBatch {
    let (table_name, chain_name) = names();
    let mut batch = Batch::new();
    let table = Table::new(&table_name, ProtoFamily::Inet);
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    batch.add(&table, MsgType::Add);
    let mut chain = Chain::new(&chain_name, &table);
    chain.set_hook(Hook::In, 0);
    chain.set_policy(Policy::Accept);
    batch.add(&chain, MsgType::Add);
    for line in rules(guard) {
        let mut rule = Rule::new(&chain);
        if line == Line::Loopback {
            rule.add_expr(&nft_expr!(meta iif));
            rule.add_expr(&nft_expr!(cmp == LOOPBACK_IFINDEX));
        }
        if let Line::Allow(net) = line {
            let (family, mask) = match net {
                IpNet::V4(_) => (libc::NFPROTO_IPV4 as u8, net.netmask()),
                IpNet::V6(_) => (libc::NFPROTO_IPV6 as u8, net.netmask()),
            };
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&nft_expr!(cmp == family));
            match net {
                IpNet::V4(_) => rule.add_expr(&nft_expr!(payload ipv4 saddr)),
                IpNet::V6(_) => rule.add_expr(&nft_expr!(payload ipv6 saddr)),
            }
            let zero = match net {
                IpNet::V4(_) => vec![0u8; 4],
                IpNet::V6(_) => vec![0u8; 16],
            };
            rule.add_expr(&nft_expr!(bitwise mask mask, xor & zero[..]));
            rule.add_expr(&nft_expr!(cmp == net.network()));
        }
        rule.add_expr(&nft_expr!(meta l4proto));
        rule.add_expr(&nft_expr!(cmp == libc::IPPROTO_TCP as u8));
        rule.add_expr(&nft_expr!(payload tcp dport));
        rule.add_expr(&nft_expr!(cmp == &guard.port.to_be_bytes()[..]));
        if line != Line::Loopback {
            rule.add_expr(&nft_expr!(counter));
        }
        match line {
            Line::Drop => rule.add_expr(&nft_expr!(verdict drop)),
            _ => rule.add_expr(&nft_expr!(verdict accept)),
        }
        batch.add(&rule, MsgType::Add);
    }
    batch.finalize()
}

/// Deletes the table if there is one ("add" first makes "delete" succeed).
pub fn remove_batch() -> FinalizedBatch {
    let (table_name, _) = names();
    let mut batch = Batch::new();
    let table = Table::new(&table_name, ProtoFamily::Inet);
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    batch.finalize()
}

/// The table as `nft list table` would print it (for `--dry-run`).
pub fn render(guard: &Guard) -> String {
    let port = guard.port;
    let mut out = format!(
        "table inet {TABLE} {{\n\tchain {CHAIN} {{\n\t\ttype filter hook input priority filter; policy accept;\n"
    );
    for line in rules(guard) {
        let rule = match line {
            Line::Loopback => format!("iif \"lo\" tcp dport {port} accept"),
            Line::Allow(IpNet::V4(n)) => {
                format!(
                    "ip saddr {} tcp dport {port} counter accept",
                    show(n.into())
                )
            }
            Line::Allow(IpNet::V6(n)) => {
                format!(
                    "ip6 saddr {} tcp dport {port} counter accept",
                    show(n.into())
                )
            }
            Line::Drop => format!("tcp dport {port} counter drop"),
        };
        let _ = writeln!(out, "\t\t{rule}");
    }
    out.push_str("\t}\n}\n");
    out
}

/// A host route as its address alone, as nft prints it.
fn show(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_ruleset() {
        let guard = Guard::new(
            9100,
            &["198.18.0.1".into(), "2001:db8:1::/48".into()],
            9919,
            false,
        )
        .unwrap();
        assert_eq!(
            render(&guard),
            "table inet scanner_agent_guard {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiif \"lo\" tcp dport 9100 accept\n\
             \t\tip saddr 198.18.0.1 tcp dport 9100 counter accept\n\
             \t\tip6 saddr 2001:db8:1::/48 tcp dport 9100 counter accept\n\
             \t\ttcp dport 9100 counter drop\n\t}\n}\n"
        );
    }
}
