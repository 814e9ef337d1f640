//! The floor of a firewall scrape: the netlink requests the agent's read
//! makes (the ruleset generation, a dump of every chain, a dump of each
//! chain's rules, a dump of the objects, the generation again), with the
//! replies received and thrown away. No parsing beyond the chain names
//! the per-chain dumps need, no rendering, no encoding: what the kernel's
//! dump costs, which no reader of the same rules can go below.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Result, bail};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_GETOBJ: u16 = 19;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const HEADERS: usize = 16 + 4;

struct Socket {
    fd: OwnedFd,
    seq: u32,
    buffer: Vec<u64>,
}

/// The chains a dump listed: (family, table, name).
type Chains = Vec<(u8, Vec<u8>, Vec<u8>)>;

impl Socket {
    fn new() -> Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Self {
            // SAFETY: a fresh descriptor nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            seq: 1,
            buffer: vec![0u64; 64 * 1024 / 8],
        })
    }

    fn request(&mut self, msg_type: u16, family: u8, dump: bool, attrs: &[u8]) -> Result<u32> {
        self.seq += 1;
        let len = HEADERS + attrs.len();
        let flags = libc::NLM_F_REQUEST as u16 | if dump { libc::NLM_F_DUMP as u16 } else { 0 };
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | msg_type).to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[family, 0, 0, 0]);
        msg.extend_from_slice(attrs);
        // SAFETY: sending an initialised buffer of its own length.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(self.seq)
    }

    /// Receives replies to `seq` until the dump's end (or the one answer of
    /// a plain request), handing each object message to `each`.
    fn replies(&mut self, seq: u32, dump: bool, mut each: impl FnMut(&[u8])) -> Result<()> {
        loop {
            let cap = self.buffer.len() * 8;
            // SAFETY: receiving into the buffer's own bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), self.buffer.as_mut_ptr().cast(), cap, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error().into());
            }
            // SAFETY: the buffer's first `n` bytes, just received.
            let data = unsafe {
                std::slice::from_raw_parts(self.buffer.as_ptr().cast::<u8>(), n as usize)
            };
            let mut at = 0;
            while at + 16 <= data.len() {
                let word =
                    |o: usize| u32::from_ne_bytes(data[at + o..at + o + 4].try_into().unwrap());
                let len = word(0) as usize;
                let kind = u16::from_ne_bytes(data[at + 4..at + 6].try_into().unwrap());
                if len < 16 || at + len > data.len() {
                    bail!("a truncated netlink message");
                }
                if word(8) == seq {
                    match i32::from(kind) {
                        libc::NLMSG_DONE => return Ok(()),
                        libc::NLMSG_ERROR => {
                            let errno = i32::from_ne_bytes(data[at + 16..at + 20].try_into()?);
                            if errno != 0 {
                                bail!("netlink error {errno}");
                            }
                        }
                        _ => {
                            each(&data[at..at + len]);
                            if !dump {
                                return Ok(());
                            }
                        }
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
    }
}

fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len() + 1) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// (family, table, name) of a chain message.
fn chain(msg: &[u8]) -> (u8, Vec<u8>, Vec<u8>) {
    let (mut table, mut name) = (Vec::new(), Vec::new());
    let mut at = HEADERS;
    while at + 4 <= msg.len() {
        let len = usize::from(u16::from_ne_bytes([msg[at], msg[at + 1]]));
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        if len < 4 || at + len > msg.len() {
            break;
        }
        let value = &msg[at + 4..at + len];
        let text = value.split(|&b| b == 0).next().unwrap_or_default().to_vec();
        match kind {
            NFTA_CHAIN_TABLE => table = text,
            NFTA_CHAIN_NAME => name = text,
            _ => {}
        }
        at += len.next_multiple_of(4);
    }
    (msg[16], table, name)
}

/// One bare read of this thread's network namespace; the bytes received.
pub(super) fn read() -> Result<usize> {
    let mut s = Socket::new()?;
    let mut bytes = 0;
    let seq = s.request(NFT_MSG_GETGEN, 0, false, &[])?;
    s.replies(seq, false, |m| bytes += m.len())?;
    let mut chains = Chains::new();
    let seq = s.request(NFT_MSG_GETCHAIN, 0, true, &[])?;
    s.replies(seq, true, |m| {
        bytes += m.len();
        chains.push(chain(m));
    })?;
    for (family, table, name) in &chains {
        let mut attrs = Vec::new();
        attribute(&mut attrs, NFTA_RULE_TABLE, table);
        attribute(&mut attrs, NFTA_RULE_CHAIN, name);
        let seq = s.request(NFT_MSG_GETRULE, *family, true, &attrs)?;
        s.replies(seq, true, |m| bytes += m.len())?;
    }
    let seq = s.request(NFT_MSG_GETOBJ, 0, true, &[])?;
    s.replies(seq, true, |m| bytes += m.len())?;
    let seq = s.request(NFT_MSG_GETGEN, 0, false, &[])?;
    s.replies(seq, false, |m| bytes += m.len())?;
    Ok(bytes)
}
