//! The prometheus-client collector: at each scrape it reads the counters
//! over netlink (and the ruleset's structure when its generation moved),
//! adds them up per series of the kept [`Layout`] and encodes
//! iptables_exporter's families (`iptables_*` for iptables-nft's `ip`
//! tables, `ip6tables_*` for its `ip6` tables) and `nftables_*` for every
//! other table. Legacy x_tables tables ([`legacy`]) join the `iptables_*`
//! and `ip6tables_*` families, unless an iptables-nft table shadows them.

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
    labels::Labels,
    layout::{Layout, Xtables, structure},
    legacy::{self, Family as LegacyFamily},
    netlink::{self, Generation, Known, Read, Rules},
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
    /// The legacy x_tables tables, read after the nftables ruleset (which
    /// of them are shadowed depends on it).
    legacy: legacy::Read,
    took: Duration,
}

impl Snapshot {
    /// The nftables part of a read that began at `started`; `layout`
    /// becomes the kept one, at `generation`. The legacy tables come later.
    fn of(
        kept: &mut Kept,
        generation: Generation,
        layout: Arc<Layout>,
        values: Vec<Counters>,
        started: Instant,
    ) -> Self {
        kept.layout = Some((generation, Arc::clone(&layout)));
        Self {
            generation,
            layout,
            values,
            changed: kept.changed,
            legacy: legacy::Read::default(),
            took: started.elapsed(),
        }
    }
}

/// What reads keep for the next one.
#[derive(Debug)]
struct Kept {
    /// The layout of the last read, and the generation it was read at
    /// (several generations may share one layout).
    layout: Option<(Generation, Arc<Layout>)>,
    /// The rules of the last full read, parsed and (once needed) rendered.
    rules: Rules,
    /// [`super::ruleset::Ruleset::digest`] of the last full read.
    digest: Option<u64>,
    changed: SystemTime,
    /// The legacy tables last read, rendered.
    legacy: legacy::Cache,
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
    /// Test-only: how many threads dump the rules, whatever their number.
    dump_threads: Option<usize>,
    /// The last failure logged and when, so a broken setup logs once in a while, not per scrape.
    last_error: Arc<LastError>,
    /// The same for reading legacy x_tables.
    last_legacy_error: Arc<LastError>,
    /// The shadowed legacy tables last logged: logged again when they change.
    shadowed: Arc<Mutex<Vec<(LegacyFamily, String)>>>,
}

type LastError = Mutex<Option<(String, Instant)>>;

const REPEAT_ERROR_AFTER: Duration = Duration::from_secs(300);

impl FirewallCollector {
    /// The sample names these families can have (counters with `_total`).
    pub const FAMILIES: [&str; 28] = [
        "iptables_default_bytes_total",
        "iptables_default_packets_total",
        "iptables_default_packets_toal",
        "iptables_rule_bytes_total",
        "iptables_rule_packets_total",
        "iptables_chain_rules",
        "iptables_scrape_duration_seconds",
        "iptables_scrape_success",
        "ip6tables_default_bytes_total",
        "ip6tables_default_packets_total",
        "ip6tables_rule_bytes_total",
        "ip6tables_rule_packets_total",
        "ip6tables_chain_rules",
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
        "scanner_agent_firewall_legacy_shadowed",
    ];

    pub fn new(config: &FirewallConfig) -> Self {
        Self {
            position_label: config.rule_position_label,
            legacy_names: config.legacy_metric_names,
            kept: Arc::new(Mutex::new(Kept {
                layout: None,
                rules: Rules::default(),
                digest: None,
                changed: SystemTime::now(),
                legacy: legacy::Cache::default(),
            })),
            flight: Arc::default(),
            sets: SetCounts::default(),
            deadline: READ_DEADLINE,
            delay: Duration::ZERO,
            dump_threads: None,
            last_error: Arc::default(),
            last_legacy_error: Arc::default(),
            shadowed: Arc::default(),
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

    /// For tests only: the rules are dumped on `threads` threads however
    /// few they are (by default, a small ruleset is dumped on one).
    #[doc(hidden)]
    #[must_use]
    pub fn with_dump_threads_for_tests(mut self, threads: usize) -> Self {
        self.dump_threads = Some(threads);
        self
    }

    /// One read: the nftables ruleset's values, then the legacy tables it
    /// does not shadow.
    fn read(&self, kept: &mut Kept, deadline: Instant) -> Result<Snapshot, FirewallError> {
        let started = Instant::now();
        let mut snapshot = self.read_nftables(kept, deadline)?;
        // Legacy tables only with a successful nftables read: which of them
        // are shadowed depends on it.
        snapshot.legacy = self.read_legacy(&snapshot.layout, &mut kept.legacy);
        snapshot.took = started.elapsed();
        Ok(snapshot)
    }

    /// One nftables read: the current values, with the kept layout made
    /// current first.
    fn read_nftables(&self, kept: &mut Kept, deadline: Instant) -> Result<Snapshot, FirewallError> {
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
            rules: &kept.rules,
            full: false,
        });
        let mut read = netlink::read(known, deadline, self.dump_threads)?;
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
                    return Ok(Snapshot::of(kept, generation, layout, values, started));
                }
                // The chains and rules held, but not the named counters
                // (or, never expected, the counters do not fit the layout):
                // read the structure, still taking over the known rules.
                None => {
                    let known = Known {
                        generation: *generation,
                        chains: &current.chains,
                        rules: &kept.rules,
                        full: true,
                    };
                    read = netlink::read(Some(known), deadline, self.dump_threads)?;
                }
            }
        }
        let Read::Full {
            generation,
            ruleset,
            counts,
            rules: read_rules,
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
        super::retire::retire(std::mem::replace(&mut kept.rules, read_rules));
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
        let values = layout
            .values(&counts)
            .ok_or(FirewallError::Malformed("ruleset"))?;
        Ok(Snapshot::of(kept, generation, layout, values, started))
    }

    /// The result of the read under way, or of a read made now.
    fn shared_read(&self) -> Option<Arc<Result<Snapshot, FirewallError>>> {
        let deadline = Instant::now() + self.deadline;
        self.flight.share(deadline, || {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            self.read(&mut kept, deadline)
        })
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
    fn read_legacy(&self, layout: &Layout, cache: &mut legacy::Cache) -> legacy::Read {
        let read = legacy::read(
            |family, table| {
                let nft = match family {
                    LegacyFamily::Ipv4 => &layout.iptables,
                    LegacyFamily::Ipv6 => &layout.ip6tables,
                };
                nft.tables.contains(table)
            },
            self.position_label,
            cache,
        );
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

/// Seconds since the Unix epoch.
fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn counter_family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'a Labels, Counters)>,
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
        for (labels, count) in series.chain_rules.iter().chain(&legacy.chain_rules) {
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

/// A gauge family of 1 per legacy table listed, absent when none is.
fn legacy_tables(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    tables: &[(LegacyFamily, String)],
) -> Result<(), std::fmt::Error> {
    if tables.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (family_name, table) in tables {
        ConstGauge::new(1i64).encode(family.encode_family(&LegacyLabels {
            family: family_name.label().into(),
            table: table.clone(),
        })?)?;
    }
    Ok(())
}

impl Collector for FirewallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let started = Instant::now();
        let shared = self.shared_read();
        let snapshot = match shared.as_deref() {
            Some(Ok(snapshot)) => {
                Self::recovered(&self.last_error, "nftables");
                Some(snapshot)
            }
            Some(Err(e)) => {
                Self::log_failure(&self.last_error, e.to_string());
                None
            }
            None => {
                Self::log_failure(&self.last_error, FirewallError::Deadline.to_string());
                None
            }
        };
        // A scrape that shared a read reports that read's duration.
        let took = snapshot.map_or_else(|| started.elapsed(), |s| s.took);
        let read = snapshot.map(|s| (&*s.layout, s.values.as_slice()));
        encode_xtables(
            &mut encoder,
            "iptables",
            snapshot.map(|s| (&s.layout.iptables, s.values.as_slice(), &s.legacy.ipv4)),
            self.legacy_names,
            took,
        )?;
        encode_xtables(
            &mut encoder,
            "ip6tables",
            snapshot.map(|s| (&s.layout.ip6tables, s.values.as_slice(), &s.legacy.ipv6)),
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
        legacy_tables(
            &mut encoder,
            "scanner_agent_firewall_legacy_table",
            "1 for each legacy x_tables (iptables-legacy) table in use",
            &legacy::tables(),
        )?;
        if let Some(snapshot) = snapshot {
            legacy_tables(
                &mut encoder,
                "scanner_agent_firewall_legacy_shadowed",
                "1 for each legacy x_tables table not exported because an iptables-nft table of the same family and name is",
                &snapshot.legacy.shadowed,
            )?;
        }
        tracing::trace!(
            "firewall counters: scrape encoded after {:?} (read {took:?})",
            started.elapsed()
        );
        Ok(())
    }
}
