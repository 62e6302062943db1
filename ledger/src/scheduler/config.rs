//! The scheduler's tuning knobs.

use std::time::Duration;

use super::TenantShares;

/// Tuning knobs of the [`Scheduler`].
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Attempts queued on a node per slot beyond the one running in it, so a fast payload never
    /// waits a round trip for its next chunk. A node holds at most `slots * (1 + pipeline_depth)`
    /// attempts. Default 2 here; the dispatcher daemon uses its `pipeline_depth` setting. With
    /// `pipeline_budget`, also the most a job's depth on a node adapts to.
    pub pipeline_depth: u32,
    /// When set, a job's attempts on a node are limited to `slots * (1 + depth)`, where the depth
    /// follows the run times the node measured for the job's chunks
    /// ([`Scheduler::handle_run_time`]): enough queued chunks per slot to cover this much work,
    /// between 1 and `pipeline_depth`, and 1 until something is measured. Tiny chunks get deep
    /// queues (a slot never waits a round trip), long ones shallow queues (the end of a job is not
    /// stuck in one node's queue while others idle, queued inputs take little memory, and a node
    /// that just ran tiny chunks does not take dozens of long ones). `None` (the default here)
    /// lets every job use all of a node's positions.
    pub pipeline_budget: Option<Duration>,
    /// How long a node may stay silent (no heartbeat, join counts as one) before it is dropped
    /// and its attempts requeued; after half of it the node is suspect and takes no new work.
    /// Nodes heartbeat every second. Default 5 s.
    pub node_timeout: Duration,
    /// An attempt in flight this many times longer than the median chunk of its job gets a
    /// speculative copy on another node (see the module documentation). A value that is not a
    /// positive finite number (`f64::INFINITY`, 0) turns speculation off. Default 3.0.
    pub speculation_multiplier: f64,
    /// Chunks of a job that must have succeeded before its median means anything; 0 counts as 1.
    /// Default 5.
    pub speculation_min_samples: u32,
    /// No attempt younger than this is copied, however fast the job's chunks are, so tiny chunks
    /// with jittery timings are not all run twice. Default 1 s.
    pub speculation_min_age: Duration,
    /// Failures that succeeded elsewhere after which a node is quarantined (see the module
    /// documentation); 0 turns quarantine off. Default 3.
    pub quarantine_threshold: u32,
    /// Attempts of one chunk that may be lost with their node while running before the chunk
    /// fails its job (a chunk that crashes or cuts off every node it runs on would otherwise be
    /// retried forever); 0 counts as 1. Default 3.
    pub crash_limit: u32,
    /// After a dispatcher restart, how long the chunks of restored jobs without a stored result
    /// wait for a reconnecting node to claim them ([`Scheduler::handle_node_rejoined`]) before
    /// they are requeued; a node that claims one keeps running it instead of the chunk running
    /// again. Zero requeues them at once. Default 10 s.
    pub reattach_grace: Duration,
    /// How tenants share the cluster (see the module documentation). A tenant's share is read
    /// when its first live job arrives. Default: weight 1 and no cap for everyone.
    pub tenants: TenantShares,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            pipeline_depth: 2,
            pipeline_budget: None,
            node_timeout: Duration::from_secs(5),
            speculation_multiplier: 3.0,
            speculation_min_samples: 5,
            speculation_min_age: Duration::from_secs(1),
            quarantine_threshold: 3,
            crash_limit: 3,
            reattach_grace: Duration::from_secs(10),
            tenants: TenantShares::default(),
        }
    }
}
