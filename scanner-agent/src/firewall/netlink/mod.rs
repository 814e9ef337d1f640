//! Reads nftables over netlink the way `iptables-save` does: a dump of
//! every chain, then a dump of each chain's rules, then the counter
//! objects. One dump of all rules would cost more: the kernel fills each
//! 32 KiB reply by walking the rule list from its start, so a dump costs
//! the square of the rules it spans, and one dump per chain keeps that
//! walk within a chain.
//!
//! A read parses the structure of chains, rules and objects with libnftnl
//! ([`nftnl`]) only when the ruleset generation differs from the one the
//! caller already has; the counter values always come from a walk over
//! the raw attributes ([`attrs`]). Besides `legacy::sockopt`, this is the
//! only module with `unsafe`.
//!
//! The reads never reset anything (`NFT_MSG_GETRULE`, not `..._RESET`). A
//! dump the kernel flags as interrupted (`NLM_F_DUMP_INTR`), or a ruleset
//! generation that moved between the first and the last request, means the
//! ruleset changed while it was read: the whole read is retried.

mod attrs;
mod chains;
mod nftnl;

mod sets;

use std::{
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    sync::atomic::{AtomicU32, Ordering},
    time::Instant,
};

pub(super) use self::{
    attrs::Handled,
    chains::Rules,
    sets::{SetElements, set_elements},
};
use super::{
    FirewallError,
    ruleset::{Chain, Ruleset},
};

/// Attempts before giving up on a ruleset that keeps changing.
const ATTEMPTS: usize = 5;
/// Larger than the biggest reply the kernel sends (32 KiB per dump part).
const RECV_BUFFER: usize = 64 * 1024;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;

static SEQ: AtomicU32 = AtomicU32::new(1);

/// A ruleset generation: every committed change in a network namespace
/// moves its id, so an unchanged one means an unchanged structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Generation {
    /// The network namespace's inode: ids of different namespaces may meet.
    pub netns: u64,
    pub id: u32,
}

/// The inode of this thread's network namespace. Through thread-self: a
/// scrape may run on a thread that entered another namespace than the
/// process's.
pub(super) fn netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

/// Counter values of one read, in dump order: chains (policy counters),
/// rules (chain by chain) and named counter objects.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub chains: Vec<Handled>,
    pub rules: Vec<Handled>,
    pub named: Vec<Handled>,
}

pub(super) enum Read {
    /// A generation the caller did not know, with other chains or rules:
    /// structure and counters, and the rules of this read for the next
    /// full read to take over.
    Full {
        generation: Generation,
        ruleset: Ruleset,
        counts: Counts,
        rules: Rules,
    },
    /// A generation the caller did not know, with the chains and rules it
    /// knew (only set elements, or nothing the rules show, changed):
    /// counters only, in the same order.
    Unchanged {
        generation: Generation,
        counts: Counts,
    },
    /// The generation the caller knew: counters only, in the same order.
    Counters(Counts),
}

/// What the caller holds from its last read.
#[derive(Clone, Copy)]
pub(super) struct Known<'a> {
    pub generation: Generation,
    /// Whose rules each read dumps, in this order.
    pub chains: &'a [Chain],
    /// The rules of the last full read.
    pub rules: &'a Rules,
    /// Give the structure even when the chains and rules are the known ones.
    pub full: bool,
}

/// What a read's dumps gave.
enum Dumped {
    Counters(Counts),
    Unchanged(Counts),
    Full(Ruleset, Counts, Rules),
}

/// One consistent read. `known` is what the caller holds from its last
/// read, if anything. The read gives up at `deadline`. `threads` overrides
/// how many threads dump the rules (by default it depends on the size of
/// the last read).
pub(super) fn read(
    known: Option<Known<'_>>,
    deadline: Instant,
    threads: Option<usize>,
) -> Result<Read, FirewallError> {
    for _ in 0..ATTEMPTS {
        if let Some(read) = read_once(known, deadline, threads)? {
            return Ok(read);
        }
    }
    Err(FirewallError::KeepsChanging { attempts: ATTEMPTS })
}

/// A read, or `None` when the ruleset changed during it.
fn read_once(
    known: Option<Known<'_>>,
    deadline: Instant,
    threads: Option<usize>,
) -> Result<Option<Read>, FirewallError> {
    let mut reader = Reader::new(deadline)?;
    let generation = reader.generation()?;
    let same_generation = known.is_some_and(|k| !k.full && k.generation == generation);
    let read = reader
        .dumps(known, same_generation, threads)?
        .map(|dumped| match dumped {
            Dumped::Counters(counts) => Read::Counters(counts),
            Dumped::Unchanged(counts) => Read::Unchanged { generation, counts },
            Dumped::Full(ruleset, counts, rules) => Read::Full {
                generation,
                ruleset,
                counts,
                rules,
            },
        });
    if read.is_none() || reader.generation()? != generation {
        return Ok(None);
    }
    Ok(read)
}

struct Reader {
    socket: mnl::Socket,
    /// u64 elements keep the buffer aligned for `nlmsghdr`.
    buffer: Vec<u64>,
    deadline: Instant,
}

/// The buffer as bytes, still aligned for `nlmsghdr`.
fn as_bytes(buffer: &mut [u64]) -> &mut [u8] {
    let len = size_of_val(buffer);
    // SAFETY: the slice owns `len` initialised bytes; u8 has no alignment or
    // validity requirements, and the returned borrow replaces `buffer`'s.
    unsafe { std::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<u8>(), len) }
}

/// A NUL-terminated name, as netlink string attributes carry them.
fn c_string(name: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    bytes
}

impl Reader {
    /// A netfilter socket whose receives give up at `deadline`.
    fn new(deadline: Instant) -> Result<Self, FirewallError> {
        let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(FirewallError::netlink)?;
        let reader = Self {
            socket,
            buffer: vec![0u64; RECV_BUFFER / 8],
            deadline,
        };
        reader.receive_timeout()?;
        Ok(reader)
    }

    /// Makes a blocked receive return at the deadline (`SO_RCVTIMEO`).
    fn receive_timeout(&self) -> Result<(), FirewallError> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(FirewallError::Deadline)?;
        let tv = libc::timeval {
            tv_sec: left.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            // At least 1 us: zero would mean no timeout.
            tv_usec: libc::suseconds_t::from(left.subsec_micros().max(1)),
        };
        // SAFETY: a valid socket and a `timeval` of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(FirewallError::netlink(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Every dump of one read. With `counters_only` (the generation the
    /// caller knows) only the counter values are read, following the known
    /// chains. Otherwise every rule's key is taken too, and each rule is
    /// taken over from the caller's last full read under its key, or parsed;
    /// when the chains and keys are the caller's, that is all (only set
    /// elements changed).
    fn dumps(
        &mut self,
        known: Option<Known<'_>>,
        counters_only: bool,
        threads: Option<usize>,
    ) -> Result<Option<Dumped>, FirewallError> {
        let parse = !counters_only;
        let no_rules = Rules::default();
        let previous = known.map_or(&no_rules, |k| k.rules);
        let mut counts = Counts::default();
        let mut chains = Vec::new();
        let mut counters = Vec::new();
        let complete = self.dump(libc::NFT_MSG_GETCHAIN as u16, 0, &[], |msg| {
            counts.chains.push(attrs::chain(msg)?);
            if parse {
                chains.push(nftnl::parse_chain(msg)?);
            }
            Ok(())
        })?;
        if !complete {
            return Ok(None);
        }
        let dumped: &[Chain] = match known {
            Some(k) if counters_only => k.chains,
            _ => &chains,
        };
        let mode = if parse {
            chains::Mode::Parse { previous }
        } else {
            chains::Mode::Counters
        };
        let threads = threads.unwrap_or_else(|| chains::threads(previous.len(), dumped.len()));
        let deadline = self.deadline;
        let Some(by_chain) = chains::dump(self, dumped, mode, threads, deadline)? else {
            return Ok(None);
        };
        let complete = self.dump(libc::NFT_MSG_GETOBJ as u16, 0, &[], |msg| {
            let Some(values) = attrs::named_counter(msg)? else {
                return Ok(());
            };
            counts.named.push(values);
            if parse {
                counters.push(
                    nftnl::parse_named_counter(msg)?.ok_or(FirewallError::Malformed("object"))?,
                );
            }
            Ok(())
        })?;
        if !complete {
            return Ok(None);
        }
        counts.rules = by_chain.iter().flat_map(|c| &c.counts).copied().collect();
        if counters_only {
            return Ok(Some(Dumped::Counters(counts)));
        }
        let unchanged = known.is_some_and(|k| !k.full && k.chains == chains.as_slice())
            && previous.len() == counts.rules.len()
            && previous.same_keys(by_chain.iter().flat_map(|c| &c.keys));
        if unchanged {
            return Ok(Some(Dumped::Unchanged(counts)));
        }
        let (rules, chain_rules, next) = chains::collect(&chains, by_chain);
        Ok(Some(Dumped::Full(
            Ruleset {
                chains,
                rules,
                chain_rules,
                counters,
            },
            counts,
            next,
        )))
    }

    /// Receives one datagram; returns its length.
    fn recv(&mut self) -> Result<usize, FirewallError> {
        self.socket
            .recv_raw(as_bytes(&mut self.buffer))
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FirewallError::Deadline,
                _ => FirewallError::netlink(e),
            })
    }

    /// Sends one nftables request: `msg_type` for `family` (0: all), with
    /// `attributes` already encoded.
    fn request(
        &mut self,
        msg_type: u16,
        family: u8,
        flags: u16,
        attributes: &[u8],
    ) -> Result<u32, FirewallError> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let len = size_of::<libc::nlmsghdr>() + 4 + attributes.len();
        let mut request = Vec::with_capacity(len);
        request.extend_from_slice(&(len as u32).to_ne_bytes());
        request.extend_from_slice(
            &((libc::NFNL_SUBSYS_NFTABLES as u16) << 8 | msg_type).to_ne_bytes(),
        );
        request.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        request.extend_from_slice(&seq.to_ne_bytes());
        // Port id 0: the kernel fills in the socket's.
        request.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version, resource id (unused in requests).
        request.extend_from_slice(&[family, libc::NFNETLINK_V0 as u8, 0, 0]);
        request.extend_from_slice(attributes);
        self.socket.send(&request).map_err(FirewallError::netlink)?;
        Ok(seq)
    }

    /// Runs a dump, calling `each` for every object message. Returns false
    /// when the kernel flagged the dump as interrupted by a change, or the
    /// chain it asked for is gone.
    fn dump(
        &mut self,
        msg_type: u16,
        family: u8,
        attributes: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), FirewallError>,
    ) -> Result<bool, FirewallError> {
        if Instant::now() >= self.deadline {
            return Err(FirewallError::Deadline);
        }
        let seq = self.request(msg_type, family, libc::NLM_F_DUMP as u16, attributes)?;
        let portid = self.socket.portid();
        loop {
            let n = self.recv()?;
            let received = &as_bytes(&mut self.buffer)[..n];
            for msg in mnl::NlMessages::new(received) {
                let msg = msg.map_err(FirewallError::netlink)?;
                let header = header(msg);
                if header.nlmsg_seq != seq || (header.nlmsg_pid != 0 && header.nlmsg_pid != portid)
                {
                    continue;
                }
                if header.nlmsg_flags & libc::NLM_F_DUMP_INTR as u16 != 0 {
                    return Ok(false);
                }
                match i32::from(header.nlmsg_type) {
                    libc::NLMSG_DONE => return Ok(true),
                    libc::NLMSG_ERROR => match error_code(msg) {
                        0 => {}
                        libc::ENOENT => return Ok(false),
                        errno => {
                            return Err(FirewallError::netlink(io::Error::from_raw_os_error(
                                errno,
                            )));
                        }
                    },
                    _ => each(msg)?,
                }
            }
        }
    }

    /// The current ruleset generation of this thread's network namespace.
    fn generation(&mut self) -> Result<Generation, FirewallError> {
        let seq = self.request(libc::NFT_MSG_GETGEN as u16, 0, 0, &[])?;
        let n = self.recv()?;
        let received = &as_bytes(&mut self.buffer)[..n];
        for msg in mnl::NlMessages::new(received) {
            let msg = msg.map_err(FirewallError::netlink)?;
            let header = header(msg);
            if header.nlmsg_seq != seq {
                continue;
            }
            if i32::from(header.nlmsg_type) == libc::NLMSG_ERROR {
                return Err(FirewallError::netlink(io::Error::from_raw_os_error(
                    error_code(msg),
                )));
            }
            return Ok(Generation {
                netns: netns(),
                id: attrs::generation(msg)?,
            });
        }
        Err(FirewallError::Malformed("generation"))
    }
}

fn header(msg: &[u8]) -> libc::nlmsghdr {
    // SAFETY: NlMessages only yields slices of at least one header, starting
    // at an aligned offset; nlmsghdr is plain old data.
    unsafe { msg.as_ptr().cast::<libc::nlmsghdr>().read_unaligned() }
}

/// The positive errno of an `NLMSG_ERROR` message (0 for an acknowledgement).
fn error_code(msg: &[u8]) -> i32 {
    let at = size_of::<libc::nlmsghdr>();
    msg.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(libc::EPROTO, |b| -i32::from_ne_bytes(b))
}
