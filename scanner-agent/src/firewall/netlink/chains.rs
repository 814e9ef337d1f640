//! The rule dumps of one read, one per chain, on up to [`MAX_THREADS`]
//! threads at once (each with a socket of its own), and the rules of the
//! last full read that a new one takes over instead of parsing them again.
//!
//! The kernel's dump is most of a scrape's time (it copies every rule's
//! expressions into netlink attributes); chains are independent dumps, so
//! on a ruleset of thousands of rules two cores fill them in about half
//! the time of one. A small ruleset stays on the calling thread: starting
//! threads would cost more than its dump.

use std::{
    collections::HashMap,
    ops::Range,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use super::{
    FirewallError, NFTA_RULE_CHAIN, NFTA_RULE_TABLE, Reader, attrs, c_string, netns, nftnl,
};
use crate::firewall::{
    digest::ByDigest,
    ruleset::{Chain, Family, Rule, SharedRules},
};

/// Dump threads at most, the caller's included.
pub(super) const MAX_THREADS: usize = 4;
/// Rules (as of the last read) from which a read uses more than one thread.
const RULES_PER_THREAD: usize = 2000;

/// How many threads a read of `rules` rules in `chains` chains uses.
pub(super) fn threads(rules: usize, chains: usize) -> usize {
    // Asked once: the answer reads cgroup files.
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    (rules / RULES_PER_THREAD)
        .clamp(1, MAX_THREADS)
        .min(cores)
        .min(chains.max(1))
}

/// The rules of a full read, in dump order (chain by chain), with their
/// keys ([`attrs::RuleDigest::key`]): what the next full read takes over
/// for every rule whose key it finds again in the same chain.
#[derive(Debug, Default)]
pub(in super::super) struct Rules {
    keys: Vec<u64>,
    /// Shared with the read's [`crate::firewall::ruleset::Ruleset`]: one
    /// list, not a reference count more on every rule.
    rules: SharedRules,
    /// Each dumped chain and where its rules are.
    chains: Vec<(Family, String, String, Range<usize>)>,
}

impl Rules {
    pub(in super::super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys and rules `chain` had, when it was dumped; `hint` is where
    /// to look first (chains mostly stay in their place).
    fn of(&self, chain: &Chain, hint: usize) -> (&[u64], &[Arc<Rule>]) {
        let same = |(f, t, n, _): &&(Family, String, String, Range<usize>)| {
            *f == chain.family && *t == chain.table && *n == chain.name
        };
        // Its old place, or one off (a chain added or removed before it),
        // before a search of all: a ruleset of thousands of chains must
        // not cost the square of them.
        let near = [Some(hint), hint.checked_sub(1), hint.checked_add(1)];
        let found = near
            .into_iter()
            .flatten()
            .filter_map(|i| self.chains.get(i))
            .find(same)
            .or_else(|| self.chains.iter().find(same));
        found.map_or((&[], &[]), |(.., range)| {
            (&self.keys[range.clone()], &self.rules[range.clone()])
        })
    }

    /// Whether `keys` are these rules' keys, in the same order.
    pub(super) fn same_keys<'a>(&self, keys: impl IntoIterator<Item = &'a u64>) -> bool {
        self.keys.iter().eq(keys)
    }
}

/// What one chain's dump gave.
#[derive(Debug, Default)]
pub(super) struct ChainDump {
    pub counts: Vec<attrs::Handled>,
    pub keys: Vec<u64>,
    /// Only when parsing: the rules, taken over or parsed.
    pub rules: Vec<Arc<Rule>>,
}

/// What the chain dumps do with each rule.
#[derive(Clone, Copy)]
pub(super) enum Mode<'a> {
    /// Counter values only.
    Counters,
    /// Keys too, and rules: from `previous` under their key, else parsed.
    Parse { previous: &'a Rules },
}

/// The rules of `chains`, each chain's dump on one of `threads` threads
/// (the caller's `first` reader among them). `None` when a dump found the
/// ruleset changed.
pub(super) fn dump(
    first: &mut Reader,
    chains: &[Chain],
    mode: Mode<'_>,
    threads: usize,
    deadline: Instant,
) -> Result<Option<Vec<ChainDump>>, FirewallError> {
    if threads <= 1 {
        let mut out = Vec::with_capacity(chains.len());
        for (index, chain) in chains.iter().enumerate() {
            match first.chain(chain, index, mode)? {
                Some(dumped) => out.push(dumped),
                None => return Ok(None),
            }
        }
        return Ok(Some(out));
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let done: Mutex<Vec<(usize, ChainDump)>> = Mutex::new(Vec::with_capacity(chains.len()));
    // The sockets of the other threads must be in this thread's network
    // namespace (a scrape may run in another than the process's): threads
    // start in their creator's, and each checks.
    let here = netns();
    let work = |reader: &mut Reader| -> Result<bool, FirewallError> {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(chain) = chains.get(index) else {
                return Ok(true);
            };
            if stop.load(Ordering::Relaxed) {
                return Ok(true);
            }
            let Some(dumped) = reader.chain(chain, index, mode)? else {
                stop.store(true, Ordering::Relaxed);
                return Ok(false);
            };
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((index, dumped));
        }
    };
    let results: Vec<Result<bool, FirewallError>> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads)
            .map(|_| {
                scope.spawn(|| {
                    let complete = if netns() == here {
                        Reader::new(deadline).and_then(|mut reader| work(&mut reader))
                    } else {
                        Err(FirewallError::ThreadNamespace)
                    };
                    if complete.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    complete
                })
            })
            .collect();
        let mut results = vec![work(first)];
        if results[0].is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        results.extend(others.into_iter().map(|t| {
            t.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }));
        results
    });
    // An error wins over an interrupted dump (which only asks for a retry).
    let mut complete = true;
    for result in results {
        complete &= result?;
    }
    if !complete {
        return Ok(None);
    }
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_unstable_by_key(|(index, _)| *index);
    Ok(Some(done.into_iter().map(|(_, dumped)| dumped).collect()))
}

/// This read's rules in dump order, where each chain's are, and what the
/// next read takes over.
pub(super) fn collect(
    chains: &[Chain],
    dumped: Vec<ChainDump>,
) -> (SharedRules, Vec<Range<usize>>, Rules) {
    let total = dumped.iter().map(|d| d.keys.len()).sum();
    let mut keys = Vec::with_capacity(total);
    let mut all = Vec::with_capacity(total);
    let mut places = Vec::with_capacity(chains.len());
    for (chain, dumped) in chains.iter().zip(dumped) {
        let start = keys.len();
        keys.extend(dumped.keys);
        all.extend(dumped.rules);
        places.push((
            chain.family,
            chain.table.clone(),
            chain.name.clone(),
            start..keys.len(),
        ));
    }
    let ranges = places.iter().map(|(.., r)| r.clone()).collect();
    let rules: SharedRules = all.into();
    let next = Rules {
        keys,
        rules: Arc::clone(&rules),
        chains: places,
    };
    (rules, ranges, next)
}

/// A chain's keys and rules of the last read, and where a new read is in
/// them. Most rules are found in their old place or the next one (one rule
/// inserted or deleted); a rule found elsewhere is looked up by key in an
/// index made on the first such miss.
struct Previous<'a> {
    keys: &'a [u64],
    rules: &'a [Arc<Rule>],
    cursor: usize,
    index: Option<HashMap<u64, usize, ByDigest>>,
}

impl Previous<'_> {
    fn find(&mut self, key: u64) -> Option<Arc<Rule>> {
        let at = if self.keys.get(self.cursor) == Some(&key) {
            Some(self.cursor)
        } else if self.keys.get(self.cursor + 1) == Some(&key) {
            Some(self.cursor + 1)
        } else {
            let keys = self.keys;
            self.index
                .get_or_insert_with(|| keys.iter().enumerate().map(|(i, k)| (*k, i)).collect())
                .get(&key)
                .copied()
        }?;
        self.cursor = at + 1;
        Some(Arc::clone(&self.rules[at]))
    }
}

impl Reader {
    /// One chain's rules (`index` in this read's chains, a hint for
    /// finding it in the last read); `None` when the dump was interrupted
    /// or the chain is gone.
    fn chain(
        &mut self,
        chain: &Chain,
        index: usize,
        mode: Mode<'_>,
    ) -> Result<Option<ChainDump>, FirewallError> {
        let mut filter = Vec::new();
        attrs::push_attribute(&mut filter, NFTA_RULE_TABLE, &c_string(&chain.table));
        attrs::push_attribute(&mut filter, NFTA_RULE_CHAIN, &c_string(&chain.name));
        let mut out = ChainDump::default();
        let mut previous = match mode {
            Mode::Counters => None,
            Mode::Parse { previous } => {
                let (keys, rules) = previous.of(chain, index);
                Some(Previous {
                    keys,
                    rules,
                    cursor: 0,
                    index: None,
                })
            }
        };
        let complete = self.dump(
            libc::NFT_MSG_GETRULE as u16,
            chain.family.0,
            &filter,
            |msg| {
                out.counts.push(attrs::rule(msg)?);
                if let Some(previous) = &mut previous {
                    let key = attrs::rule_digest(msg).key;
                    out.keys.push(key);
                    let rule = match previous.find(key) {
                        Some(rule) => rule,
                        None => Arc::new(nftnl::parse_rule(msg)?),
                    };
                    out.rules.push(rule);
                }
                Ok(())
            },
        )?;
        Ok(complete.then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_rulesets_and_single_chains_stay_on_one_thread() {
        assert_eq!(threads(0, 0), 1);
        assert_eq!(threads(RULES_PER_THREAD - 1, 50), 1);
        assert_eq!(threads(1_000_000, 1), 1, "one chain is one dump");
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(threads(1_000_000, 100), cores.min(MAX_THREADS));
        assert!(threads(2 * RULES_PER_THREAD, 100) <= 2);
    }
}
