//! Runs one scanner and measures it: wall time, and the CPU time (user +
//! system) of the process and every descendant it waited for, read from
//! `wait4`'s rusage so nothing else the xtask runs is counted.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::exec::interrupted;

/// Turns Ctrl-C and SIGTERM into an error at the next check instead of an
/// immediate exit, so the testbed's drop guards still tear everything down.
pub(super) use crate::exec::catch_interrupts;

/// Fails once Ctrl-C (or SIGTERM) has been received.
pub(super) fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

pub(super) struct Measured {
    pub status: ExitStatus,
    pub wall: Duration,
    /// User + system time of the process and its reaped descendants.
    pub cpu: Duration,
}

/// How often a running scanner is checked for exit, timeout and Ctrl-C;
/// small next to the shortest run (about a second).
const POLL: Duration = Duration::from_millis(5);

/// Runs `c` to completion (its output already redirected by the caller),
/// killing it after `timeout` or on Ctrl-C.
pub(super) fn run(c: &mut Command, timeout: Duration) -> Result<Measured> {
    let start = Instant::now();
    let mut child = c.spawn().with_context(|| format!("cannot start {c:?}"))?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    loop {
        if let Some((status, cpu)) = reap(pid, libc::WNOHANG)? {
            return Ok(Measured {
                status,
                wall: start.elapsed(),
                cpu,
            });
        }
        let give_up = if interrupted() {
            Some("interrupted".to_owned())
        } else if start.elapsed() > timeout {
            Some(format!("timed out after {} s", timeout.as_secs()))
        } else {
            None
        };
        if let Some(reason) = give_up {
            // Not yet reaped, so the pid is still this child's.
            let _ = child.kill();
            reap(pid, 0)?;
            bail!(reason);
        }
        thread::sleep(POLL);
    }
}

/// `wait4` on `pid`: its exit status and CPU time once it has exited.
fn reap(pid: libc::pid_t, flags: libc::c_int) -> Result<Option<(ExitStatus, Duration)>> {
    let mut status = 0;
    // SAFETY: rusage is plain data for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let got = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    match got {
        0 => Ok(None),
        -1 => Err(std::io::Error::last_os_error()).context("wait4"),
        _ => Ok(Some((
            ExitStatus::from_raw(status),
            timeval(usage.ru_utime) + timeval(usage.ru_stime),
        ))),
    }
}

fn timeval(t: libc::timeval) -> Duration {
    let secs = u64::try_from(t.tv_sec).unwrap_or_default();
    let micros = u64::try_from(t.tv_usec).unwrap_or_default();
    Duration::from_secs(secs) + Duration::from_micros(micros)
}
