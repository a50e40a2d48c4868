"""What a resume's output check costs: `verify=size` (stat every recorded file) against `verify=hash` (also read
and SHA-256 every file), per generated item, and what recording the hashes costs when the items are written.

Items are the generate stage's: four 512² PNGs each (image, labelIds, trainIds, original), written by
`write_item` at synthrel's PNG level. The check is `synthrel.data.synthetic.verified_records` over every item,
as a re-run of generate does before it plans. Files come from the page cache (written just before): a cold
cache adds the disk's read time to `hash` (the bytes per item are reported, divide by your disk's MB/s).

    python -m benchmarks.run verify [--items 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_result


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.write_bench import make_items
    from synthrel.data.synthetic import latest_records, verified_records, write_item
    from synthrel.jobs import file_records

    parser = argparse.ArgumentParser(prog="python -m benchmarks.run verify")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    items = make_items(8, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        for k in range(args.items):
            item = items[k % len(items)]
            write_item(root, f"{item['id']}_{k}", item["city"], item["image"], item["label_ids"], item["original"])
        write_s = (time.perf_counter() - start) / args.items
        records = latest_records(root)
        paths = list(root.rglob("*.png"))
        start = time.perf_counter()
        file_records(root, paths)  # what write_item adds per item: hashing the files it just wrote
        record_s = (time.perf_counter() - start) / args.items
        timings = {}
        for mode in ("size", "hash"):
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                kept = verified_records(root, list(records), mode, "bench")
                best = min(best, time.perf_counter() - start)
            assert len(kept) == args.items
            timings[mode] = best / args.items
        bytes_per_item = sum(p.stat().st_size for p in paths) / args.items
    result = dict(cpus=os.cpu_count(), args=vars(args), kb_per_item=round(bytes_per_item / 1024, 1),
                  write_ms_per_item=round(1000 * write_s, 2), hash_on_write_ms_per_item=round(1000 * record_s, 3),
                  verify_size_ms_per_item=round(1000 * timings["size"], 3),
                  verify_hash_ms_per_item=round(1000 * timings["hash"], 3))
    print(result, flush=True)
    path = write_result(result, "verify_bench.json", args.json)
    if path:
        print(f"wrote {path}")
    return result
