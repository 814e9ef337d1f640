//! UDP probe payloads, the secret each one carries, and what an answer has
//! to echo of it.
//!
//! An empty datagram gets silence from most services, and silence reads as
//! open|filtered, so probes to well-known ports carry a request those
//! services answer. Every payload also carries part of the probe's 64-bit
//! [`payload_secret`](crate::cookie::payload_secret):
//!
//! - where the protocol echoes a request id, the id is the secret, and an
//!   answer whose id is not ours is not taken ([`AnswerCheck::Foreign`]);
//! - in every payload, the secret changes the UDP checksum, which an ICMP
//!   error quotes even when it quotes only 8 bytes of the probe, so the
//!   XDP program checks 16 secret bits there ([`probe_len_and_sum`]).
//!
//! | port | request | secret in it | echoed in the answer |
//! |---|---|---|---|
//! | 53 | DNS `version.bind` CH TXT | id (16 bits), case of the 11 letters (11 bits, "0x20") | id at 0, question name at 12 |
//! | 123 | NTP v4 client request | transmit timestamp (64 bits) | origin timestamp at 24 |
//! | 137 | NetBIOS-NS node status `*` | transaction id (16 bits) | transaction id at 0 |
//! | 161 | SNMP v1 GetRequest sysDescr.0, `public` | request-id (32 bits, minimal 4-byte BER) | request-id in the response PDU |
//! | 1900 | SSDP M-SEARCH | an `X-ID` header, 8 hex digits (32 bits) | nothing |
//! | 11211 | memcached `stats` (ASCII, UDP frame header) | request id (16 bits) | request id at 0 |
//! | other | 4 bytes | 32 bits | nothing |
//!
//! Everything here is panic-free with fixed-size reads: the XDP program
//! runs [`check_answer`] and [`probe_len_and_sum`].

/// The longest payload, for sizing packet buffers.
pub const MAX_LEN: usize = 128;

/// How many bytes of a UDP answer the parser keeps for [`check_answer`].
pub const ANSWER_PREFIX: usize = 32;

/// The services with payloads of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Dns,
    Ntp,
    NetBios,
    Snmp,
    Ssdp,
    Memcached,
    /// Any other port: 4 secret bytes, nothing echoed.
    Other,
}

impl Service {
    #[inline(always)]
    pub const fn of_port(port: u16) -> Self {
        match port {
            53 => Self::Dns,
            123 => Self::Ntp,
            137 => Self::NetBios,
            161 => Self::Snmp,
            1900 => Self::Ssdp,
            11211 => Self::Memcached,
            _ => Self::Other,
        }
    }
}

/// DNS: `version.bind` CH TXT, recursion desired (as nmap asks it). The id
/// (bytes 0-1) comes from the secret, and so does the case of each letter
/// of the name, which servers echo as sent in the question.
const DNS: [u8; 30] = [
    0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'V', b'E', b'R', b'S', b'I', b'O', b'N', 4, b'B',
    b'I', b'N', b'D', 0, 0, 0x10, 0, 3,
];
/// Offsets of the letters of the DNS question name.
const DNS_LETTERS: [usize; 11] = [13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24];
/// The question name: bytes 12..26 of the query and of its answers.
const DNS_NAME: core::ops::Range<usize> = 12..26;

/// NTP: a version 4 client request (48 bytes, mode 3); the transmit
/// timestamp (bytes 40-47) is the secret, answers copy it to their origin
/// timestamp (bytes 24-31).
const NTP: [u8; 48] = {
    let mut p = [0u8; 48];
    p[0] = 0xe3;
    p
};
const NTP_TRANSMIT: usize = 40;
const NTP_ORIGIN: usize = 24;

/// NetBIOS name service: a node status request for "*"; the transaction id
/// (bytes 0-1) is the secret.
const NETBIOS: [u8; 50] =
    *b"\x00\x00\x00\x10\x00\x01\x00\x00\x00\x00\x00\x00\x20CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00\x00\x21\x00\x01";

/// SNMP v1 GetRequest for sysDescr.0 with community "public"; the
/// request-id (bytes 17-20, a 4-byte INTEGER) is the secret.
const SNMP: [u8; 43] = [
    0x30, 0x29, 0x02, 0x01, 0x00, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa0, 0x1c, 0x02,
    0x04, 0, 0, 0, 0, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b,
    0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05, 0x00,
];
const SNMP_REQUEST_ID: usize = 17;

/// SSDP/UPnP discovery, with the secret as 8 hex digits in an extension
/// header (answers echo nothing; the header only feeds the checksum).
const SSDP: [u8; 110] = *b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\nX-ID: \0\0\0\0\0\0\0\0\r\n\r\n";
const SSDP_HEX: usize = 98;

/// memcached: the UDP frame header (request id from the secret, sequence
/// 0, 1 datagram), then "stats".
const MEMCACHED: [u8; 15] = *b"\x00\x00\x00\x00\x00\x01\x00\x00stats\r\n";

/// Any other port: 4 bytes of the secret, so even these probes' checksums
/// carry secret bits.
const OTHER_LEN: usize = 4;

/// The one's-complement sum (unfolded) of `b` at even alignment.
const fn const_sum(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < b.len() {
        sum += if i & 1 == 0 {
            (b[i] as u32) << 8
        } else {
            b[i] as u32
        };
        i += 1;
    }
    sum
}

const DNS_SUM: u32 = const_sum(&DNS);
const NTP_SUM: u32 = const_sum(&NTP);
const NETBIOS_SUM: u32 = const_sum(&NETBIOS);
const SNMP_SUM: u32 = const_sum(&SNMP);
const SSDP_SUM: u32 = const_sum(&SSDP);
const MEMCACHED_SUM: u32 = const_sum(&MEMCACHED);

/// The sum `bytes` add when placed at `offset` of a payload.
#[inline(always)]
fn sum_at<const N: usize>(offset: usize, bytes: [u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < N {
        sum += if (offset + i) & 1 == 0 {
            u32::from(bytes[i]) << 8
        } else {
            u32::from(bytes[i])
        };
        i += 1;
    }
    sum
}

/// The SNMP request-id for `secret`: 32 secret bits whose minimal BER
/// encoding takes exactly 4 bytes (agents re-encode the id minimally), so
/// the request keeps its length. Values that would encode shorter (top 9
/// bits all equal, 2^24 of 2^32) get bit 30 flipped.
#[inline(always)]
pub const fn snmp_request_id(secret: u64) -> u32 {
    let id = secret as u32;
    let top = id >> 23;
    if top == 0 || top == 0x1ff {
        id ^ 0x4000_0000
    } else {
        id
    }
}

/// The 8 hex digits of the SSDP `X-ID` header.
#[inline(always)]
fn ssdp_hex(secret: u64) -> [u8; 8] {
    let v = secret as u32;
    let mut out = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        let nibble = ((v >> (28 - 4 * i)) & 0xf) as u8;
        out[i] = if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        };
        i += 1;
    }
    out
}

/// The DNS question name with the case the secret gives it.
#[inline(always)]
fn dns_name(secret: u64) -> [u8; 14] {
    let mut name = [0u8; 14];
    let mut i = 0;
    while i < 14 {
        name[i] = DNS[DNS_NAME.start + i];
        i += 1;
    }
    let mut l = 0;
    while l < DNS_LETTERS.len() {
        if (secret >> (16 + l)) & 1 == 1 {
            name[DNS_LETTERS[l] - DNS_NAME.start] |= 0x20;
        }
        l += 1;
    }
    name
}

/// Length and unfolded one's-complement sum of the payload of a probe to
/// `port` with secret `secret`, without building it: what the XDP program
/// needs to recompute the checksum an ICMP error quotes.
#[inline(always)]
pub fn probe_len_and_sum(port: u16, secret: u64) -> (u16, u32) {
    let id16 = (secret as u16).to_be_bytes();
    match Service::of_port(port) {
        Service::Dns => {
            let mut sum = DNS_SUM + sum_at(0, id16);
            let mut l = 0;
            while l < DNS_LETTERS.len() {
                if (secret >> (16 + l)) & 1 == 1 {
                    sum += sum_at(DNS_LETTERS[l], [0x20]);
                }
                l += 1;
            }
            (DNS.len() as u16, sum)
        }
        Service::Ntp => (
            NTP.len() as u16,
            NTP_SUM + sum_at(NTP_TRANSMIT, secret.to_be_bytes()),
        ),
        Service::NetBios => (NETBIOS.len() as u16, NETBIOS_SUM + sum_at(0, id16)),
        Service::Snmp => (
            SNMP.len() as u16,
            SNMP_SUM + sum_at(SNMP_REQUEST_ID, snmp_request_id(secret).to_be_bytes()),
        ),
        Service::Ssdp => (
            SSDP.len() as u16,
            SSDP_SUM + sum_at(SSDP_HEX, ssdp_hex(secret)),
        ),
        Service::Memcached => (MEMCACHED.len() as u16, MEMCACHED_SUM + sum_at(0, id16)),
        Service::Other => (OTHER_LEN as u16, sum_at(0, (secret as u32).to_be_bytes())),
    }
}

/// Writes the payload of a probe to `port` with secret `secret` into `out`
/// (at least [`MAX_LEN`] bytes); returns its length.
pub fn write(port: u16, secret: u64, out: &mut [u8]) -> usize {
    let id16 = (secret as u16).to_be_bytes();
    let template: &[u8] = match Service::of_port(port) {
        Service::Dns => &DNS,
        Service::Ntp => &NTP,
        Service::NetBios => &NETBIOS,
        Service::Snmp => &SNMP,
        Service::Ssdp => &SSDP,
        Service::Memcached => &MEMCACHED,
        Service::Other => &[0; OTHER_LEN],
    };
    let p = &mut out[..template.len()];
    p.copy_from_slice(template);
    match Service::of_port(port) {
        Service::Dns => {
            p[..2].copy_from_slice(&id16);
            p[DNS_NAME].copy_from_slice(&dns_name(secret));
        }
        Service::Ntp => p[NTP_TRANSMIT..].copy_from_slice(&secret.to_be_bytes()),
        Service::NetBios | Service::Memcached => p[..2].copy_from_slice(&id16),
        Service::Snmp => p[SNMP_REQUEST_ID..SNMP_REQUEST_ID + 4]
            .copy_from_slice(&snmp_request_id(secret).to_be_bytes()),
        Service::Ssdp => p[SSDP_HEX..SSDP_HEX + 8].copy_from_slice(&ssdp_hex(secret)),
        Service::Other => p.copy_from_slice(&(secret as u32).to_be_bytes()),
    }
    template.len()
}

/// What a UDP answer proves about the probe it claims to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerCheck {
    /// The service echoes a request id and this one is not ours: not an
    /// answer to our probe.
    Foreign,
    /// Matched on its ports (and, for NetBIOS-NS, memcached and DNS
    /// answers without the question, a 16-bit id): below 32 bits, so an
    /// off-path sender could forge it.
    Unverified,
    /// It echoes at least 23 secret bits beyond the ports: 32 or more in all.
    Verified,
}

#[inline(always)]
fn be16(b: &[u8; ANSWER_PREFIX], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// A BER length at `answer[i]` (short form, or long form of 1 or 2
/// bytes); returns the index after it.
#[inline(always)]
fn ber_skip_length(answer: &[u8; ANSWER_PREFIX], i: usize) -> Option<usize> {
    match *answer.get(i)? {
        n if n < 0x80 => Some(i + 1),
        0x81 => Some(i + 2),
        0x82 => Some(i + 3),
        _ => None,
    }
}

/// The request-id of an SNMP v1/v2c message (`SEQUENCE { version,
/// community, PDU { request-id, ... } }`), sign-extended from its 1 to 4
/// content bytes.
#[inline(always)]
fn snmp_answer_id(a: &[u8; ANSWER_PREFIX], len: usize) -> Option<u32> {
    if *a.first()? != 0x30 {
        return None;
    }
    let mut i = ber_skip_length(a, 1)?;
    // version: INTEGER of one byte
    if (*a.get(i)?, *a.get(i + 1)?) != (0x02, 0x01) {
        return None;
    }
    i += 3;
    // community: OCTET STRING
    if *a.get(i)? != 0x04 {
        return None;
    }
    let community = usize::from(*a.get(i + 1)?);
    if community > 16 {
        return None;
    }
    i += 2 + community;
    // the PDU: a context-specific constructed tag (GetResponse is 0xa2)
    if !(0xa0..=0xa8).contains(a.get(i)?) {
        return None;
    }
    i = ber_skip_length(a, i + 1)?;
    if *a.get(i)? != 0x02 {
        return None;
    }
    let n = usize::from(*a.get(i + 1)?);
    if n == 0 || n > 4 || i + 2 + n > len {
        return None;
    }
    let first = *a.get(i + 2)?;
    let mut v: u32 = if first & 0x80 != 0 { u32::MAX } else { 0 };
    let mut k = 0;
    while k < 4 {
        if k < n {
            v = (v << 8) | u32::from(*a.get(i + 2 + k)?);
        }
        k += 1;
    }
    Some(v)
}

/// Checks a UDP answer from `port` against the secret of the probe it
/// would answer. `answer` holds its first `len` bytes (at most
/// [`ANSWER_PREFIX`]; the rest is zero).
#[inline(always)]
pub fn check_answer(
    port: u16,
    secret: u64,
    answer: &[u8; ANSWER_PREFIX],
    len: usize,
) -> AnswerCheck {
    let id16 = secret as u16;
    let id_echoed = len >= 2 && be16(answer, 0) == id16;
    match Service::of_port(port) {
        Service::Dns => {
            if !id_echoed {
                return AnswerCheck::Foreign;
            }
            let name = dns_name(secret);
            let mut same = len >= DNS_NAME.end;
            let mut i = 0;
            while i < name.len() {
                same &= answer[DNS_NAME.start + i] == name[i];
                i += 1;
            }
            if same {
                AnswerCheck::Verified
            } else {
                // A server that lower-cases the name, or answers without
                // the question: the id alone.
                AnswerCheck::Unverified
            }
        }
        Service::Ntp => {
            let want = secret.to_be_bytes();
            let mut same = len >= NTP_ORIGIN + 8;
            let mut i = 0;
            while i < 8 {
                same &= answer[NTP_ORIGIN + i] == want[i];
                i += 1;
            }
            if same {
                AnswerCheck::Verified
            } else {
                AnswerCheck::Foreign
            }
        }
        Service::Snmp => {
            if snmp_answer_id(answer, len) == Some(snmp_request_id(secret)) {
                AnswerCheck::Verified
            } else {
                AnswerCheck::Foreign
            }
        }
        Service::NetBios | Service::Memcached => {
            if id_echoed {
                AnswerCheck::Unverified
            } else {
                AnswerCheck::Foreign
            }
        }
        Service::Ssdp | Service::Other => AnswerCheck::Unverified,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::checksum;
    use std::vec::Vec;

    const PORTS: [u16; 8] = [53, 123, 137, 161, 1900, 11211, 9, 7000];
    const SECRETS: [u64; 5] = [
        0,
        u64::MAX,
        0x0123_4567_89ab_cdef,
        0xfedc_ba98_7654_3210,
        0x8000_0000_007f_ffff,
    ];

    fn payload(port: u16, secret: u64) -> Vec<u8> {
        let mut buf = [0u8; MAX_LEN];
        let n = write(port, secret, &mut buf);
        buf[..n].to_vec()
    }

    /// The first bytes of `answer`, as the parser keeps them.
    fn prefix(answer: &[u8]) -> ([u8; ANSWER_PREFIX], usize) {
        let mut p = [0u8; ANSWER_PREFIX];
        let n = answer.len().min(ANSWER_PREFIX);
        p[..n].copy_from_slice(&answer[..n]);
        (p, n)
    }

    fn check(port: u16, secret: u64, answer: &[u8]) -> AnswerCheck {
        let (p, n) = prefix(answer);
        check_answer(port, secret, &p, n)
    }

    #[test]
    fn sums_match_the_written_payloads() {
        for port in PORTS {
            for secret in SECRETS {
                let p = payload(port, secret);
                assert!(p.len() <= MAX_LEN);
                let (len, sum) = probe_len_and_sum(port, secret);
                assert_eq!(usize::from(len), p.len(), "port {port}");
                assert_eq!(
                    checksum::fold(sum),
                    checksum::fold(checksum::sum_words(0, &p)),
                    "port {port} secret {secret:x}"
                );
            }
        }
    }

    #[test]
    fn every_payload_depends_on_the_secret() {
        for port in PORTS {
            let a = probe_len_and_sum(port, SECRETS[2]).1;
            let b = probe_len_and_sum(port, SECRETS[3]).1;
            assert_ne!(checksum::fold(a), checksum::fold(b), "port {port}");
        }
    }

    #[test]
    fn well_formed_requests() {
        let dns = payload(53, 0xffff_1234);
        assert_eq!(&dns[..2], &[0x12, 0x34]);
        assert_eq!(&dns[12..26], b"\x07version\x04bind\x00");
        assert_eq!(&dns[26..], &[0, 0x10, 0, 3], "TXT, CH");
        let mixed = payload(53, 0x0005_0000);
        assert_eq!(&mixed[12..26], b"\x07vErSION\x04BIND\x00");
        let ntp = payload(123, 0x0102_0304_0506_0708);
        assert_eq!((ntp.len(), ntp[0]), (48, 0xe3));
        assert_eq!(&ntp[40..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let snmp = payload(161, 0x1234_5678);
        // BER lengths: the outer SEQUENCE covers the rest, the PDU its rest.
        assert_eq!(usize::from(snmp[1]) + 2, snmp.len());
        assert_eq!(usize::from(snmp[14]) + 15, snmp.len());
        assert_eq!(&snmp[15..21], &[0x02, 0x04, 0x12, 0x34, 0x56, 0x78]);
        assert_eq!(payload(137, 0xabcd).len(), 50);
        assert_eq!(&payload(137, 0xabcd)[..2], &[0xab, 0xcd]);
        assert_eq!(
            &payload(11211, 0xabcd)[..],
            b"\xab\xcd\x00\x00\x00\x01\x00\x00stats\r\n"
        );
        let ssdp = std::string::String::from_utf8(payload(1900, 0xdead_beef)).unwrap();
        assert!(
            ssdp.ends_with("ST: ssdp:all\r\nX-ID: deadbeef\r\n\r\n"),
            "{ssdp}"
        );
        assert_eq!(payload(9, 0x1234_5678), [0x12, 0x34, 0x56, 0x78]);
    }

    #[test]
    fn snmp_request_ids_take_four_bytes_minimally() {
        for secret in [
            0,
            1,
            0x007f_ffff,
            0x0080_0000,
            0xff80_0000,
            0xff7f_ffff,
            0xffff_ffff,
        ] {
            let id = snmp_request_id(secret);
            let top = id >> 23;
            assert!(top != 0 && top != 0x1ff, "{secret:x} -> {id:x}");
        }
        assert_eq!(snmp_request_id(0x1234_5678), 0x1234_5678);
    }

    /// A DNS answer to `query`: its header with QR set, the question, one TXT record.
    fn dns_answer(query: &[u8], lower: bool) -> Vec<u8> {
        let mut a = query.to_vec();
        a[2] |= 0x80;
        a[7] = 1;
        if lower {
            a[12..26].make_ascii_lowercase();
        }
        a.extend_from_slice(b"\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\x04\x039.1");
        a
    }

    #[test]
    fn dns_answers_echo_id_and_name() {
        let secret: u64 = 0x0000_0000_02a5_9e71;
        let q = payload(53, secret);
        assert_eq!(
            check(53, secret, &dns_answer(&q, false)),
            AnswerCheck::Verified
        );
        assert_eq!(
            check(53, secret, &q),
            AnswerCheck::Verified,
            "an echo of the query"
        );
        // A server that normalises the name's case: only the id is left.
        assert_eq!(
            check(53, secret, &dns_answer(&q, true)),
            AnswerCheck::Unverified
        );
        // An answer without the question section.
        assert_eq!(check(53, secret, &q[..12]), AnswerCheck::Unverified);
        let mut wrong = dns_answer(&q, false);
        wrong[1] ^= 1;
        assert_eq!(check(53, secret, &wrong), AnswerCheck::Foreign);
        assert_eq!(check(53, secret, &[]), AnswerCheck::Foreign);
    }

    #[test]
    fn ntp_answers_echo_the_transmit_timestamp() {
        let secret: u64 = 0x1122_3344_5566_7788;
        let mut answer = [0u8; 48];
        answer[0] = 0x24;
        answer[24..32].copy_from_slice(&secret.to_be_bytes());
        assert_eq!(check(123, secret, &answer), AnswerCheck::Verified);
        answer[31] ^= 1;
        assert_eq!(check(123, secret, &answer), AnswerCheck::Foreign);
        // An echo of the request has the secret at 40, not at 24.
        assert_eq!(
            check(123, secret, &payload(123, secret)),
            AnswerCheck::Foreign
        );
        assert_eq!(check(123, secret, &answer[..31]), AnswerCheck::Foreign);
    }

    /// An SNMP GetResponse for `id` with a sysDescr of `descr_len` bytes.
    fn snmp_answer(id_bytes: &[u8], descr_len: usize) -> Vec<u8> {
        let mut varbind = vec_of(&[0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 1, 0]);
        varbind.extend(ber(0x04, &std::vec![b'x'; descr_len]));
        let varbinds = ber(0x30, &ber(0x30, &varbind));
        let mut pdu = ber(0x02, id_bytes);
        pdu.extend([0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
        pdu.extend(varbinds);
        let mut msg = vec_of(&[0x02, 0x01, 0x00]);
        msg.extend(ber(0x04, b"public"));
        msg.extend(ber(0xa2, &pdu));
        ber(0x30, &msg)
    }

    fn vec_of(b: &[u8]) -> Vec<u8> {
        b.to_vec()
    }

    /// A BER TLV with the shortest length form.
    fn ber(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = std::vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn snmp_answers_echo_the_request_id() {
        let secret: u64 = 0x9abc_def0;
        let id = snmp_request_id(secret).to_be_bytes();
        for descr in [10, 100, 200, 1000] {
            let a = snmp_answer(&id, descr);
            assert_eq!(check(161, secret, &a), AnswerCheck::Verified, "{descr}");
            let mut wrong = id;
            wrong[3] ^= 1;
            assert_eq!(
                check(161, secret, &snmp_answer(&wrong, descr)),
                AnswerCheck::Foreign
            );
        }
        // Our request echoed back carries the id too (PDU tag 0xa0).
        assert_eq!(
            check(161, secret, &payload(161, secret)),
            AnswerCheck::Verified
        );
        // Short ids are sign-extended: -2 encoded in one byte.
        let neg = snmp_answer(&[0xfe], 10);
        assert_eq!(
            snmp_answer_id(&prefix(&neg).0, neg.len().min(32)),
            Some(0xffff_fffe)
        );
        // Truncated or malformed: not ours.
        let a = snmp_answer(&id, 10);
        // The id ends at byte 21.
        for n in 0..21 {
            assert_eq!(check(161, secret, &a[..n]), AnswerCheck::Foreign, "{n}");
        }
        assert_eq!(check(161, secret, b"not snmp at all"), AnswerCheck::Foreign);
    }

    #[test]
    fn short_ids_and_services_without_ids() {
        let secret: u64 = 0x4242;
        for port in [137, 11211] {
            assert_eq!(
                check(port, secret, &payload(port, secret)),
                AnswerCheck::Unverified
            );
            assert_eq!(
                check(port, secret, &payload(port, secret ^ 1)),
                AnswerCheck::Foreign
            );
        }
        for port in [1900, 9, 7000] {
            assert_eq!(check(port, secret, b"anything"), AnswerCheck::Unverified);
            assert_eq!(check(port, secret, &[]), AnswerCheck::Unverified);
        }
    }
}
