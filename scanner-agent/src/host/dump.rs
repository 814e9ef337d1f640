//! One netlink dump: a request with `NLM_F_DUMP` on a socket of its own,
//! and every answer handed to the caller until `NLMSG_DONE`. A fresh socket
//! per dump means no sequence numbers to match and nothing left over from
//! an earlier, abandoned read.

use std::{fmt::Debug, time::Instant};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

use super::HostError;

/// Large enough for any dump message: the kernel fills at most 32 KiB
/// (`NLMSG_GOODSIZE` grown to the reader's buffer, capped there) per read.
const BUFFER: usize = 64 * 1024;

/// Sends `request` as a dump on a new socket of `protocol` and hands each
/// answer to `each`; fails once `deadline` has passed.
pub(super) fn dump<I>(
    what: &'static str,
    protocol: isize,
    request: I,
    deadline: Instant,
    mut each: impl FnMut(I) -> Result<(), HostError>,
) -> Result<(), HostError>
where
    I: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let socket_error = |source| HostError::Socket { what, source };
    let netlink = |source| HostError::Netlink { what, source };
    let mut socket = Socket::new(protocol).map_err(socket_error)?;
    socket.bind_auto().map_err(socket_error)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(socket_error)?;
    // Each read waits at most what is left of the deadline.
    let sock = socket2::SockRef::from(&socket);

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let mut out = vec![0; message.buffer_len()];
    message.serialize(&mut out);
    socket.send(&out, 0).map_err(netlink)?;

    let mut buffer = Vec::with_capacity(BUFFER);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(HostError::TooSlow { what })?;
        sock.set_read_timeout(Some(left)).map_err(netlink)?;
        buffer.clear();
        let n = match socket.recv(&mut buffer, 0) {
            Ok(n) => n,
            // A timeout (checked above), or a signal (a reload's SIGHUP):
            // socket timeouts make recv return EINTR even with SA_RESTART.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(netlink(e)),
        };
        let mut at = 0;
        while at < n.min(buffer.len()) {
            let parsed = NetlinkMessage::<I>::deserialize(&buffer[at..]).map_err(|e| {
                HostError::Malformed {
                    what,
                    detail: e.to_string(),
                }
            })?;
            // NLM_F_DUMP_INTR (the table changed during the dump) is not a
            // failure here: what was read is still that moment's sockets,
            // and the next read is at most the cache's age away.
            let length = parsed.header.length as usize;
            match parsed.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(HostError::Refused {
                        what,
                        source: e.to_io(),
                    });
                }
                NetlinkPayload::InnerMessage(inner) => each(inner)?,
                // NOOP and OVERRUN carry nothing for a dump.
                _ => {}
            }
            if length == 0 {
                return Err(HostError::Malformed {
                    what,
                    detail: "a message of length 0".into(),
                });
            }
            // Messages are 4-byte aligned within a read.
            at += (length + 3) & !3;
        }
    }
}
