//! Who may see and change a job, and what one tenant may hold at once.
//!
//! A job belongs to the certificate name that submitted it. A client sees only its own jobs; to
//! it another tenant's job answers exactly as one that does not exist, so ids leak nothing. An
//! operator sees and cancels every job and is the only one who may drain or undrain nodes.
//! Quotas bound, per tenant, the jobs queued or running at once and the bytes held in the spool
//! (inputs, and results not yet fetched); the scheduler shares slots between tenants.

use std::collections::HashMap;

use wire::proto::JobId;
use wire::units::format_size;

use super::{Ledger, Refusal};

/// Who sends a request: its certificate's name, and whether that certificate is an operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's name; the owner of the jobs it submits.
    pub name: String,
    /// Operators see and cancel every job and manage nodes.
    pub operator: bool,
}

impl Caller {
    /// Whether this caller may see (and cancel, follow, release) a job of `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.operator || self.name == owner
    }
}

/// What one tenant may hold at once; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// Jobs queued or running.
    pub max_jobs: Option<u64>,
    /// Bytes in the spool: inputs, and results not yet fetched.
    pub max_spool: Option<u64>,
}

/// Every tenant's quota: a default, and overrides by certificate name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    /// For every tenant without an override.
    pub default: Quota,
    /// By certificate name.
    pub by_name: HashMap<String, Quota>,
}

impl Quotas {
    /// The quota of `tenant`.
    pub fn of(&self, tenant: &str) -> Quota {
        self.by_name.get(tenant).copied().unwrap_or(self.default)
    }
}

/// A quota a request would exceed, with its limit and the tenant's use, for the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exceeded {
    /// `max_jobs`.
    Jobs {
        /// The tenant.
        tenant: String,
        /// Its limit.
        limit: u64,
        /// Its jobs queued or running.
        used: u64,
    },
    /// `max_spool`.
    Spool {
        /// The tenant.
        tenant: String,
        /// Its limit, bytes.
        limit: u64,
        /// Its bytes in the spool, with what was asked for.
        used: u64,
    },
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Jobs { tenant, limit, used } => write!(
                f,
                "quota max_jobs of {tenant} is {limit} jobs queued or running at once, and {used} are; \
                 wait for one to finish or cancel one"
            ),
            Exceeded::Spool { tenant, limit, used } => write!(
                f,
                "quota max_spool of {tenant} is {} in the dispatcher's spool, and this would hold {} \
                 (inputs, and results not yet fetched); fetch or cancel jobs first",
                format_size(*limit),
                format_size(*used)
            ),
        }
    }
}

impl Ledger {
    /// The job, if `caller` may see it; another tenant's job is refused as unknown.
    pub(super) fn visible(&self, caller: &Caller, job: JobId) -> Result<&super::JobEntry, Refusal> {
        self.jobs.get(&job).filter(|entry| caller.may_see(&entry.record.owner)).ok_or(Refusal::UnknownJob(job))
    }

    /// Refuses a submission of `tenant` that would exceed its quota of jobs, or whose spool is full.
    pub(super) fn check_submission_quota(&self, tenant: &str) -> Result<(), Exceeded> {
        let quota = self.quotas.of(tenant);
        if let Some(limit) = quota.max_jobs {
            let used = self.jobs.values().filter(|e| e.record.owner == tenant && !e.record.state.is_finished()).count() as u64;
            if used >= limit {
                return Err(Exceeded::Jobs { tenant: tenant.to_owned(), limit, used });
            }
        }
        let used = self.spool_use(tenant);
        match quota.max_spool {
            Some(limit) if used >= limit => Err(Exceeded::Spool { tenant: tenant.to_owned(), limit, used }),
            _ => Ok(()),
        }
    }

    /// Counts `bytes` more of `job` in its tenant's spool; refuses when that exceeds the quota
    /// (the bytes are not counted then).
    pub(super) fn charge_spool(&mut self, job: JobId, bytes: u64) -> Result<(), Exceeded> {
        let Some(entry) = self.jobs.get_mut(&job).filter(|_| bytes > 0) else { return Ok(()) };
        let owner = &entry.record.owner;
        let used = self.spool_use.get(owner).copied().unwrap_or(0).saturating_add(bytes);
        if let Some(limit) = self.quotas.of(owner).max_spool.filter(|limit| used > *limit) {
            return Err(Exceeded::Spool { tenant: owner.clone(), limit, used });
        }
        entry.spool_bytes += bytes;
        self.spool_use.insert(owner.clone(), used);
        Ok(())
    }

    /// Counts `bytes` more of `job` in its tenant's spool whatever the quota: they are stored
    /// already (results the tenant's running jobs produced, a restored job's files).
    pub(super) fn charge_spool_anyway(&mut self, job: JobId, bytes: u64) {
        let Some(entry) = self.jobs.get_mut(&job).filter(|_| bytes > 0) else { return };
        entry.spool_bytes += bytes;
        *self.spool_use.entry(entry.record.owner.clone()).or_default() += bytes;
    }

    /// `job`'s files are gone (or going): its bytes no longer count.
    pub(super) fn discharge_spool(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let bytes = std::mem::take(&mut entry.spool_bytes);
        if let Some(used) = self.spool_use.get_mut(&entry.record.owner) {
            *used = used.saturating_sub(bytes);
            if *used == 0 {
                self.spool_use.remove(&entry.record.owner);
            }
        }
    }

    /// The bytes `tenant` holds in the spool.
    pub(super) fn spool_use(&self, tenant: &str) -> u64 {
        self.spool_use.get(tenant).copied().unwrap_or(0)
    }
}
