//! The nftables ruleset as read over netlink, in plain owned Rust values:
//! what `netlink` produces and `layout`/`render` consume, so everything
//! past the FFI boundary is ordinary, unit-testable code. It is the
//! structure only: counter values change at every scrape and travel apart,
//! in dump order (see `netlink::Counts`).

/// An nftables family (`NFPROTO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Family(pub u8);

impl Family {
    pub(super) const INET: Self = Self(1);
    pub(super) const IPV4: Self = Self(2);
    pub(super) const ARP: Self = Self(3);
    pub(super) const NETDEV: Self = Self(5);
    pub(super) const BRIDGE: Self = Self(7);
    pub(super) const IPV6: Self = Self(10);

    /// The name `nft` uses for the family.
    pub(super) fn name(self) -> String {
        match self {
            Self::INET => "inet".into(),
            Self::IPV4 => "ip".into(),
            Self::ARP => "arp".into(),
            Self::NETDEV => "netdev".into(),
            Self::BRIDGE => "bridge".into(),
            Self::IPV6 => "ip6".into(),
            Self(other) => other.to_string(),
        }
    }
}

/// Packet and byte counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Self) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    /// The netfilter hook of a base chain; `None` for a user-defined chain.
    pub hook: Option<u32>,
    /// `NF_DROP` (0) or `NF_ACCEPT` (1), base chains only.
    pub policy: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rule {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub exprs: Vec<Expr>,
    /// The rule's comment (user data type 0), as `nft` and newer iptables store it.
    pub comment: Option<String>,
    /// A digest of what the kernel holds for the rule apart from its handle,
    /// its place and its counter values (see `netlink::attrs::RuleDigest`):
    /// equal digests, equal rendered text.
    pub digest: u64,
    /// The rule's texts, made once when first needed and kept with the
    /// rule for as long as it is unchanged (see `netlink::Rules`).
    pub text: RuleText,
}

/// What the layout makes of a rule, kept with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RuleText {
    /// iptables-save's text for the rule.
    pub rendered: std::sync::OnceLock<String>,
    /// Its `iptables_rule_*` label set (without `position`), written out.
    pub xtables: std::sync::OnceLock<super::labels::Labels>,
    /// Its `nftables_rule_*` label set, written out.
    pub nftables: std::sync::OnceLock<super::labels::Labels>,
}

impl Rule {
    /// Whether the rule has a counter (the values are read apart).
    pub(super) fn has_counter(&self) -> bool {
        self.exprs.iter().any(|e| matches!(e, Expr::Counter))
    }

    /// Whether the rule carries xtables compat expressions: `nft` calls such
    /// tables "managed by iptables-nft".
    pub(super) fn has_xt(&self) -> bool {
        self.exprs
            .iter()
            .any(|e| matches!(e, Expr::Match { .. } | Expr::Target { .. }))
    }
}

/// One expression of a rule, with the attributes the renderer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expr {
    /// `meta load KEY => dreg`, or `meta set KEY <= sreg` when `set`.
    Meta {
        key: u32,
        reg: u32,
        set: bool,
    },
    /// `payload load LEN @ BASE + OFFSET => dreg`.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Range {
        sreg: u32,
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// A verdict (with its chain for jump/goto) or data loaded into a register.
    Immediate {
        dreg: u32,
        verdict: Option<i32>,
        chain: Option<String>,
        data: Vec<u8>,
    },
    Counter,
    Limit {
        rate: u64,
        unit: u64,
        burst: u32,
        /// 0 packets, 1 bytes.
        kind: u32,
    },
    /// An xtables match run through nft_compat.
    Match {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// An xtables target run through nft_compat.
    Target {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// Any other expression, by name.
    Other {
        name: String,
    },
}

/// A named counter object (`counter NAME { }` in nft), which rules refer to
/// by name and may share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NamedCounter {
    pub family: Family,
    pub table: String,
    pub name: String,
}

/// The rules of a read in dump order, shared by its [`Ruleset`] and what
/// the next read takes over from it.
pub(super) type SharedRules = std::sync::Arc<[std::sync::Arc<Rule>]>;

/// Everything read in one consistent dump. Rules are shared with the
/// next read (`netlink::Rules`), so a rule that did not change since the
/// last read is neither parsed nor rendered again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Ruleset {
    pub chains: Vec<Chain>,
    /// Chain by chain: those of `chains[i]` are `rules[chain_rules[i]]`.
    pub rules: SharedRules,
    pub chain_rules: Vec<std::ops::Range<usize>>,
    pub counters: Vec<NamedCounter>,
}

impl Ruleset {
    /// A digest of the ruleset as rendered: chains with their hooks and
    /// policies, each rule's expressions and comment in chain order, named
    /// counters. Kernel handles are left out, so reloading identical rules
    /// (as `iptables-restore` does) is no change; set elements are not
    /// part of it at all, so updating them (as fail2ban does) is none either.
    pub(super) fn digest(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::hash::DefaultHasher::new();
        for c in &self.chains {
            (c.family, &c.table, &c.name, c.hook, c.policy).hash(&mut h);
        }
        // The rules' digests are well mixed already: folded, not hashed
        // again (a SipHash round per rule was a tenth of a layout rebuild).
        let mut rules = self.rules.len() as u64;
        for r in self.rules.iter() {
            rules = super::digest::fold(rules, r.digest);
        }
        rules.hash(&mut h);
        for c in &self.counters {
            (c.family, &c.table, &c.name).hash(&mut h);
        }
        h.finish()
    }
}
