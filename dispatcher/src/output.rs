//! Writing a job's results on the submitter's side: one file (`concat`) or one file per chunk
//! (`files`), always under a temporary name until [`OutputSink::commit`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use common::proto::{ChunkIndex, ResultMode};

/// Results in progress; dropping it without committing removes everything written.
#[derive(Debug)]
pub(crate) struct OutputSink {
    target: PathBuf,
    temporary: PathBuf,
    writer: Option<BufWriter<File>>,
    committed: bool,
}

impl OutputSink {
    /// Prepares the temporary file or directory next to `target`.
    pub(crate) fn create(target: &Path, mode: ResultMode) -> std::io::Result<Self> {
        let temporary = temporary_sibling(target);
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let writer = match mode {
            ResultMode::Concat => Some(BufWriter::with_capacity(1 << 20, File::create(&temporary)?)),
            ResultMode::Files => {
                std::fs::create_dir_all(&temporary)?;
                None
            }
        };
        Ok(Self { target: target.to_owned(), temporary, writer, committed: false })
    }

    /// Writes the result of chunk `index` (results arrive in chunk order).
    pub(crate) fn write(&mut self, index: ChunkIndex, result: &[u8]) -> std::io::Result<()> {
        match &mut self.writer {
            Some(writer) => writer.write_all(result),
            None => std::fs::write(self.temporary.join(format!("chunk-{index:06}")), result),
        }
    }

    /// Flushes, syncs and renames the output into place; returns its final path.
    pub(crate) fn commit(mut self) -> std::io::Result<PathBuf> {
        if let Some(writer) = self.writer.take() {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        } else if self.target.is_dir() {
            // An existing (empty) directory is replaced; a non-empty one makes rename fail.
            std::fs::remove_dir(&self.target)?;
        }
        std::fs::rename(&self.temporary, &self.target)?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for OutputSink {
    fn drop(&mut self) {
        if !self.committed {
            self.writer = None;
            // Best effort: the temporary name is ours alone, and nothing else can be done here.
            let _ = std::fs::remove_file(&self.temporary).or_else(|_| std::fs::remove_dir_all(&self.temporary));
        }
    }
}

/// The temporary sibling path used while a job runs: hidden, and unique to this process.
fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.dispy-partial-{}", std::process::id()))
}
