//! The XDP side of a scan: loading and attaching the program, handing it the
//! scan keys, and reading the validated replies and counters it produces.
//! [`hub::Hub`] shares one attached program between several scans in flight.

pub mod hub;

use std::{fmt, io, os::fd::AsFd as _, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, Xdp, XdpMode},
};
use aya_log::EbpfLogger;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use scanner_common::{
    ProbeKey, ReplyEvent,
    maps::{EVENT_RING_NAMES, Settings, SlotKey, counter},
};

/// The XDP program, built by `build.rs` with the pinned nightly.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scanner-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "this binary was built without its XDP program (bpf-linker was missing at build time); build it with `cargo xtask build`"
    )]
    NotBuilt,
    #[error("loading the XDP program failed: {0}")]
    Load(String),
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error(
        "interface {0} already carries an XDP program; scanner-agent never replaces someone else's program (detach it first, e.g. `ip link set dev {0} xdp off`)"
    )]
    AlreadyAttached(String),
    #[error("interface {interface} cannot take the XDP program ({reason})")]
    CannotAttach { interface: String, reason: String },
    #[error("BPF map {0} is missing from the XDP program")]
    MissingMap(&'static str),
    #[error("BPF map access failed: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP, run by the driver.
    Driver,
    /// Generic XDP, run by the kernel's network stack (slower, works everywhere).
    Skb,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
        })
    }
}

/// Which attach modes to try (`scanning.xdp_mode`, `--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeSetting {
    /// Driver mode where the driver has it, else SKB mode; SKB mode on a
    /// veth, where driver mode costs more: the veth driver runs native XDP
    /// from a NAPI poll of its own and copies every packet the peer's stack
    /// built into a page with XDP's headroom first (measured on the bench's
    /// veth pair: 23% less CPU per probe and 24% more probes per second in
    /// SKB mode).
    #[default]
    Auto,
    /// Driver mode only: attaching fails where the driver has none.
    Driver,
    /// SKB (generic) mode only.
    Skb,
}

impl ModeSetting {
    /// The modes to try on `interface`, in order.
    fn modes(self, interface: &str) -> &'static [AttachMode] {
        match self {
            Self::Auto if crate::scan::transmit::is_veth(interface) => &[AttachMode::Skb],
            Self::Auto => &[AttachMode::Driver, AttachMode::Skb],
            Self::Driver => &[AttachMode::Driver],
            Self::Skb => &[AttachMode::Skb],
        }
    }
}

impl fmt::Display for ModeSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Driver => "driver",
            Self::Skb => "skb",
        })
    }
}

impl std::str::FromStr for ModeSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "driver" => Ok(Self::Driver),
            "skb" => Ok(Self::Skb),
            other => Err(format!("unknown XDP mode {other:?} (auto, driver or skb)")),
        }
    }
}

/// Per-CPU counters of the program, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    pub frames: u64,
    pub matched: u64,
    pub ringbuf_full: u64,
}

/// The attached program and the maps the sender side needs. Dropping it
/// detaches the program; so does the process dying, because the attachment
/// is a BPF link owned by this process's file descriptor.
pub struct Capture {
    _ebpf: Ebpf,
    interface: String,
    mode: AttachMode,
    settings: Settings,
    keys: Array<MapData, SlotKey>,
    counters: PerCpuArray<MapData, u64>,
}

/// The receiving end: validated replies, and the program's own log lines.
pub struct ReplyStream {
    /// One ring per CPU, modulo `scanner_common::maps::EVENT_RINGS`.
    rings: Vec<RingBuf<MapData>>,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
}

/// Loads the program into the kernel without attaching it (also what the
/// BPF_PROG_TEST_RUN tests use).
pub fn load(settings: Settings) -> Result<Ebpf, CaptureError> {
    if PROGRAM.is_empty() {
        return Err(CaptureError::NotBuilt);
    }
    raise_memlock_limit();
    // No kernel BTF: the program reads packets, never kernel structures,
    // so it has no CO-RE relocations, and parsing the kernel's BTF cost
    // most of the start-up (about 0.2 s of a scan of a few ports).
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .load(PROGRAM)
        .map_err(|e| CaptureError::Load(e.to_string()))?;
    let mut map: Array<_, Settings> = Array::try_from(
        ebpf.map_mut("SETTINGS")
            .ok_or(CaptureError::MissingMap("SETTINGS"))?,
    )?;
    map.set(0, settings, 0)?;
    let mut errors = Vec::new();
    for name in PROGRAMS {
        match load_program(&mut ebpf, name) {
            Ok(()) => return Ok(ebpf),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(CaptureError::Load(errors.join("; ")))
}

/// The program in its jumbo-frame-capable form first, then the form for
/// kernels older than 5.18.
pub const PROGRAMS: [&str; 2] = ["scanner_xdp", "scanner_xdp_single"];

fn load_program(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or("not in the object")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    prog.load().map_err(|e| verbose(&e))
}

impl XdpCounters {
    /// The larger of each counter (counters only grow; concurrent scans may
    /// report readings taken in either order).
    pub fn max_each(self, other: Self) -> Self {
        Self {
            frames: self.frames.max(other.frames),
            matched: self.matched.max(other.matched),
            ringbuf_full: self.ringbuf_full.max(other.ringbuf_full),
        }
    }
}

/// The loaded program (whichever form the kernel took).
pub fn loaded_program(ebpf: &mut Ebpf) -> Option<&mut Xdp> {
    let name = PROGRAMS.into_iter().find(|name| {
        ebpf.program(name)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .is_some_and(|p| p.fd().is_ok())
    })?;
    ebpf.program_mut(name)?.try_into().ok()
}

impl Capture {
    /// Loads the program and attaches it to `interface`, in the first mode
    /// of `setting` the interface takes.
    pub fn attach(
        interface: &str,
        settings: Settings,
        setting: ModeSetting,
    ) -> Result<(Self, ReplyStream), CaptureError> {
        let mut ebpf = load(settings)?;
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                tracing::debug!("eBPF logging unavailable: {e}");
                None
            }
        };
        let prog = loaded_program(&mut ebpf)
            .ok_or_else(|| CaptureError::Load("no program loaded".into()))?;
        let mode = attach_with_fallback(prog, interface, setting)?;
        tracing::info!(interface, %mode, "XDP program attached");

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(CaptureError::MissingMap(name))
        };
        let keys = Array::try_from(take(&mut ebpf, "KEYS")?)?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)?;
        let rings = EVENT_RING_NAMES
            .iter()
            .map(|name| Ok(RingBuf::try_from(take(&mut ebpf, name)?)?))
            .collect::<Result<Vec<_>, CaptureError>>()?;
        let capture = Self {
            _ebpf: ebpf,
            interface: interface.to_owned(),
            mode,
            settings,
            keys,
            counters,
        };
        Ok((capture, ReplyStream { rings, logger }))
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The probe port layout the program was loaded with.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Makes the program accept replies to probes made with `key` in
    /// `slot`, of the `protocols` (bits of [`scanner_common::maps::protocols`])
    /// the scan sends; replies of other protocols to the slot's ports pass.
    pub fn activate(
        &mut self,
        slot: u32,
        key: ProbeKey,
        protocols: u64,
    ) -> Result<(), CaptureError> {
        Ok(self.keys.set(slot, SlotKey { key, protocols }, 0)?)
    }

    pub fn deactivate(&mut self, slot: u32) -> Result<(), CaptureError> {
        Ok(self.keys.set(slot, SlotKey::default(), 0)?)
    }

    pub fn counters(&self) -> Result<XdpCounters, CaptureError> {
        let sum =
            |index| -> Result<u64, CaptureError> { Ok(self.counters.get(&index, 0)?.iter().sum()) };
        Ok(XdpCounters {
            frames: sum(counter::FRAMES)?,
            matched: sum(counter::MATCHED)?,
            ringbuf_full: sum(counter::RINGBUF_FULL)?,
        })
    }
}

fn attach_with_fallback(
    prog: &mut Xdp,
    interface: &str,
    setting: ModeSetting,
) -> Result<AttachMode, CaptureError> {
    let mut reasons = Vec::new();
    for &mode in setting.modes(interface) {
        let flag = match mode {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        };
        match prog.attach(interface, flag) {
            Ok(_) => return Ok(mode),
            Err(ProgramError::UnknownInterface { .. }) => {
                return Err(CaptureError::NoInterface(interface.to_owned()));
            }
            Err(e) => {
                let errno = os_error(&e);
                // EBUSY/EEXIST: some other program holds the hook. Never fight it.
                if matches!(errno, Some(libc::EBUSY | libc::EEXIST)) {
                    return Err(CaptureError::AlreadyAttached(interface.to_owned()));
                }
                tracing::debug!(interface, %mode, "XDP attach failed: {}", verbose(&e));
                reasons.push(format!("{mode} mode: {}", verbose(&e)));
            }
        }
    }
    Err(CaptureError::CannotAttach {
        interface: interface.to_owned(),
        reason: format!("xdp_mode {setting}: {}", reasons.join("; ")),
    })
}

/// The OS error number buried in an attach error, if any.
fn os_error(e: &ProgramError) -> Option<i32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        source = err.source();
    }
    None
}

fn verbose(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        );
    }
}

impl ReplyStream {
    /// Waits up to `timeout` for replies and hands each one to `on_reply`.
    /// Returns how many were handled.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut on_reply: impl FnMut(ReplyEvent),
    ) -> io::Result<usize> {
        // A zero timeout reads what the mapped rings hold, with no system
        // call at all.
        if !timeout.is_zero() {
            let mut fds: Vec<PollFd<'_>> = self
                .rings
                .iter()
                .map(|ring| PollFd::new(ring.as_fd(), PollFlags::POLLIN))
                .collect();
            if let Some(logger) = &self.logger {
                fds.push(PollFd::new(logger.as_fd(), PollFlags::POLLIN));
            }
            let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
        // A bounded share of each ring per pass, in turn, so that one busy
        // CPU's ring cannot hold up the others'; a bounded number of passes,
        // so that rings refilled at line rate cannot hold up the caller.
        const PER_PASS: usize = 4096;
        const PASSES: usize = 8;
        let mut handled = 0;
        for _ in 0..PASSES {
            let before = handled;
            for ring in &mut self.rings {
                for _ in 0..PER_PASS {
                    let Some(item) = ring.next() else { break };
                    if let Some(event) = ReplyEvent::from_bytes(&item) {
                        on_reply(event);
                        handled += 1;
                    }
                }
            }
            if handled == before {
                break;
            }
        }
        Ok(handled)
    }
}
