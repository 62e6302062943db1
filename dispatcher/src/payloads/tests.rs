//! Tests of the payload store: concurrent stores, and the memory cap's eviction order.

use std::sync::Barrier;

use super::*;

fn payload(seed: u8, len: usize) -> (PayloadHash, Vec<u8>) {
    let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    (PayloadHash::of(&bytes), bytes)
}

/// The race of issue 18: concurrent stores of one payload shared one temporary name, so all but
/// the first rename failed with "No such file or directory".
#[test]
fn concurrent_stores_of_one_payload_and_many_all_succeed() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = PayloadStore::open(state.path(), 1 << 20).expect("open");
    let (shared, shared_bytes) = payload(0, 256 << 10);
    let threads = 32;
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        for i in 0..threads {
            let (store, barrier, shared_bytes) = (store.clone(), &barrier, &shared_bytes);
            scope.spawn(move || {
                let (own, own_bytes) = payload(i as u8 + 1, 4096 + i);
                barrier.wait();
                for _ in 0..4 {
                    store.store(shared, shared_bytes).expect("store the shared payload");
                    store.store(own, &own_bytes).expect("store a distinct payload");
                }
            });
        }
    });
    assert_eq!(store.load(&shared).expect("load").as_ref(), shared_bytes.as_slice());
    for i in 0..threads {
        let (own, own_bytes) = payload(i as u8 + 1, 4096 + i);
        assert_eq!(store.load(&own).expect("load").as_ref(), own_bytes.as_slice());
    }
    let names: Vec<String> = std::fs::read_dir(state.path().join("payloads"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), threads + 1, "one file per payload, no temporary left: {names:?}");
}

#[test]
fn refuses_bytes_that_do_not_match_and_removes_stale_partials() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = PayloadStore::open(state.path(), 1 << 20).expect("open");
    let (hash, _) = payload(1, 100);
    assert!(store.store(hash, b"other bytes").is_err());
    assert!(!store.contains(&hash));
    let stale = state.path().join("payloads").join(format!(".{}.7{PARTIAL}", hash.to_hex()));
    std::fs::write(&stale, b"half").expect("write");
    drop(PayloadStore::open(state.path(), 1 << 20).expect("reopen"));
    assert!(!stale.exists(), "a crash's temporary file is removed at open");
}

#[test]
fn memory_keeps_recently_used_payloads_under_the_cap() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = PayloadStore::open(state.path(), 3000).expect("open");
    let payloads: Vec<_> = (0..4).map(|i| payload(i, 1000)).collect();
    for (hash, bytes) in &payloads {
        store.store(*hash, bytes).expect("store");
    }
    assert_eq!(store.memory_held(), 0, "storing keeps nothing in memory");
    let held = |store: &PayloadStore| {
        let memory = store.lock();
        let mut held: Vec<usize> =
            payloads.iter().enumerate().filter(|(_, (h, _))| memory.bytes.contains_key(h)).map(|(i, _)| i).collect();
        held.sort_unstable();
        held
    };
    for (hash, _) in &payloads[..3] {
        store.load(hash).expect("load");
    }
    assert_eq!(held(&store), [0, 1, 2]);
    // Using 0 again makes 1 the least recently used, so 3 pushes 1 out.
    store.load(&payloads[0].0).expect("load");
    store.load(&payloads[3].0).expect("load");
    assert_eq!(held(&store), [0, 2, 3]);
    assert_eq!(store.memory_held(), 3000);
    // Bytes evicted from memory are still on disk.
    assert_eq!(store.load(&payloads[1].0).expect("load").as_ref(), payloads[1].1.as_slice());
    assert_eq!(held(&store), [0, 1, 3]);
    // Once no live job uses them, they leave memory.
    store.forget_unneeded(|hash| *hash == payloads[3].0);
    assert_eq!(held(&store), [3]);
    assert_eq!(store.memory_held(), 1000);
}

#[test]
fn a_payload_larger_than_the_cap_is_never_kept() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = PayloadStore::open(state.path(), 1000).expect("open");
    let (small, small_bytes) = payload(1, 600);
    let (large, large_bytes) = payload(2, 1001);
    store.store(small, &small_bytes).expect("store");
    store.store(large, &large_bytes).expect("store");
    store.load(&small).expect("load");
    assert_eq!(store.load(&large).expect("load").len(), 1001);
    assert_eq!(store.memory_held(), 600, "the large one did not push the small one out");
    let zero = PayloadStore::open(state.path(), 0).expect("open");
    zero.load(&small).expect("load");
    assert_eq!(zero.memory_held(), 0, "a cap of 0 keeps nothing in memory");
}

/// Files go once no unfinished job uses them and no one stored or asked for them within the
/// grace; one in use, or asked for again, stays.
#[test]
fn unused_payload_files_are_collected_after_their_grace() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = PayloadStore::open(state.path(), 1 << 20).expect("open");
    let [(old, old_bytes), (busy, busy_bytes), (asked, asked_bytes), (fresh, fresh_bytes)] = [1, 2, 3, 4].map(|seed| payload(seed, 1000));
    for (hash, bytes) in [(old, &old_bytes), (busy, &busy_bytes), (asked, &asked_bytes), (fresh, &fresh_bytes)] {
        store.store(hash, bytes).expect("store");
    }
    store.load(&old).expect("old payload in memory");
    // Three files last touched two hours ago; `fresh` was stored just now.
    let two_hours_ago = SystemTime::now() - 2 * UNUSED_PAYLOAD_GRACE;
    for hash in [old, busy, asked] {
        let file = std::fs::File::options().append(true).open(store.path(&hash)).expect("open the file");
        file.set_modified(two_hours_ago).expect("age the file");
    }
    // A submission asks for `asked`: it is about to be used.
    assert!(store.contains(&asked));

    let removed = store.collect(&HashSet::from([busy]), SystemTime::now() - UNUSED_PAYLOAD_GRACE);
    assert_eq!(removed, 1);
    assert!(!store.path(&old).exists() && store.memory_held() == 0, "the old payload is gone, from disk and memory");
    for kept in [busy, asked, fresh] {
        assert!(store.contains(&kept), "{kept} should stay");
    }
    assert!(!store.contains(&old));
}
