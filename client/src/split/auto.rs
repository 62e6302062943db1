//! Adaptive chunk sizing for the `auto` split rules (`bytes:auto`, `lines:auto`,
//! `range:START..END:auto`).
//!
//! The cutter first sends a few small probe chunks and then pauses; the submitter watches the
//! job's progress, and once every probe has run it divides the nodes' measured run time by the
//! probe's size to get a cost per unit (byte or number), picks the size that makes a chunk run for
//! the target duration, and lets the cutter go on with it. The size is clamped so every slot still
//! gets several chunks (a balanced tail) and no chunk outgrows the job's memory.
//!
//! The cutting side ([`AutoSize`], held by the chunk iterator on a blocking thread) and the
//! deciding side ([`AutoTuner`], fed progress by the client's event loop) share one small state
//! behind a mutex; nothing here touches the network.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Probe size for `bytes` and `lines`: big enough that a chunk's fixed cost does not dominate
/// its measured run time, small enough to cost little when the payload is slow.
pub const PROBE_BYTES: u64 = 64 * 1024;
/// Probe size for `range`, as a fraction of the range (at least one number).
const PROBE_RANGE_FRACTION: u64 = 4096;
/// Upper bound for a `bytes`/`lines` chunk whatever the measurement says: bigger chunks gain
/// nothing once a chunk's fixed cost is small, and they overlap transfer and work less (W3 in
/// `bench/RESULTS.md` ran slower with 64 MiB chunks than with 8 MiB ones).
pub const MAX_AUTO_BYTES: u64 = 8 << 20;
/// Upper bound when the chunks' bytes travel through the dispatcher (not shared input): each
/// chunk crosses two QUIC hops before it runs, so big ones leave the slots idle longer at the
/// start and the end (W3 in `bench/RESULTS.md`: 267 MB/s with 2 MiB chunks, 234 with 8 MiB).
pub const MAX_AUTO_SHIPPED_BYTES: u64 = 2 << 20;
/// Chunks per slot the remaining input is cut into at least, so no slot idles at the end while
/// another runs a giant chunk, and transfers overlap work.
const MIN_CHUNKS_PER_SLOT: u64 = 8;
/// Probe chunks per slot, within `MIN_PROBES..=MAX_PROBES`.
const MIN_PROBES: u64 = 2;
const MAX_PROBES: u64 = 16;

/// What a unit of chunk size is for an auto rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of input (`bytes:auto`, and `lines:auto`, which cuts at the first line end after
    /// that many bytes).
    Bytes,
    /// Numbers of a range (`range:START..END:auto`).
    Numbers,
}

impl Unit {
    /// The probe chunk size for an input of `total` units (when known).
    pub fn probe_size(self, total: Option<u64>) -> u64 {
        match self {
            Unit::Bytes => PROBE_BYTES,
            Unit::Numbers => (total.unwrap_or(0) / PROBE_RANGE_FRACTION).max(1),
        }
    }
}

/// Where the probe stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Probe chunks are being cut.
    Probing,
    /// All probe chunks are cut; the cutter waits for the decision.
    Waiting,
    /// The size is final.
    Decided,
}

#[derive(Debug)]
struct State {
    size: u64,
    phase: Phase,
    /// Probe chunks the cutter may cut before pausing; set by the tuner.
    probes_wanted: u64,
    probes_cut: u64,
    probe_units: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    decided: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The cutting side: tells the chunk iterator how big the next chunk is, and pauses it after the
/// probe until the size is decided.
#[derive(Debug)]
pub struct AutoSize {
    shared: Arc<Shared>,
    unit: Unit,
    total: Option<u64>,
}

impl AutoSize {
    /// A fresh auto size for an input of `total` units (when known), with its probe size.
    pub(crate) fn new(unit: Unit, total: Option<u64>) -> Self {
        let state = State {
            size: unit.probe_size(total),
            phase: Phase::Probing,
            probes_wanted: MIN_PROBES,
            probes_cut: 0,
            probe_units: 0,
        };
        let shared = Arc::new(Shared { state: Mutex::new(state), decided: Condvar::new() });
        Self { shared, unit, total }
    }

    /// The size of the next chunk. After the probe chunks it blocks until the tuner decides (or
    /// is dropped).
    pub(crate) fn next_size(&self) -> u64 {
        let mut state = self.shared.lock();
        // With the whole (known) input cut there is nothing left to size: do not wait.
        let all_cut = self.total.is_some_and(|total| state.probe_units >= total);
        if state.phase == Phase::Probing && state.probes_cut >= state.probes_wanted && !all_cut {
            state.phase = Phase::Waiting;
        }
        while state.phase == Phase::Waiting {
            state = self.shared.decided.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.size
    }

    /// Records a chunk of `units` just cut.
    pub(crate) fn cut(&self, units: u64) {
        let mut state = self.shared.lock();
        if state.phase == Phase::Probing {
            state.probes_cut += 1;
            state.probe_units += units;
        }
    }

    /// The deciding side, for the submitter: `target` is how long a chunk should run, `slots`
    /// how many chunk slots the cluster has, `max_chunk_bytes` the most a `bytes`/`lines` chunk
    /// may hold (a memory bound).
    pub fn tuner(&self, target: Duration, slots: u64, max_chunk_bytes: u64) -> AutoTuner {
        let slots = slots.max(1);
        self.shared.lock().probes_wanted = slots.clamp(MIN_PROBES, MAX_PROBES);
        let max_size = match self.unit {
            Unit::Bytes => max_chunk_bytes.clamp(1, MAX_AUTO_BYTES),
            Unit::Numbers => u64::MAX,
        };
        AutoTuner { shared: Arc::clone(&self.shared), target, slots, total: self.total, max_size, unit: self.unit }
    }
}

/// The deciding side of an auto rule: feed it the job's progress until it has decided.
#[derive(Debug)]
pub struct AutoTuner {
    shared: Arc<Shared>,
    target: Duration,
    slots: u64,
    total: Option<u64>,
    max_size: u64,
    unit: Unit,
}

/// What the tuner decided, for the submitter to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Probe chunks measured.
    pub probes: u64,
    /// Their total size in units.
    pub probe_units: u64,
    /// The nodes' run time over them.
    pub probe_time: Duration,
    /// The chunk size from now on, in units.
    pub size: u64,
    /// What the sizes count.
    pub unit: Unit,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let amount = |units: u64| match self.unit {
            Unit::Bytes => wire::units::format_size(units),
            Unit::Numbers => format!("{units} numbers"),
        };
        write!(
            f,
            "auto split: {} probe chunks ({}) ran for {:.1} ms on the nodes; chunks of {} from now on",
            self.probes,
            amount(self.probe_units),
            self.probe_time.as_secs_f64() * 1e3,
            amount(self.size)
        )
    }
}

impl AutoTuner {
    /// Looks at the job's progress: `done` chunks with accepted results that ran for `run_nanos`
    /// on the nodes in total. Once every probe chunk is done it decides the size, releases the
    /// cutter and returns the decision (once); otherwise `None`.
    pub fn observe(&self, done: u64, run_nanos: u64) -> Option<Decision> {
        let mut state = self.shared.lock();
        // Done chunks are all probes while the cutter waits, since nothing else was cut.
        if state.phase != Phase::Waiting || done < state.probes_cut {
            return None;
        }
        let remaining = self.total.map(|total| total.saturating_sub(state.probe_units));
        let size = chunk_size(&Measurement {
            probe_units: state.probe_units,
            run_nanos,
            target: self.target,
            probe_size: state.size,
            max_size: self.max_size,
            remaining,
            slots: self.slots,
        });
        let decision = Decision {
            probes: state.probes_cut,
            probe_units: state.probe_units,
            probe_time: Duration::from_nanos(run_nanos),
            size,
            unit: self.unit,
        };
        state.size = size;
        state.phase = Phase::Decided;
        self.shared.decided.notify_all();
        Some(decision)
    }
}

impl Drop for AutoTuner {
    /// A submitter that gives up (the job failed, the connection dropped) must not leave the
    /// cutter waiting forever: it goes on with the probe size.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.phase = Phase::Decided;
        self.shared.decided.notify_all();
    }
}

/// The inputs of the sizing rule.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    probe_units: u64,
    run_nanos: u64,
    target: Duration,
    probe_size: u64,
    max_size: u64,
    remaining: Option<u64>,
    slots: u64,
}

/// The chunk size that runs for about `target`, never below the probe size (smaller chunks
/// would cost more in overhead than they gain), never above `max_size`, and small enough that
/// the remaining input (when known) makes [`MIN_CHUNKS_PER_SLOT`] chunks for every slot.
fn chunk_size(m: &Measurement) -> u64 {
    let ideal = if m.run_nanos == 0 {
        u64::MAX
    } else {
        let units = u128::from(m.probe_units) * m.target.as_nanos() / u128::from(m.run_nanos);
        u64::try_from(units).unwrap_or(u64::MAX)
    };
    let balanced = m
        .remaining
        .map_or(u64::MAX, |remaining| remaining.div_ceil(MIN_CHUNKS_PER_SLOT * m.slots.max(1)));
    ideal.min(balanced).min(m.max_size).max(m.probe_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement() -> Measurement {
        Measurement {
            probe_units: 4 * PROBE_BYTES,
            // 4 probes of 64 KiB in 4 ms in total: 1 ms per 64 KiB.
            run_nanos: 4_000_000,
            target: Duration::from_secs(1),
            probe_size: PROBE_BYTES,
            max_size: MAX_AUTO_BYTES,
            remaining: None,
            slots: 2,
        }
    }

    #[test]
    fn size_runs_for_the_target() {
        let m = Measurement { max_size: u64::MAX, ..measurement() };
        // 1 ms per 64 KiB -> 1 s is 1000 x 64 KiB.
        assert_eq!(chunk_size(&m), 1000 * PROBE_BYTES);
        let half = Measurement { target: Duration::from_millis(500), ..m };
        assert_eq!(chunk_size(&half), 500 * PROBE_BYTES);
    }

    #[test]
    fn size_is_clamped() {
        let fast = Measurement { run_nanos: 400_000, ..measurement() };
        assert_eq!(chunk_size(&fast), MAX_AUTO_BYTES, "memory bound");
        let slow = Measurement { run_nanos: 60_000_000_000, ..measurement() };
        assert_eq!(chunk_size(&slow), PROBE_BYTES, "never below the probe");
        let free = Measurement { run_nanos: 0, ..measurement() };
        assert_eq!(chunk_size(&free), MAX_AUTO_BYTES);
        // 8 MiB left on 2 slots: at least 16 chunks of 512 KiB.
        let small = Measurement { remaining: Some(8 << 20), ..measurement() };
        assert_eq!(chunk_size(&small), 512 << 10);
    }

    #[test]
    fn cutter_pauses_after_the_probe_until_the_tuner_decides() {
        let auto = AutoSize::new(Unit::Bytes, Some(1 << 30));
        let tuner = auto.tuner(Duration::from_secs(1), 3, u64::MAX);
        for _ in 0..3 {
            assert_eq!(auto.next_size(), PROBE_BYTES);
            auto.cut(PROBE_BYTES);
        }
        assert_eq!(tuner.observe(3, 1), None, "the cutter has not reached the pause yet");
        let cutter = std::thread::spawn(move || auto.next_size());
        // The cutter pauses on its own thread; until it does, the tuner has nothing to decide.
        let decision = loop {
            assert_eq!(tuner.observe(2, 1_000_000), None, "a probe is still running");
            if let Some(decision) = tuner.observe(3, 24_000_000) {
                break decision;
            }
            std::thread::yield_now();
        };
        // 3 x 64 KiB in 24 ms: 1 s is 125 x 64 KiB, below the balance and memory bounds.
        let expected = Decision {
            probes: 3,
            probe_units: 3 * PROBE_BYTES,
            probe_time: Duration::from_millis(24),
            size: 125 * PROBE_BYTES,
            unit: Unit::Bytes,
        };
        assert_eq!(decision, expected);
        assert_eq!(
            decision.to_string(),
            "auto split: 3 probe chunks (192.0 KiB) ran for 24.0 ms on the nodes; chunks of 7.8 MiB \
             from now on"
        );
        assert_eq!(cutter.join().expect("cutter thread"), 125 * PROBE_BYTES);
        assert_eq!(tuner.observe(100, 1), None, "decides once");
    }

    #[test]
    fn dropping_the_tuner_releases_the_cutter() {
        let auto = AutoSize::new(Unit::Numbers, Some(1024));
        let tuner = auto.tuner(Duration::from_secs(1), 1, u64::MAX);
        for _ in 0..MIN_PROBES {
            assert_eq!(auto.next_size(), 1);
            auto.cut(1);
        }
        let cutter = std::thread::spawn(move || auto.next_size());
        drop(tuner);
        assert_eq!(cutter.join().expect("cutter thread"), 1, "goes on with the probe size");
    }
}
