//! Which connected nodes can read a job's object input, from the buckets and URL prefixes they
//! advertise (`object_store_buckets`), so the submitter is told before any chunk runs, and a job
//! no node can read is refused instead of waiting. Nodes enforce the same rule themselves: one
//! that may not read a chunk's object rejects the job and the dispatcher places its chunks
//! elsewhere.

use std::fmt;

use node::object_input::{Allowlist, ObjectUrl};
use wire::proto::NodeStatus;

use crate::job::JobDescription;

/// The connected nodes that can and cannot read a job's object input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readers {
    /// The input as given (the first URL, and how many more).
    pub input: String,
    /// Names of nodes whose `object_store_buckets` cover every input URL.
    pub readable: Vec<String>,
    /// Names of the other connected nodes, with the entry they lack.
    pub unreadable: Vec<(String, String)>,
}

impl Readers {
    /// Whether nodes are connected and none of them can read the input.
    pub fn none_can_read(&self) -> bool {
        self.readable.is_empty() && !self.unreadable.is_empty()
    }
}

impl fmt::Display for Readers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input {}: ", self.input)?;
        if self.readable.is_empty() && self.unreadable.is_empty() {
            return f.write_str("no node is connected to read it yet");
        }
        if self.readable.is_empty() {
            f.write_str("readable by no connected node")?;
        } else {
            write!(f, "readable by {}", self.readable.join(", "))?;
        }
        if !self.unreadable.is_empty() {
            let names: Vec<&str> = self.unreadable.iter().map(|(name, _)| name.as_str()).collect();
            let mut entries: Vec<&str> = self.unreadable.iter().map(|(_, entry)| entry.as_str()).collect();
            entries.dedup();
            write!(f, "; not by {} ({} not in its object_store_buckets)", names.join(", "), entries.join(", "))?;
        }
        Ok(())
    }
}

/// Who among `nodes` can read `job`'s object input; `None` for a job without object input.
/// Nodes listed only because they are drained while disconnected are left out.
pub fn object_readers(job: &JobDescription, nodes: &[NodeStatus]) -> Option<Readers> {
    if !job.has_object_input() {
        return None;
    }
    let urls: Vec<ObjectUrl> = job.inputs.iter().filter_map(|p| ObjectUrl::parse(&p.to_string_lossy()).ok()).collect();
    let first = job.inputs.first().map(|p| p.display().to_string()).unwrap_or_default();
    let input = match job.inputs.len() {
        0 | 1 => first,
        n => format!("{first} (and {} more)", n - 1),
    };
    let mut readers = Readers { input, readable: Vec::new(), unreadable: Vec::new() };
    for node in nodes.iter().filter(|node| node.address != "-") {
        let allow = Allowlist::new(node.object_store_buckets.clone());
        match urls.iter().find(|url| !allow.allows(url)) {
            None => readers.readable.push(node.name.clone()),
            Some(url) => readers.unreadable.push((node.name.clone(), url.allow_entry())),
        }
    }
    Some(readers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::SplitRule;

    fn node(name: &str, buckets: &[&str]) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            object_store_buckets: buckets.iter().map(|b| (*b).to_owned()).collect(),
            ..NodeStatus::default()
        }
    }

    #[test]
    fn says_who_can_read() {
        let mut job = JobDescription::new("p.wasm".into(), SplitRule::Bytes(10), "out".into());
        assert_eq!(object_readers(&job, &[]), None, "no object input");
        job.inputs = vec!["s3://logs/a.txt".into()];
        let nodes = [node("n1", &["logs"]), node("n2", &["other", "logs"]), node("n3", &[])];
        let readers = object_readers(&job, &nodes).expect("object input");
        assert_eq!(
            readers.to_string(),
            "input s3://logs/a.txt: readable by n1, n2; not by n3 (logs not in its object_store_buckets)"
        );
        assert!(!readers.none_can_read());
        let nobody = object_readers(&job, &nodes[2..]).expect("object input");
        assert!(nobody.none_can_read());
        assert_eq!(nobody.to_string(), "input s3://logs/a.txt: readable by no connected node; not by n3 (logs not in its object_store_buckets)");
        let alone = object_readers(&job, &[]).expect("object input");
        assert!(!alone.none_can_read(), "a node may still join");
    }
}
