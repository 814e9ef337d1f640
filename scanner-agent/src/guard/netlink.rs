//! Sends a batch to nf_tables as one transaction and reads every answer,
//! so a refused message is an error (and the kernel has applied nothing).

use std::{collections::HashSet, ffi::CString, io};

use nftnl::FinalizedBatch;

use super::{GuardError, TABLE};

pub fn send(batch: &FinalizedBatch) -> Result<(), GuardError> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(GuardError::Netlink)?;
    let portid = socket.portid();
    socket.send_all(batch).map_err(GuardError::Netlink)?;
    let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
    let mut expected = batch.sequence_numbers();
    while !expected.is_empty() {
        for message in socket.recv(&mut buffer[..]).map_err(GuardError::Netlink)? {
            let message = message.map_err(GuardError::Netlink)?;
            let Some(seq) = expected.next() else {
                return Err(GuardError::Netlink(io::Error::other(
                    "an answer nobody asked for",
                )));
            };
            mnl::cb_run(message, seq, portid).map_err(GuardError::Refused)?;
        }
    }
    Ok(())
}

/// Whether the guard's table is installed.
pub fn installed() -> Result<bool, GuardError> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(GuardError::Netlink)?;
    let portid = socket.portid();
    let seq = 0;
    socket
        .send(&nftnl::table::get_tables_nlmsg(seq))
        .map_err(GuardError::Netlink)?;
    let mut tables = HashSet::new();
    let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
    loop {
        let n = socket.recv(&mut buffer[..]).map_err(GuardError::Netlink)?;
        let mut done = false;
        for message in n {
            let message = message.map_err(GuardError::Netlink)?;
            match mnl::cb_run2(
                message,
                seq,
                portid,
                nftnl::table::get_tables_cb,
                &mut tables,
            )
            .map_err(GuardError::Netlink)?
            {
                mnl::CbResult::Stop => done = true,
                mnl::CbResult::Ok => {}
            }
        }
        if done {
            break;
        }
    }
    let name = CString::new(TABLE).expect("constant without NUL");
    Ok(tables.contains(&name))
}
