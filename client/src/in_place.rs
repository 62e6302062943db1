//! The same-host shortcut: whether the nodes read a job's input files in place (chunks travel as
//! references, as with `shared_input`) or the submitter ships the bytes through the dispatcher.
//!
//! A job that asks for neither (`shared_input`, `ship_input`) and whose rule cuts byte ranges of
//! regular files is read in place when every connected node can read the files: each advertises
//! the `shared_input_roots` it resolved and its host identity ([`node::shared_input::host_id`]),
//! and a file below one of a node's roots is read by it, on this host or on shared storage
//! mounted at the same path. Otherwise the bytes are shipped, as before. The references carry
//! each file's fingerprint, so a node that finds another file at the path (another host's, or
//! the file rewritten since) rejects the job instead of reading it, and a node that joins later
//! and cannot read the path rejects it too: the dispatcher then places the chunks elsewhere.

use std::fmt;
use std::path::{Path, PathBuf};

use wire::proto::NodeStatus;

use crate::job::JobDescription;
use crate::{Client, ClientError};

/// Which way a job's input goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputRoute {
    /// The job asked for it (`shared_input`).
    InPlaceAsked,
    /// The nodes of an embedded `--local` cluster, on this machine, read the files.
    InPlaceLocal,
    /// Every connected node can read the files: those on this host, and those that see them on
    /// shared storage under their roots.
    InPlace {
        /// Nodes on this host.
        same_host: Vec<String>,
        /// Nodes on other hosts whose roots cover the files.
        shared_storage: Vec<String>,
    },
    /// The job asked for it (`ship_input`).
    ShippedAsked,
    /// Only a bytes rule over regular files can be read in place.
    ShippedNotByteRanges,
    /// No node is connected to say whether it could read the files.
    ShippedNoNodes,
    /// These connected nodes cannot read the files (no root of theirs covers them).
    ShippedUnreadable {
        /// Their names.
        nodes: Vec<String>,
    },
}

impl InputRoute {
    /// Whether the nodes read the input themselves.
    pub fn in_place(&self) -> bool {
        matches!(self, InputRoute::InPlaceAsked | InputRoute::InPlaceLocal | InputRoute::InPlace { .. })
    }

    /// `"in place"` or `"shipped"`, for `--json` output.
    pub fn name(&self) -> &'static str {
        if self.in_place() {
            "in place"
        } else {
            "shipped"
        }
    }
}

impl fmt::Display for InputRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputRoute::InPlaceAsked => f.write_str("input read in place by the nodes (shared input asked for)"),
            InputRoute::InPlaceLocal => f.write_str("input read in place by the local nodes"),
            InputRoute::InPlace { same_host, shared_storage } => {
                f.write_str("input read in place by the nodes, not shipped: ")?;
                let mut groups = Vec::new();
                if !same_host.is_empty() {
                    groups.push(format!("{} on this host", same_host.join(", ")));
                }
                if !shared_storage.is_empty() {
                    groups.push(format!("{} from shared storage", shared_storage.join(", ")));
                }
                write!(f, "{} (--ship-input ships it)", groups.join("; "))
            }
            InputRoute::ShippedAsked => f.write_str("input shipped through the dispatcher (--ship-input)"),
            InputRoute::ShippedNotByteRanges => f.write_str(
                "input shipped through the dispatcher (only a bytes split rule over regular files is read in place)",
            ),
            InputRoute::ShippedNoNodes => {
                f.write_str("input shipped through the dispatcher (no node is connected to read it in place)")
            }
            InputRoute::ShippedUnreadable { nodes } => write!(
                f,
                "input shipped through the dispatcher ({} cannot read it in place: outside their shared_input_roots)",
                nodes.join(", ")
            ),
        }
    }
}

/// Who would read the input in place.
#[derive(Debug, Clone, Copy)]
pub enum Readers<'a> {
    /// The nodes of an embedded `--local` cluster, which read anything on this machine.
    Local,
    /// A real cluster's connected nodes, as the dispatcher lists them, and this host's identity.
    Listed {
        /// The nodes.
        nodes: &'a [NodeStatus],
        /// [`node::shared_input::host_id`] here.
        host_id: &'a str,
    },
}

/// Which way `job`'s input goes; `None` for a job without input files (a range rule, object
/// URLs, which nodes always read themselves).
pub fn decide(job: &JobDescription, readers: Readers<'_>) -> Option<InputRoute> {
    if job.inputs.is_empty() || job.has_object_input() {
        return None;
    }
    if job.shared_input {
        return Some(InputRoute::InPlaceAsked);
    }
    if job.ship_input {
        return Some(InputRoute::ShippedAsked);
    }
    let files: Option<Vec<PathBuf>> = job.inputs.iter().map(|input| input.canonicalize().ok()).collect();
    let files = match files {
        Some(files) if job.can_share_input() => files,
        _ => return Some(InputRoute::ShippedNotByteRanges),
    };
    let Readers::Listed { nodes, host_id } = readers else {
        return Some(InputRoute::InPlaceLocal);
    };
    // Nodes listed only because they are held while disconnected run nothing.
    let connected: Vec<&NodeStatus> = nodes.iter().filter(|node| node.address != "-").collect();
    if connected.is_empty() {
        return Some(InputRoute::ShippedNoNodes);
    }
    let unreadable: Vec<String> =
        connected.iter().filter(|node| !can_read(node, &files)).map(|node| node.name.clone()).collect();
    if !unreadable.is_empty() {
        return Some(InputRoute::ShippedUnreadable { nodes: unreadable });
    }
    let (same_host, shared_storage): (Vec<&NodeStatus>, Vec<&NodeStatus>) =
        connected.into_iter().partition(|node| !host_id.is_empty() && node.host_id == host_id);
    let names = |nodes: Vec<&NodeStatus>| nodes.into_iter().map(|node| node.name.clone()).collect();
    Some(InputRoute::InPlace { same_host: names(same_host), shared_storage: names(shared_storage) })
}

/// Makes `job` follow `route`: an in-place route turns on `shared_input`, with absolute paths
/// so that they mean the same whatever directory a node resolves them from.
pub fn apply(job: &mut JobDescription, route: &InputRoute) {
    if !route.in_place() {
        return;
    }
    if let Ok(inputs) = job.inputs.iter().map(std::path::absolute).collect::<Result<Vec<_>, _>>() {
        job.inputs = inputs;
        job.shared_input = true;
    }
}

/// Whether every one of `files` (canonical) lies below one of `node`'s resolved roots.
fn can_read(node: &NodeStatus, files: &[PathBuf]) -> bool {
    files.iter().all(|file| node.shared_input_roots.iter().any(|root| file.starts_with(Path::new(root))))
}

impl Client {
    /// Decides which way `job`'s input goes on this cluster ([`decide`] over the connected
    /// nodes) and makes the job follow it ([`apply`]). `dispy-submit run` and `submit` call it;
    /// a program using [`Client::run`] or [`Client::submit`] directly ships the bytes unless it
    /// calls it or sets `shared_input`.
    ///
    /// # Errors
    /// [`ClientError`] when the nodes cannot be listed.
    pub async fn route_input(&mut self, job: &mut JobDescription) -> Result<Option<InputRoute>, ClientError> {
        if job.inputs.is_empty() || job.has_object_input() {
            return Ok(None);
        }
        let nodes = self.nodes().await?;
        let host_id = node::shared_input::host_id();
        let route = decide(job, Readers::Listed { nodes: &nodes, host_id: &host_id });
        if let Some(route) = &route {
            apply(job, route);
        }
        Ok(route)
    }
}

#[cfg(test)]
mod tests;
