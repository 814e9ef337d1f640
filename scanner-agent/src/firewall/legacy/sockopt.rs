//! The x_tables get-sockopts, `IPT_SO_GET_INFO` and `IPT_SO_GET_ENTRIES`
//! (and their `IP6T_` twins): the only `unsafe` of the legacy reader.
//!
//! The kernel answers them for any inet socket (`ip_getsockopt` and
//! `ipv6_getsockopt` hand unknown options to `nf_getsockopt`), so the reader
//! uses an unbound UDP socket: like a raw socket (what libiptc opens) it
//! needs `CAP_NET_ADMIN` for the options themselves, but not `CAP_NET_RAW`
//! for the socket, so the agent needs no capability beyond the one its
//! nftables read needs.

use std::{
    io,
    mem::{offset_of, size_of},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::Family;

/// `XT_TABLE_MAXNAMELEN` (include/uapi/linux/netfilter/x_tables.h).
const TABLE_NAME_LEN: usize = 32;
/// `NF_INET_NUMHOOKS` (include/uapi/linux/netfilter.h).
pub(super) const HOOKS: usize = 5;

/// `IPT_SO_GET_INFO` (`IPT_BASE_CTL`, 64) and `IPT_SO_GET_ENTRIES` (65),
/// include/uapi/linux/netfilter_ipv4/ip_tables.h; `IP6T_SO_GET_INFO` and
/// `IP6T_SO_GET_ENTRIES` (netfilter_ipv6/ip6_tables.h) have the same
/// numbers at level `IPPROTO_IPV6`.
const SO_GET_INFO: libc::c_int = 64;
const SO_GET_ENTRIES: libc::c_int = 65;

/// `struct ipt_getinfo` (include/uapi/linux/netfilter_ipv4/ip_tables.h);
/// `struct ip6t_getinfo` (netfilter_ipv6/ip6_tables.h) is the same.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct GetInfo {
    /// The table asked for (input), NUL-padded.
    name: [u8; TABLE_NAME_LEN],
    /// Which hooks (`NF_INET_*`) the table has built-in chains on.
    pub valid_hooks: u32,
    /// Offset of each built-in chain's first entry in the entries blob.
    pub hook_entry: [u32; HOOKS],
    /// Offset of each built-in chain's policy entry.
    pub underflow: [u32; HOOKS],
    pub num_entries: u32,
    /// Size of the entries blob in bytes.
    pub size: u32,
}

/// `struct ipt_get_entries` / `struct ip6t_get_entries` without their
/// flexible `entrytable[]`. The zero-length u64 array gives the header the
/// 8-byte alignment the entries' u64 counters give the C struct, and so
/// its size: the blob starts 40 bytes in, not 36.
#[repr(C)]
struct GetEntries {
    name: [u8; TABLE_NAME_LEN],
    size: u32,
    entrytable: [u64; 0],
}

const _: () = assert!(size_of::<GetInfo>() == 84);
const _: () = assert!(size_of::<GetEntries>() == 40);

/// A socket of one family to ask the kernel about its x_tables.
pub(super) struct Socket {
    fd: OwnedFd,
    level: libc::c_int,
}

/// `name` as the kernel reads a table name: NUL-padded, at most 31 bytes.
fn table_name(name: &str) -> io::Result<[u8; TABLE_NAME_LEN]> {
    let mut bytes = [0u8; TABLE_NAME_LEN];
    if name.is_empty() || name.len() >= TABLE_NAME_LEN || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an x_tables table name"),
        ));
    }
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    Ok(bytes)
}

impl Socket {
    pub(super) fn new(family: Family) -> io::Result<Self> {
        let (domain, level) = match family {
            Family::Ipv4 => (libc::AF_INET, libc::IPPROTO_IP),
            Family::Ipv6 => (libc::AF_INET6, libc::IPPROTO_IPV6),
        };
        // SAFETY: socket(2) with constant arguments; it returns a new
        // descriptor or -1.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor this call just opened and nothing
        // else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, level })
    }

    /// getsockopt(2) into `buffer`, whose first bytes are the request;
    /// returns the length the kernel reports.
    fn get(&self, option: libc::c_int, buffer: *mut u8, len: usize) -> io::Result<usize> {
        let mut len = libc::socklen_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
        // SAFETY: `buffer` points to `len` writable bytes (the callers pass
        // a struct or a Vec of exactly that size), and the kernel writes at
        // most `len` bytes there.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                self.level,
                option,
                buffer.cast(),
                &raw mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(len as usize)
    }

    /// The table's geometry (`*_SO_GET_INFO`). Only for tables the kernel
    /// lists as existing: asking for another may make the kernel load a
    /// module and create it.
    pub(super) fn info(&self, table: &str) -> io::Result<GetInfo> {
        let mut info = GetInfo {
            name: table_name(table)?,
            valid_hooks: 0,
            hook_entry: [0; HOOKS],
            underflow: [0; HOOKS],
            num_entries: 0,
            size: 0,
        };
        let len = self.get(SO_GET_INFO, (&raw mut info).cast(), size_of::<GetInfo>())?;
        if len != size_of::<GetInfo>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("GET_INFO answered {len} bytes"),
            ));
        }
        Ok(info)
    }

    /// The table's entries (`*_SO_GET_ENTRIES`) with their counters, `size`
    /// bytes as [`Socket::info`] announced. `EAGAIN` means the table
    /// changed size since: ask for its info again.
    pub(super) fn entries(&self, table: &str, size: usize) -> io::Result<Vec<u8>> {
        let header = size_of::<GetEntries>();
        let mut buffer = vec![0u8; header + size];
        buffer[..TABLE_NAME_LEN].copy_from_slice(&table_name(table)?);
        let size_u32 = u32::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "table too large"))?;
        let at = offset_of!(GetEntries, size);
        buffer[at..at + 4].copy_from_slice(&size_u32.to_ne_bytes());
        let len = buffer.len();
        self.get(SO_GET_ENTRIES, buffer.as_mut_ptr(), len)?;
        // The kernel echoes the header; the entries follow it.
        buffer.drain(..header);
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_before_the_kernel_sees_them() {
        assert!(table_name("filter").is_ok());
        assert!(table_name("").is_err());
        assert!(table_name(&"x".repeat(32)).is_err());
        assert!(table_name("a\0b").is_err());
        assert_eq!(offset_of!(GetEntries, entrytable), 40);
    }
}
