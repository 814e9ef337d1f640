//! Counter values read straight from the kernel's netlink messages (a walk
//! over their type-length-value attributes, no libnftnl objects): the part
//! of a dump every scrape needs, and the only place counter values come
//! from, whether or not the rest of the ruleset is parsed too.

use super::super::{FirewallError, digest::mix, ruleset::Counters};

/// `struct nlmsghdr` and `struct nfgenmsg`, before the attributes.
const HEADERS: usize = 16 + 4;
/// Attribute types carry two flag bits (nested, network byte order).
const TYPE_MASK: u16 = 0x3fff;

const NFTA_CHAIN_HANDLE: u16 = 2;
const NFTA_CHAIN_COUNTERS: u16 = 8;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_PAD: u16 = 8;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_OBJ_HANDLE: u16 = 6;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
/// `NFT_SET_ANONYMOUS`.
const SET_ANONYMOUS: u32 = 0x1;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
/// `NFT_SET_ELEM_INTERVAL_END`.
const SET_ELEM_INTERVAL_END: u32 = 0x1;
/// `NFT_OBJECT_COUNTER`.
pub(super) const OBJECT_COUNTER: u32 = 1;

/// The counters of one chain, rule or counter object, with the kernel's
/// handle of that object, in dump order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in super::super) struct Handled {
    pub handle: u64,
    pub counters: Option<Counters>,
}

/// The attributes in `data`: (type without flags, payload). A truncated
/// attribute ends the walk; callers treat a missing attribute as malformed.
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(data.get(..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(data.get(2..4)?.try_into().ok()?) & TYPE_MASK;
        let payload = data.get(4..len)?;
        data = data.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, payload))
    })
}

/// The attributes of a whole nftables message.
fn message_attributes(msg: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    attributes(msg.get(HEADERS..).unwrap_or_default())
}

fn be64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

fn be32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// The `NFTA_COUNTER_*` attributes of a counter expression or object.
fn counters(data: &[u8]) -> Option<Counters> {
    let (mut packets, mut bytes) = (None, None);
    for (kind, value) in attributes(data) {
        match kind {
            NFTA_COUNTER_PACKETS => packets = be64(value),
            NFTA_COUNTER_BYTES => bytes = be64(value),
            _ => {}
        }
    }
    Some(Counters {
        packets: packets?,
        bytes: bytes?,
    })
}

/// A chain's handle and policy counters (base chains created with counters).
pub(super) fn chain(msg: &[u8]) -> Result<Handled, FirewallError> {
    let (mut handle, mut values) = (None, None);
    for (kind, value) in message_attributes(msg) {
        match kind {
            NFTA_CHAIN_HANDLE => handle = be64(value),
            NFTA_CHAIN_COUNTERS => values = counters(value),
            _ => {}
        }
    }
    Ok(Handled {
        handle: handle.ok_or(FirewallError::Malformed("chain"))?,
        counters: values,
    })
}

/// A rule's handle and the values of its first `counter` expression.
pub(super) fn rule(msg: &[u8]) -> Result<Handled, FirewallError> {
    let (mut handle, mut values) = (None, None);
    for (kind, value) in message_attributes(msg) {
        match kind {
            NFTA_RULE_HANDLE => handle = be64(value),
            NFTA_RULE_EXPRESSIONS if values.is_none() => values = first_counter(value),
            _ => {}
        }
    }
    Ok(Handled {
        handle: handle.ok_or(FirewallError::Malformed("rule"))?,
        counters: values,
    })
}

/// What identifies a rule's rendering, from its raw attributes: `content`
/// covers its family, table, chain, expressions and user data (the comment),
/// with the data of the expressions whose values change with traffic
/// (`counter`, `quota`, `last`) left out; `key` adds the kernel's handle.
/// Rules with equal keys render alike, so a rule read again under the same
/// key is taken from the cache instead of being parsed and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in super::super) struct RuleDigest {
    pub key: u64,
    pub content: u64,
}

/// A word-at-a-time multiplicative hash (FxHash's step with a final mix):
/// a full read hashes every rule's attributes, megabytes at 10,000 rules,
/// where SipHash would cost milliseconds. Its inputs are the ruleset root
/// wrote, not attacker-chosen keys of a hash table.
#[derive(Default)]
struct Digest(u64);

impl Digest {
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn bytes(&mut self, data: &[u8]) {
        let mut chunks = data.chunks_exact(8);
        for chunk in &mut chunks {
            self.word(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(last));
        self.word(data.len() as u64);
    }

    fn finish(&self) -> u64 {
        // So that nearby inputs spread over all bits.
        mix(self.0)
    }
}

/// Expressions whose data changes with traffic, not with the ruleset.
const STATEFUL: [&[u8]; 3] = [b"counter\0", b"quota\0", b"last\0"];

/// The digests of a rule message.
pub(in super::super) fn rule_digest(msg: &[u8]) -> RuleDigest {
    let mut d = Digest::default();
    // nfgenmsg's family.
    d.word(u64::from(msg.get(16).copied().unwrap_or_default()));
    let mut handle = 0;
    for (kind, value) in message_attributes(msg) {
        match kind {
            NFTA_RULE_HANDLE => handle = be64(value).unwrap_or_default(),
            NFTA_RULE_EXPRESSIONS => {
                d.word(u64::from(kind));
                for (_, expression) in attributes(value) {
                    let mut name: &[u8] = &[];
                    for (kind, value) in attributes(expression) {
                        match kind {
                            NFTA_EXPR_NAME => {
                                name = value;
                                d.bytes(value);
                            }
                            NFTA_EXPR_DATA if !STATEFUL.contains(&name) => d.bytes(value),
                            _ => {}
                        }
                    }
                }
            }
            // Neither the place (the previous rule's handle) nor padding.
            NFTA_RULE_POSITION | NFTA_RULE_PAD => {}
            _ => {
                d.word(u64::from(kind));
                d.bytes(value);
            }
        }
    }
    let content = d.finish();
    d.word(handle);
    RuleDigest {
        key: d.finish(),
        content,
    }
}

/// The first counter among a rule's expressions (a list of nested
/// expressions, each a name and its data).
fn first_counter(expressions: &[u8]) -> Option<Counters> {
    attributes(expressions).find_map(|(_, expression)| {
        let mut is_counter = false;
        let mut data = None;
        for (kind, value) in attributes(expression) {
            match kind {
                NFTA_EXPR_NAME => is_counter = value == b"counter\0",
                NFTA_EXPR_DATA => data = Some(value),
                _ => {}
            }
        }
        counters(data.filter(|_| is_counter)?)
    })
}

/// A named counter object's handle and values; `None` for other objects.
pub(super) fn named_counter(msg: &[u8]) -> Result<Option<Handled>, FirewallError> {
    let (mut handle, mut kind_of, mut data) = (None, None, None);
    for (kind, value) in message_attributes(msg) {
        match kind {
            NFTA_OBJ_HANDLE => handle = be64(value),
            NFTA_OBJ_TYPE => kind_of = be32(value),
            NFTA_OBJ_DATA => data = Some(value),
            _ => {}
        }
    }
    if kind_of.ok_or(FirewallError::Malformed("object"))? != OBJECT_COUNTER {
        return Ok(None);
    }
    Ok(Some(Handled {
        handle: handle.ok_or(FirewallError::Malformed("object"))?,
        counters: data.and_then(counters),
    }))
}

/// A set of an `NFT_MSG_GETSET` dump: (family, table, name), or `None`
/// for an anonymous set (one written inline in a rule, such as
/// `tcp dport { 22, 80 }`, which belongs to that rule).
pub(super) fn named_set(msg: &[u8]) -> Result<Option<(u8, String, String)>, FirewallError> {
    let (mut table, mut name, mut flags) = (None, None, 0);
    for (kind, value) in message_attributes(msg) {
        match kind {
            NFTA_SET_TABLE => table = Some(c_str(value)),
            NFTA_SET_NAME => name = Some(c_str(value)),
            NFTA_SET_FLAGS => flags = be32(value).unwrap_or_default(),
            _ => {}
        }
    }
    let (Some(table), Some(name)) = (table, name) else {
        return Err(FirewallError::Malformed("set"));
    };
    let family = msg.get(HEADERS - 4).copied().unwrap_or_default();
    Ok((flags & SET_ANONYMOUS == 0).then_some((family, table, name)))
}

/// The elements of an `NFT_MSG_GETSETELEM` dump message, counted as `nft
/// list set` shows them: the kernel stores an interval of an interval set
/// as a start and an end element, and the end (flagged
/// `NFT_SET_ELEM_INTERVAL_END`) is not shown on its own.
pub(super) fn set_elements(msg: &[u8]) -> u64 {
    message_attributes(msg)
        .filter(|(kind, _)| *kind == NFTA_SET_ELEM_LIST_ELEMENTS)
        .flat_map(|(_, list)| attributes(list))
        .filter(|(_, element)| {
            let flags = attributes(element)
                .find(|(kind, _)| *kind == NFTA_SET_ELEM_FLAGS)
                .and_then(|(_, value)| be32(value))
                .unwrap_or_default();
            flags & SET_ELEM_INTERVAL_END == 0
        })
        .count() as u64
}

/// A NUL-terminated string attribute.
fn c_str(value: &[u8]) -> String {
    let text = value.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

/// The ruleset generation of an `NFT_MSG_NEWGEN` answer.
pub(super) fn generation(msg: &[u8]) -> Result<u32, FirewallError> {
    message_attributes(msg)
        .find(|(kind, _)| *kind == NFTA_GEN_ID)
        .and_then(|(_, value)| be32(value))
        .ok_or(FirewallError::Malformed("generation"))
}

/// Appends a netlink attribute (payload padded to 4 bytes) to a request.
pub(super) fn push_attribute(request: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    request.extend_from_slice(&(len as u16).to_ne_bytes());
    request.extend_from_slice(&kind.to_ne_bytes());
    request.extend_from_slice(payload);
    request.resize(request.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_attribute(&mut out, kind, payload);
        out
    }

    fn message(attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut msg = vec![0u8; HEADERS];
        msg.extend(attrs.concat());
        msg
    }

    fn counter_data(packets: u64, bytes: u64) -> Vec<u8> {
        [
            attribute(NFTA_COUNTER_BYTES, &bytes.to_be_bytes()),
            attribute(NFTA_COUNTER_PACKETS, &packets.to_be_bytes()),
        ]
        .concat()
    }

    fn expression(name: &[u8], data: &[u8]) -> Vec<u8> {
        // The kernel flags nested attributes; the walk must ignore the flag.
        let body = [
            attribute(NFTA_EXPR_NAME, name),
            attribute(NFTA_EXPR_DATA | 0x8000, data),
        ]
        .concat();
        attribute(1 | 0x8000, &body)
    }

    #[test]
    fn a_rules_handle_and_first_counter_are_found_among_its_expressions() {
        let exprs = [
            expression(b"payload\0", &attribute(1, &[0, 0, 0, 1])),
            expression(b"counter\0", &counter_data(3, 180)),
            expression(b"counter\0", &counter_data(9, 9)),
        ]
        .concat();
        let msg = message(&[
            attribute(1, b"filter\0"),
            attribute(NFTA_RULE_HANDLE, &42u64.to_be_bytes()),
            attribute(NFTA_RULE_EXPRESSIONS, &exprs),
        ]);
        assert_eq!(
            rule(&msg).unwrap(),
            Handled {
                handle: 42,
                counters: Some(Counters {
                    packets: 3,
                    bytes: 180
                })
            }
        );
        let no_counter = message(&[attribute(NFTA_RULE_HANDLE, &7u64.to_be_bytes())]);
        assert_eq!(rule(&no_counter).unwrap().counters, None);
        assert!(rule(&message(&[])).is_err(), "no handle");
    }

    #[test]
    fn truncated_attributes_end_the_walk() {
        let mut data = attribute(NFTA_RULE_HANDLE, &1u64.to_be_bytes());
        data.extend_from_slice(&[200, 0, 4, 0, 1]);
        assert_eq!(attributes(&data).count(), 1);
    }

    #[test]
    fn interval_ends_are_not_counted_and_anonymous_sets_not_listed() {
        let element = |flags: u32| {
            let body = [
                attribute(1 | 0x8000, &attribute(1, &[198, 18, 0, 1])),
                attribute(NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes()),
            ]
            .concat();
            attribute(1 | 0x8000, &body)
        };
        let list = [element(0), element(SET_ELEM_INTERVAL_END), element(0)].concat();
        let msg = message(&[
            attribute(NFTA_SET_ELEM_LIST_TABLE, b"t\0"),
            attribute(NFTA_SET_ELEM_LIST_ELEMENTS | 0x8000, &list),
        ]);
        assert_eq!(set_elements(&msg), 2);
        let set = |flags: u32| {
            message(&[
                attribute(NFTA_SET_TABLE, b"t\0"),
                attribute(NFTA_SET_NAME, b"blocked\0"),
                attribute(NFTA_SET_FLAGS, &flags.to_be_bytes()),
            ])
        };
        assert_eq!(
            named_set(&set(0x4)).unwrap(),
            Some((0, "t".into(), "blocked".into()))
        );
        assert_eq!(named_set(&set(SET_ANONYMOUS | 0x2)).unwrap(), None);
    }

    #[test]
    fn a_rules_digest_ignores_counter_values_and_its_place() {
        let rule = |packets: u64, position: u64, handle: u64, port: u8| {
            let exprs = [
                expression(b"payload\0", &attribute(1, &[0, 0, 0, port])),
                expression(b"counter\0", &counter_data(packets, packets * 60)),
            ]
            .concat();
            message(&[
                attribute(1, b"filter\0"),
                attribute(NFTA_RULE_HANDLE, &handle.to_be_bytes()),
                attribute(NFTA_RULE_EXPRESSIONS, &exprs),
                attribute(NFTA_RULE_POSITION, &position.to_be_bytes()),
            ])
        };
        let a = rule_digest(&rule(1, 4, 9, 22));
        assert_eq!(a, rule_digest(&rule(1000, 5, 9, 22)));
        let moved = rule_digest(&rule(1, 4, 10, 22));
        assert_eq!(a.content, moved.content);
        assert_ne!(a.key, moved.key);
        assert_ne!(a.content, rule_digest(&rule(1, 4, 9, 80)).content);
    }

    #[test]
    fn named_counters_and_other_objects() {
        let counter = message(&[
            attribute(NFTA_OBJ_TYPE, &OBJECT_COUNTER.to_be_bytes()),
            attribute(NFTA_OBJ_DATA, &counter_data(1, 2)),
            attribute(NFTA_OBJ_HANDLE, &5u64.to_be_bytes()),
        ]);
        assert_eq!(
            named_counter(&counter).unwrap(),
            Some(Handled {
                handle: 5,
                counters: Some(Counters {
                    packets: 1,
                    bytes: 2
                })
            })
        );
        let quota = message(&[attribute(NFTA_OBJ_TYPE, &2u32.to_be_bytes())]);
        assert_eq!(named_counter(&quota).unwrap(), None);
    }
}
