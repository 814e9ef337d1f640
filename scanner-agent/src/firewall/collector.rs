//! The prometheus-client collector: at each scrape it reads the counters
//! over netlink (and the ruleset's structure when its generation moved),
//! adds them up per series of the kept [`Layout`] and encodes
//! iptables_exporter's families (`iptables_*` for iptables-nft's `ip`
//! tables, `ip6tables_*` for its `ip6` tables) and `nftables_*` for every
//! other table.

use std::{
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant, SystemTime},
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
    flight::Flight,
    layout::{Layout, Series, Xtables, structure},
    legacy,
    netlink::{self, Generation, Known, Read, RuleCache},
    ruleset::Counters,
    set_counts::SetCounts,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct LegacyLabels {
    family: String,
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct SetLabels {
    family: String,
    table: String,
    set: String,
}

/// How long a read may take (and a scrape wait for one under way) before
/// the scrape reports `iptables_scrape_success 0`.
pub(super) const READ_DEADLINE: Duration = Duration::from_secs(5);

/// What one read gives every scrape that shares it.
#[derive(Debug)]
struct Snapshot {
    generation: Generation,
    layout: Arc<Layout>,
    values: Vec<Counters>,
    /// When the rendered ruleset last changed, as far as this agent saw.
    changed: SystemTime,
    took: Duration,
}

/// What reads keep for the next one.
#[derive(Debug)]
struct Kept {
    /// The layout of the last read, and the generation it was read at
    /// (several generations may share one layout).
    layout: Option<(Generation, Arc<Layout>)>,
    /// The rules of the last full read, parsed and (once needed) rendered.
    cache: RuleCache,
    /// Their keys in dump order.
    keys: Vec<u64>,
    /// [`super::ruleset::Ruleset::digest`] of the last full read.
    digest: Option<u64>,
    changed: SystemTime,
}

/// Reads the firewall at each scrape. Clones share one layout and one read
/// in flight, so the agent's `/metrics` and the drop-in listener keep one
/// cache between them and never read twice at once.
#[derive(Clone, Debug)]
pub struct FirewallCollector {
    position_label: bool,
    legacy_names: bool,
    kept: Arc<Mutex<Kept>>,
    flight: Arc<Flight<Result<Snapshot, FirewallError>>>,
    sets: SetCounts,
    deadline: Duration,
    /// Test-only: how long each read sleeps before it starts.
    delay: Duration,
    /// The last failure logged and when, so a broken setup logs once in a while, not per scrape.
    last_error: Arc<Mutex<Option<(String, Instant)>>>,
}

const REPEAT_ERROR_AFTER: Duration = Duration::from_secs(300);

impl FirewallCollector {
    /// The sample names these families can have (counters with `_total`).
    pub const FAMILIES: [&str; 25] = [
        "iptables_default_bytes_total",
        "iptables_default_packets_total",
        "iptables_default_packets_toal",
        "iptables_rule_bytes_total",
        "iptables_rule_packets_total",
        "iptables_scrape_duration_seconds",
        "iptables_scrape_success",
        "ip6tables_default_bytes_total",
        "ip6tables_default_packets_total",
        "ip6tables_rule_bytes_total",
        "ip6tables_rule_packets_total",
        "ip6tables_scrape_duration_seconds",
        "ip6tables_scrape_success",
        "nftables_rule_bytes_total",
        "nftables_rule_packets_total",
        "nftables_counter_bytes_total",
        "nftables_counter_packets_total",
        "nftables_ruleset_generation",
        "nftables_ruleset_last_change_timestamp_seconds",
        "scanner_agent_firewall_reads_total",
        "nftables_set_elements",
        "nftables_set_elements_read_duration_seconds",
        "nftables_set_elements_read_timestamp_seconds",
        "nftables_set_elements_read_success",
        "scanner_agent_firewall_legacy_table",
    ];

    pub fn new(config: &FirewallConfig) -> Self {
        Self {
            position_label: config.rule_position_label,
            legacy_names: config.legacy_metric_names,
            kept: Arc::new(Mutex::new(Kept {
                layout: None,
                cache: RuleCache::default(),
                keys: Vec::new(),
                digest: None,
                changed: SystemTime::now(),
            })),
            flight: Arc::default(),
            sets: SetCounts::default(),
            deadline: READ_DEADLINE,
            delay: Duration::ZERO,
            last_error: Arc::default(),
        }
    }

    /// For tests only: every read first sleeps `delay` (within its
    /// deadline), and reads give up after `deadline`, so that scrapes
    /// during a slow read and a read past its deadline can be staged.
    #[doc(hidden)]
    #[must_use]
    pub fn with_slow_reads_for_tests(mut self, delay: Duration, deadline: Duration) -> Self {
        self.delay = delay;
        self.deadline = deadline;
        self
    }

    /// One read: the current values, with the kept layout made current first.
    fn read(&self, kept: &mut Kept, deadline: Instant) -> Result<Snapshot, FirewallError> {
        let started = Instant::now();
        if !self.delay.is_zero() {
            thread::sleep(
                self.delay
                    .min(deadline.saturating_duration_since(Instant::now())),
            );
        }
        let known = kept.layout.as_ref().map(|(g, l)| Known {
            generation: *g,
            chains: &l.chains,
            keys: &kept.keys,
            cache: &kept.cache,
            full: false,
        });
        let mut read = netlink::read(known, deadline)?;
        let quick = match &read {
            Read::Counters(counts) => Some((None, counts)),
            // Only set elements changed: the layout and its label text stay.
            Read::Unchanged { generation, counts } => Some((Some(*generation), counts)),
            Read::Full { .. } => None,
        };
        if let (Some((moved, counts)), Some((generation, current))) = (quick, kept.layout.as_ref())
        {
            match current.values(counts) {
                Some(values) => {
                    let generation = moved.unwrap_or(*generation);
                    let layout = Arc::clone(current);
                    kept.layout = Some((generation, Arc::clone(&layout)));
                    return Ok(Snapshot {
                        generation,
                        layout,
                        values,
                        changed: kept.changed,
                        took: started.elapsed(),
                    });
                }
                // The chains and rules held, but not the named counters
                // (or, never expected, the counters do not fit the layout):
                // read the structure, still taking rules from the cache.
                None => {
                    let known = Known {
                        generation: *generation,
                        chains: &current.chains,
                        keys: &kept.keys,
                        cache: &kept.cache,
                        full: true,
                    };
                    read = netlink::read(Some(known), deadline)?;
                }
            }
        }
        let Read::Full {
            generation,
            ruleset,
            counts,
            cache,
            keys,
        } = read
        else {
            return Err(FirewallError::Malformed("ruleset"));
        };
        // A new generation need not be a new ruleset: set element updates
        // move it too. Only a different digest is a change.
        let read_took = started.elapsed();
        let digest = ruleset.digest();
        if kept.digest != Some(digest) {
            kept.digest = Some(digest);
            kept.changed = SystemTime::now();
        }
        kept.cache = cache;
        kept.keys = keys;
        // The same chains and rules by another route (say, a named counter
        // added and removed): the layout and its label text stay.
        let rules = ruleset.rules.len();
        let structure = structure(digest, &counts);
        let layout = match kept.layout.take() {
            Some((_, layout)) if layout.structure == structure => layout,
            _ => Arc::new(Layout::new(
                ruleset,
                &counts,
                structure,
                self.position_label,
            )),
        };
        tracing::debug!(
            "firewall counters: generation {} read with its structure in {read_took:?} ({rules} rules), layout ready after {:?}",
            generation.id,
            started.elapsed()
        );
        kept.layout = Some((generation, Arc::clone(&layout)));
        let values = layout
            .values(&counts)
            .ok_or(FirewallError::Malformed("ruleset"))?;
        Ok(Snapshot {
            generation,
            layout,
            values,
            changed: kept.changed,
            took: started.elapsed(),
        })
    }

    /// The result of the read under way, or of a read made now.
    fn shared_read(&self) -> Option<Arc<Result<Snapshot, FirewallError>>> {
        let deadline = Instant::now() + self.deadline;
        self.flight.share(deadline, || {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            self.read(&mut kept, deadline)
        })
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

/// Seconds since the Unix epoch.
fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn counter_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &Series,
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

impl FirewallCollector {
    /// `nftables_set_elements` and its refresh's families.
    fn encode_sets(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(counted) = self.sets.current() else {
            return Ok(());
        };
        if let Ok(sets) = &counted.sets {
            let mut family = encoder.encode_descriptor(
                "nftables_set_elements",
                "Elements of a named nftables set or map (as `nft list set` shows them: an interval once), as of nftables_set_elements_read_timestamp_seconds.",
                None,
                MetricType::Gauge,
            )?;
            for set in sets {
                ConstGauge::new(i64::try_from(set.elements).unwrap_or(i64::MAX)).encode(
                    family.encode_family(&SetLabels {
                        family: set.family.name(),
                        table: set.table.clone(),
                        set: set.set.clone(),
                    })?,
                )?;
            }
        }
        gauge(
            encoder,
            "nftables_set_elements_read_duration_seconds",
            "Duration of the last count of the nftables set elements (made apart from scrapes, at most every 5 s).",
            counted.took.as_secs_f64(),
        )?;
        gauge(
            encoder,
            "nftables_set_elements_read_timestamp_seconds",
            "When the last count of the nftables set elements was made.",
            unix_seconds(counted.wall),
        )?;
        let success = ConstGauge::new(i64::from(counted.sets.is_ok()));
        success.encode(encoder.encode_descriptor(
            "nftables_set_elements_read_success",
            "Whether the last count of the nftables set elements succeeded.",
            None,
            success.metric_type(),
        )?)
    }
}

impl Collector for FirewallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let started = Instant::now();
        let shared = self.shared_read();
        let snapshot = match shared.as_deref() {
            Some(Ok(snapshot)) => {
                self.recovered();
                Some(snapshot)
            }
            Some(Err(e)) => {
                self.log_failure(e);
                None
            }
            None => {
                self.log_failure(&FirewallError::Deadline);
                None
            }
        };
        // A scrape that shared a read reports that read's duration.
        let took = snapshot.map_or_else(|| started.elapsed(), |s| s.took);
        let read = snapshot.map(|s| (&*s.layout, s.values.as_slice()));
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
        if let Some(snapshot) = snapshot {
            gauge(
                &mut encoder,
                "nftables_ruleset_generation",
                "The nftables ruleset generation read (every committed change moves it, set element updates included).",
                f64::from(snapshot.generation.id),
            )?;
            gauge(
                &mut encoder,
                "nftables_ruleset_last_change_timestamp_seconds",
                "When the rendered rules last changed (chains, policies, rules and named counters; not set elements), as first seen by a read of this agent.",
                unix_seconds(snapshot.changed),
            )?;
        }
        let reads = ConstCounter::new(self.flight.reads());
        reads.encode(encoder.encode_descriptor(
            "scanner_agent_firewall_reads",
            "Reads of the nftables ruleset over netlink (concurrent scrapes share one).",
            None,
            reads.metric_type(),
        )?)?;
        self.encode_sets(&mut encoder)?;
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
        tracing::trace!(
            "firewall counters: scrape encoded after {:?} (read {took:?})",
            started.elapsed()
        );
        Ok(())
    }
}
