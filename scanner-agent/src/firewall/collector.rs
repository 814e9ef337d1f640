//! The prometheus-client collector: at each scrape it reads the counters
//! over netlink (and the ruleset's structure when its generation moved),
//! adds them up per series of the kept [`Layout`] and encodes
//! iptables_exporter's families (`iptables_*` for iptables-nft's `ip`
//! tables, `ip6tables_*` for its `ip6` tables) and `nftables_*` for every
//! other table.

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
    layout::{Layout, Series, Xtables},
    legacy,
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
}

const REPEAT_ERROR_AFTER: Duration = Duration::from_secs(300);

impl FirewallCollector {
    pub fn new(config: &FirewallConfig) -> Self {
        Self {
            position_label: config.rule_position_label,
            legacy_names: config.legacy_metric_names,
            layout: Arc::default(),
            last_error: Arc::default(),
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

fn counter_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &Series<L>,
    values: &[Counters],
    value: fn(&Counters) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, counters) in series.with(values) {
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

/// `iptables` or `ip6tables` families of one read.
fn encode_xtables(
    encoder: &mut DescriptorEncoder<'_>,
    prefix: &str,
    read: Option<(&Xtables, &[Counters])>,
    legacy_names: bool,
    took: Duration,
) -> Result<(), std::fmt::Error> {
    let help = |what: &str| format!("iptables_exporter: {what}");
    if let Some((series, values)) = read {
        counter_family(
            encoder,
            &format!("{prefix}_default_bytes"),
            &help("Total bytes matching a chain's default policy."),
            &series.policies,
            values,
            |c| c.bytes,
        )?;
        counter_family(
            encoder,
            &format!("{prefix}_default_packets"),
            &help("Total packets matching a chain's default policy."),
            &series.policies,
            values,
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
            for (labels, counters) in series.policies.with(values) {
                let gauge: Gauge<i64> = Gauge::default();
                gauge.set(i64::try_from(counters.packets).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(labels)?)?;
            }
        }
        counter_family(
            encoder,
            &format!("{prefix}_rule_bytes"),
            &help("Total bytes matching a rule."),
            &series.rules,
            values,
            |c| c.bytes,
        )?;
        counter_family(
            encoder,
            &format!("{prefix}_rule_packets"),
            &help("Total packets matching a rule."),
            &series.rules,
            values,
            |c| c.packets,
        )?;
    }
    gauge(
        encoder,
        &format!("{prefix}_scrape_duration_seconds"),
        &help(&format!("Duration of scraping {prefix}.")),
        took.as_secs_f64(),
    )?;

    let success = ConstGauge::new(i64::from(read.is_some()));
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
                self.recovered();
                Some(values)
            }
            Err(e) => {
                self.log_failure(&e);
                None
            }
        };
        let took = started.elapsed();
        let read = layout.as_ref().zip(values.as_deref());
        encode_xtables(
            &mut encoder,
            "iptables",
            read.map(|(l, v)| (&l.iptables, v)),
            self.legacy_names,
            took,
        )?;
        encode_xtables(
            &mut encoder,
            "ip6tables",
            read.map(|(l, v)| (&l.ip6tables, v)),
            false,
            took,
        )?;
        if let Some((layout, values)) = read {
            counter_family(
                &mut encoder,
                "nftables_rule_bytes",
                "Total bytes counted by an nftables rule's counter (tables not managed by iptables-nft).",
                &layout.nftables,
                values,
                |c| c.bytes,
            )?;
            counter_family(
                &mut encoder,
                "nftables_rule_packets",
                "Total packets counted by an nftables rule's counter (tables not managed by iptables-nft).",
                &layout.nftables,
                values,
                |c| c.packets,
            )?;
            counter_family(
                &mut encoder,
                "nftables_counter_bytes",
                "Total bytes counted by a named nftables counter object.",
                &layout.named,
                values,
                |c| c.bytes,
            )?;
            counter_family(
                &mut encoder,
                "nftables_counter_packets",
                "Total packets counted by a named nftables counter object.",
                &layout.named,
                values,
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
