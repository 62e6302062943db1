//! The input cache: bounded, keeping the oldest entries when full, dropping a removed job's,
//! never handing out bytes of another chunk, and leaving small chunks to the spool.

use proptest::prelude::*;

use super::*;

/// The bytes a chunk of `job` at `offset` holds in these tests: distinct for every chunk.
fn content(job: JobId, offset: u64, len: usize) -> Bytes {
    let seed = job.0.wrapping_mul(1_000_003) ^ offset;
    Bytes::from((0..len as u64).map(|i| (seed.wrapping_add(i).wrapping_mul(31) >> 3) as u8).collect::<Vec<_>>())
}

fn extent(offset: u64, len: usize) -> Extent {
    Extent { offset, len: len as u64 }
}

#[track_caller]
fn check_taken(cache: &mut InputCache, job: JobId, offset: u64, len: usize, expect: bool) {
    let taken = cache.take(job, extent(offset, len));
    assert_eq!(taken.is_some(), expect, "job {job} at {offset}");
    if let Some(bytes) = taken {
        assert_eq!(bytes, content(job, offset, len));
    }
}

#[test]
fn serves_a_chunk_once_and_only_for_its_own_extent() {
    let mut cache = InputCache::new(1 << 20, 0);
    let (a, b) = (JobId(1), JobId(2));
    cache.insert(a, extent(0, 100), content(a, 0, 100));
    cache.insert(a, extent(100, 100), content(a, 100, 100));
    // Another job at the same offset, another length at the same offset, another offset.
    check_taken(&mut cache, b, 0, 100, false);
    assert_eq!(cache.take(a, extent(0, 99)), None);
    assert_eq!(cache.take(a, extent(50, 100)), None);
    check_taken(&mut cache, a, 0, 100, true);
    // Taken on assignment: a second attempt reads the spool.
    check_taken(&mut cache, a, 0, 100, false);
    check_taken(&mut cache, a, 100, 100, true);
    assert_eq!(cache.held(), 0);
}

#[test]
fn a_full_cache_keeps_the_chunks_assigned_next() {
    let chunk = 64 << 10;
    let budget = 4 * (chunk + ENTRY_OVERHEAD);
    let mut cache = InputCache::new(budget, 0);
    let job = JobId(7);
    let at = |i: u64| i * chunk as u64;
    for i in 0..6 {
        cache.insert(job, extent(at(i), chunk), content(job, at(i), chunk));
        assert!(cache.held() <= budget);
    }
    assert_eq!(cache.held(), budget);
    // The upload ran ahead: the first four wait here, the last two were left to the spool.
    check_taken(&mut cache, job, at(0), chunk, true);
    // Room again for the next upload.
    cache.insert(job, extent(at(6), chunk), content(job, at(6), chunk));
    for i in 1..7 {
        check_taken(&mut cache, job, at(i), chunk, !matches!(i, 4 | 5));
    }
    assert_eq!(cache.held(), 0);
}

#[test]
fn keeps_nothing_it_cannot_trust_or_hold() {
    let mut cache = InputCache::new(1000, 0);
    let job = JobId(3);
    // Bytes that are not the extent's length, and bytes larger than the whole budget.
    cache.insert(job, extent(0, 10), content(job, 0, 11));
    cache.insert(job, extent(0, 2000), content(job, 0, 2000));
    assert_eq!(cache.held(), 0);
    check_taken(&mut cache, job, 0, 10, false);
}

#[test]
fn small_chunks_do_not_hold_their_receive_buffer() {
    let mut cache = InputCache::new(1 << 20, SMALLEST_CACHED);
    let job = JobId(4);
    let buffer = content(job, 0, 4096);
    cache.insert(job, extent(0, 16), buffer.slice(0..16));
    assert_eq!(cache.take(job, extent(0, 16)), None, "a small chunk is not kept, nor its buffer");
    // A large chunk is kept as it came.
    let large = content(job, 16, SMALLEST_CACHED as usize);
    cache.insert(job, extent(16, large.len()), large.clone());
    assert_eq!(cache.take(job, extent(16, large.len())).expect("cached").as_ptr(), large.as_ptr());
}

#[test]
fn a_removed_job_leaves_nothing_behind() {
    let mut cache = InputCache::new(1 << 20, 0);
    let (a, b) = (JobId(1), JobId(2));
    for offset in [0, 10, 20] {
        cache.insert(a, extent(offset, 10), content(a, offset, 10));
        cache.insert(b, extent(offset, 10), content(b, offset, 10));
    }
    cache.forget_job(a);
    assert_eq!(cache.held(), 3 * (10 + ENTRY_OVERHEAD));
    for offset in [0, 10, 20] {
        check_taken(&mut cache, a, offset, 10, false);
        check_taken(&mut cache, b, offset, 10, true);
    }
}

proptest! {
    /// Any mix of uploads (several jobs, each appending chunks of varied sizes), assignments
    /// and removed jobs: the cache stays within its budget and whatever it serves is exactly
    /// the chunk asked for.
    #[test]
    fn random_histories_stay_bounded_and_serve_only_the_right_bytes(
        steps in proptest::collection::vec((0u64..3, 0usize..3, 1usize..3000), 1..200),
        budget in 2_000usize..20_000,
    ) {
        let mut cache = InputCache::new(budget, 0);
        // Each job's file length and its chunks so far.
        let mut files: HashMap<JobId, (u64, Vec<Extent>)> = HashMap::new();
        for (job, action, size) in steps {
            let job = JobId(job);
            let (len, chunks) = files.entry(job).or_default();
            match action {
                0 | 1 => {
                    let at = extent(*len, size);
                    *len += size as u64;
                    chunks.push(at);
                    cache.insert(job, at, content(job, at.offset, size));
                }
                _ if size % 7 == 0 => cache.forget_job(job),
                _ => {
                    if let Some(at) = chunks.get(size % chunks.len().max(1)) {
                        if let Some(bytes) = cache.take(job, *at) {
                            prop_assert_eq!(bytes, content(job, at.offset, at.len as usize));
                        }
                    }
                }
            }
            prop_assert!(cache.held() <= budget);
            prop_assert_eq!(cache.held(), cache.entries.values().map(|b| b.len() + ENTRY_OVERHEAD).sum::<usize>());
        }
    }
}

#[test]
fn chunks_below_the_smallest_are_left_to_the_spool() {
    let mut cache = InputCache::new(1 << 20, 100);
    let job = JobId(3);
    cache.insert(job, extent(0, 99), content(job, 0, 99));
    cache.insert(job, extent(99, 100), content(job, 99, 100));
    assert_eq!(cache.held(), 100 + ENTRY_OVERHEAD);
    check_taken(&mut cache, job, 0, 99, false);
    check_taken(&mut cache, job, 99, 100, true);
}
