//! Writing a job's results on the submitter's side: one file (`concat`) or one file per chunk
//! (`files`), always under a temporary name until [`OutputSink::commit`].
//!
//! Everything is synced before `commit` returns: the client then releases the job, and the
//! dispatcher deletes its copy of the results.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use wire::proto::{ChunkIndex, ResultMode};

/// Results in progress; dropping it without committing removes everything written.
#[derive(Debug)]
pub(crate) struct OutputSink {
    target: PathBuf,
    temporary: PathBuf,
    writer: Option<BufWriter<File>>,
    committed: bool,
    /// The job reduces its results: the output is its one combined result.
    reduce: bool,
}

impl OutputSink {
    /// Prepares the temporary file or directory next to `target`.
    pub(crate) fn create(target: &Path, mode: ResultMode) -> std::io::Result<Self> {
        let temporary = temporary_sibling(target);
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let writer = match mode {
            ResultMode::Concat | ResultMode::Reduce => Some(BufWriter::with_capacity(1 << 20, File::create(&temporary)?)),
            ResultMode::Files => {
                std::fs::create_dir_all(&temporary)?;
                None
            }
        };
        Ok(Self { target: target.to_owned(), temporary, writer, committed: false, reduce: mode == ResultMode::Reduce })
    }

    /// How many results a job of `chunks` chunks sends: one each, or for a reduce job one in all
    /// (none without chunks).
    pub(crate) fn expected_results(&self, chunks: u64) -> u64 {
        if self.reduce { chunks.min(1) } else { chunks }
    }

    /// Writes the result of chunk `index` (results arrive in chunk order).
    pub(crate) fn write(&mut self, index: ChunkIndex, result: &[u8]) -> std::io::Result<()> {
        match &mut self.writer {
            Some(writer) => writer.write_all(result),
            None => {
                let mut file = File::create(self.temporary.join(format!("chunk-{index:06}")))?;
                file.write_all(result)?;
                file.sync_all()
            }
        }
    }

    /// Flushes, syncs and renames the output into place; returns its final path.
    pub(crate) fn commit(mut self) -> std::io::Result<PathBuf> {
        if let Some(writer) = self.writer.take() {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        } else {
            // The chunk files' names live in the directory.
            File::open(&self.temporary)?.sync_all()?;
            if self.target.is_dir() {
                // An existing (empty) directory is replaced; a non-empty one makes rename fail.
                std::fs::remove_dir(&self.target)?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let entries = std::fs::read_dir(dir).expect("list the directory");
        let mut names: Vec<String> =
            entries.map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn concat_appears_whole_under_its_name_only_on_commit() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let target = dir.path().join("out.bin");
        let mut sink = OutputSink::create(&target, ResultMode::Concat).expect("create");
        sink.write(0, b"one ").expect("write");
        sink.write(1, b"two").expect("write");
        assert!(!target.exists(), "the output showed before the commit");
        assert_eq!(sink.commit().expect("commit"), target);
        assert_eq!(std::fs::read(&target).expect("read"), b"one two");
        assert_eq!(names(dir.path()), ["out.bin"]);
    }

    /// A `files` sink whose target directory `chunks` already exists, holding `files`.
    fn files_sink_over(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf, OutputSink) {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let target = dir.path().join("chunks");
        std::fs::create_dir(&target).expect("create the target");
        for (name, bytes) in files {
            std::fs::write(target.join(name), bytes).expect("write");
        }
        let sink = OutputSink::create(&target, ResultMode::Files).expect("create");
        (dir, target, sink)
    }

    #[test]
    fn files_become_a_directory_replacing_an_empty_one() {
        let (dir, target, mut sink) = files_sink_over(&[]);
        sink.write(0, b"a").expect("write");
        sink.write(1, b"").expect("write");
        sink.write(2, b"ccc").expect("write");
        assert!(names(&target).is_empty(), "chunk files showed before the commit");
        sink.commit().expect("commit");
        assert_eq!(names(&target), ["chunk-000000", "chunk-000001", "chunk-000002"]);
        assert_eq!(std::fs::read(target.join("chunk-000002")).expect("read"), b"ccc");
        assert_eq!(names(dir.path()), ["chunks"]);
    }

    #[test]
    fn a_non_empty_directory_is_not_replaced() {
        let (dir, target, mut sink) = files_sink_over(&[("precious", b"keep")]);
        sink.write(0, b"a").expect("write");
        assert!(sink.commit().is_err());
        assert_eq!(names(&target), ["precious"]);
        assert_eq!(names(dir.path()), ["chunks"], "the partial directory was left behind");
    }

    #[test]
    fn dropping_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        for mode in [ResultMode::Concat, ResultMode::Files] {
            let mut sink = OutputSink::create(&dir.path().join("out"), mode).expect("create");
            sink.write(0, b"partial").expect("write");
            drop(sink);
            assert!(names(dir.path()).is_empty(), "{mode:?} left {:?}", names(dir.path()));
        }
    }
}
