"""W1-W4 on Ray, the peer dispy is compared with (bench/README.md, "Peers").

Runs the same four workloads as `bench` on a local Ray cluster with as many workers as dispy's
bench cluster has slots (2), and prints one JSON object with the figures in the units the dispy
report uses. Never run in CI: `bench/peers/compare.sh` sets up the virtual environment and runs
this beside dispy's harness in the same run.

The guest work matches dispy's payloads where Python can do it at native speed: W1 sums 16 bytes,
W3 hashes each 1 MiB chunk with zlib.crc32 (C code, faster than dispy's FNV-1a in WebAssembly, so
the comparison is conservative for dispy), W4 renders the same Mandelbrot image with numpy and
reports parallel efficiency against Ray's own serial run. W3's input travels the way dispy's
shipped input does: the driver reads the file and every chunk crosses to a worker as an object
(`ray.put`), then the results come back in order.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zlib

import numpy as np
import ray


def summary(values):
    """Median with min and max, as dispy's report has them."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


@ray.remote
def sum_bytes(chunk):
    return sum(chunk).to_bytes(8, "little")


@ray.remote
def crc(chunk):
    return zlib.crc32(chunk).to_bytes(8, "little")


@ray.remote
def mandelbrot_rows(start, end, width, height, max_iter):
    return render(start, end, width, height, max_iter)


def render(start, end, width, height, max_iter):
    """Rows start..end of the image, grey levels as mandelbrot.wat computes them."""
    x = np.arange(width, dtype=np.float64)
    y = np.arange(start, end, dtype=np.float64)
    cx = -2.0 + (3.0 * x) / width
    cy = -1.5 + (3.0 * y) / height
    c = cx[np.newaxis, :] + 1j * cy[:, np.newaxis]
    z = np.zeros_like(c)
    iterations = np.zeros(c.shape, dtype=np.int64)
    alive = np.ones(c.shape, dtype=bool)
    for _ in range(max_iter):
        z[alive] = z[alive] * z[alive] + c[alive]
        escaped = alive & (z.real * z.real + z.imag * z.imag > 4.0)
        alive &= ~escaped
        iterations[alive] += 1
        if not alive.any():
            break
    return (255 - iterations * 255 // max_iter).astype(np.uint8).tobytes()


def timed(runs, work):
    """Runs `work` once untimed (warm-up), then `runs` times; returns the durations in seconds."""
    work()
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        durations.append(time.perf_counter() - started)
    return durations


def w1(runs, chunks):
    data = os.urandom(chunks * 16)
    pieces = [data[i : i + 16] for i in range(0, len(data), 16)]
    want = b"".join(sum(p).to_bytes(8, "little") for p in pieces)

    def job():
        got = b"".join(ray.get([sum_bytes.remote(p) for p in pieces]))
        assert got == want, "W1 output differs from the serial sums"

    return [chunks / d for d in timed(runs, job)]


def w2(runs, jobs):
    chunk = bytes(range(16))
    p50, p99 = [], []
    for _ in range(runs + 1):
        samples = []
        for _ in range(jobs):
            started = time.perf_counter()
            ray.get(sum_bytes.remote(chunk))
            samples.append((time.perf_counter() - started) * 1e6)
        samples.sort()
        p50.append(samples[len(samples) // 2])
        p99.append(samples[min(len(samples) - 1, (len(samples) * 99) // 100)])
    # The first round is the warm-up.
    return p50[1:], p99[1:]


def w3(runs, mib):
    with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR")) as f:
        block = os.urandom(1 << 20)
        for _ in range(mib):
            f.write(block)
        f.flush()
        path = f.name

        def job():
            refs = []
            with open(path, "rb") as input_file:
                while chunk := input_file.read(1 << 20):
                    refs.append(crc.remote(ray.put(chunk)))
            got = ray.get(refs)
            assert len(got) == mib, "W3 lost chunks"

        return [mib * (1 << 20) / 1e6 / d for d in timed(runs, job)]


def w4(runs, slots):
    width, height, max_iter, rows = 1024, 1024, 256, 16
    starts = range(0, height, rows)
    serial = timed(runs, lambda: [render(s, s + rows, width, height, max_iter) for s in starts])

    def job():
        ray.get([mandelbrot_rows.remote(s, s + rows, width, height, max_iter) for s in starts])

    distributed = timed(runs, job)
    return [100.0 * s / (slots * d) for s, d in zip(serial, distributed)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run (a smoke test)")
    parser.add_argument("workloads", nargs="*", default=["w1", "w2", "w3", "w4"])
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    ray.init(num_cpus=args.slots, include_dashboard=False, logging_level="ERROR")
    figures = {"ray_version": ray.__version__, "slots": args.slots}
    for workload in args.workloads:
        print(f"ray peer: {workload}", file=sys.stderr)
        if workload == "w1":
            figures["w1_chunks_per_s"] = summary(w1(runs, 2_000 if args.quick else 20_000))
        elif workload == "w2":
            p50, p99 = w2(runs, 50 if args.quick else 500)
            figures["w2_p50_us"], figures["w2_p99_us"] = summary(p50), summary(p99)
        elif workload == "w3":
            figures["w3_mb_per_s"] = summary(w3(runs, 32 if args.quick else 512))
        elif workload == "w4":
            figures["w4_efficiency_percent"] = summary(w4(runs, args.slots))
        else:
            parser.error(f"unknown workload {workload}")
    ray.shutdown()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
