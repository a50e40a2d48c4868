"""How long the `synthrel` command takes to answer `--help` and `--cfg job +experiment=demo` (issue #32: under
3 s on the 2-core machine), beside two baselines in the same Python: `python -c pass` (interpreter start) and
`python -c "import torch"` (what every start paid before the CLI imported torch lazily).

`python -m benchmarks.run startup [--repeats 5] [--json out.json]`. Each command runs in a fresh process,
repeats times, interleaved so that load on a shared machine hits all of them alike; the median is reported.
The CLI is started as the console script does (`synthrel.run:main`), with no PYTHONPATH changes: run it in
the environment you installed synthrel into (`make install`, or your own with `pip install synthrel`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_S = 3.0
CLI = "import sys; from synthrel.run import main; sys.argv[0] = 'synthrel'; main()"
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "synthrel --help": ["-c", CLI, "--help"],
    "synthrel --cfg job +experiment=demo": ["-c", CLI, "--cfg", "job", "+experiment=demo"],
}


def time_once(args: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:  # an empty folder, as a user's
        for _ in range(args.repeats):
            for name, cmd in COMMANDS.items():
                times[name].append(time_once(cmd, cwd))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base, torch_s = medians["python -c pass"], medians["import torch"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"median of {args.repeats}")
    print(f"{'command':40s} {'median s':>9s} {'min s':>7s} {'x python':>9s} {'x import torch':>15s}")
    for name, t in times.items():
        print(f"{name:40s} {medians[name]:9.2f} {min(t):7.2f} {medians[name] / base:9.1f} "
              f"{medians[name] / torch_s:15.2f}")
    result = {"medians_s": medians, "runs_s": times, "target_s": TARGET_S, "cpus": os.cpu_count(),
              "load_average": os.getloadavg()[0],
              "under_target": all(medians[n] < TARGET_S for n in COMMANDS if n.startswith("synthrel"))}
    print(f"target: synthrel commands under {TARGET_S:.0f} s: {'met' if result['under_target'] else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
