//! Tables built byte by byte as the kernel lays them out, rendered; then
//! the same blobs truncated, corrupted and replaced by garbage, which must
//! give an error or a rendering, never a panic.

use super::*;

/// A table blob under construction.
struct Builder {
    family: Family,
    blob: Vec<u8>,
    hooks: [u32; HOOKS],
    valid: u32,
}

/// The fixed part of an entry: what `ipt_ip` / `ip6t_ip6` hold.
#[derive(Default)]
struct Ip {
    src: Vec<u8>,
    smsk: Vec<u8>,
    dst: Vec<u8>,
    dmsk: Vec<u8>,
    iniface: &'static str,
    iniface_mask: usize,
    outiface: &'static str,
    outiface_mask: usize,
    proto: u16,
    flags: u8,
    invflags: u8,
}

enum Target<'a> {
    Verdict(i32),
    Error(&'a str),
    Module(&'a str, u8, Vec<u8>),
}

/// An extension: header and data, padded to 8 bytes.
fn extension(name: &str, revision: u8, data: &[u8]) -> Vec<u8> {
    let size = (32 + data.len()).div_ceil(8) * 8;
    let mut out = vec![0u8; size];
    out[..2].copy_from_slice(&(size as u16).to_ne_bytes());
    out[2..2 + name.len()].copy_from_slice(name.as_bytes());
    out[31] = revision;
    out[32..32 + data.len()].copy_from_slice(data);
    out
}

impl Builder {
    fn new(family: Family) -> Self {
        Self {
            family,
            blob: Vec::new(),
            hooks: [0; HOOKS],
            valid: 0,
        }
    }

    fn geometry(&self) -> &'static Geometry {
        match self.family {
            Family::Ipv4 => &V4,
            Family::Ipv6 => &V6,
        }
    }

    /// The next entry starts built-in chain `hook`.
    fn hook(&mut self, hook: usize) {
        self.valid |= 1 << hook;
        self.hooks[hook] = self.blob.len() as u32;
    }

    /// Appends an entry; returns the offset of its verdict (standard targets).
    fn push(
        &mut self,
        ip: &Ip,
        matches: &[(&str, u8, Vec<u8>)],
        target: Target<'_>,
        counters: (u64, u64),
    ) -> usize {
        let g = self.geometry();
        let mut fixed = vec![0u8; g.entry];
        let put = |fixed: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            fixed[at..at + bytes.len()].copy_from_slice(bytes);
        };
        for (i, bytes) in [&ip.src, &ip.dst, &ip.smsk, &ip.dmsk].iter().enumerate() {
            put(&mut fixed, g.addresses[i], bytes);
        }
        put(&mut fixed, g.ifaces[0], ip.iniface.as_bytes());
        put(&mut fixed, g.ifaces[1], ip.outiface.as_bytes());
        put(&mut fixed, g.ifaces[2], &vec![0xff; ip.iniface_mask]);
        put(&mut fixed, g.ifaces[3], &vec![0xff; ip.outiface_mask]);
        put(&mut fixed, g.proto, &ip.proto.to_ne_bytes());
        fixed[g.flags] = ip.flags;
        fixed[g.invflags] = ip.invflags;
        put(&mut fixed, g.counters, &counters.0.to_ne_bytes());
        put(&mut fixed, g.counters + 8, &counters.1.to_ne_bytes());
        let mut tail: Vec<u8> = matches
            .iter()
            .flat_map(|(name, rev, data)| extension(name, *rev, data))
            .collect();
        let target_offset = g.entry + tail.len();
        let mut verdict_at = 0;
        tail.extend(match target {
            Target::Verdict(v) => {
                verdict_at = self.blob.len() + target_offset + 32;
                extension("", 0, &v.to_ne_bytes())
            }
            Target::Error(name) => {
                let mut data = [0u8; 30];
                data[..name.len()].copy_from_slice(name.as_bytes());
                extension("ERROR", 0, &data)
            }
            Target::Module(name, rev, data) => extension(name, rev, &data),
        });
        let next_offset = g.entry + tail.len();
        put(
            &mut fixed,
            g.target_offset,
            &(target_offset as u16).to_ne_bytes(),
        );
        put(
            &mut fixed,
            g.next_offset,
            &(next_offset as u16).to_ne_bytes(),
        );
        self.blob.extend(fixed);
        self.blob.extend(tail);
        verdict_at
    }

    fn patch_verdict(&mut self, at: usize, verdict: usize) {
        self.blob[at..at + 4].copy_from_slice(&(verdict as i32).to_ne_bytes());
    }

    /// Appends the table's end marker.
    fn end(&mut self) {
        self.push(&Ip::default(), &[], Target::Error("ERROR"), (0, 0));
    }

    fn parse(&self) -> Result<Vec<Chain>, Bad> {
        parse_blob(self.family, &self.blob, self.valid, &self.hooks).map(|p| p.chains)
    }
}

fn tcp_dport(port: u16) -> Vec<u8> {
    let mut info = Vec::new();
    for p in [0, u16::MAX, port, port] {
        info.extend(p.to_ne_bytes());
    }
    info.extend([0, 0, 0, 0]);
    info
}

/// A filter table with what `iptables-legacy` writes: addresses,
/// interfaces, a match, a rule without target, a jump, a goto, `! -f`, a
/// module target, policies and counters.
fn filter_v4() -> Builder {
    let mut b = Builder::new(Family::Ipv4);
    b.hook(1);
    b.push(
        &Ip {
            src: vec![198, 18, 0, 0],
            smsk: vec![255, 255, 255, 0],
            iniface: "veth",
            iniface_mask: 4,
            proto: 6,
            ..Ip::default()
        },
        &[("tcp", 0, tcp_dport(22))],
        Target::Verdict(VERDICT_ACCEPT),
        (5, 300),
    );
    let fallthrough = b.push(
        &Ip {
            proto: 17,
            ..Ip::default()
        },
        &[],
        Target::Verdict(0),
        (1, 50),
    );
    let after = b.blob.len();
    b.patch_verdict(fallthrough, after);
    let jump = b.push(&Ip::default(), &[], Target::Verdict(0), (0, 0));
    let goto = b.push(
        &Ip {
            dst: vec![198, 18, 0, 2],
            dmsk: vec![255; 4],
            outiface: "lo",
            outiface_mask: 3,
            invflags: INV_VIA_OUT | INV_DSTIP,
            flags: IPT_F_GOTO,
            ..Ip::default()
        },
        &[],
        Target::Verdict(0),
        (0, 0),
    );
    b.push(
        &Ip::default(),
        &[],
        Target::Verdict(VERDICT_ACCEPT),
        (7, 700),
    );
    b.hook(2);
    b.push(&Ip::default(), &[], Target::Verdict(VERDICT_DROP), (0, 0));
    b.hook(3);
    b.push(
        &Ip::default(),
        &[],
        Target::Verdict(VERDICT_ACCEPT),
        (2, 80),
    );
    b.push(&Ip::default(), &[], Target::Error("MYCHAIN"), (0, 0));
    let first = b.blob.len();
    b.patch_verdict(jump, first);
    b.patch_verdict(goto, first);
    let mut log = vec![4u8, 0];
    log.extend(b"seen ");
    log.resize(32, 0);
    b.push(
        &Ip {
            flags: IPT_F_FRAG,
            invflags: INV_FRAG,
            ..Ip::default()
        },
        &[],
        Target::Module("LOG", 0, log),
        (3, 3),
    );
    b.push(&Ip::default(), &[], Target::Verdict(VERDICT_RETURN), (9, 9));
    b.end();
    b
}

#[test]
fn a_v4_table_renders_as_iptables_legacy_save() {
    let chains = filter_v4()
        .parse()
        .unwrap_or_else(|b| panic!("{}: {}", b.offset, b.what));
    let rule = |text: &str, c: (u64, u64)| Rule {
        text: text.into(),
        counters: Counters {
            packets: c.0,
            bytes: c.1,
        },
    };
    let chain = |name: &str, policy: Option<&str>, c: (u64, u64), rules| Chain {
        name: name.into(),
        policy: policy.map(str::to_owned),
        counters: Counters {
            packets: c.0,
            bytes: c.1,
        },
        rules,
    };
    assert_eq!(
        chains,
        [
            chain(
                "INPUT",
                Some("ACCEPT"),
                (7, 700),
                vec![
                    rule(
                        "-s 198.18.0.0/24 -i veth+ -p tcp -m tcp --dport 22 -j ACCEPT",
                        (5, 300)
                    ),
                    rule("-p udp", (1, 50)),
                    rule("-j MYCHAIN", (0, 0)),
                    rule("! -d 198.18.0.2/32 ! -o lo -g MYCHAIN", (0, 0)),
                ]
            ),
            chain("FORWARD", Some("DROP"), (0, 0), vec![]),
            chain("OUTPUT", Some("ACCEPT"), (2, 80), vec![]),
            // User chains: no policy, and iptables-save's [0:0] whatever
            // their RETURN entry counted.
            chain(
                "MYCHAIN",
                None,
                (0, 0),
                vec![rule("! -f -j LOG --log-prefix \"seen \"", (3, 3))]
            ),
        ]
    );
}

#[test]
fn a_v6_table_renders_as_ip6tables_legacy_save() {
    let mut b = Builder::new(Family::Ipv6);
    let mut src = vec![0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    let mut smsk = vec![0u8; 16];
    smsk[..8].fill(0xff);
    b.hook(1);
    b.push(
        &Ip {
            src,
            smsk,
            outiface: "eth0",
            outiface_mask: 5,
            invflags: INV_VIA_OUT | INV_PROTO,
            proto: 6,
            flags: IP6T_F_GOTO,
            ..Ip::default()
        },
        &[
            ("tcp", 0, tcp_dport(7000)),
            ("comment", 0, b"v6 a\0".to_vec()),
        ],
        Target::Module("REJECT", 0, 4u32.to_ne_bytes().to_vec()),
        (1, 2),
    );
    b.push(&Ip::default(), &[], Target::Verdict(VERDICT_DROP), (3, 4));
    b.end();
    let chains = b
        .parse()
        .unwrap_or_else(|b| panic!("{}: {}", b.offset, b.what));
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].policy.as_deref(), Some("DROP"));
    assert_eq!(
        chains[0].rules[0].text,
        "-s 2001:db8::/64 ! -o eth0 ! -p tcp -m tcp --dport 7000 -m comment --comment \"v6 a\" -j REJECT --reject-with icmp6-port-unreachable"
    );
}

#[test]
fn broken_tables_are_errors() {
    let mut empty_chain = Builder::new(Family::Ipv4);
    empty_chain.push(&Ip::default(), &[], Target::Error("A"), (0, 0));
    empty_chain.push(&Ip::default(), &[], Target::Error("B"), (0, 0));
    empty_chain.end();
    assert_eq!(
        empty_chain.parse().err().map(|b| b.what),
        Some("chain without its policy entry")
    );
    let mut headless = Builder::new(Family::Ipv4);
    headless.push(&Ip::default(), &[], Target::Verdict(VERDICT_ACCEPT), (0, 0));
    headless.push(&Ip::default(), &[], Target::Verdict(VERDICT_ACCEPT), (0, 0));
    headless.end();
    assert_eq!(
        headless.parse().err().map(|b| b.what),
        Some("rule outside any chain")
    );
    // An empty blob is an empty table, not an error.
    assert_eq!(Builder::new(Family::Ipv4).parse().ok(), Some(vec![]));
}

/// A later read of the same structure: its counters land where they belong.
#[test]
fn counters_of_an_unchanged_structure_update_the_parsed_table() {
    let table = filter_v4();
    let mut parsed = parse_blob(Family::Ipv4, &table.blob, table.valid, &table.hooks)
        .unwrap_or_else(|b| panic!("{}: {}", b.offset, b.what));
    let (structure, first) = counters(Family::Ipv4, &table.blob).expect("counters");
    assert_eq!(first.len(), parsed.slots.len());
    assert_eq!(
        first[0],
        Counters {
            packets: 5,
            bytes: 300
        }
    );

    let mut later = filter_v4();
    let at = V4.counters;
    later.blob[at..at + 8].copy_from_slice(&6u64.to_ne_bytes());
    let (later_structure, later_counters) = counters(Family::Ipv4, &later.blob).expect("counters");
    assert_eq!(structure, later_structure, "counters are not structure");
    assert!(parsed.set_counters(&later_counters));
    assert_eq!(parsed.chains[0].rules[0].counters.packets, 6);
    assert_eq!(parsed.chains[0].counters.packets, 7, "the policy");
    assert!(!parsed.set_counters(&later_counters[1..]));
    assert_eq!(parsed.chains, later.parse().unwrap_or_default());

    let mut changed = filter_v4();
    changed.blob[V4.proto] = 17;
    assert_ne!(
        counters(Family::Ipv4, &changed.blob).map(|c| c.0),
        Some(structure)
    );
    for len in 0..table.blob.len() {
        let _ = counters(Family::Ipv6, &table.blob[..len]);
    }
}

/// xorshift64: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Truncated, corrupted and random blobs: an error or chains, never a panic.
#[test]
fn garbage_never_panics() {
    let good = filter_v4();
    for len in 0..good.blob.len() {
        let _ = parse_blob(Family::Ipv4, &good.blob[..len], good.valid, &good.hooks);
        let _ = parse_blob(Family::Ipv6, &good.blob[..len], good.valid, &good.hooks);
    }
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for at in 0..good.blob.len() {
        for value in [0u8, 1, 0x7f, 0x80, 0xff, noise.next() as u8] {
            let mut blob = good.blob.clone();
            blob[at] = value;
            let _ = parse_blob(Family::Ipv4, &blob, good.valid, &good.hooks);
        }
    }
    for _ in 0..3000 {
        let len = noise.below(1200);
        let blob = noise.bytes(len);
        let hooks: [u32; HOOKS] = std::array::from_fn(|_| noise.below(len.max(1) + 8) as u32);
        let valid = noise.next() as u32;
        for family in [Family::Ipv4, Family::Ipv6] {
            let _ = parse_blob(family, &blob, valid, &hooks);
        }
    }
}

/// Well-formed entries whose matches and targets carry garbage of every
/// size: the extensions' printers must cope.
#[test]
fn garbage_extension_data_never_panics() {
    const MATCHES: [&str; 13] = [
        "tcp",
        "udp",
        "icmp",
        "icmp6",
        "mark",
        "limit",
        "comment",
        "conntrack",
        "multiport",
        "pkttype",
        "ttl",
        "hl",
        "hashlimit",
    ];
    const TARGETS: [&str; 6] = ["LOG", "REJECT", "MARK", "MASQUERADE", "", "NFQUEUE"];
    let mut noise = Noise(42);
    for round in 0..2000 {
        let family = if round % 2 == 0 {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let mut b = Builder::new(family);
        b.hook(0);
        let matches: Vec<(&str, u8, Vec<u8>)> = (0..noise.below(4))
            .map(|_| {
                let len = noise.below(300);
                (
                    MATCHES[noise.below(MATCHES.len())],
                    noise.below(4) as u8,
                    noise.bytes(len),
                )
            })
            .collect();
        let len = noise.below(80);
        let ip = Ip {
            src: noise.bytes(b.geometry().address_len),
            smsk: noise.bytes(b.geometry().address_len),
            iniface: "x",
            iniface_mask: noise.below(17),
            proto: noise.next() as u16,
            flags: noise.next() as u8,
            invflags: noise.next() as u8,
            ..Ip::default()
        };
        let target = Target::Module(
            TARGETS[noise.below(TARGETS.len())],
            noise.below(3) as u8,
            noise.bytes(len),
        );
        b.push(&ip, &matches, target, (noise.next(), noise.next()));
        let verdict = noise.next() as i32;
        b.push(&Ip::default(), &[], Target::Verdict(verdict), (0, 0));
        b.end();
        assert!(b.parse().is_ok());
    }
}
