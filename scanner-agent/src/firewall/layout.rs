//! Everything a scrape exports except the values: each family's label
//! sets (rule texts rendered, identical ones merged, in dump order, written
//! out as exposition text), and for every chain, rule and named counter of
//! a read, in dump order, its kernel handle and the series its counters
//! add to.
//!
//! A layout is built from one full read and reused while the ruleset
//! generation holds, so a scrape of an unchanged ruleset only reads
//! counters and adds them up; a new generation with the same [`structure`]
//! (only set elements changed) keeps it too. Any other change replaces it
//! whole (its unchanged rules, taken over from the last read, bring their
//! texts rendered once): its size follows the ruleset's, never the number
//! of scrapes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, hash_map::Entry},
    hash::{DefaultHasher, Hash, Hasher as _},
};

use super::{
    digest::{ByDigest, fold, mix},
    labels::{LabelSet, Labels, Writer},
    netlink::{Counts, Handled},
    render,
    ruleset::{Chain, Counters, Family, Rule, Ruleset},
};

/// A chain policy series (labels in the order the original printed them).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PolicyLabels {
    chain: String,
    policy: String,
    table: String,
}

impl PolicyLabels {
    pub(super) fn new(table: &str, chain: &str, policy: &str) -> Self {
        Self {
            chain: chain.to_owned(),
            policy: policy.to_owned(),
            table: table.to_owned(),
        }
    }
}

impl LabelSet for PolicyLabels {
    fn write(&self, out: &mut Writer) {
        out.label("chain", &self.chain);
        out.label("policy", &self.policy);
        out.label("table", &self.table);
    }
}

/// A chain of an iptables table (`iptables_chain_rules`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ChainLabels {
    chain: String,
    table: String,
}

impl ChainLabels {
    pub(super) fn new(table: &str, chain: &str) -> Self {
        Self {
            chain: chain.to_owned(),
            table: table.to_owned(),
        }
    }
}

impl LabelSet for ChainLabels {
    fn write(&self, out: &mut Writer) {
        out.label("chain", &self.chain);
        out.label("table", &self.table);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RuleLabels {
    chain: String,
    rule: String,
    table: String,
    /// Only with `rule_position_label`: the label is absent otherwise, so
    /// the default label set is exactly the original's.
    position: Option<usize>,
}

impl RuleLabels {
    pub(super) fn new(table: &str, chain: &str, rule: String, position: Option<usize>) -> Self {
        Self {
            chain: chain.to_owned(),
            rule,
            table: table.to_owned(),
            position,
        }
    }
}

impl LabelSet for RuleLabels {
    fn write(&self, out: &mut Writer) {
        out.label("chain", &self.chain);
        if let Some(position) = self.position {
            out.label("position", &position.to_string());
        }
        out.label("rule", &self.rule);
        out.label("table", &self.table);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct NftRuleLabels {
    family: String,
    table: String,
    chain: String,
    handle: String,
    comment: String,
}

impl LabelSet for NftRuleLabels {
    fn write(&self, out: &mut Writer) {
        out.label("family", &self.family);
        out.label("table", &self.table);
        out.label("chain", &self.chain);
        out.label("handle", &self.handle);
        out.label("comment", &self.comment);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct NamedCounterLabels {
    family: String,
    table: String,
    counter: String,
}

impl LabelSet for NamedCounterLabels {
    fn write(&self, out: &mut Writer) {
        out.label("family", &self.family);
        out.label("table", &self.table);
        out.label("counter", &self.counter);
    }
}

/// One family's series: label sets in encoding order, each already written
/// out as exposition text ([`Labels`]), so that a scrape of an unchanged
/// ruleset writes only the numbers; series `i` has the value at
/// `first + i` of [`Layout::values`].
#[derive(Debug)]
pub(super) struct Series {
    labels: Vec<Labels>,
    first: usize,
}

impl Series {
    /// Each label set with its value.
    pub(super) fn with<'a>(
        &'a self,
        values: &'a [Counters],
    ) -> impl Iterator<Item = (&'a Labels, Counters)> {
        let values = &values[self.first..self.first + self.labels.len()];
        self.labels.iter().zip(values.iter().copied())
    }
}

/// The series of one iptables family (IPv4 or IPv6).
#[derive(Debug)]
pub(super) struct Xtables {
    pub policies: Series,
    pub rules: Series,
    /// Rules per chain, every chain of `policies` included, labels
    /// written out.
    pub chain_rules: Vec<(Labels, u64)>,
    /// The tables exported: a legacy x_tables table of the same name is
    /// shadowed by them.
    pub tables: BTreeSet<String>,
}

/// A chain, rule or named counter of the dump: its handle, checked at
/// every read, and the series its counters add to.
#[derive(Clone, Copy, Debug)]
struct Slot {
    handle: u64,
    series: Option<usize>,
}

#[derive(Debug)]
pub(super) struct Layout {
    /// [`structure`] of the read it was built from: a later full read with
    /// the same structure (only set elements changed) keeps this layout.
    pub structure: u64,
    /// Whose rules each read dumps, in this order.
    pub chains: Vec<Chain>,
    chain_slots: Vec<Slot>,
    rule_slots: Vec<Slot>,
    named_slots: Vec<Slot>,
    pub iptables: Xtables,
    pub ip6tables: Xtables,
    pub nftables: Series,
    pub named: Series,
    series: usize,
}

impl Layout {
    /// The layout of a full read (`counts` from the same read, `structure`
    /// theirs).
    pub(super) fn new(
        ruleset: Ruleset,
        counts: &Counts,
        structure: u64,
        position_label: bool,
    ) -> Self {
        let slots = |handled: &[Handled]| -> Vec<Slot> {
            handled
                .iter()
                .map(|h| Slot {
                    handle: h.handle,
                    series: None,
                })
                .collect()
        };
        let mut builder = Builder {
            chain_slots: slots(&counts.chains),
            rule_slots: slots(&counts.rules),
            named_slots: slots(&counts.named),
            series: 0,
        };
        let managed = xtables_tables(&ruleset);
        let owners = xtables_owners(&ruleset, &managed);
        let iptables = builder.xtables(&ruleset, &managed, &owners, Family::IPV4, position_label);
        let ip6tables = builder.xtables(&ruleset, &managed, &owners, Family::IPV6, position_label);
        let nftables = builder.nftables(&ruleset, &owners);
        let named = builder.series(
            &ruleset.counters,
            |_, _| true,
            |c| {
                Labels::of(&NamedCounterLabels {
                    family: c.family.name(),
                    table: c.table.clone(),
                    counter: c.name.clone(),
                })
            },
            Target::Named,
        );
        Self {
            structure,
            chains: ruleset.chains,
            chain_slots: builder.chain_slots,
            rule_slots: builder.rule_slots,
            named_slots: builder.named_slots,
            iptables,
            ip6tables,
            nftables,
            named,
            series: builder.series,
        }
    }

    /// Every series' value: the counters of `counts` added up. `None` when
    /// `counts` is not a read of this layout's structure.
    pub(super) fn values(&self, counts: &Counts) -> Option<Vec<Counters>> {
        let mut values = vec![Counters::default(); self.series];
        for (slots, handled) in [
            (&self.chain_slots, &counts.chains),
            (&self.rule_slots, &counts.rules),
            (&self.named_slots, &counts.named),
        ] {
            if slots.len() != handled.len() {
                return None;
            }
            for (slot, read) in slots.iter().zip(handled) {
                if slot.handle != read.handle {
                    return None;
                }
                if let Some(series) = slot.series {
                    values[series] += read.counters.unwrap_or_default();
                }
            }
        }
        Some(values)
    }
}

/// Which slots a family's members are.
#[derive(Clone, Copy)]
enum Target {
    Chains,
    Rules,
    Named,
}

struct Builder {
    chain_slots: Vec<Slot>,
    rule_slots: Vec<Slot>,
    named_slots: Vec<Slot>,
    series: usize,
}

impl Builder {
    /// A family of the members of `items` that pass `member`, by labels;
    /// members with the same labels share (and add up in) one series.
    /// Series in the order of their first member in the dump (as
    /// `iptables-save` prints them, and as iptables_exporter encoded them):
    /// grouping by hash keeps a rebuild linear in the rules.
    fn slots(&mut self, target: Target) -> &mut [Slot] {
        match target {
            Target::Chains => &mut self.chain_slots,
            Target::Rules => &mut self.rule_slots,
            Target::Named => &mut self.named_slots,
        }
    }

    /// Labels come written out (usually kept with the rule, see
    /// [`super::ruleset::RuleText`]), so a rebuild after a small change
    /// copies them instead of rendering and escaping every rule again.
    fn series<'a, T>(
        &mut self,
        items: &'a [T],
        member: impl Fn(usize, &T) -> bool,
        mut labels: impl FnMut(&'a T) -> Labels,
        target: Target,
    ) -> Series {
        let first = self.series;
        let slots = self.slots(target);
        let mut groups: HashMap<Labels, usize, ByDigest> =
            HashMap::with_capacity_and_hasher(items.len(), ByDigest::default());
        let mut ordered: Vec<Labels> = Vec::new();
        for (index, item) in items.iter().enumerate().filter(|(n, i)| member(*n, i)) {
            let group = match groups.entry(labels(item)) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    ordered.push(e.key().clone());
                    *e.insert(ordered.len() - 1)
                }
            };
            slots[index].series = Some(first + group);
        }
        self.series += ordered.len();
        Series {
            labels: ordered,
            first,
        }
    }

    fn series_of<L: LabelSet>(
        &mut self,
        by_labels: impl IntoIterator<Item = (L, Vec<usize>)>,
        target: Target,
    ) -> Series {
        let first = self.series;
        let slots = self.slots(target);
        let labels = by_labels
            .into_iter()
            .enumerate()
            .map(|(offset, (labels, members))| {
                for member in members {
                    slots[member].series = Some(first + offset);
                }
                Labels::of(&labels)
            })
            .collect::<Vec<_>>();
        self.series += labels.len();
        Series { labels, first }
    }

    fn xtables(
        &mut self,
        ruleset: &Ruleset,
        managed: &BTreeSet<(Family, String)>,
        owners: &[Option<Family>],
        family: Family,
        position_label: bool,
    ) -> Xtables {
        let is_managed = |table: &str| managed.iter().any(|(f, t)| *f == family && t == table);
        let mut policies: BTreeMap<PolicyLabels, Vec<usize>> = BTreeMap::new();
        for (index, chain) in ruleset.chains.iter().enumerate() {
            if chain.family != family || !is_managed(&chain.table) {
                continue;
            }
            let labels = PolicyLabels {
                chain: chain.name.clone(),
                policy: policy_name(chain),
                table: chain.table.clone(),
            };
            let members = policies.entry(labels).or_default();
            // User-defined chains have no policy; iptables-save shows them as [0:0].
            if chain.hook.is_some() {
                members.push(index);
            }
        }
        // iptables-nft creates built-in chains only when first used, yet
        // iptables-save lists them all, with policy ACCEPT and no traffic.
        for (_, table) in managed.iter().filter(|(f, _)| *f == family) {
            for chain in builtin_chains(table) {
                let present = ruleset
                    .chains
                    .iter()
                    .any(|c| c.family == family && c.table == *table && c.name == *chain);
                if !present {
                    let labels = PolicyLabels {
                        chain: (*chain).to_owned(),
                        policy: "ACCEPT".into(),
                        table: table.clone(),
                    };
                    policies.entry(labels).or_default();
                }
            }
        }
        let mut chain_rules: BTreeMap<ChainLabels, u64> = policies
            .keys()
            .map(|p| (ChainLabels::new(&p.table, &p.chain), 0))
            .collect();
        for (chain, rules) in ruleset.chains.iter().zip(&ruleset.chain_rules) {
            if chain.family == family && is_managed(&chain.table) {
                *chain_rules
                    .entry(ChainLabels::new(&chain.table, &chain.name))
                    .or_default() += rules.len() as u64;
            }
        }
        let tables = chain_rules.keys().map(|c| c.table.clone()).collect();
        let policies = self.series_of(policies, Target::Chains);

        let mut positions: HashMap<(&str, &str), usize> = HashMap::new();
        let labels = |rule: &Rule, position: Option<usize>| {
            Labels::of(&RuleLabels {
                chain: rule.chain.clone(),
                rule: rule
                    .text
                    .rendered
                    .get_or_init(|| render::iptables_rule(rule))
                    .clone(),
                table: rule.table.clone(),
                position,
            })
        };
        let rules = self.series(
            &ruleset.rules,
            |index, _| owners[index] == Some(family),
            |rule| {
                if !position_label {
                    return rule.text.xtables.get_or_init(|| labels(rule, None)).clone();
                }
                let position = positions
                    .entry((rule.table.as_str(), rule.chain.as_str()))
                    .or_default();
                *position += 1;
                labels(rule, Some(*position))
            },
            Target::Rules,
        );
        Xtables {
            policies,
            rules,
            chain_rules: chain_rules
                .into_iter()
                .map(|(labels, count)| (Labels::of(&labels), count))
                .collect(),
            tables,
        }
    }

    /// Rules with a counter in every table iptables-nft does not manage.
    fn nftables(&mut self, ruleset: &Ruleset, owners: &[Option<Family>]) -> Series {
        self.series(
            &ruleset.rules,
            |index, r| owners[index].is_none() && r.has_counter(),
            |r| {
                r.text
                    .nftables
                    .get_or_init(|| {
                        Labels::of(&NftRuleLabels {
                            family: r.family.name(),
                            table: r.table.clone(),
                            chain: r.chain.clone(),
                            handle: r.handle.to_string(),
                            comment: r.comment.clone().unwrap_or_default(),
                        })
                    })
                    .clone()
            },
            Target::Rules,
        )
    }
}

/// What a layout depends on: the ruleset as rendered
/// ([`Ruleset::digest`]) and the kernel's handles of its chains, rules and
/// named counters, which the reads follow. Set elements are no part of it.
/// `digest` is the ruleset's.
pub(super) fn structure(digest: u64, counts: &Counts) -> u64 {
    let mut h = DefaultHasher::new();
    digest.hash(&mut h);
    // Handles folded, then hashed once: a SipHash round per rule costs
    // more than the fold, and the layout only needs to tell reads apart.
    for handled in [&counts.chains, &counts.rules, &counts.named] {
        let mut handles = handled.len() as u64;
        for h2 in handled.iter() {
            handles = fold(handles, mix(h2.handle));
        }
        handles.hash(&mut h);
    }
    h.finish()
}

/// For each rule, the family of its table when iptables-nft manages that
/// table, else `None`: decided per chain, without visiting the rules.
fn xtables_owners(ruleset: &Ruleset, managed: &BTreeSet<(Family, String)>) -> Vec<Option<Family>> {
    let mut owners = vec![None; ruleset.rules.len()];
    for (chain, rules) in ruleset.chains.iter().zip(&ruleset.chain_rules) {
        if managed.contains(&(chain.family, chain.table.clone())) {
            owners[rules.clone()].fill(Some(chain.family));
        }
    }
    owners
}

/// The built-in chains of each iptables table.
fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        "security" => &["INPUT", "FORWARD", "OUTPUT"],
        _ => &[],
    }
}

fn iptables_layout(table: &str, chain: &str) -> bool {
    builtin_chains(table).contains(&chain)
}

/// The `ip`/`ip6` tables iptables-nft manages: those `nft` flags as such
/// (they hold xtables compat expressions), and those named like an
/// iptables table whose base chains are all iptables' built-in ones (a
/// table whose rules are all native, which `nft` does not flag).
fn xtables_tables(ruleset: &Ruleset) -> BTreeSet<(Family, String)> {
    let is_ip = |f: Family| f == Family::IPV4 || f == Family::IPV6;
    let mut layout: BTreeMap<(Family, &str), bool> = BTreeMap::new();
    for chain in ruleset.chains.iter().filter(|c| is_ip(c.family)) {
        let ok =
            iptables_layout(&chain.table, "INPUT") || iptables_layout(&chain.table, "PREROUTING");
        let ok = ok && (chain.hook.is_none() || iptables_layout(&chain.table, &chain.name));
        *layout.entry((chain.family, &chain.table)).or_insert(true) &= ok;
    }
    let mut tables: BTreeSet<(Family, String)> = layout
        .into_iter()
        .filter(|(_, ok)| *ok)
        .map(|((family, table), _)| (family, table.to_owned()))
        .collect();
    // A table of other chains is managed when any rule of it carries an
    // xtables expression: its rules are visited only until one does.
    for (chain, rules) in ruleset.chains.iter().zip(&ruleset.chain_rules) {
        let table = (chain.family, chain.table.clone());
        if is_ip(chain.family)
            && !tables.contains(&table)
            && ruleset.rules[rules.clone()].iter().any(|r| r.has_xt())
        {
            tables.insert(table);
        }
    }
    tables
}

fn policy_name(chain: &Chain) -> String {
    match (chain.hook, chain.policy) {
        (None, _) => "-".into(),
        (Some(_), Some(0)) => "DROP".into(),
        (Some(_), _) => "ACCEPT".into(),
    }
}
