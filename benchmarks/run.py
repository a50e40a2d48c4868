"""Benchmark dispatcher:
`python -m benchmarks.run gen|eval|write|all|stage|throughput|budget|calib|startup|ood_memory|verify|multigpu [options]`.

`gen` runs benchmarks/gen_bench.py (ControlNet sampling), `eval` benchmarks/eval_bench.py (segmentation
inference), `write` benchmarks/write_bench.py (the generate stage's writes), `ood` benchmarks/ood_bench.py (the
exact OOD metrics' cost); `all` runs them with their default options. Not part of `all`: `stage`
(benchmarks/stage_bench.py, the evaluate stage as users run it, against mmseg's loop), `throughput`
(benchmarks/stage_throughput.py, the stages without a benchmark of their own, at real size), `budget`
(benchmarks/budget.py, the paper's GPU-hours from the measured JSONs; no GPU), `calib`
(benchmarks/calib_bench.py, the temperature grid search's ECE sweep against its previous implementation),
`startup` (benchmarks/cli_startup.py, how fast `synthrel --help` and `--cfg job` answer; CPU), `ood_memory`
(benchmarks/ood_memory.py, the pooled exact OOD metric's peak memory against sklearn's), `verify`
(benchmarks/verify_bench.py, what a resume's size / hash check of the outputs it skips costs) and `multigpu`
(two GPUs), `flops` (benchmarks/flops.py, FLOPs per unit of the budget's stages on meta-device models; no GPU) and
`evalfam` (benchmarks/eval_families.py, evaluate's compiled rates per zoo family at the paper's sizes, and a phase
profile of PSPNet-R18's pass over PNG files), `rbaloader` (benchmarks/rba_loader.py, the RbA fine-tune's loader
cost per sample on this CPU and the step/s ceiling it sets per worker count).
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {"gen": "benchmarks.gen_bench", "eval": "benchmarks.eval_bench", "write": "benchmarks.write_bench",
              "ood": "benchmarks.ood_bench"}
# Not part of `all`: two GPUs, minutes per model, or no benchmark at all (budget reads the measured JSONs).
EXTRA = {"multigpu": "benchmarks.multigpu", "stage": "benchmarks.stage_bench",
         "throughput": "benchmarks.stage_throughput", "budget": "benchmarks.budget",
         "calib": "benchmarks.calib_bench", "startup": "benchmarks.cli_startup",
         "ood_memory": "benchmarks.ood_memory", "verify": "benchmarks.verify_bench", "flops": "benchmarks.flops",
         "evalfam": "benchmarks.eval_families", "rbaloader": "benchmarks.rba_loader"}


def run(name: str, argv: list[str]) -> dict:
    try:
        module = importlib.import_module({**BENCHMARKS, **EXTRA}[name])
    except ModuleNotFoundError as e:
        if e.name != {**BENCHMARKS, **EXTRA}[name]:
            raise
        raise SystemExit(f"benchmark {name!r}: its module is not in this checkout") from None
    return module.main(argv)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", add_help=False)
    parser.add_argument("which", choices=[*BENCHMARKS, *EXTRA, "all"])
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        print("\nOptions after the benchmark name go to it, e.g. `python -m benchmarks.run gen --help`.")
        return {}
    args = parser.parse_args(argv[:1])
    if args.which == "all":
        if argv[1:]:
            parser.error("`all` runs every benchmark with its defaults; give options to one benchmark at a time")
        return {name: run(name, []) for name in BENCHMARKS}
    return {args.which: run(args.which, argv[1:])}


if __name__ == "__main__":
    main()
