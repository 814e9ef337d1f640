//! The progress line of `scanner-agent scan`: on standard error, and only
//! when it is a terminal (a pipe or a file gets nothing of it; standard
//! output never does). A thread of its own reads the engine's counters
//! ([`Progress`]) every [`PERIOD`] and redraws; the send loop never waits
//! for it.

use std::{
    io::{self, IsTerminal as _, Write},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use scanner_agent::scan::engine::{
    Phase,
    progress::{Progress, Snapshot},
};

/// How often the line is redrawn: often enough to look live, rarely
/// enough to cost nothing.
const PERIOD: Duration = Duration::from_millis(150);

/// The line on screen, if any: log lines are written around it ([`LogWriter`]).
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Standard error for the log: while the progress line is shown, each log
/// line is written with the line taken down and redrawn after it, so the
/// two never mix on one row.
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match shown {
            Some(bar) => bar.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// The display thread; [`Reporter::finish`] clears the line.
pub(crate) struct Reporter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Reporter {
    /// Starts drawing `progress` on standard error, unless it is not a terminal.
    pub(crate) fn start(progress: &Arc<Progress>) -> Option<Self> {
        if !io::stderr().is_terminal() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (progress, stop) = (Arc::clone(progress), Arc::clone(&stop));
            thread::Builder::new()
                .name("progress".into())
                .spawn(move || draw(&progress, &stop))
                .ok()?
        };
        Some(Self { stop, thread })
    }

    /// Stops drawing and clears the line, before the summary is printed.
    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

fn draw(progress: &Progress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:24}] {pos}/{len} probes  {msg}  {elapsed_precise} ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    *SHOWN.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
    let mut rate = Rate::default();
    while !stop.load(Ordering::Acquire) {
        let now = progress.read();
        if now.phase.is_some() {
            show(&bar, &now, rate.update(&now, Instant::now()));
        }
        thread::sleep(PERIOD);
    }
    SHOWN.lock().unwrap_or_else(PoisonError::into_inner).take();
    bar.finish_and_clear();
}

fn show(bar: &ProgressBar, now: &Snapshot, pps: f64) {
    let prefix = match now.phase {
        Some(Phase::Discovery) => "discovery",
        _ => "ports",
    };
    // A new phase starts its bar again.
    if bar.prefix() != prefix {
        bar.reset();
        bar.set_prefix(prefix);
    }
    bar.set_length(now.total);
    bar.set_position(now.started);
    bar.set_message(format!(
        "{pps:.0} pkt/s  {} retries  {} open",
        now.retries, now.open
    ));
}

/// The send rate over the last half second or so, from the packets counted.
#[derive(Default)]
struct Rate {
    last: Option<(Instant, u64, Option<Phase>)>,
    pps: f64,
}

impl Rate {
    fn update(&mut self, now: &Snapshot, at: Instant) -> f64 {
        match self.last {
            Some((then, sent, phase)) if phase == now.phase => {
                let dt = at.duration_since(then).as_secs_f64();
                if dt >= 0.5 {
                    self.pps = now.sent.saturating_sub(sent) as f64 / dt;
                    self.last = Some((at, now.sent, now.phase));
                }
            }
            _ => {
                self.pps = 0.0;
                self.last = Some((at, now.sent, now.phase));
            }
        }
        self.pps
    }
}
