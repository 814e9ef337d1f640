//! Hosts still on legacy x_tables (`iptables-legacy`): their rules live in
//! the kernel's x_tables, invisible to nftables netlink, so they are named
//! (log line and `scanner_agent_firewall_legacy_table`) rather than
//! silently missing. The kernel lists the x_tables tables in use in each
//! network namespace under /proc/net (read through thread-self: /proc/net
//! follows the process's first thread, not a thread that entered another
//! namespace).

/// (`ipv4` | `ipv6`, table) for every legacy table in this network namespace.
pub(super) fn tables() -> Vec<(&'static str, String)> {
    [
        ("ipv4", "/proc/thread-self/net/ip_tables_names"),
        ("ipv6", "/proc/thread-self/net/ip6_tables_names"),
    ]
    .into_iter()
    .flat_map(|(family, path)| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut names: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        names.sort();
        names.into_iter().map(move |t| (family, t))
    })
    .collect()
}

/// Logs, once at start, the legacy tables a host still uses.
pub(super) fn warn_if_present() {
    let tables = tables();
    if tables.is_empty() {
        return;
    }
    let list: Vec<String> = tables.iter().map(|(f, t)| format!("{f} {t}")).collect();
    tracing::warn!(
        "legacy x_tables (iptables-legacy) tables in use: {}; their counters cannot be read over nftables netlink and are not exported (migrate to iptables-nft)",
        list.join(", ")
    );
}
