"""Graph breaks of torch.compile in each zoo model's backbone and decode head (`torch._dynamo.explain`).

A break inside a compiled forward splits it into graphs plus resume functions; a resume function that guards
on a short-lived Python object recompiles on every call until dynamo's recompile limit, then runs eager.
This explains mmseg's modules as they are; synthrel's compiled segmenter (`MMSegSegmenter(compile=True)`) also
makes `warnings.warn` reorderable, which removes the breaks at mmseg's resize() warning.

    python -m benchmarks.graph_breaks --models pspnet_r18 dlv3p_r101 segformer_b5
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks import write_result


def explain(module: torch.nn.Module, *args) -> dict:
    with torch.no_grad():
        ex = torch._dynamo.explain(module.forward)(*args)
    return {"graphs": ex.graph_count, "breaks": ex.graph_break_count,
            "reasons": sorted({str(b.reason).splitlines()[0][:200] + " @ " + (
                f"{b.user_stack[-1].filename.rsplit('/', 3)[-1]}:{b.user_stack[-1].lineno}" if b.user_stack else "?")
                for b in ex.break_reasons})}


def main(argv=None) -> dict:
    from benchmarks.eval_bench import MODELS, build_baseline, model_config
    from synthrel.zoo.mmcv_shim import install
    from synthrel.zoo.registry import load_mmseg_config

    p = argparse.ArgumentParser(prog="python -m benchmarks.graph_breaks", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    install()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for name in args.models:
        config_file, _ = model_config(name, args.tiny)
        model = build_baseline(load_mmseg_config(config_file), device)
        x = torch.randn(2, 3, 128, 128, device=device)
        with torch.no_grad():
            feats = model.backbone(x)
        out[name] = {"backbone": explain(model.backbone, x), "decode_head": explain(model.decode_head, feats)}
        print(name, out[name], flush=True)
        torch._dynamo.reset()
    write_result(out, "graph_breaks.json", args.json)
    return out


if __name__ == "__main__":
    main()
