//! Object input on a job description: whether its inputs are object URLs (`s3://`, `https://`),
//! the chunks they are cut into, the buckets a node must allow to read them, and the rule that
//! objects and local files do not mix in one job.

use std::path::PathBuf;

use super::JobDescription;

impl JobDescription {
    /// Whether the job's inputs are objects (`s3://…`, `https://…`) that nodes read themselves
    /// with ranged GETs; [`JobDescription::validate`] refuses a mix of objects and files.
    pub fn has_object_input(&self) -> bool {
        self.inputs.iter().any(|input| wire::chunk::is_object_url(&input.to_string_lossy()))
    }

    /// The job's chunk inputs, cut by its rule: object references for object input (see
    /// [`SplitRule::object_chunks`]; this makes requests, so call it off the async runtime),
    /// file references for shared input, the bytes otherwise.
    ///
    /// # Errors
    /// As [`SplitRule::chunks`] and its shared and object forms.
    pub fn input_chunks(&self) -> Result<crate::split::Chunks, crate::split::SplitError> {
        if self.has_object_input() {
            let stores = node::object_input::ObjectStores::new(None)?;
            self.split.object_chunks(&self.inputs, std::sync::Arc::new(stores))
        } else if self.shared_input {
            self.split.shared_chunks(&self.inputs)
        } else {
            self.split.chunks(&self.inputs)
        }
    }

    /// What a node's `object_store_buckets` must list to read this job's object input.
    pub fn object_buckets(&self) -> Vec<String> {
        let mut entries: Vec<String> = self
            .inputs
            .iter()
            .filter_map(|input| node::object_input::ObjectUrl::parse(&input.to_string_lossy()).ok())
            .map(|url| url.allow_entry())
            .collect();
        entries.sort();
        entries.dedup();
        entries
    }

}

/// Object URLs and files cannot be mixed in one job: nodes read the one, the submitter the other.
pub(super) fn check_inputs(inputs: &[PathBuf]) -> Result<(), String> {
    let objects = inputs.iter().filter(|input| wire::chunk::is_object_url(&input.to_string_lossy())).count();
    if objects > 0 && objects < inputs.len() {
        return Err("object URLs (s3://, https://) and local files cannot be mixed in one job; submit them as separate jobs".into());
    }
    Ok(())
}

