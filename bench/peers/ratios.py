"""Prints dispy's and Ray's figures side by side, with dispy's ratio (> 1: dispy is ahead).

Usage: ratios.py DISPY_REPORT.json RAY_FIGURES.json (from `bench --json` and ray_peer.py).
"""

import json
import sys


def dispy_row(report, workload, metric_start):
    """The median and spread of the first row of `workload` whose metric starts so."""
    for row in report["rows"]:
        if row["workload"] == workload and row["metric"].startswith(metric_start) and row["summary"]:
            return row["summary"]
    return None


# (label, dispy workload, dispy metric prefix, Ray key, unit, higher is better)
FIGURES = [
    ("W1 throughput, 16 B chunks", "W1", "throughput,", "w1_chunks_per_s", "chunks/s", True),
    ("W2 p50 latency, sequential 1-chunk jobs", "W2", "p50 latency, ", "w2_p50_us", "us", False),
    ("W2 p99 latency, sequential 1-chunk jobs", "W2", "p99 latency, ", "w2_p99_us", "us", False),
    ("W3 throughput, bytes shipped", "W3", "throughput, ", "w3_mb_per_s", "MB/s", True),
    ("W3 throughput, dispy with shared input", "W3", "throughput, same chunks with shared input", "w3_mb_per_s", "MB/s", True),
    ("W3 throughput, dispy-submit run --local 2 (incl. the cluster's start)", "W3", "throughput, same chunks with `dispy-submit run --local 2`", "w3_mb_per_s", "MB/s", True),
    ("W4 parallel efficiency", "W4", "parallel efficiency, ", "w4_efficiency_percent", "%", True),
]


def spread(s):
    return f"{s['median']:,.1f} ({s['min']:,.1f}-{s['max']:,.1f})"


def main():
    with open(sys.argv[1]) as f:
        dispy = json.load(f)
    with open(sys.argv[2]) as f:
        ray = json.load(f)
    print(f"date: {dispy['date']}; Ray {ray['ray_version']} with {ray['slots']} workers; medians (min-max)")
    print("| figure | unit | dispy | Ray | dispy's ratio |")
    print("| --- | --- | --- | --- | --- |")
    for label, workload, prefix, key, unit, higher in FIGURES:
        ours, theirs = dispy_row(dispy, workload, prefix), ray.get(key)
        if ours is None or theirs is None:
            continue
        ratio = ours["median"] / theirs["median"] if higher else theirs["median"] / ours["median"]
        print(f"| {label} | {unit} | {spread(ours)} | {spread(theirs)} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
