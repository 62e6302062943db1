//! Tests for the `auto` rules through [`Chunks`](crate::split::Chunks): the cutter waits for the
//! tuner's decision after the probes and then cuts chunks of the decided size.

use std::path::PathBuf;
use std::time::Duration;

use super::TempDir;
use crate::split::{auto, AutoSplit, SplitRule};

/// Runs an auto rule's chunks on a thread while a tuner decides from a fake run time: `nanos_per_unit`.
fn cut_auto(rule: SplitRule, inputs: &[PathBuf], slots: u64, nanos_per_unit: u64) -> (auto::Decision, Vec<Vec<u8>>) {
    let chunks = rule.chunks(inputs).expect("chunks");
    let tuner = chunks.auto().expect("an auto rule").tuner(Duration::from_millis(10), slots, u64::MAX);
    let (sent, seen) = std::sync::mpsc::channel();
    let cutter = std::thread::spawn(move || {
        for chunk in chunks {
            sent.send(chunk.expect("chunk reads")).expect("receiver alive");
        }
    });
    let mut got = Vec::new();
    let mut units = 0;
    let decision = loop {
        while let Ok(chunk) = seen.try_recv() {
            units += match rule {
                SplitRule::Auto(AutoSplit::Range { .. }) => {
                    let bound = |at: usize| u64::from_le_bytes(chunk[at..at + 8].try_into().expect("8 bytes"));
                    bound(8) - bound(0)
                }
                _ => chunk.len() as u64,
            };
            got.push(chunk);
        }
        if let Some(decision) = tuner.observe(got.len() as u64, units * nanos_per_unit) {
            break decision;
        }
        assert!(!cutter.is_finished(), "the cutter ended without waiting for a decision");
        std::thread::yield_now();
    };
    cutter.join().expect("cutter");
    got.extend(seen.try_iter());
    (decision, got)
}

#[test]
fn auto_range_sizes_steps_from_the_probe() {
    // 1,000,000 numbers at 1 us each; a 10 ms target is 10,000 numbers a chunk.
    let rule: SplitRule = "range:0..1000000:auto".parse().expect("rule");
    let (decision, chunks) = cut_auto(rule, &[], 2, 1000);
    // Two probes (the minimum) of 1000000/4096 numbers.
    assert_eq!((decision.probes, decision.probe_units), (2, 2 * 244));
    assert_eq!(decision.size, 10_000);
    let mut next = 0;
    for (index, chunk) in chunks.iter().enumerate() {
        let bound = |at: usize| u64::from_le_bytes(chunk[at..at + 8].try_into().expect("8 bytes"));
        assert_eq!(bound(0), next, "chunk {index} follows on");
        let expected = if index < 2 { 244 } else { 10_000 };
        assert_eq!(bound(8) - bound(0), expected.min(1_000_000 - next), "chunk {index}");
        next = bound(8);
    }
    assert_eq!(next, 1_000_000, "the whole range is covered");
}

#[test]
fn auto_lines_cut_whole_lines_of_the_measured_size() {
    let dir = TempDir::new();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789\n";
    let input: Vec<u8> = line.iter().copied().cycle().take(line.len() * 100_000).collect();
    let path = dir.file("lines.txt", &input);
    // 20 ns a byte: a 10 ms target is 500 kB, below the balance bound (8.2 MB / 16).
    let (decision, chunks) = cut_auto(SplitRule::Auto(AutoSplit::Lines), &[path], 2, 20);
    assert_eq!(decision.probes, 2);
    assert_eq!(decision.size, 500_000);
    assert_eq!(chunks.concat(), input, "nothing lost or repeated");
    for chunk in &chunks[..chunks.len() - 1] {
        assert_eq!(chunk.last(), Some(&b'\n'), "whole lines");
        assert!(chunk.len() % line.len() == 0);
    }
    assert!(chunks[2].len() >= 500_000 && chunks[2].len() < 500_000 + line.len());
}

#[test]
fn auto_bytes_of_a_small_input_do_not_wait_for_a_decision() {
    let dir = TempDir::new();
    let input = vec![7u8; 100_000];
    let path = dir.file("small.bin", &input);
    let chunks = SplitRule::Auto(AutoSplit::Bytes).chunks(&[path]).expect("chunks");
    let _tuner = chunks.auto().expect("auto").tuner(Duration::from_secs(1), 2, u64::MAX);
    // Two probes cover the input; the iterator ends without anyone deciding.
    let got: Vec<Vec<u8>> = chunks.map(|chunk| chunk.expect("reads")).collect();
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [65_536, 34_464]);
}
