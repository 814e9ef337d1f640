//! Shared between the XDP program (`scanner-ebpf`) and the agent.
//!
//! Everything here is `no_std`, panic-free and allocation-free so it can run
//! inside the eBPF verifier's limits, and is unit-tested on the host.
#![no_std]

pub mod checksum;
pub mod cookie;
pub mod event;
pub mod frame;
pub mod maps;
pub mod payload;
pub mod reply;

pub use cookie::{Addr, ProbeKey};
pub use event::{ReplyEvent, ReplyKind};
pub use frame::{Frame, Packet, Transport};
