//! The prometheus-client collector: at each scrape it reads the ruleset over
//! netlink and encodes iptables_exporter's families (`iptables_*` for
//! iptables-nft's `ip` tables, `ip6tables_*` for its `ip6` tables) and
//! `nftables_*` for every other table.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder},
    metrics::{
        MetricType,
        counter::ConstCounter,
        gauge::{ConstGauge, Gauge},
    },
};

use super::{
    FirewallConfig, FirewallError, legacy, netlink, render,
    ruleset::{Chain, Counters, Family, Rule, Ruleset},
};

/// A chain policy series (labels in the order the original printed them).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PolicyLabels {
    chain: String,
    policy: String,
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
struct RuleLabels {
    chain: String,
    rule: String,
    table: String,
    /// Only with `rule_position_label`: the label is absent otherwise, so
    /// the default label set is exactly the original's.
    position: Option<usize>,
}

impl EncodeLabelSet for RuleLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("chain", self.chain.as_str()).encode(encoder.encode_label())?;
        if let Some(position) = self.position {
            ("position", position.to_string()).encode(encoder.encode_label())?;
        }
        ("rule", self.rule.as_str()).encode(encoder.encode_label())?;
        ("table", self.table.as_str()).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct NftRuleLabels {
    family: String,
    table: String,
    chain: String,
    handle: String,
    comment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct NamedCounterLabels {
    family: String,
    table: String,
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct LegacyLabels {
    family: String,
    table: String,
}

/// The counters of one iptables family (IPv4 or IPv6), duplicates summed.
#[derive(Default)]
struct XtablesCounters {
    policies: BTreeMap<PolicyLabels, Counters>,
    rules: BTreeMap<RuleLabels, Counters>,
}

/// Reads the firewall at each scrape.
#[derive(Debug)]
pub struct FirewallCollector {
    position_label: bool,
    legacy_names: bool,
    /// The last failure logged and when, so a broken setup logs once in a while, not per scrape.
    last_error: Mutex<Option<(String, Instant)>>,
}

const REPEAT_ERROR_AFTER: Duration = Duration::from_secs(300);

impl FirewallCollector {
    pub fn new(config: &FirewallConfig) -> Self {
        Self {
            position_label: config.rule_position_label,
            legacy_names: config.legacy_metric_names,
            last_error: Mutex::new(None),
        }
    }

    fn log_failure(&self, e: &FirewallError) {
        let message = e.to_string();
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let repeat = last
            .as_ref()
            .is_some_and(|(m, at)| *m == message && at.elapsed() < REPEAT_ERROR_AFTER);
        if !repeat {
            tracing::warn!("firewall counters: scrape failed: {message}");
            *last = Some((message, Instant::now()));
        }
    }

    fn recovered(&self) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.take().is_some() {
            tracing::info!("firewall counters: reading nftables works again");
        }
    }
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
pub(super) fn xtables_tables(ruleset: &Ruleset) -> BTreeSet<(Family, String)> {
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
    for rule in ruleset
        .rules
        .iter()
        .filter(|r| is_ip(r.family) && r.has_xt())
    {
        tables.insert((rule.family, rule.table.clone()));
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

impl FirewallCollector {
    fn xtables(
        &self,
        ruleset: &Ruleset,
        managed: &BTreeSet<(Family, String)>,
        family: Family,
    ) -> XtablesCounters {
        let is_managed = |t: &str| managed.contains(&(family, t.to_owned()));
        let mut out = XtablesCounters::default();
        for chain in ruleset
            .chains
            .iter()
            .filter(|c| c.family == family && is_managed(&c.table))
        {
            let labels = PolicyLabels {
                chain: chain.name.clone(),
                policy: policy_name(chain),
                table: chain.table.clone(),
            };
            // User-defined chains have no policy; iptables-save shows them as [0:0].
            let counters = if chain.hook.is_some() {
                chain.counters.unwrap_or_default()
            } else {
                Counters::default()
            };
            *out.policies.entry(labels).or_default() += counters;
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
                    out.policies.entry(labels).or_default();
                }
            }
        }
        let mut positions: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for rule in ruleset
            .rules
            .iter()
            .filter(|r| r.family == family && is_managed(&r.table))
        {
            let position = positions
                .entry((rule.table.as_str(), rule.chain.as_str()))
                .or_default();
            *position += 1;
            let labels = RuleLabels {
                chain: rule.chain.clone(),
                rule: render::iptables_rule(rule),
                table: rule.table.clone(),
                position: self.position_label.then_some(*position),
            };
            *out.rules.entry(labels).or_default() += rule.counters().unwrap_or_default();
        }
        out
    }
}

fn nftables(
    ruleset: &Ruleset,
    managed: &BTreeSet<(Family, String)>,
) -> BTreeMap<NftRuleLabels, Counters> {
    let is_managed = |r: &Rule| managed.contains(&(r.family, r.table.clone()));
    ruleset
        .rules
        .iter()
        .filter(|r| !is_managed(r))
        .filter_map(|r| {
            let labels = NftRuleLabels {
                family: r.family.name(),
                table: r.table.clone(),
                chain: r.chain.clone(),
                handle: r.handle.to_string(),
                comment: r.comment.clone().unwrap_or_default(),
            };
            Some((labels, r.counters()?))
        })
        .collect()
}

fn counter_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &BTreeMap<L, Counters>,
    value: fn(&Counters) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, counters) in series {
        ConstCounter::new(value(counters)).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// `iptables` or `ip6tables` families of one read.
fn encode_xtables(
    encoder: &mut DescriptorEncoder<'_>,
    prefix: &str,
    counters: Option<&XtablesCounters>,
    legacy_names: bool,
    took: Duration,
) -> Result<(), std::fmt::Error> {
    let help = |what: &str| format!("iptables_exporter: {what}");
    if let Some(c) = counters {
        counter_family(
            encoder,
            &format!("{prefix}_default_bytes"),
            &help("Total bytes matching a chain's default policy."),
            &c.policies,
            |c| c.bytes,
        )?;
        counter_family(
            encoder,
            &format!("{prefix}_default_packets"),
            &help("Total packets matching a chain's default policy."),
            &c.policies,
            |c| c.packets,
        )?;
        if legacy_names {
            // The original's misspelt family, under its exact sample name:
            // typed `unknown` because OpenMetrics counters must end in `_total`.
            let mut family = encoder.encode_descriptor(
                "iptables_default_packets_toal",
                &help("Total packets matching a chain's default policy."),
                None,
                MetricType::Unknown,
            )?;
            for (labels, counters) in &c.policies {
                let gauge: Gauge<i64> = Gauge::default();
                gauge.set(i64::try_from(counters.packets).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(labels)?)?;
            }
        }
        counter_family(
            encoder,
            &format!("{prefix}_rule_bytes"),
            &help("Total bytes matching a rule."),
            &c.rules,
            |c| c.bytes,
        )?;
        counter_family(
            encoder,
            &format!("{prefix}_rule_packets"),
            &help("Total packets matching a rule."),
            &c.rules,
            |c| c.packets,
        )?;
    }
    gauge(
        encoder,
        &format!("{prefix}_scrape_duration_seconds"),
        &help(&format!("Duration of scraping {prefix}.")),
        took.as_secs_f64(),
    )?;

    let success = ConstGauge::new(i64::from(counters.is_some()));
    success.encode(encoder.encode_descriptor(
        &format!("{prefix}_scrape_success"),
        &help(&format!("Whether scraping {prefix} succeeded.")),
        None,
        success.metric_type(),
    )?)
}

impl Collector for FirewallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let started = Instant::now();
        let read = netlink::read_ruleset();
        let named: Option<BTreeMap<NamedCounterLabels, Counters>> = read.as_ref().ok().map(|r| {
            r.counters
                .iter()
                .map(|c| {
                    let labels = NamedCounterLabels {
                        family: c.family.name(),
                        table: c.table.clone(),
                        counter: c.name.clone(),
                    };
                    (labels, c.counters)
                })
                .collect()
        });
        let (v4, v6, nft) = match &read {
            Ok(ruleset) => {
                self.recovered();
                let managed = xtables_tables(ruleset);
                (
                    Some(self.xtables(ruleset, &managed, Family::IPV4)),
                    Some(self.xtables(ruleset, &managed, Family::IPV6)),
                    Some(nftables(ruleset, &managed)),
                )
            }
            Err(e) => {
                self.log_failure(e);
                (None, None, None)
            }
        };
        let took = started.elapsed();
        encode_xtables(
            &mut encoder,
            "iptables",
            v4.as_ref(),
            self.legacy_names,
            took,
        )?;
        encode_xtables(&mut encoder, "ip6tables", v6.as_ref(), false, took)?;
        if let Some(nft) = &nft {
            counter_family(
                &mut encoder,
                "nftables_rule_bytes",
                "Total bytes counted by an nftables rule's counter (tables not managed by iptables-nft).",
                nft,
                |c| c.bytes,
            )?;
            counter_family(
                &mut encoder,
                "nftables_rule_packets",
                "Total packets counted by an nftables rule's counter (tables not managed by iptables-nft).",
                nft,
                |c| c.packets,
            )?;
        }
        if let Some(named) = &named {
            counter_family(
                &mut encoder,
                "nftables_counter_bytes",
                "Total bytes counted by a named nftables counter object.",
                named,
                |c| c.bytes,
            )?;
            counter_family(
                &mut encoder,
                "nftables_counter_packets",
                "Total packets counted by a named nftables counter object.",
                named,
                |c| c.packets,
            )?;
        }
        let legacy = legacy::tables();
        if !legacy.is_empty() {
            let mut family = encoder.encode_descriptor(
                "scanner_agent_firewall_legacy_table",
                "1 for each legacy x_tables (iptables-legacy) table in use: its counters are not exported",
                None,
                MetricType::Gauge,
            )?;
            for (family_name, table) in legacy {
                ConstGauge::new(1i64).encode(family.encode_family(&LegacyLabels {
                    family: family_name.into(),
                    table,
                })?)?;
            }
        }
        Ok(())
    }
}
