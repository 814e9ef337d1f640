//! Hosts still on legacy x_tables (`iptables-legacy`): their rules live in
//! the kernel's x_tables, invisible to nftables netlink. They are read the
//! way `iptables-legacy-save` reads them, without running it: the
//! x_tables get-sockopts ([`sockopt`]) give each table's entries with
//! their counters in one consistent copy, and [`entries`] renders every
//! rule with the nftables path's printers. The collector exports them in
//! the same `iptables_*` / `ip6tables_*` families, except a table an
//! iptables-nft table of the same family and name shadows (see
//! [`read`]).
//!
//! Only the tables the kernel lists under /proc/net (`ip_tables_names`,
//! `ip6_tables_names`) are asked for: asking for another can make the
//! kernel load a module and create that table. No list (a kernel without
//! legacy x_tables, or its module not loaded) means no legacy tables. The
//! lists are read through thread-self: /proc/net follows the process's
//! first thread, not a thread that entered another network namespace.

mod entries;
mod sockopt;

use std::{
    collections::{HashMap, hash_map::Entry},
    io,
};

use super::{
    labels::Labels,
    layout::{ChainLabels, PolicyLabels, RuleLabels},
    ruleset::Counters,
};

/// The largest entries blob read per table (the size the kernel announces
/// in `*_SO_GET_INFO`). A typical rule takes 150 to 300 bytes, so this is
/// some 200,000 rules or more; a larger table fails to read, with an error.
pub(super) const MAX_TABLE_BYTES: usize = 64 << 20;
/// Attempts before giving up on a table that keeps changing size between
/// its info and its entries.
const ATTEMPTS: usize = 5;

/// The address family of an x_tables table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The `family` label of the `scanner_agent_firewall_legacy_*` families.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            Self::Ipv4 => "/proc/thread-self/net/ip_tables_names",
            Self::Ipv6 => "/proc/thread-self/net/ip6_tables_names",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LegacyError {
    #[error(
        "reading legacy x_tables needs CAP_NET_ADMIN in the agent's network namespace ({family} table {table}: {source})"
    )]
    Permission {
        family: &'static str,
        table: String,
        source: io::Error,
    },
    #[error("cannot open a socket to read legacy {family} x_tables: {source}")]
    Socket {
        family: &'static str,
        source: io::Error,
    },
    #[error("reading legacy {family} table {table}: {source}")]
    Sockopt {
        family: &'static str,
        table: String,
        source: io::Error,
    },
    #[error(
        "legacy {family} table {table} holds {size} bytes of rules, more than the {max} bytes read"
    )]
    TooLarge {
        family: &'static str,
        table: String,
        size: usize,
        max: usize,
    },
    #[error("legacy {family} table {table} changed during each of {attempts} attempts to read it")]
    KeepsChanging {
        family: &'static str,
        table: String,
        attempts: usize,
    },
    #[error("malformed legacy {family} table {table} at byte {offset}: {what}")]
    Malformed {
        family: &'static str,
        table: String,
        offset: usize,
        what: &'static str,
    },
}

/// A rule: its text as `iptables-legacy-save` prints it after `-A CHAIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rule {
    pub text: String,
    pub counters: Counters,
}

/// A chain: built-in ones have a policy and its counters; user chains
/// have neither (`iptables-save` prints `- [0:0]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Chain {
    pub name: String,
    pub policy: Option<String>,
    pub counters: Counters,
    pub rules: Vec<Rule>,
}

/// Every legacy table in this network namespace, by family then name.
pub(super) fn tables() -> Vec<(Family, String)> {
    [Family::Ipv4, Family::Ipv6]
        .into_iter()
        .flat_map(|family| {
            let text = std::fs::read_to_string(family.names_file()).unwrap_or_default();
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
    let list: Vec<String> = tables
        .iter()
        .map(|(f, t)| format!("{} {t}", f.label()))
        .collect();
    tracing::warn!(
        "legacy x_tables (iptables-legacy) tables in use: {}; their counters are exported as iptables_*/ip6tables_*, except where an iptables-nft table of the same name shadows them (migrate to iptables-nft)",
        list.join(", ")
    );
}

/// A table as last read: its structure (the entries blob with the
/// counters zeroed, and its hooks) and what it rendered to.
#[derive(Debug)]
struct Cached {
    structure: Vec<u8>,
    hooks: (u32, [u32; sockopt::HOOKS]),
    parsed: entries::Parsed,
}

/// The tables of the last read, so a scrape of an unchanged table only
/// takes the counters from its new copy instead of rendering every rule
/// again. Tables that are gone are dropped at each read: it holds about
/// twice the entries of the tables in use, never more.
#[derive(Debug, Default)]
pub(super) struct Cache(HashMap<(Family, String), Cached>);

/// One table's chains, read in one consistent copy.
fn read_table<'c>(
    family: Family,
    table: &str,
    cache: &'c mut Cache,
) -> Result<&'c [Chain], LegacyError> {
    let label = family.label();
    let socket = sockopt::Socket::new(family).map_err(|source| LegacyError::Socket {
        family: label,
        source,
    })?;
    let failed = |source: io::Error| {
        if source.raw_os_error() == Some(libc::EPERM) {
            LegacyError::Permission {
                family: label,
                table: table.to_owned(),
                source,
            }
        } else {
            LegacyError::Sockopt {
                family: label,
                table: table.to_owned(),
                source,
            }
        }
    };
    for _ in 0..ATTEMPTS {
        let info = socket.info(table).map_err(failed)?;
        let size = info.size as usize;
        if size > MAX_TABLE_BYTES {
            return Err(LegacyError::TooLarge {
                family: label,
                table: table.to_owned(),
                size,
                max: MAX_TABLE_BYTES,
            });
        }
        match socket.entries(table, size) {
            Ok(blob) => return parsed(family, table, &blob, &info, cache),
            // The table was replaced by one of another size in between.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(LegacyError::KeepsChanging {
        family: label,
        table: table.to_owned(),
        attempts: ATTEMPTS,
    })
}

/// The chains of `blob`: the cached ones with new counters when its
/// structure is the one last read, else rendered (and cached).
fn parsed<'c>(
    family: Family,
    table: &str,
    blob: &[u8],
    info: &sockopt::GetInfo,
    cache: &'c mut Cache,
) -> Result<&'c [Chain], LegacyError> {
    let key = (family, table.to_owned());
    let hooks = (info.valid_hooks, info.hook_entry);
    let split = entries::counters(family, blob);
    let unchanged = match (cache.0.get_mut(&key), &split) {
        (Some(cached), Some((structure, counters))) => {
            cached.hooks == hooks
                && cached.structure == *structure
                && cached.parsed.set_counters(counters)
        }
        _ => false,
    };
    if !unchanged {
        cache.0.remove(&key);
        let parsed = entries::parse(family, table, blob, info)?;
        let structure = split.map(|(s, _)| s).unwrap_or_default();
        cache.0.insert(
            key.clone(),
            Cached {
                structure,
                hooks,
                parsed,
            },
        );
    }
    Ok(cache
        .0
        .get(&key)
        .map_or(&[][..], |c| c.parsed.chains.as_slice()))
}

/// One family's legacy series, merged as the nftables path merges its
/// own: identical rules of a chain add up in one series (unless
/// `position` labels tell them apart), series in the order of their first
/// rule in the dump (as `iptables-legacy-save` prints them). Labels are
/// written out as the layout writes the nftables ones.
#[derive(Debug, Default)]
pub(super) struct Series {
    pub policies: Vec<(Labels, Counters)>,
    pub rules: Vec<(Labels, Counters)>,
    pub chain_rules: Vec<(Labels, u64)>,
    /// Whether every table of the family was read.
    pub complete: bool,
}

impl Series {
    fn add(&mut self, table: &str, chains: &[Chain], position_label: bool) {
        let mut groups: HashMap<RuleLabels, usize> = HashMap::new();
        let mut rules: Vec<(RuleLabels, Counters)> = Vec::new();
        for chain in chains {
            let policy = chain.policy.as_deref().unwrap_or("-");
            self.policies.push((
                Labels::of(&PolicyLabels::new(table, &chain.name, policy)),
                chain.counters,
            ));
            self.chain_rules.push((
                Labels::of(&ChainLabels::new(table, &chain.name)),
                chain.rules.len() as u64,
            ));
            for (position, rule) in chain.rules.iter().enumerate() {
                let labels = RuleLabels::new(
                    table,
                    &chain.name,
                    rule.text.clone(),
                    position_label.then_some(position + 1),
                );
                match groups.entry(labels) {
                    Entry::Occupied(e) => rules[*e.get()].1 += rule.counters,
                    Entry::Vacant(e) => {
                        rules.push((e.key().clone(), rule.counters));
                        e.insert(rules.len() - 1);
                    }
                }
            }
        }
        self.rules.extend(
            rules
                .into_iter()
                .map(|(labels, counters)| (Labels::of(&labels), counters)),
        );
    }
}

/// What one scrape read of the legacy tables.
#[derive(Debug, Default)]
pub(super) struct Read {
    pub ipv4: Series,
    pub ipv6: Series,
    /// Tables left out because an iptables-nft table of the same family
    /// and name is exported under the same names.
    pub shadowed: Vec<(Family, String)>,
    pub errors: Vec<LegacyError>,
}

/// Reads every legacy table that `shadowed` (family, table) does not
/// name. Those are exported from nftables: exporting both would give two
/// series the same label set, so the legacy one is left out and reported.
pub(super) fn read(
    shadowed: impl Fn(Family, &str) -> bool,
    position_label: bool,
    cache: &mut Cache,
) -> Read {
    let mut read = Read {
        ipv4: Series {
            complete: true,
            ..Series::default()
        },
        ipv6: Series {
            complete: true,
            ..Series::default()
        },
        ..Read::default()
    };
    let in_use = tables();
    cache.0.retain(|(f, t), _| {
        in_use
            .iter()
            .any(|(family, table)| f == family && t == table)
            && !shadowed(*f, t)
    });
    for (family, table) in in_use {
        if shadowed(family, &table) {
            read.shadowed.push((family, table));
            continue;
        }
        let series = match family {
            Family::Ipv4 => &mut read.ipv4,
            Family::Ipv6 => &mut read.ipv6,
        };
        match read_table(family, &table, cache) {
            Ok(chains) => series.add(&table, chains, position_label),
            Err(e) => {
                series.complete = false;
                read.errors.push(e);
            }
        }
    }
    read
}
