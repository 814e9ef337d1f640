//! The structure of chains, rules and counter objects, parsed by libnftnl
//! from one netlink message each: every object is an [`Object`] (allocated,
//! filled from the message, freed when dropped on every path), copied into
//! owned Rust values before it goes. Counter values are not taken from here
//! but from [`super::attrs`], for every read alike.

use std::{
    ffi::{CStr, c_char, c_int},
    ptr::NonNull,
};

use nftnl_sys as sys;

use super::super::{
    FirewallError,
    ruleset::{Chain, Expr, Family, NamedCounter, Rule, RuleText},
};
use super::attrs::{OBJECT_COUNTER, rule_digest};

/// `NFTNL_UDATA_RULE_COMMENT`.
const UDATA_RULE_COMMENT: u8 = 0;

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

/// A libnftnl object type that is filled from one netlink message.
trait Parsed {
    /// What the message holds, for [`FirewallError::Malformed`].
    const WHAT: &'static str;
    /// # Safety
    /// None beyond libnftnl's own: it returns null when out of memory.
    unsafe fn alloc() -> *mut Self;
    /// # Safety
    /// `nlh` must point to one complete netlink message, `o` to a live object.
    unsafe fn parse(nlh: *const libc::nlmsghdr, o: *mut Self) -> c_int;
    /// # Safety
    /// `o` must be a live object of [`Parsed::alloc`], not used afterwards.
    unsafe fn free(o: *const Self);
}

macro_rules! parsed {
    ($type:ty, $what:literal, $alloc:path, $parse:path, $free:path) => {
        impl Parsed for $type {
            const WHAT: &'static str = $what;
            unsafe fn alloc() -> *mut Self {
                // SAFETY: guaranteed by the caller.
                unsafe { $alloc() }
            }
            unsafe fn parse(nlh: *const libc::nlmsghdr, o: *mut Self) -> c_int {
                // SAFETY: guaranteed by the caller.
                unsafe { $parse(nlh, o) }
            }
            unsafe fn free(o: *const Self) {
                // SAFETY: guaranteed by the caller.
                unsafe { $free(o) }
            }
        }
    };
}

parsed!(
    sys::nftnl_chain,
    "chain",
    sys::nftnl_chain_alloc,
    sys::nftnl_chain_nlmsg_parse,
    sys::nftnl_chain_free
);
parsed!(
    sys::nftnl_obj,
    "object",
    sys::nftnl_obj_alloc,
    sys::nftnl_obj_nlmsg_parse,
    sys::nftnl_obj_free
);
parsed!(
    sys::nftnl_rule,
    "rule",
    sys::nftnl_rule_alloc,
    sys::nftnl_rule_nlmsg_parse,
    sys::nftnl_rule_free
);

/// A libnftnl object filled from one netlink message; freed when dropped.
struct Object<T: Parsed>(NonNull<T>);

impl<T: Parsed> Object<T> {
    /// Allocates an object and fills it from `msg`, one complete netlink
    /// message (as the kernel's dump replies are split).
    fn parse(msg: &[u8]) -> Result<Self, FirewallError> {
        // SAFETY: no precondition; null is checked.
        let object = Self(NonNull::new(unsafe { T::alloc() }).ok_or(FirewallError::OutOfMemory)?);
        // SAFETY: `msg` is one complete message; the object is live. It is
        // freed on the error path too, by its drop.
        if unsafe { T::parse(msg.as_ptr().cast(), object.as_ptr()) } < 0 {
            return Err(FirewallError::Malformed(T::WHAT));
        }
        Ok(object)
    }

    fn as_ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

impl<T: Parsed> Drop for Object<T> {
    fn drop(&mut self) {
        // SAFETY: allocated by `T::alloc` and owned by this value alone.
        unsafe { T::free(self.0.as_ptr()) }
    }
}

/// The expressions of a rule, through libnftnl's iterator (destroyed when dropped).
struct Exprs<'a> {
    iter: NonNull<sys::nftnl_expr_iter>,
    _rule: &'a Object<sys::nftnl_rule>,
}

impl<'a> Exprs<'a> {
    /// `None` when libnftnl cannot allocate the iterator.
    fn of(rule: &'a Object<sys::nftnl_rule>) -> Option<Self> {
        // SAFETY: the rule is live for the iterator's lifetime `'a`.
        let iter = NonNull::new(unsafe { sys::nftnl_expr_iter_create(rule.as_ptr()) })?;
        Some(Self { iter, _rule: rule })
    }
}

impl Iterator for Exprs<'_> {
    type Item = *mut sys::nftnl_expr;

    fn next(&mut self) -> Option<Self::Item> {
        // SAFETY: the iterator is live and its rule outlives it.
        let e = unsafe { sys::nftnl_expr_iter_next(self.iter.as_ptr()) };
        (!e.is_null()).then_some(e)
    }
}

impl Drop for Exprs<'_> {
    fn drop(&mut self) {
        // SAFETY: created by `nftnl_expr_iter_create`, owned by this value alone.
        unsafe { sys::nftnl_expr_iter_destroy(self.iter.as_ptr()) }
    }
}

pub(super) fn parse_chain(msg: &[u8]) -> Result<Chain, FirewallError> {
    let chain = Object::<sys::nftnl_chain>::parse(msg)?;
    let c = chain.as_ptr();
    // SAFETY: `c` is live until `chain` drops, after every value was copied out.
    unsafe {
        let is_set = |attr: u32| sys::nftnl_chain_is_set(c, attr as u16);
        Ok(Chain {
            family: Family(sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_FAMILY as u16) as u8),
            table: owned_str(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_TABLE as u16)),
            name: owned_str(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_NAME as u16)),
            hook: is_set(sys::NFTNL_CHAIN_HOOKNUM)
                .then(|| sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16)),
            policy: is_set(sys::NFTNL_CHAIN_POLICY)
                .then(|| sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_POLICY as u16)),
        })
    }
}

/// A stateful object: its names when it is a named counter.
pub(super) fn parse_named_counter(msg: &[u8]) -> Result<Option<NamedCounter>, FirewallError> {
    let object = Object::<sys::nftnl_obj>::parse(msg)?;
    let o = object.as_ptr();
    // SAFETY: `o` is live until `object` drops, after every value was copied out.
    unsafe {
        Ok(
            (sys::nftnl_obj_get_u32(o, sys::NFTNL_OBJ_TYPE as u16) == OBJECT_COUNTER).then(|| {
                NamedCounter {
                    family: Family(sys::nftnl_obj_get_u32(o, sys::NFTNL_OBJ_FAMILY as u16) as u8),
                    table: owned_str(sys::nftnl_obj_get_str(o, sys::NFTNL_OBJ_TABLE as u16)),
                    name: owned_str(sys::nftnl_obj_get_str(o, sys::NFTNL_OBJ_NAME as u16)),
                }
            }),
        )
    }
}

pub(super) fn parse_rule(msg: &[u8]) -> Result<Rule, FirewallError> {
    let rule = Object::<sys::nftnl_rule>::parse(msg)?;
    let r = rule.as_ptr();
    // SAFETY: every expression is copied while the iterator and `rule` live.
    let exprs = Exprs::of(&rule)
        .map(|exprs| exprs.map(|e| unsafe { parse_expr(e) }).collect())
        .unwrap_or_default();
    // SAFETY: `r` is live until `rule` drops, after every value was copied out.
    unsafe {
        let comment = if sys::nftnl_rule_is_set(r, sys::NFTNL_RULE_USERDATA as u16) {
            let mut len = 0u32;
            let data = sys::nftnl_rule_get_data(r, sys::NFTNL_RULE_USERDATA as u16, &mut len);
            comment_from_userdata(&owned_bytes(data, len))
        } else {
            None
        };
        Ok(Rule {
            family: Family(sys::nftnl_rule_get_u32(r, sys::NFTNL_RULE_FAMILY as u16) as u8),
            table: owned_str(sys::nftnl_rule_get_str(r, sys::NFTNL_RULE_TABLE as u16)),
            chain: owned_str(sys::nftnl_rule_get_str(r, sys::NFTNL_RULE_CHAIN as u16)),
            handle: sys::nftnl_rule_get_u64(r, sys::NFTNL_RULE_HANDLE as u16),
            exprs,
            comment,
            digest: rule_digest(msg).content,
            text: RuleText::default(),
        })
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
            "counter" => Expr::Counter,
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
