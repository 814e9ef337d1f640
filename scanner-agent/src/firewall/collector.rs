//! The prometheus-client collector: at each scrape it reads the counters
//! over netlink (and the ruleset's structure when its generation moved),
//! adds them up per series of the kept [`Layout`] and encodes
//! iptables_exporter's families (`iptables_*` for iptables-nft's `ip`
//! tables, `ip6tables_*` for its `ip6` tables) and `nftables_*` for every
//! other table. Legacy x_tables tables ([`legacy`]) join the `iptables_*`
//! and `ip6tables_*` families, unless an iptables-nft table shadows them.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::ConstCounter,
        gauge::{ConstGauge, Gauge},
    },
};

use super::{
    FirewallConfig, FirewallError,
    layout::{ChainLabels, Layout, Xtables},
    legacy::{self, Family as LegacyFamily},
    netlink::{self, Read},
    ruleset::Counters,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct LegacyLabels {
    family: String,
    table: String,
}

/// Reads the firewall at each scrape. Clones share one layout, so the
/// agent's `/metrics` and the drop-in listener keep one cache between them.
#[derive(Clone, Debug)]
pub struct FirewallCollector {
    position_label: bool,
    legacy_names: bool,
    /// The layout of the last generation read; the lock also keeps
    /// concurrent scrapes of this collector from reading twice at once.
    layout: Arc<Mutex<Option<Layout>>>,
    /// The last failure logged and when, so a broken setup logs once in a while, not per scrape.
    last_error: Arc<Mutex<Option<(String, Instant)>>>,
    /// The same for reading legacy x_tables.
    last_legacy_error: Arc<Mutex<Option<(String, Instant)>>>,
    /// The shadowed legacy tables last logged: logged again when they change.
    shadowed: Arc<Mutex<Vec<(LegacyFamily, String)>>>,
    /// The legacy tables last read, rendered.
    legacy: Arc<Mutex<legacy::Cache>>,
}

type LastError = Mutex<Option<(String, Instant)>>;

const REPEAT_ERROR_AFTER: Duration = Duration::from_secs(300);

impl FirewallCollector {
    pub fn new(config: &FirewallConfig) -> Self {
        Self {
            position_label: config.rule_position_label,
            legacy_names: config.legacy_metric_names,
            layout: Arc::default(),
            last_error: Arc::default(),
            last_legacy_error: Arc::default(),
            shadowed: Arc::default(),
            legacy: Arc::default(),
        }
    }

    /// The current values, with `layout` made current first.
    fn read(&self, layout: &mut Option<Layout>) -> Result<Vec<Counters>, FirewallError> {
        let known = layout.as_ref().map(|l| (l.generation, l.chains.as_slice()));
        let mut read = netlink::read(known)?;
        if let (Read::Counters(counts), Some(current)) = (&read, layout.as_ref()) {
            match current.values(counts) {
                Some(values) => return Ok(values),
                // Never expected (the generation held): a read that does not
                // fit its generation's layout. Start again from the structure.
                None => read = netlink::read(None)?,
            }
        }
        match read {
            Read::Full {
                generation,
                ruleset,
                counts,
            } => {
                let fresh = layout.insert(Layout::new(
                    generation,
                    ruleset,
                    &counts,
                    self.position_label,
                ));
                fresh
                    .values(&counts)
                    .ok_or(FirewallError::Malformed("ruleset"))
            }
            Read::Counters(_) => Err(FirewallError::Malformed("ruleset")),
        }
    }

    fn log_failure(last: &LastError, message: String) {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        let repeat = last
            .as_ref()
            .is_some_and(|(m, at)| *m == message && at.elapsed() < REPEAT_ERROR_AFTER);
        if !repeat {
            tracing::warn!("firewall counters: scrape failed: {message}");
            *last = Some((message, Instant::now()));
        }
    }

    fn recovered(last: &LastError, what: &str) {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.take().is_some() {
            tracing::info!("firewall counters: reading {what} works again");
        }
    }

    /// The legacy tables, all but those `layout`'s iptables-nft tables
    /// shadow; logs failures and changes of what is shadowed.
    fn read_legacy(&self, layout: &Layout) -> legacy::Read {
        let mut cache = self.legacy.lock().unwrap_or_else(PoisonError::into_inner);
        let read = legacy::read(
            |family, table| {
                let nft = match family {
                    LegacyFamily::Ipv4 => &layout.iptables,
                    LegacyFamily::Ipv6 => &layout.ip6tables,
                };
                nft.tables.contains(table)
            },
            self.position_label,
            &mut cache,
        );
        drop(cache);
        if read.errors.is_empty() {
            Self::recovered(&self.last_legacy_error, "legacy x_tables");
        } else {
            let messages: Vec<String> = read.errors.iter().map(ToString::to_string).collect();
            Self::log_failure(&self.last_legacy_error, messages.join("; "));
        }
        let mut logged = self.shadowed.lock().unwrap_or_else(PoisonError::into_inner);
        if *logged != read.shadowed {
            if !read.shadowed.is_empty() {
                let list: Vec<String> = read
                    .shadowed
                    .iter()
                    .map(|(f, t)| format!("{} {t}", f.label()))
                    .collect();
                tracing::warn!(
                    "firewall counters: legacy x_tables table(s) {} exist in iptables-nft too: exported from nftables only, the legacy ones are not (scanner_agent_firewall_legacy_shadowed)",
                    list.join(", ")
                );
            }
            logged.clone_from(&read.shadowed);
        }
        read
    }
}

fn counter_family<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'a L, Counters)>,
    value: fn(&Counters) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, counters) in series {
        ConstCounter::new(value(&counters)).encode(family.encode_family(labels)?)?;
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

/// `iptables` or `ip6tables` families of one read: the nftables series,
/// then the legacy ones (tables of other names: shadowed ones are left out).
fn encode_xtables(
    encoder: &mut DescriptorEncoder<'_>,
    prefix: &str,
    read: Option<(&Xtables, &[Counters], &legacy::Series)>,
    legacy_names: bool,
    took: Duration,
) -> Result<(), std::fmt::Error> {
    let help = |what: &str| format!("iptables_exporter: {what}");
    let mut success = false;
    if let Some((series, values, legacy)) = read {
        success = legacy.complete;
        let policies = || {
            series
                .policies
                .with(values)
                .chain(legacy.policies.iter().map(|(l, c)| (l, *c)))
        };
        let rules = || {
            series
                .rules
                .with(values)
                .chain(legacy.rules.iter().map(|(l, c)| (l, *c)))
        };
        counter_family(
            encoder,
            &format!("{prefix}_default_bytes"),
            &help("Total bytes matching a chain's default policy."),
            policies(),
            |c| c.bytes,
        )?;
        counter_family(
            encoder,
            &format!("{prefix}_default_packets"),
            &help("Total packets matching a chain's default policy."),
            policies(),
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
            for (labels, counters) in policies() {
                let gauge: Gauge<i64> = Gauge::default();
                gauge.set(i64::try_from(counters.packets).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(labels)?)?;
            }
        }
        counter_family(
            encoder,
            &format!("{prefix}_rule_bytes"),
            &help("Total bytes matching a rule."),
            rules(),
            |c| c.bytes,
        )?;
        counter_family(
            encoder,
            &format!("{prefix}_rule_packets"),
            &help("Total packets matching a rule."),
            rules(),
            |c| c.packets,
        )?;
        // A gauge without `_total`, so promtool's lint has nothing to say.
        let (name, chain_help) = (
            format!("{prefix}_chain_rules"),
            format!("Number of rules in a chain of {prefix} (nftables and legacy x_tables)."),
        );
        let mut family = encoder.encode_descriptor(&name, &chain_help, None, MetricType::Gauge)?;
        let chains: Vec<&(ChainLabels, u64)> = series
            .chain_rules
            .iter()
            .chain(&legacy.chain_rules)
            .collect();
        for (labels, count) in chains {
            ConstGauge::new(i64::try_from(*count).unwrap_or(i64::MAX))
                .encode(family.encode_family(labels)?)?;
        }
    }
    gauge(
        encoder,
        &format!("{prefix}_scrape_duration_seconds"),
        &help(&format!("Duration of scraping {prefix}.")),
        took.as_secs_f64(),
    )?;

    let success = ConstGauge::new(i64::from(success));
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
        let mut layout = self.layout.lock().unwrap_or_else(PoisonError::into_inner);
        let values = match self.read(&mut layout) {
            Ok(values) => {
                Self::recovered(&self.last_error, "nftables");
                Some(values)
            }
            Err(e) => {
                Self::log_failure(&self.last_error, e.to_string());
                None
            }
        };
        let read = layout.as_ref().zip(values.as_deref());
        // Legacy tables only with a successful nftables read: which of them
        // are shadowed depends on it.
        let legacy = read.map(|(l, _)| self.read_legacy(l));
        let took = started.elapsed();
        let both = read.zip(legacy.as_ref());
        encode_xtables(
            &mut encoder,
            "iptables",
            both.map(|((l, v), x)| (&l.iptables, v, &x.ipv4)),
            self.legacy_names,
            took,
        )?;
        encode_xtables(
            &mut encoder,
            "ip6tables",
            both.map(|((l, v), x)| (&l.ip6tables, v, &x.ipv6)),
            false,
            took,
        )?;
        if let Some((layout, values)) = read {
            counter_family(
                &mut encoder,
                "nftables_rule_bytes",
                "Total bytes counted by an nftables rule's counter (tables not managed by iptables-nft).",
                layout.nftables.with(values),
                |c| c.bytes,
            )?;
            counter_family(
                &mut encoder,
                "nftables_rule_packets",
                "Total packets counted by an nftables rule's counter (tables not managed by iptables-nft).",
                layout.nftables.with(values),
                |c| c.packets,
            )?;
            counter_family(
                &mut encoder,
                "nftables_counter_bytes",
                "Total bytes counted by a named nftables counter object.",
                layout.named.with(values),
                |c| c.bytes,
            )?;
            counter_family(
                &mut encoder,
                "nftables_counter_packets",
                "Total packets counted by a named nftables counter object.",
                layout.named.with(values),
                |c| c.packets,
            )?;
        }
        let in_use = legacy::tables();
        if !in_use.is_empty() {
            let mut family = encoder.encode_descriptor(
                "scanner_agent_firewall_legacy_table",
                "1 for each legacy x_tables (iptables-legacy) table in use",
                None,
                MetricType::Gauge,
            )?;
            for (family_name, table) in in_use {
                ConstGauge::new(1i64).encode(family.encode_family(&LegacyLabels {
                    family: family_name.label().into(),
                    table,
                })?)?;
            }
        }
        if let Some(shadowed) = legacy.as_ref().map(|l| &l.shadowed)
            && !shadowed.is_empty()
        {
            let mut family = encoder.encode_descriptor(
                "scanner_agent_firewall_legacy_shadowed",
                "1 for each legacy x_tables table not exported because an iptables-nft table of the same family and name is",
                None,
                MetricType::Gauge,
            )?;
            for (family_name, table) in shadowed {
                ConstGauge::new(1i64).encode(family.encode_family(&LegacyLabels {
                    family: family_name.label().into(),
                    table: table.clone(),
                })?)?;
            }
        }
        Ok(())
    }
}
