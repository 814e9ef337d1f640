//! Reads the nftables ruleset the way `nft list ruleset` does: netlink dumps
//! of every chain and rule (all families), parsed by libnftnl. This is the
//! only module with `unsafe`: each libnftnl object is allocated, filled from
//! one message, copied into owned Rust values and freed in the same function.
//!
//! The reads never reset anything (`NFT_MSG_GETRULE`, not `..._RESET`). A
//! dump the kernel flags as interrupted (`NLM_F_DUMP_INTR`), or a ruleset
//! generation that moved between the first and the last dump, means the
//! ruleset changed while it was read: the whole read is retried.

use std::{
    ffi::{CStr, c_char},
    io,
    sync::atomic::{AtomicU32, Ordering},
};

use nftnl_sys as sys;

use super::{
    FirewallError,
    ruleset::{Chain, Counters, Expr, Family, NamedCounter, Rule, Ruleset},
};

/// Attempts before giving up on a ruleset that keeps changing.
const ATTEMPTS: usize = 5;
/// Large enough for the kernel to pack many rules into each read.
const RECV_BUFFER: usize = 64 * 1024;

static SEQ: AtomicU32 = AtomicU32::new(1);

/// One consistent snapshot of every chain and rule.
pub(super) fn read_ruleset() -> Result<Ruleset, FirewallError> {
    for _ in 0..ATTEMPTS {
        match read_once() {
            Ok(Some(ruleset)) => return Ok(ruleset),
            Ok(None) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(FirewallError::KeepsChanging { attempts: ATTEMPTS })
}

/// A snapshot, or `None` when the ruleset changed during the read.
fn read_once() -> Result<Option<Ruleset>, FirewallError> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(FirewallError::netlink)?;
    let mut reader = Reader {
        socket,
        buffer: vec![0u64; RECV_BUFFER / 8],
    };
    let before = reader.generation()?;
    let mut chains = Vec::new();
    if !reader.dump(libc::NFT_MSG_GETCHAIN as u16, |msg| {
        chains.push(parse_chain(msg)?);
        Ok(())
    })? {
        return Ok(None);
    }
    let mut rules = Vec::new();
    if !reader.dump(libc::NFT_MSG_GETRULE as u16, |msg| {
        rules.push(parse_rule(msg)?);
        Ok(())
    })? {
        return Ok(None);
    }
    let mut counters = Vec::new();
    if !reader.dump(NFT_MSG_GETOBJ, |msg| {
        counters.extend(parse_named_counter(msg)?);
        Ok(())
    })? {
        return Ok(None);
    }
    if reader.generation()? != before {
        return Ok(None);
    }
    Ok(Some(Ruleset {
        chains,
        rules,
        counters,
    }))
}

struct Reader {
    socket: mnl::Socket,
    /// u64 elements keep the buffer aligned for `nlmsghdr`.
    buffer: Vec<u64>,
}

/// The buffer as bytes, still aligned for `nlmsghdr`.
fn as_bytes(buffer: &mut [u64]) -> &mut [u8] {
    let len = size_of_val(buffer);
    // SAFETY: the slice owns `len` initialised bytes; u8 has no alignment or
    // validity requirements, and the returned borrow replaces `buffer`'s.
    unsafe { std::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<u8>(), len) }
}

impl Reader {
    /// Receives one datagram; returns its length.
    fn recv(&mut self) -> Result<usize, FirewallError> {
        self.socket
            .recv_raw(as_bytes(&mut self.buffer))
            .map_err(FirewallError::netlink)
    }

    /// Sends one request of `msg_type` for all families.
    fn request(&mut self, msg_type: u16, flags: u16) -> Result<u32, FirewallError> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let buf = as_bytes(&mut self.buffer);
        // SAFETY: `buf` is a writable, aligned buffer far larger than a
        // netlink header plus nfgenmsg (the most libnftnl writes here); the
        // returned pointer points into it.
        let len = unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf.as_mut_ptr().cast::<c_char>(),
                msg_type,
                libc::NFPROTO_UNSPEC as u16,
                flags,
                seq,
            );
            (*nlh).nlmsg_len as usize
        };
        let request = buf[..len].to_vec();
        self.socket.send(&request).map_err(FirewallError::netlink)?;
        Ok(seq)
    }

    /// Runs a dump, calling `each` for every object message. Returns false
    /// when the kernel flagged the dump as interrupted by a change.
    fn dump(
        &mut self,
        msg_type: u16,
        mut each: impl FnMut(&[u8]) -> Result<(), FirewallError>,
    ) -> Result<bool, FirewallError> {
        let seq = self.request(msg_type, libc::NLM_F_DUMP as u16)?;
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
                    libc::NLMSG_ERROR => {
                        let errno = error_code(msg);
                        if errno != 0 {
                            return Err(FirewallError::netlink(io::Error::from_raw_os_error(
                                errno,
                            )));
                        }
                    }
                    _ => each(msg)?,
                }
            }
        }
    }

    /// The ruleset generation, which every committed change increments.
    fn generation(&mut self) -> Result<u32, FirewallError> {
        let seq = self.request(NFT_MSG_GETGEN, 0)?;
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
            // SAFETY: `msg` is one complete netlink message (length checked
            // by NlMessages); the gen object is freed before returning.
            let id = unsafe {
                let object = sys::nftnl_gen_alloc();
                if object.is_null() {
                    return Err(FirewallError::OutOfMemory);
                }
                let parsed = sys::nftnl_gen_nlmsg_parse(msg.as_ptr().cast(), object);
                let id = sys::nftnl_gen_get_u32(object, sys::NFTNL_GEN_ID as u16);
                sys::nftnl_gen_free(object);
                (parsed >= 0).then_some(id)
            };
            return id.ok_or(FirewallError::Malformed("generation"));
        }
        Err(FirewallError::Malformed("generation"))
    }
}

const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_GETOBJ: u16 = 19;
/// `NFT_OBJECT_COUNTER`.
const OBJECT_COUNTER: u32 = 1;
/// `NFTNL_UDATA_RULE_COMMENT`.
const UDATA_RULE_COMMENT: u8 = 0;

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

/// Copies a C string libnftnl owns.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string that stays valid
/// for the duration of the call.
unsafe fn owned_str(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// Copies binary attribute data libnftnl owns.
///
/// # Safety
/// `ptr` must be null or valid for reads of `len` bytes.
unsafe fn owned_bytes(ptr: *const libc::c_void, len: u32) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize) }.to_vec()
}

fn parse_chain(msg: &[u8]) -> Result<Chain, FirewallError> {
    // SAFETY: `msg` is one complete netlink message; every pointer read from
    // the chain object is copied before the object is freed at the end.
    unsafe {
        let c = sys::nftnl_chain_alloc();
        if c.is_null() {
            return Err(FirewallError::OutOfMemory);
        }
        if sys::nftnl_chain_nlmsg_parse(msg.as_ptr().cast(), c) < 0 {
            sys::nftnl_chain_free(c);
            return Err(FirewallError::Malformed("chain"));
        }
        let is_set = |attr: u32| sys::nftnl_chain_is_set(c, attr as u16);
        let counters =
            (is_set(sys::NFTNL_CHAIN_PACKETS) && is_set(sys::NFTNL_CHAIN_BYTES)).then(|| {
                Counters {
                    packets: sys::nftnl_chain_get_u64(c, sys::NFTNL_CHAIN_PACKETS as u16),
                    bytes: sys::nftnl_chain_get_u64(c, sys::NFTNL_CHAIN_BYTES as u16),
                }
            });
        let chain = Chain {
            family: Family(sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_FAMILY as u16) as u8),
            table: owned_str(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_TABLE as u16)),
            name: owned_str(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_NAME as u16)),
            hook: is_set(sys::NFTNL_CHAIN_HOOKNUM)
                .then(|| sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16)),
            policy: is_set(sys::NFTNL_CHAIN_POLICY)
                .then(|| sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_POLICY as u16)),
            counters,
        };
        sys::nftnl_chain_free(c);
        Ok(chain)
    }
}

/// A stateful object: its values when it is a named counter.
fn parse_named_counter(msg: &[u8]) -> Result<Option<NamedCounter>, FirewallError> {
    // SAFETY: `msg` is one complete netlink message; every value is copied
    // out of the object before it is freed.
    unsafe {
        let o = sys::nftnl_obj_alloc();
        if o.is_null() {
            return Err(FirewallError::OutOfMemory);
        }
        if sys::nftnl_obj_nlmsg_parse(msg.as_ptr().cast(), o) < 0 {
            sys::nftnl_obj_free(o);
            return Err(FirewallError::Malformed("object"));
        }
        let counter = (sys::nftnl_obj_get_u32(o, sys::NFTNL_OBJ_TYPE as u16) == OBJECT_COUNTER)
            .then(|| NamedCounter {
                family: Family(sys::nftnl_obj_get_u32(o, sys::NFTNL_OBJ_FAMILY as u16) as u8),
                table: owned_str(sys::nftnl_obj_get_str(o, sys::NFTNL_OBJ_TABLE as u16)),
                name: owned_str(sys::nftnl_obj_get_str(o, sys::NFTNL_OBJ_NAME as u16)),
                counters: Counters {
                    packets: sys::nftnl_obj_get_u64(o, sys::NFTNL_OBJ_CTR_PKTS as u16),
                    bytes: sys::nftnl_obj_get_u64(o, sys::NFTNL_OBJ_CTR_BYTES as u16),
                },
            });
        sys::nftnl_obj_free(o);
        Ok(counter)
    }
}

fn parse_rule(msg: &[u8]) -> Result<Rule, FirewallError> {
    // SAFETY: `msg` is one complete netlink message; the iterator and the
    // rule object are destroyed after every value was copied out.
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if r.is_null() {
            return Err(FirewallError::OutOfMemory);
        }
        if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), r) < 0 {
            sys::nftnl_rule_free(r);
            return Err(FirewallError::Malformed("rule"));
        }
        let mut exprs = Vec::new();
        let iter = sys::nftnl_expr_iter_create(r);
        if !iter.is_null() {
            let mut e = sys::nftnl_expr_iter_next(iter);
            while !e.is_null() {
                exprs.push(parse_expr(e));
                e = sys::nftnl_expr_iter_next(iter);
            }
            sys::nftnl_expr_iter_destroy(iter);
        }
        let comment = if sys::nftnl_rule_is_set(r, sys::NFTNL_RULE_USERDATA as u16) {
            let mut len = 0u32;
            let data = sys::nftnl_rule_get_data(r, sys::NFTNL_RULE_USERDATA as u16, &mut len);
            comment_from_userdata(&owned_bytes(data, len))
        } else {
            None
        };
        let rule = Rule {
            family: Family(sys::nftnl_rule_get_u32(r, sys::NFTNL_RULE_FAMILY as u16) as u8),
            table: owned_str(sys::nftnl_rule_get_str(r, sys::NFTNL_RULE_TABLE as u16)),
            chain: owned_str(sys::nftnl_rule_get_str(r, sys::NFTNL_RULE_CHAIN as u16)),
            handle: sys::nftnl_rule_get_u64(r, sys::NFTNL_RULE_HANDLE as u16),
            exprs,
            comment,
        };
        sys::nftnl_rule_free(r);
        Ok(rule)
    }
}

/// Copies one expression's attributes.
///
/// # Safety
/// `e` must be a valid expression of a live rule.
unsafe fn parse_expr(e: *mut sys::nftnl_expr) -> Expr {
    // SAFETY: `e` is valid per the caller; getters return copies or
    // pointers into `e` that are copied immediately.
    unsafe {
        let u32_of = |attr: u32| sys::nftnl_expr_get_u32(e, attr as u16);
        let set = |attr: u32| sys::nftnl_expr_is_set(e, attr as u16);
        let bytes_of = |attr: u32| {
            let mut len = 0u32;
            let data = sys::nftnl_expr_get(e, attr as u16, &mut len);
            owned_bytes(data, len)
        };
        let name = owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16));
        match name.as_str() {
            "meta" => {
                let is_set = set(sys::NFTNL_EXPR_META_SREG);
                Expr::Meta {
                    key: u32_of(sys::NFTNL_EXPR_META_KEY),
                    reg: u32_of(if is_set {
                        sys::NFTNL_EXPR_META_SREG
                    } else {
                        sys::NFTNL_EXPR_META_DREG
                    }),
                    set: is_set,
                }
            }
            "payload" if set(sys::NFTNL_EXPR_PAYLOAD_DREG) => Expr::Payload {
                base: u32_of(sys::NFTNL_EXPR_PAYLOAD_BASE),
                offset: u32_of(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
                len: u32_of(sys::NFTNL_EXPR_PAYLOAD_LEN),
                dreg: u32_of(sys::NFTNL_EXPR_PAYLOAD_DREG),
            },
            "cmp" => Expr::Cmp {
                sreg: u32_of(sys::NFTNL_EXPR_CMP_SREG),
                op: u32_of(sys::NFTNL_EXPR_CMP_OP),
                data: bytes_of(sys::NFTNL_EXPR_CMP_DATA),
            },
            "bitwise" if set(sys::NFTNL_EXPR_BITWISE_MASK) => Expr::Bitwise {
                sreg: u32_of(sys::NFTNL_EXPR_BITWISE_SREG),
                dreg: u32_of(sys::NFTNL_EXPR_BITWISE_DREG),
                mask: bytes_of(sys::NFTNL_EXPR_BITWISE_MASK),
                xor: bytes_of(sys::NFTNL_EXPR_BITWISE_XOR),
            },
            "range" => Expr::Range {
                sreg: u32_of(sys::NFTNL_EXPR_RANGE_SREG),
                op: u32_of(sys::NFTNL_EXPR_RANGE_OP),
                from: bytes_of(sys::NFTNL_EXPR_RANGE_FROM_DATA),
                to: bytes_of(sys::NFTNL_EXPR_RANGE_TO_DATA),
            },
            "immediate" => Expr::Immediate {
                dreg: u32_of(sys::NFTNL_EXPR_IMM_DREG),
                verdict: set(sys::NFTNL_EXPR_IMM_VERDICT)
                    .then(|| u32_of(sys::NFTNL_EXPR_IMM_VERDICT) as i32),
                chain: set(sys::NFTNL_EXPR_IMM_CHAIN).then(|| {
                    owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_IMM_CHAIN as u16))
                }),
                data: if set(sys::NFTNL_EXPR_IMM_DATA) {
                    bytes_of(sys::NFTNL_EXPR_IMM_DATA)
                } else {
                    Vec::new()
                },
            },
            "counter" => Expr::Counter(Counters {
                packets: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_PACKETS as u16),
                bytes: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_BYTES as u16),
            }),
            "limit" => Expr::Limit {
                rate: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_LIMIT_RATE as u16),
                unit: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_LIMIT_UNIT as u16),
                burst: u32_of(sys::NFTNL_EXPR_LIMIT_BURST),
                kind: u32_of(sys::NFTNL_EXPR_LIMIT_TYPE),
            },
            "match" => Expr::Match {
                name: owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_MT_NAME as u16)),
                rev: u32_of(sys::NFTNL_EXPR_MT_REV),
                info: bytes_of(sys::NFTNL_EXPR_MT_INFO),
            },
            "target" => Expr::Target {
                name: owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_TG_NAME as u16)),
                rev: u32_of(sys::NFTNL_EXPR_TG_REV),
                info: bytes_of(sys::NFTNL_EXPR_TG_INFO),
            },
            _ => Expr::Other { name },
        }
    }
}

/// The comment in a rule's user data: type-length-value records (one byte
/// each for type and length), type 0 holding a NUL-terminated string.
pub(super) fn comment_from_userdata(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *kind == UDATA_RULE_COMMENT {
            let text = value.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = &tail[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_found_among_user_data_records() {
        let mut data = vec![1, 2, 0xaa, 0xbb];
        data.extend_from_slice(&[0, 5]);
        data.extend_from_slice(b"a \"b\0");
        assert_eq!(comment_from_userdata(&data).as_deref(), Some("a \"b"));
        assert_eq!(comment_from_userdata(&[1, 1, 7]), None);
        assert_eq!(
            comment_from_userdata(&[0, 9, b'x']),
            None,
            "truncated record"
        );
    }
}
