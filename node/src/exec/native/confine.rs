//! Confinement of native workers: what a native payload may touch, decided once when the node
//! starts ([`NativePolicy::decide`]) and applied by each worker process to itself before it loads
//! the library ([`enter`]).
//!
//! A confined worker runs under `no_new_privs` and a Landlock ruleset (handled rights of Landlock
//! ABI 7, fewer on older kernels): it may read and execute system libraries ([`SYSTEM_READ`]),
//! read its payload file, its own `/proc/self` and the node's `shared_input_roots`, use a few
//! character devices ([`DEVICES`]), and write only its scratch directory; it may neither bind nor
//! connect TCP sockets (Landlock ABI 4 and later), reach abstract Unix sockets or signal processes
//! outside its own domain (ABI 6), and a seccomp filter fails every `socket` and `io_uring_setup`
//! call, which covers what Landlock does not (UDP, Unix sockets by path). Everything else is denied, including the node's TLS
//! directory, payload cache, state and configuration. When the node runs as root, the worker
//! also switches to `payload_user` (no supplementary groups) before restricting itself. The
//! worker opens its payload file before it switches user and loads it through `/proc/self/fd`,
//! so the cache directory need not be readable by that user.
//!
//! A node that cannot confine (no Landlock, or running as root with no usable `payload_user`)
//! refuses native payloads unless its operator set `allow_unconfined_native`; such workers still
//! get `no_new_privs` and whatever part of the confinement the machine does offer.
//!
//! Each worker gets a fresh scratch directory under `scratch_dir` ([`Scratch`]), its `HOME` and
//! `TMPDIR`, owned by the user it runs as and removed when the worker ends; each chunk runs in
//! its own `attempt-N` directory inside it, removed when the chunk ends (`worker::AttemptDir`).
//! Workers start with an empty environment besides those and `PATH`, so nothing of the node's
//! environment (credentials included) reaches payload code.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope, ABI,
};
use wire::proto::Confinement;

use super::loader;

/// The Landlock ABI whose rights a worker's ruleset handles: the newest one tested here (the
/// `landlock` crate advises a vetted version over "everything"). Older kernels enforce what
/// they know of it.
const ABI_USED: ABI = ABI::V7;

/// What a worker may read and execute: the dynamic loader's files and the system's libraries
/// and tools. Missing ones are skipped. `/etc` as a whole is not here: it holds the node's TLS
/// directory and configuration.
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
];

/// Character devices a worker may read and write.
pub const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// The operator's settings for native payloads (keys `allow_native`, `allow_unconfined_native`,
/// `payload_user`, `scratch_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSettings {
    /// Whether native payloads run here at all.
    pub allow_native: bool,
    /// Whether they run when the node cannot confine them.
    pub allow_unconfined_native: bool,
    /// The account workers switch to when the node runs as root.
    pub payload_user: String,
    /// Where workers' scratch directories are made.
    pub scratch_dir: PathBuf,
    /// Directories workers may read (the node's `shared_input_roots`).
    pub read_roots: Vec<PathBuf>,
}

/// What Landlock offers on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LandlockSupport {
    /// Whether TCP bind and connect can be denied (Landlock ABI 4 and later).
    pub network: bool,
}

/// What the node found out about this machine at start; the input of [`NativePolicy::decide`],
/// separate so that the decision is tested without a kernel that lacks Landlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Landlock's support, or why it cannot be used.
    pub landlock: Result<LandlockSupport, String>,
    /// Whether the node runs as root (then workers must switch to `payload_user`).
    pub root: bool,
    /// `payload_user`'s user and group ids, or why it cannot be used.
    pub payload_user: Result<(u32, u32), String>,
}

impl Probe {
    /// Probes this machine: creates (and drops) a Landlock ruleset, and looks `payload_user` up
    /// in the system's user database.
    pub fn this_machine(payload_user: &str) -> Self {
        Self {
            landlock: probe_landlock(),
            root: loader::effective_uid() == 0,
            payload_user: lookup_user(payload_user),
        }
    }
}

/// What a worker applies to itself before loading a payload; travels in the worker's `Init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Plan {
    /// Restrict the process with a Landlock ruleset; failing to is an error.
    pub(super) landlock: bool,
    /// Switch to this user and group id first.
    pub(super) user: Option<(u32, u32)>,
}

/// How this node runs native workers; decided once at start. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativePolicy {
    confinement: Confinement,
    /// Details for logs: what is enforced, or why the node cannot confine.
    detail: String,
    plan: Plan,
    /// Where scratch directories go; `None`: workers get none (tests, serial runs).
    scratch_root: Option<PathBuf>,
    read_roots: Vec<PathBuf>,
}

impl NativePolicy {
    /// No confinement at all beyond rlimits and `no_new_privs`, no scratch directory: for
    /// serial reference runs and unit tests in the submitter's own process.
    pub fn unconfined() -> Self {
        Self {
            confinement: Confinement::Unconfined,
            detail: "not confined (serial run)".to_owned(),
            plan: Plan::default(),
            scratch_root: None,
            read_roots: Vec::new(),
        }
    }

    /// The policy for `settings` on a machine as `probe` found it.
    pub fn decide(settings: &NativeSettings, probe: &Probe) -> Self {
        let mut policy = Self {
            confinement: Confinement::Disabled,
            detail: "allow_native = false".to_owned(),
            plan: Plan::default(),
            scratch_root: Some(settings.scratch_dir.clone()),
            read_roots: settings.read_roots.clone(),
        };
        if !settings.allow_native {
            return policy;
        }
        let mut missing = Vec::new();
        if let Err(why) = &probe.landlock {
            missing.push(why.clone());
        }
        let user = match (&probe.payload_user, probe.root) {
            (_, false) => None,
            (Ok(ids), true) => Some(*ids),
            (Err(why), true) => {
                missing.push(format!("the node runs as root and {why}"));
                None
            }
        };
        policy.plan = Plan { landlock: probe.landlock.is_ok(), user };
        if missing.is_empty() {
            policy.confinement = Confinement::Landlock;
            let network = match probe.landlock {
                Ok(LandlockSupport { network: true }) => "network denied",
                _ => "network not restricted (Landlock before ABI 4)",
            };
            let user = match user {
                Some(_) => format!("workers run as {}", settings.payload_user),
                None => "workers run as the node's user".to_owned(),
            };
            policy.detail = format!("Landlock and no_new_privs, {network}, {user}");
        } else if settings.allow_unconfined_native {
            policy.confinement = Confinement::Unconfined;
            policy.detail = format!("allow_unconfined_native = true, but {}", missing.join("; "));
        } else {
            policy.confinement = Confinement::Refused;
            policy.detail = missing.join("; ");
        }
        policy
    }

    /// How native payloads run here.
    pub fn confinement(&self) -> Confinement {
        self.confinement
    }

    /// What is enforced, or why the node cannot confine, in words.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Why this node refuses native payloads, for the submitter; `None` if it runs them.
    pub fn refusal(&self) -> Option<String> {
        match self.confinement {
            Confinement::Landlock | Confinement::Unconfined => None,
            Confinement::Disabled => Some("this node does not run native payloads (allow_native = false)".to_owned()),
            Confinement::Refused => Some(format!(
                "this node cannot confine native payloads ({}) and does not run them unconfined \
                 (allow_unconfined_native = false)",
                self.detail
            )),
        }
    }

    pub(super) fn plan(&self) -> Plan {
        self.plan
    }

    pub(super) fn read_roots(&self) -> &[PathBuf] {
        &self.read_roots
    }

    /// A fresh scratch directory for one worker, or `None` when this policy gives none.
    ///
    /// # Errors
    /// When the directory cannot be made or given to the worker's user.
    pub(super) fn scratch(&self) -> io::Result<Option<Scratch>> {
        match &self.scratch_root {
            Some(root) => Scratch::create(root, self.plan.user).map(Some),
            None => Ok(None),
        }
    }
}

/// One worker's scratch directory, removed (with everything in it) on drop.
#[derive(Debug)]
pub(super) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create(root: &Path, owner: Option<(u32, u32)>) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(root)?;
        let name = format!("worker-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = root.join(name);
        if path.exists() {
            // Left by an earlier node process that had this process id and died.
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir(&path)?;
        let scratch = Self { path };
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&scratch.path, std::fs::Permissions::from_mode(0o700))?;
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&scratch.path, Some(uid), Some(gid))?;
        }
        Ok(scratch)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "failed to remove a native worker's scratch directory");
        }
    }
}

/// Confines this worker process as `plan` says: builds the Landlock ruleset while it can still
/// open everything, switches user, then restricts itself (which also sets `no_new_privs`).
/// `payload` is the library, `reads` the extra read-only directories, `scratch` the one writable
/// directory.
///
/// # Errors
/// Why the worker could not confine itself; it must then not load the payload.
pub(super) fn enter(plan: Plan, payload: &Path, reads: &[PathBuf], scratch: Option<&Path>) -> Result<(), String> {
    let ruleset = if plan.landlock {
        Some(ruleset(payload, reads, scratch).map_err(|e| format!("cannot build the Landlock ruleset: {e}"))?)
    } else {
        None
    };
    if let Some((uid, gid)) = plan.user {
        loader::switch_user(uid, gid).map_err(|e| format!("cannot switch to user {uid} (group {gid}): {e}"))?;
    }
    match ruleset {
        Some(ruleset) => {
            let status = ruleset.restrict_self().map_err(|e| format!("Landlock refused to confine: {e}"))?;
            if status.ruleset == RulesetStatus::NotEnforced {
                return Err("Landlock did not enforce the ruleset".to_owned());
            }
            if !status.no_new_privs {
                return Err("no_new_privs could not be set".to_owned());
            }
        }
        None => loader::set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?,
    }
    if let Some(filter) = socket_filter() {
        match loader::install_seccomp_filter(&filter) {
            Ok(()) => {}
            Err(e) if plan.landlock => return Err(format!("cannot install the seccomp filter: {e}")),
            // An unconfined worker gets what the machine offers.
            Err(_) => {}
        }
    }
    Ok(())
}

/// `AUDIT_ARCH_*` of the architecture this node was built for: the filter below lets through
/// only system calls of this calling convention.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// The x32 calling convention's bit in a system call number on x86_64 (the same calls under
/// other numbers).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A seccomp program that fails, with `EACCES`, the system calls Landlock leaves open to a
/// worker: `socket` of any family (Landlock ABI 7 covers neither UDP nor connecting to a Unix
/// socket by its path) and `io_uring_setup` (io_uring can open and connect sockets without
/// calling `socket`); also every call made through another calling convention (i386's
/// `int 0x80`, x32), which would reach the same kernel code under other numbers. The worker's
/// own channel to the node exists before this is installed. `None` on an architecture this
/// list was not written for.
fn socket_filter() -> Option<Vec<libc::sock_filter>> {
    // Offsets into `struct seccomp_data`: the call's number, then its architecture.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let load = |offset| libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: offset };
    let ret = |verdict| libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: verdict };
    // A conditional jump whose "deny" branch is patched to the program's last instruction below.
    let jump = |op, value| libc::sock_filter { code: (libc::BPF_JMP | op | libc::BPF_K) as u16, jt: 0, jf: 0, k: value };
    let denied = [libc::SYS_socket, libc::SYS_io_uring_setup].map(|nr| nr as u32);

    let mut program = vec![load(ARCH), jump(libc::BPF_JEQ, AUDIT_ARCH?), load(NR)];
    // Jumps whose true branch denies; the architecture check above denies on false instead.
    let mut deny_if_true = Vec::new();
    if cfg!(target_arch = "x86_64") {
        deny_if_true.push(program.len());
        program.push(jump(libc::BPF_JGE, X32_SYSCALL_BIT));
    }
    for nr in denied {
        deny_if_true.push(program.len());
        program.push(jump(libc::BPF_JEQ, nr));
    }
    program.push(ret(libc::SECCOMP_RET_ALLOW));
    program.push(ret(libc::SECCOMP_RET_ERRNO | libc::EACCES as u32));
    let deny = program.len() - 1;
    // Offsets count from the instruction after the jump; every program here is a few dozen long.
    let to_deny = |at: usize| (deny - at - 1) as u8;
    program[1].jf = to_deny(1);
    for at in deny_if_true {
        program[at].jt = to_deny(at);
    }
    Some(program)
}

/// The worker's ruleset: everything of [`ABI_USED`] handled, and only the grants allowed.
fn ruleset(payload: &Path, reads: &[PathBuf], scratch: Option<&Path>) -> Result<RulesetCreated, RulesetError> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))?
        .handle_access(AccessNet::from_all(ABI_USED))?
        .scope(Scope::from_all(ABI_USED))?
        .create()?;
    let read = AccessFs::from_read(ABI_USED);
    let file = AccessFs::from_file(ABI_USED) & !AccessFs::Execute;
    let system = SYSTEM_READ.iter().map(Path::new);
    let own = [Path::new("/proc/self"), payload];
    for path in system.chain(own).chain(reads.iter().map(PathBuf::as_path)) {
        ruleset = grant(ruleset, path, read)?;
    }
    for device in DEVICES {
        ruleset = grant(ruleset, Path::new(device), file)?;
    }
    if let Some(scratch) = scratch {
        ruleset = grant(ruleset, scratch, AccessFs::from_all(ABI_USED))?;
    }
    Ok(ruleset)
}

/// Adds a rule giving `access` beneath `path` (only its file rights when it is a file); a path
/// that does not exist is skipped.
fn grant(
    ruleset: RulesetCreated,
    path: &Path,
    access: landlock::BitFlags<AccessFs>,
) -> Result<RulesetCreated, RulesetError> {
    let Ok(fd) = PathFd::new(path) else {
        return Ok(ruleset);
    };
    let access = if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
        access & AccessFs::from_file(ABI_USED)
    } else {
        access
    };
    ruleset.add_rule(PathBeneath::new(fd, access))
}

/// Whether Landlock works here, by creating a ruleset (a file descriptor, dropped at once)
/// that must be fully supported.
fn probe_landlock() -> Result<LandlockSupport, String> {
    let handles = |access: landlock::BitFlags<AccessFs>| {
        Ruleset::default().set_compatibility(CompatLevel::HardRequirement).handle_access(access)?.create()
    };
    handles(AccessFs::from_all(ABI::V1)).map_err(|e| format!("Landlock is unavailable ({e})"))?;
    let network = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessNet::from_all(ABI::V4))
        .and_then(Ruleset::create)
        .is_ok();
    Ok(LandlockSupport { network })
}

/// `name`'s user and group ids from the system's user database; root is refused.
fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let users = sysinfo::Users::new_with_refreshed_list();
    let user = users
        .list()
        .iter()
        .find(|user| user.name() == name)
        .ok_or_else(|| format!("payload_user {name:?} does not exist"))?;
    let (uid, gid) = (**user.id(), *user.group_id());
    if uid == 0 {
        return Err(format!("payload_user {name:?} is root"));
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allow_native: bool, allow_unconfined_native: bool) -> NativeSettings {
        NativeSettings {
            allow_native,
            allow_unconfined_native,
            payload_user: "nobody".to_owned(),
            scratch_dir: PathBuf::from("/var/lib/dispy-node/scratch"),
            read_roots: Vec::new(),
        }
    }

    fn probe(landlock: bool, root: bool, user: bool) -> Probe {
        Probe {
            landlock: if landlock { Ok(LandlockSupport { network: true }) } else { Err("Landlock is unavailable".into()) },
            root,
            payload_user: if user { Ok((65534, 65534)) } else { Err("payload_user \"nobody\" does not exist".into()) },
        }
    }

    #[track_caller]
    fn check(settings: NativeSettings, probe: Probe, confinement: Confinement, plan: Plan, detail: &str) {
        let policy = NativePolicy::decide(&settings, &probe);
        assert_eq!(policy.confinement(), confinement, "{policy:?}");
        assert_eq!(policy.plan(), plan, "{policy:?}");
        assert!(policy.detail().contains(detail), "{:?} lacks {detail:?}", policy.detail());
        assert_eq!(policy.refusal().is_none(), confinement.runs_native());
    }

    #[test]
    fn confinement_follows_the_machine_and_the_operator() {
        let confined = Plan { landlock: true, user: None };
        let as_nobody = Plan { landlock: true, user: Some((65534, 65534)) };
        check(settings(true, false), probe(true, false, false), Confinement::Landlock, confined, "network denied");
        check(settings(true, false), probe(true, true, true), Confinement::Landlock, as_nobody, "run as nobody");
        // No Landlock: refused, unless the operator allows it.
        check(settings(true, false), probe(false, false, true), Confinement::Refused, Plan::default(), "unavailable");
        let unconfined = Plan { landlock: false, user: Some((65534, 65534)) };
        check(settings(true, true), probe(false, true, true), Confinement::Unconfined, unconfined, "unavailable");
        // Root without a payload user cannot confine, though Landlock works.
        check(settings(true, false), probe(true, true, false), Confinement::Refused, confined, "does not exist");
        check(settings(true, true), probe(true, true, false), Confinement::Unconfined, confined, "does not exist");
        // allow_native = false wins over everything.
        check(settings(false, true), probe(true, false, true), Confinement::Disabled, Plan::default(), "allow_native");
        let refusal = NativePolicy::decide(&settings(true, false), &probe(false, false, true)).refusal();
        assert!(refusal.is_some_and(|r| r.contains("allow_unconfined_native = false")));
    }
}
