"""Draw docs/architecture.svg from the code and the configs: `python -m tools.architecture [--out FILE]`.

Top: the stages in run order (synthrel.stages.STAGE_ORDER) and the data that flows between them, read from the
stage configs (synthrel/conf/stage/*.yaml) as composed for the demo (`+experiment=demo`, every stage): stage B reads
what stage A wrote when a path in B's config lies in (or holds) a folder that A writes (A's output keys:
synthrel.stages.STAGE_OUTPUTS, any top-level output_dir/out_dir/out_root/report_dir, and train_zoo's
zoo folders). Each box names the module that defines its Job and the folder it writes (relative to the output root); an arrow means "reads it". Bottom: the import layers of
synthrel/ (tools/import_graph.py), each unit at its height in the import graph (0: imports no other unit).
Nothing is drawn by hand, so the picture follows the code: re-run it after adding a stage or a package.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = "/OUTPUTS"  # paths.output_root while composing, stripped from the labels
OUTPUT_KEYS = ("models_dir", "output_dir", "out_dir", "out_root", "report_dir")
IGNORED = ("cache", "log", "run_dir", "save_dir", "wandb")  # paths that carry no data between stages


def _paths(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for k, value in enumerate(node):
            yield from _paths(value, f"{prefix}[{k}]")
    elif isinstance(node, str) and node.startswith(ROOT + "/"):
        yield prefix, node


def stage_configs() -> dict[str, dict]:
    """Every stage's resolved config, composed as the demo runs them, in run order."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from synthrel.run import CONF_DIR, STAGE_ORDER

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=demo", "paths.root_dir=/ROOT",
                                                       f"paths.output_root={ROOT}", f"paths.output_dir={ROOT}/run"])
    missing = [s for s in STAGE_ORDER if s not in cfg.stages]
    if missing:
        raise SystemExit(f"the demo experiment lacks stage(s) {missing}: add them to synthrel/conf/experiment/demo.yaml")
    return {s: OmegaConf.to_container(cfg.stages[s], resolve=True) for s in STAGE_ORDER}


def data_flow(configs: dict[str, dict]) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str, str]]]:
    """(stage -> its _target_ module, stage -> the folder it writes, [(producer, consumer, folder read)]) from the
    composed configs."""
    from synthrel.stages import STAGE_OUTPUTS

    outputs: dict[str, list[str]] = {}
    for stage, spec in configs.items():
        keys = set(STAGE_OUTPUTS.get(stage, ())) | {k for k in OUTPUT_KEYS if k in spec}
        outputs[stage] = sorted({spec[k] for k in keys if isinstance(spec.get(k), str)})
        if stage == "train_zoo":  # it rewrites the zoo entries' weights in place
            outputs[stage] = sorted({str(Path(p).parent) if p.endswith((".py", ".pth")) else p
                                     for _, p in _paths(spec.get("zoo") or {})})
    order = list(configs)
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for b, spec in configs.items():
        own = set(outputs[b])
        for key, path in _paths(spec):
            if path in own or any(word in key for word in IGNORED):
                continue
            for a in order[: order.index(b)]:
                for out in outputs[a]:
                    if path == out or path.startswith(out + "/") or out.startswith(path + "/"):
                        edges[(a, b)].add(out)
    modules = {s: spec["_target_"].rsplit(".", 1)[0] for s, spec in configs.items()}  # the module defining the Job
    flow = [(a, b, _label(outs)) for (a, b), outs in sorted(
        edges.items(), key=lambda e: (order.index(e[0][1]), order.index(e[0][0])))]
    writes = {s: _label(set(outs)) if outs else "" for s, outs in outputs.items()}
    return modules, writes, flow


def _label(paths: set[str]) -> str:
    """The folder (or the common folder of several, with /*) relative to the artifacts or output root."""
    import os

    if len(paths) > 1:
        common = os.path.commonpath(sorted(paths))
        if common in (ROOT, f"{ROOT}/tiny", f"{ROOT}/tiny/artifacts"):  # unrelated folders: name each
            return ", ".join(_label({p}) for p in sorted(paths))
        paths = {common + "/*"}
    rel = next(iter(paths))[len(ROOT) + 1:]
    for prefix in ("tiny/artifacts/", "tiny/"):
        if rel.startswith(prefix):
            return rel[len(prefix):]
    return rel


def import_layers() -> dict[int, list[str]]:
    from tools.import_graph import import_graph, longest_path_layers, unit_graph

    heights = longest_path_layers(unit_graph(import_graph(REPO / "synthrel")))
    layers: dict[int, list[str]] = defaultdict(list)
    for unit, h in sorted(heights.items()):
        layers[h].append(unit)
    return dict(sorted(layers.items()))


def draw(modules, writes, flow, layers, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, and the test can read it
    plt.rcParams["svg.hashsalt"] = "synthrel"  # stable element ids: the same code gives the same file
    stages = list(modules)
    # stage depth in the data flow: 1 + the deepest producer it reads from
    depth: dict[str, int] = {}
    for s in stages:
        depth[s] = 1 + max((depth[a] for a, b, _ in flow if b == s), default=-1)
    columns: dict[int, list[str]] = defaultdict(list)
    for s in stages:
        columns[depth[s]].append(s)
    n_cols, n_rows = len(columns), max(len(v) for v in columns.values())
    fig_w = max(16, 2.7 * n_cols)
    fig = plt.figure(figsize=(fig_w, 6 + 0.9 * n_rows + 0.55 * len(layers)))
    top = fig.add_axes([0.01, 0.32, 0.98, 0.66])
    top.set_xlim(-0.6, n_cols - 0.4)
    top.set_ylim(-n_rows + 0.3, 1.0)
    top.axis("off")
    top.set_title("Stages in run order (python -m synthrel.run) and the data between them "
                  "(generated by tools/architecture.py from synthrel/conf/stage/*.yaml)", fontsize=11, loc="left")
    pos = {}
    for col, members in columns.items():
        for row, s in enumerate(members):
            pos[s] = (col, -row * 1.0)
            top.add_patch(FancyBboxPatch((col - 0.42, -row - 0.24), 0.84, 0.48, boxstyle="round,pad=0.02",
                                         fc="#e8f0fe", ec="#3367d6", zorder=2))
            top.text(col, -row + 0.1, s, ha="center", va="center", fontsize=10, weight="bold", zorder=3)
            top.text(col, -row - 0.04, modules[s], ha="center", va="center", fontsize=7, color="#555", zorder=3)
            if writes[s]:
                top.text(col, -row - 0.16, f"writes {writes[s]}", ha="center", va="center", fontsize=7,
                         color="#a33", zorder=3)
    for a, b, _ in flow:
        (xa, ya), (xb, yb) = pos[a], pos[b]
        top.annotate("", xy=(xb - 0.42, yb), xytext=(xa + 0.42, ya), zorder=1,
                     arrowprops=dict(arrowstyle="->", color="#999", lw=0.7, connectionstyle="arc3,rad=0.06"))
    bottom = fig.add_axes([0.01, 0.01, 0.98, 0.28])
    bottom.axis("off")
    bottom.set_title("Import layers of synthrel/ (tools/import_graph.py): a unit imports only units of lower rows",
                     fontsize=11, loc="left")
    for k, (h, units) in enumerate(sorted(layers.items(), reverse=True)):
        y = 1 - (k + 0.5) / len(layers)
        bottom.text(0.0, y, f"height {h}", fontsize=9, weight="bold", va="center", transform=bottom.transAxes)
        bottom.text(0.08, y, "   ".join(units), fontsize=9, va="center", family="monospace",
                    transform=bottom.transAxes)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=out.suffix.lstrip(".") or "svg", metadata={"Date": None})
    plt.close(fig)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "architecture.svg"))
    args = parser.parse_args(argv)
    modules, writes, flow = data_flow(stage_configs())
    draw(modules, writes, flow, import_layers(), Path(args.out))
    for a, b, label in flow:
        print(f"{a} -> {b}: {label}")
    print(f"wrote {args.out}")
    return Path(args.out)


if __name__ == "__main__":
    main()
