//! Samples this machine's resources for registration and heartbeats.

use std::sync::Mutex;

use sysinfo::System;

/// A snapshot of what the node advertises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Health {
    /// Logical cores.
    pub cores: u32,
    /// Total memory, bytes.
    pub memory_total: u64,
    /// Available memory, bytes.
    pub memory_available: u64,
    /// One-minute load average.
    pub load: f32,
}

/// Reads memory and load through sysinfo, reusing one `System` so refreshes stay cheap.
#[derive(Debug)]
pub(crate) struct HealthProbe {
    system: Mutex<System>,
}

impl Default for HealthProbe {
    fn default() -> Self {
        Self { system: Mutex::new(System::new()) }
    }
}

impl HealthProbe {
    /// Takes a fresh sample.
    pub(crate) fn sample(&self) -> Health {
        let mut system = self.system.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        system.refresh_memory();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Health {
            cores,
            memory_total: system.total_memory(),
            memory_available: system.available_memory(),
            load: System::load_average().one as f32,
        }
    }
}
