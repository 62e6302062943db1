//! Reading a process's CPU time and memory from Linux's `/proc`: `utime + stime` from
//! `/proc/PID/stat` and `VmRSS` from `/proc/PID/status`, plus the machine description that goes
//! at the top of every report.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// Clock ticks per second of the `utime`/`stime` fields. Linux reports them in `USER_HZ`, which
/// is part of the kernel ABI and 100 on every architecture dispy targets.
const USER_HZ: f64 = 100.0;

/// CPU time a process has used so far (user plus system).
///
/// # Errors
/// When `/proc/PID/stat` cannot be read or parsed (the process is gone, or not Linux).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    stat_ticks(&pid.to_string(), [11, 12])
}

/// CPU time (user plus system) of this process's children that have exited and been waited for
/// (`cutime + cstime` of `/proc/self/stat`): what a short-lived child used, read after it ends.
///
/// # Errors
/// As [`cpu_time`].
pub(crate) fn waited_children_cpu_time() -> anyhow::Result<Duration> {
    stat_ticks("self", [13, 14])
}

/// The sum of two tick fields of `/proc/PID/stat`, counted from field 3 (the state) as index 0.
fn stat_ticks(pid: &str, fields: [usize; 2]) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("failed to read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc/PID/stat")?;
    // After the name, utime (field 14) is index 11, stime 12, cutime 13 and cstime 14.
    let values: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        values.get(i).context("short /proc/PID/stat")?.parse::<u64>().context("bad tick count in /proc/PID/stat")
    };
    let total = ticks(fields[0])? + ticks(fields[1])?;
    Ok(Duration::from_secs_f64(total as f64 / USER_HZ))
}

/// Resident memory of a process, in bytes (`VmRSS`).
///
/// # Errors
/// When `/proc/PID/status` cannot be read or lacks the field.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
///
/// # Errors
/// When `/proc/PID/status` cannot be read or lacks the field.
pub(crate) fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
}

fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("failed to read /proc/{pid}/status"))?;
    let line =
        status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    line[key.len()..]
        .split_whitespace()
        .next()
        .context("empty status field")?
        .parse::<u64>()
        .with_context(|| format!("bad {key} value"))
}

/// CPU time the whole machine has spent busy (all CPUs, from the first line of `/proc/stat`:
/// user, nice, system, irq, softirq and steal).
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub(crate) fn machine_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("failed to read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Ok(Duration::from_secs_f64(busy as f64 / USER_HZ))
}

/// Where the machine's CPU went during a measurement: the benchmark's own processes, by role,
/// and everything else.
pub(crate) struct CpuSplit {
    roles: Vec<(&'static str, Vec<u32>, Duration)>,
    machine: Duration,
    start: Instant,
}

impl CpuSplit {
    /// Starts measuring; `roles` names groups of process ids ("dispatcher", "nodes", ...).
    pub(crate) fn start(roles: Vec<(&'static str, Vec<u32>)>) -> CpuSplit {
        let roles = roles
            .into_iter()
            .map(|(name, pids)| {
                let used = pids.iter().filter_map(|&pid| cpu_time(pid).ok()).sum();
                (name, pids, used)
            })
            .collect();
        CpuSplit { roles, machine: machine_busy().unwrap_or_default(), start: Instant::now() }
    }

    /// The average CPU use of each role and of other processes since the start, in % of one
    /// core, as one line.
    pub(crate) fn finish(&self) -> String {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let percent = |d: Duration| 100.0 * d.as_secs_f64() / wall;
        let mut ours = Duration::ZERO;
        let mut parts = Vec::new();
        for (name, pids, before) in &self.roles {
            let now: Duration = pids.iter().filter_map(|&pid| cpu_time(pid).ok()).sum();
            let used = now.saturating_sub(*before);
            ours += used;
            parts.push(format!("{name} {:.0} %", percent(used)));
        }
        let machine = machine_busy().unwrap_or_default().saturating_sub(self.machine);
        parts.push(format!("other processes {:.0} %", percent(machine.saturating_sub(ours))));
        format!("{} over {wall:.1} s (100 % = one core)", parts.join(", "))
    }
}

/// A CPU-usage measurement window over one process.
pub(crate) struct CpuWindow {
    pid: u32,
    start_cpu: Duration,
    start: Instant,
}

impl CpuWindow {
    /// Starts measuring `pid` now.
    ///
    /// # Errors
    /// As [`cpu_time`].
    pub(crate) fn start(pid: u32) -> anyhow::Result<Self> {
        Ok(Self { pid, start_cpu: cpu_time(pid)?, start: Instant::now() })
    }

    /// CPU used since the start as a percentage of one core (200 % = two cores busy).
    ///
    /// # Errors
    /// As [`cpu_time`].
    pub(crate) fn percent(&self) -> anyhow::Result<f64> {
        let used = cpu_time(self.pid)?.saturating_sub(self.start_cpu);
        let wall = self.start.elapsed();
        Ok(100.0 * used.as_secs_f64() / wall.as_secs_f64().max(1e-9))
    }
}

/// System-wide UDP counters from `/proc/net/snmp`: datagrams received and datagrams dropped
/// because a socket's receive buffer was full (`RcvbufErrors`). On loopback nearly all drops
/// are the benchmark's own, and each one costs QUIC a loss recovery.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UdpCounters {
    /// `InDatagrams`.
    pub(crate) received: u64,
    /// `RcvbufErrors`.
    pub(crate) buffer_drops: u64,
}

impl UdpCounters {
    /// Reads this network namespace's counters now; zeros when they cannot be read.
    pub(crate) fn read() -> UdpCounters {
        UdpCounters::read_from("/proc/net/snmp")
    }

    /// Reads the counters of the network namespace process `pid` is in; zeros when they cannot
    /// be read.
    pub(crate) fn read_in_namespace_of(pid: u32) -> UdpCounters {
        UdpCounters::read_from(&format!("/proc/{pid}/net/snmp"))
    }

    fn read_from(path: &str) -> UdpCounters {
        let snmp = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return UdpCounters::default();
        };
        let field = |name: &str| {
            names
                .split_whitespace()
                .position(|n| n == name)
                .and_then(|i| values.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        UdpCounters { received: field("InDatagrams"), buffer_drops: field("RcvbufErrors") }
    }

    /// The sum of two readings (of different namespaces).
    pub(crate) fn plus(&self, other: &UdpCounters) -> UdpCounters {
        UdpCounters { received: self.received + other.received, buffer_drops: self.buffer_drops + other.buffer_drops }
    }

    /// The counts since `earlier`.
    pub(crate) fn since(&self, earlier: &UdpCounters) -> UdpCounters {
        UdpCounters {
            received: self.received.saturating_sub(earlier.received),
            buffer_drops: self.buffer_drops.saturating_sub(earlier.buffer_drops),
        }
    }
}

/// Datagrams the kernel dropped at the UDP socket bound to `port` on 127.0.0.1 (the `drops`
/// column of `/proc/net/udp`), to tell which end of a connection lost them; `None` when there is
/// no such socket.
pub(crate) fn udp_socket_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&local.as_str()) {
            fields.last()?.parse().ok()
        } else {
            None
        }
    })
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` prints them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The 1-minute load average as a number, for deciding whether the machine is quiet.
pub(crate) fn load_1min() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// How long an idle virtual CPU polls before it halts, under the `haltpoll` cpuidle driver of
/// KVM guests; `None` elsewhere.
pub(crate) fn guest_halt_poll_ns() -> Option<u64> {
    std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns").ok()?.trim().parse().ok()
}

/// What the report says about the machine it ran on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    /// Logical CPUs (`nproc`).
    pub(crate) cpus: usize,
    /// The first `model name` of `/proc/cpuinfo`.
    pub(crate) cpu_model: String,
    /// `MemTotal` of `/proc/meminfo`, bytes.
    pub(crate) memory_bytes: u64,
    /// The open-file limit of this process (`ulimit -n`), which bounds sockets.
    pub(crate) open_files_limit: String,
    /// The build profile of this binary.
    pub(crate) profile: &'static str,
    /// The cpuidle driver and, under `haltpoll`, how long an idle virtual CPU polls before it
    /// halts: 0 makes every wake-up of an idle process an interrupt from the hypervisor, which
    /// W2's round trips feel (docs/operations.md, "Latency").
    pub(crate) idle: String,
}

impl Machine {
    /// Describes this machine.
    pub(crate) fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024);
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_files_limit = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap_or("unknown")
            .to_owned();
        let idle = match std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver") {
            Err(_) => "unknown".to_owned(),
            Ok(driver) => match guest_halt_poll_ns() {
                Some(ns) if driver.trim() == "haltpoll" => format!("haltpoll, guest_halt_poll_ns {ns}"),
                _ => driver.trim().to_owned(),
            },
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_bytes,
            open_files_limit,
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            idle,
        }
    }
}
