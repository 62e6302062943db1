//! The spool's appender: small and large (direct) input chunks mixed in one file, each read back
//! as written, across a reopened appender (a resumed upload); batches of results appended with
//! one call between single ones; the files of jobs the journal does not know deleted.

use super::*;

fn chunk(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (seed.wrapping_mul(7919).wrapping_add(i).wrapping_mul(31) >> 4) as u8).collect()
}

#[test]
fn input_chunks_of_every_size_read_back_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let job = JobId(5);
    // Below, at and above the direct threshold, unaligned sizes, small ones between large ones.
    let sizes = [10, DIRECT_MIN, 3, DIRECT_MIN + 1, 1 << 20, 4097, (1 << 20) + 17, 0, 100];
    let mut written = Vec::new();
    let mut appender = spool.appender(job, SpoolFile::Input).expect("appender");
    for (seed, &len) in sizes.iter().enumerate() {
        // A resumed upload opens the file again halfway.
        if seed == sizes.len() / 2 {
            appender = spool.appender(job, SpoolFile::Input).expect("reopened");
        }
        let bytes = chunk(seed as u64, len);
        let extent = appender.append(&bytes).expect("append");
        assert_eq!(extent.len, len as u64);
        written.push((extent, bytes));
    }
    for pair in written.windows(2) {
        assert!(pair[0].0.offset + pair[0].0.len <= pair[1].0.offset, "extents overlap: {:?}", (pair[0].0, pair[1].0));
    }
    let reader = spool.reader(job, SpoolFile::Input).expect("reader");
    for (extent, bytes) in &written {
        assert_eq!(&reader.read(*extent).expect("read")[..], &bytes[..], "chunk at {extent:?}");
    }
}

#[test]
fn batches_of_results_read_back_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let job = JobId(6);
    let mut appender = spool.appender(job, SpoolFile::Results).expect("appender");
    let mut written = Vec::new();
    let single = Bytes::from(chunk(100, 7));
    written.push((appender.append(&single).expect("append"), single));
    // More pieces than one `writev` takes (1,024), empty ones and a large one among them.
    let batch: Vec<Bytes> = (0..1500u64).map(|i| Bytes::from(chunk(i, [0, 1, 16, 300, 64 << 10][i as usize % 5]))).collect();
    let extents = appender.append_all(&batch).expect("append_all");
    assert_eq!(extents.len(), batch.len());
    written.extend(extents.into_iter().zip(batch));
    let last = Bytes::from(chunk(101, 9));
    written.push((appender.append(&last).expect("append"), last));
    assert_eq!(appender.append_all(&[]).expect("an empty batch"), Vec::new());
    for pair in written.windows(2) {
        assert_eq!(pair[0].0.offset + pair[0].0.len, pair[1].0.offset, "results are packed: {:?}", (pair[0].0, pair[1].0));
    }
    let reader = spool.reader(job, SpoolFile::Results).expect("reader");
    for (extent, bytes) in &written {
        assert_eq!(reader.read(*extent).expect("read"), bytes, "result at {extent:?}");
    }
}

#[test]
fn unknown_jobs_spool_files_go_whether_they_hold_data_or_were_only_prepared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let (known, stored, prepared) = (JobId(1), JobId(2), JobId(3));
    for job in [known, stored, prepared] {
        spool.appender(job, SpoolFile::Input).expect("input file");
    }
    spool.appender(stored, SpoolFile::Input).expect("appender").append(&chunk(1, 10)).expect("append");
    spool.remove_unknown(|job| job == known);
    assert!(spool.has_data(known), "a job the journal knows keeps its files");
    for gone in [stored, prepared] {
        assert!(!spool.has_data(gone), "job {gone}'s files are deleted");
    }
}
