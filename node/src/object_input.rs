//! Object input: chunks whose segments name byte ranges of objects (`s3://BUCKET/KEY`,
//! `https://…`) instead of files, read with ranged GETs through Apache Arrow's `object_store`.
//!
//! Nodes read their chunks' bytes here, so nothing of the input passes through the dispatcher;
//! the submitter uses the same [`ObjectStores`] to size, list and (for `lines:N`) scan objects.
//! A node reads only what its operator allowed ([`Allowlist`], the `object_store_buckets` key):
//! bucket names for `s3://` URLs, URL prefixes for `https://` ones. Endpoint, region and
//! credentials come from the standard `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), the endpoint
//! optionally from the node's `object_store_endpoint`. Reads happen on slot threads and the
//! submitter's input reader, which are synchronous: [`ObjectStores`] owns a one-thread runtime
//! and blocks on it, holding at most one chunk's range in memory.

mod align;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use thiserror::Error;
use wire::chunk::ChunkRef;

use align::{read_aligned, AlignError};

/// How long one request may take before it fails (and is retried, up to [`RETRIES`] times).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of a failed request inside one read; the chunk's own attempts come on top.
const RETRIES: usize = 2;

/// An object's location, parsed from an input URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectUrl {
    /// `s3://BUCKET/KEY`; an empty key or one ending in `/` is a prefix (for `files`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key, without a leading `/`.
        key: String,
    },
    /// `https://HOST/PATH` (or `http://`, allowed only with `AWS_ALLOW_HTTP=true`).
    Http {
        /// `https://HOST[:PORT]`.
        origin: String,
        /// The path, without the leading `/`.
        path: String,
    },
}

impl ObjectUrl {
    /// Parses `s3://BUCKET/KEY`, `https://HOST/PATH` or `http://HOST/PATH`.
    ///
    /// # Errors
    /// [`ObjectError::BadUrl`] for another scheme, a missing bucket or host, or a query string.
    pub fn parse(text: &str) -> Result<Self, ObjectError> {
        let bad = |reason: &str| ObjectError::BadUrl { url: text.to_owned(), reason: reason.to_owned() };
        if text.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported"));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket"));
            }
            return Ok(ObjectUrl::S3 { bucket: bucket.to_owned(), key: key.to_owned() });
        }
        let scheme = ["https://", "http://"].into_iter().find(|scheme| text.starts_with(scheme));
        let Some(scheme) = scheme else {
            return Err(bad("expected s3://BUCKET/KEY or an https:// URL"));
        };
        let rest = &text[scheme.len()..];
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ObjectUrl::Http { origin: format!("{scheme}{host}"), path: path.to_owned() })
    }

    /// Whether this names a prefix (an empty key or one ending in `/`) rather than one object.
    pub fn is_prefix(&self) -> bool {
        match self {
            ObjectUrl::S3 { key, .. } => key.is_empty() || key.ends_with('/'),
            ObjectUrl::Http { path, .. } => path.is_empty() || path.ends_with('/'),
        }
    }

    /// What an operator lists in `object_store_buckets` to allow this URL, for messages: the
    /// bucket name, or the URL itself.
    pub fn allow_entry(&self) -> String {
        match self {
            ObjectUrl::S3 { bucket, .. } => bucket.clone(),
            ObjectUrl::Http { .. } => self.to_string(),
        }
    }

    fn object_path(&self) -> Result<Path, ObjectError> {
        let raw = match self {
            ObjectUrl::S3 { key, .. } => key,
            ObjectUrl::Http { path, .. } => path,
        };
        let parsed = match self {
            ObjectUrl::S3 { .. } => Path::parse(raw.trim_end_matches('/')),
            ObjectUrl::Http { .. } => Path::from_url_path(raw.trim_end_matches('/')),
        };
        parsed.map_err(|e| ObjectError::BadUrl { url: self.to_string(), reason: e.to_string() })
    }

    /// The store a URL is read through: one per bucket, or per origin.
    fn store_key(&self) -> String {
        match self {
            ObjectUrl::S3 { bucket, .. } => format!("s3://{bucket}"),
            ObjectUrl::Http { origin, .. } => origin.clone(),
        }
    }

    /// The URL of `path` in the same bucket or origin.
    fn sibling(&self, path: &Path) -> ObjectUrl {
        match self {
            ObjectUrl::S3 { bucket, .. } => ObjectUrl::S3 { bucket: bucket.clone(), key: path.to_string() },
            ObjectUrl::Http { origin, .. } => ObjectUrl::Http { origin: origin.clone(), path: path.to_string() },
        }
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectUrl::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            ObjectUrl::Http { origin, path } => write!(f, "{origin}/{path}"),
        }
    }
}

/// The objects a node may read: its `object_store_buckets`. An entry is a bucket name, allowing
/// every `s3://NAME/…` URL, or an `https://` (`http://`) URL prefix, allowing URLs that start
/// with it at a path boundary (`https://h/data` allows `https://h/data/x`, not
/// `https://h/database`; `https://h` allows nothing on `https://h.evil.org`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<String>);

impl Allowlist {
    /// The list from the node's `object_store_buckets`.
    pub fn new(entries: Vec<String>) -> Self {
        Self(entries)
    }

    /// Whether `url` may be read.
    pub fn allows(&self, url: &ObjectUrl) -> bool {
        self.0.iter().any(|entry| match url {
            ObjectUrl::S3 { bucket, .. } => entry == bucket,
            ObjectUrl::Http { .. } => {
                let text = url.to_string();
                let is_url = entry.starts_with("https://") || entry.starts_with("http://");
                is_url
                    && text.strip_prefix(entry.as_str()).is_some_and(|rest| {
                        entry.ends_with('/') || rest.is_empty() || rest.starts_with('/')
                    })
            }
        })
    }

    /// Checks every object segment of `chunk`.
    ///
    /// # Errors
    /// [`ObjectError::BadUrl`] or [`ObjectError::NotAllowed`] for the first segment refused.
    pub fn check(&self, chunk: &ChunkRef) -> Result<(), ObjectError> {
        for segment in &chunk.segments {
            let url = ObjectUrl::parse(&segment.path)?;
            if !self.allows(&url) {
                return Err(ObjectError::NotAllowed { entry: url.allow_entry(), url: url.to_string() });
            }
        }
        Ok(())
    }
}

/// Why object input could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The text is not an object URL dispy reads.
    #[error("object input {url}: {reason}")]
    BadUrl {
        /// The text.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The node's operator did not allow this bucket or URL.
    #[error("object input {url}: {entry} is not in this node's object_store_buckets")]
    NotAllowed {
        /// The URL.
        url: String,
        /// The bucket (or URL) the operator would list to allow it.
        entry: String,
    },
    /// The object does not exist.
    #[error("object input {url}: no such object")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// The store refused or failed the request (denied, connection lost, timed out).
    #[error("object input {url}: {message}")]
    Store {
        /// The URL.
        url: String,
        /// The store's error.
        message: String,
    },
    /// A chunk's bytes exceed what the node accepts.
    #[error("object-input chunk of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The chunk's size (at least).
        len: u64,
        /// The limit (the job's memory limit).
        max: u64,
    },
    /// The runtime that drives requests could not start.
    #[error("cannot start the object-store runtime: {0}")]
    Runtime(std::io::Error),
}

impl ObjectError {
    fn store(url: &ObjectUrl, error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => ObjectError::NotFound { url: url.to_string() },
            other => ObjectError::Store { url: url.to_string(), message: compact(&other) },
        }
    }
}

/// An error's chain on one line (object_store nests the HTTP status and the server's words).
fn compact(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = inner.source();
    }
    text
}

/// What a node reads object input with: its stores and its operator's allowlist.
#[derive(Debug)]
pub struct NodeObjects {
    /// The stores, configured from the environment and `object_store_endpoint`.
    pub stores: ObjectStores,
    /// The node's `object_store_buckets`.
    pub allow: Allowlist,
}

impl NodeObjects {
    /// Whether `chunk` (a shared-input chunk reference) names objects, and if so whether this
    /// node may read them: `Some(reason)` when it may not.
    pub fn refusal(objects: Option<&Self>, chunk: &ChunkRef) -> Option<String> {
        if !chunk.segments.iter().any(|s| wire::chunk::is_object_url(&s.path)) {
            return None;
        }
        match objects {
            None => Some(
                "this node reads no object input (its object_store_buckets setting is empty)".to_owned(),
            ),
            Some(objects) => objects.allow.check(chunk).err().map(|e| e.to_string()),
        }
    }
}

/// The stores object input is read through, one per bucket or origin, created on first use and
/// driven by a runtime of their own, so synchronous callers (slot threads, the submitter's input
/// reader) can block on them.
pub struct ObjectStores {
    /// `None` only while dropping (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    /// Overrides `AWS_ENDPOINT_URL` (the node's `object_store_endpoint`).
    endpoint: Option<String>,
    /// CA certificates trusted besides the system's (the node's `object_store_ca_file`).
    roots: Vec<object_store::Certificate>,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl fmt::Debug for ObjectStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStores").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Drop for ObjectStores {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics on an async thread; this does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ObjectStores {
    /// Stores configured from the `AWS_*` environment, with `endpoint` overriding
    /// `AWS_ENDPOINT_URL` when given.
    ///
    /// # Errors
    /// [`ObjectError::Runtime`] when no thread can be started.
    pub fn new(endpoint: Option<String>) -> Result<Self, ObjectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dispy-object-io")
            .enable_all()
            .build()
            .map_err(ObjectError::Runtime)?;
        Ok(Self { runtime: Some(runtime), endpoint, roots: Vec::new(), stores: Mutex::default() })
    }

    /// These stores with `roots` trusted for HTTPS besides the system's certificates.
    pub fn trusting(mut self, roots: Vec<object_store::Certificate>) -> Self {
        self.roots = roots;
        self
    }

    /// The object's size.
    ///
    /// # Errors
    /// [`ObjectError::NotFound`], or [`ObjectError::Store`] when the store fails or denies it.
    pub fn size(&self, url: &ObjectUrl) -> Result<u64, ObjectError> {
        let (store, path) = self.locate(url)?;
        let meta = self.block_on(store.head(&path)).map_err(|e| ObjectError::store(url, e))?;
        Ok(meta.size)
    }

    /// The objects below a prefix URL with their sizes, sorted by URL; for a URL that is not a
    /// prefix, that one object. Only `s3://` prefixes can be listed.
    ///
    /// # Errors
    /// As [`ObjectStores::size`]; [`ObjectError::BadUrl`] for an `https://` prefix.
    pub fn list(&self, url: &ObjectUrl) -> Result<Vec<(ObjectUrl, u64)>, ObjectError> {
        if !url.is_prefix() {
            return Ok(vec![(url.clone(), self.size(url)?)]);
        }
        if let ObjectUrl::Http { .. } = url {
            return Err(ObjectError::BadUrl {
                url: url.to_string(),
                reason: "an https:// URL cannot be listed; name each object".into(),
            });
        }
        let (store, path) = self.locate(url)?;
        let prefix = (!path.as_ref().is_empty()).then_some(&path);
        let listed: Vec<_> = self.block_on(store.list(prefix).collect::<Vec<_>>());
        let mut objects = Vec::with_capacity(listed.len());
        for meta in listed {
            let meta = meta.map_err(|e| ObjectError::store(url, e))?;
            objects.push((url.sibling(&meta.location), meta.size));
        }
        objects.sort_by_key(|(url, _)| url.to_string());
        Ok(objects)
    }

    /// `len` bytes of the object from `offset`.
    ///
    /// # Errors
    /// As [`ObjectStores::size`].
    pub fn read_range(&self, url: &ObjectUrl, offset: u64, len: u64) -> Result<Vec<u8>, ObjectError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let (store, path) = self.locate(url)?;
        let bytes = self
            .block_on(store.get_range(&path, offset..offset + len))
            .map_err(|e| ObjectError::store(url, e))?;
        if bytes.len() as u64 != len {
            return Err(ObjectError::Store {
                url: url.to_string(),
                message: format!("asked for {len} bytes at {offset}, got {} (the object changed?)", bytes.len()),
            });
        }
        Ok(bytes.to_vec())
    }

    /// The whole object as a stream of pieces, read as the caller iterates, so scanning an
    /// object holds one piece at a time.
    ///
    /// # Errors
    /// As [`ObjectStores::size`].
    pub fn stream(self: &Arc<Self>, url: &ObjectUrl) -> Result<ObjectStream, ObjectError> {
        let (store, path) = self.locate(url)?;
        let result = self.block_on(store.get(&path)).map_err(|e| ObjectError::store(url, e))?;
        Ok(ObjectStream { stores: Arc::clone(self), url: url.clone(), stream: result.into_stream() })
    }

    /// Reads an object-input chunk: every segment's range, or for a `lines:auto` chunk its range
    /// moved to whole lines ([`wire::chunk::LineAlign`]). Refuses segments `allow` does not
    /// cover and chunks over `max` bytes.
    ///
    /// # Errors
    /// [`ObjectError::NotAllowed`], [`ObjectError::TooLarge`], or a read's error.
    pub fn read_chunk(&self, chunk: &ChunkRef, allow: &Allowlist, max: u64) -> Result<Vec<u8>, ObjectError> {
        allow.check(chunk)?;
        let total = chunk.len();
        if let (Some(align), [segment]) = (chunk.align, chunk.segments.as_slice()) {
            let url = ObjectUrl::parse(&segment.path)?;
            let read = |at, n| self.read_range(&url, at, n);
            return read_aligned(segment.offset, segment.len, align.object_len, max, read).map_err(|e| match e {
                AlignError::Read(e) => e,
                AlignError::TooLarge(max) => ObjectError::TooLarge { len: max + 1, max },
            });
        }
        if total > max {
            return Err(ObjectError::TooLarge { len: total, max });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for segment in &chunk.segments {
            let url = ObjectUrl::parse(&segment.path)?;
            bytes.extend_from_slice(&self.read_range(&url, segment.offset, segment.len)?);
        }
        Ok(bytes)
    }

    /// Writes an object (tests and benchmarks create their inputs with it).
    ///
    /// # Errors
    /// As [`ObjectStores::size`].
    pub fn put(&self, url: &ObjectUrl, bytes: Vec<u8>) -> Result<(), ObjectError> {
        let (store, path) = self.locate(url)?;
        self.block_on(store.put(&path, bytes.into())).map(drop).map_err(|e| ObjectError::store(url, e))
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        // Invariant: `runtime` is `None` only inside `drop`.
        #[allow(clippy::unwrap_used)]
        self.runtime.as_ref().unwrap().block_on(future)
    }

    /// The store for `url` (built on first use) and the object's path in it.
    fn locate(&self, url: &ObjectUrl) -> Result<(Arc<dyn ObjectStore>, Path), ObjectError> {
        let path = url.object_path()?;
        let key = url.store_key();
        let mut stores = self.stores.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = stores.get(&key) {
            return Ok((Arc::clone(store), path));
        }
        let store = self.build(url).map_err(|e| ObjectError::Store { url: url.to_string(), message: compact(&e) })?;
        stores.insert(key, Arc::clone(&store));
        Ok((store, path))
    }

    fn build(&self, url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        let retry = RetryConfig { max_retries: RETRIES, retry_timeout: REQUEST_TIMEOUT * 2, ..RetryConfig::default() };
        let seconds = |d: Duration| format!("{}s", d.as_secs());
        let trusted = |options: ClientOptions| self.roots.iter().cloned().fold(options, ClientOptions::with_root_certificate);
        Ok(match url {
            ObjectUrl::S3 { bucket, .. } => {
                // `from_env` over trusted client options: set after it, they would drop what it
                // read into them (AWS_ALLOW_HTTP, proxies); the timeouts below go into them too.
                let mut builder = AmazonS3Builder::new().with_client_options(trusted(ClientOptions::new()));
                // `vars_os`, as `from_env`: `vars` panics on a variable that is not UTF-8.
                for (name, value) in std::env::vars_os() {
                    let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else { continue };
                    if let Some(key) = name.starts_with("AWS_").then(|| name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>().ok()).flatten() {
                        builder = builder.with_config(key, value);
                    }
                }
                builder = builder
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), seconds(REQUEST_TIMEOUT))
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), seconds(CONNECT_TIMEOUT));
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                Arc::new(builder.build()?)
            }
            ObjectUrl::Http { origin, .. } => {
                let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
                let options = trusted(ClientOptions::new())
                    .with_allow_http(allow_http)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT);
                Arc::new(HttpBuilder::new().with_url(origin).with_client_options(options).with_retry(retry).build()?)
            }
        })
    }
}

/// The CA certificates in the PEM file at `path` (a node's `object_store_ca_file`).
///
/// # Errors
/// Text for the operator when the file cannot be read or holds no certificate.
pub fn read_certificates(path: &std::path::Path) -> Result<Vec<object_store::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match object_store::Certificate::from_pem_bundle(&pem) {
        Ok(roots) if !roots.is_empty() => Ok(roots),
        Ok(_) => Err(format!("{} holds no PEM certificate", path.display())),
        Err(e) => Err(format!("{} is not a PEM certificate bundle: {}", path.display(), compact(&e))),
    }
}

/// An object read piece by piece ([`ObjectStores::stream`]).
pub struct ObjectStream {
    stores: Arc<ObjectStores>,
    url: ObjectUrl,
    stream: BoxStream<'static, object_store::Result<bytes::Bytes>>,
}

impl fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStream").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Iterator for ObjectStream {
    type Item = Result<bytes::Bytes, ObjectError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.stores.block_on(self.stream.next())?;
        Some(next.map_err(|e| ObjectError::store(&self.url, e)))
    }
}

#[cfg(test)]
mod tests;
