//! UDP payloads that make common services answer (an empty datagram gets
//! silence from most of them, and silence reads as open|filtered), each
//! carrying the probe's secret. They live in `scanner-common`
//! ([`scanner_common::payload`]), because the XDP program checks the
//! request ids their answers echo and the checksums ICMP errors quote.

pub use scanner_common::payload::{MAX_LEN, Service, write};
