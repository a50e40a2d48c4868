"""The same seed gives bit-identical outputs on CPU, stage by stage, in two separate output folders; shards of
one job never draw the same sample and together make exactly the unsharded job."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_utils import GENERATE, INPAINT, manifest_records, visible_files
from safetensors.torch import load_file

from synthrel.run import run_stages

TEXT_SUFFIXES = (".csv", ".json", ".jsonl", ".md", ".txt")
VOLATILE = ("logs", "report", "figures")  # logs and rendered figures/reports (with dates and timings)
#: an input identity of a file inside the run's output folder (synthrel.jobs.path_identity: path:size:mtime_ns),
#: e.g. calibrate's `settings.calib_samples` and `targets.<set>.sample`: the files' mtimes differ between the two
#: runs by construction; path and size are still compared
OUT_FILE_IDENTITY = re.compile(r"(<out>/[^\"\s:]+):(\d+):\d+")


def comparable(folder: Path) -> dict[str, Path]:
    return {rel: p for rel, p in visible_files(folder).items() if not any(v in rel for v in VOLATILE)}


def _rows(text: str, jsonl: bool, timing_keys) -> list:
    """JSON(L) records without their timing fields, in a fixed order (shards append in any order)."""
    import json

    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if jsonl else [json.loads(text)]
    rows = [{k: v for k, v in r.items() if k not in timing_keys} if isinstance(r, dict) else r for r in rows]
    # a record's `files` hashes cover files that hold wall times (compared themselves, timing fields dropped):
    # keep their sizes only
    rows = [{**r, "files": {p: {"size": f["size"]} for p, f in r["files"].items()}}
            if isinstance(r, dict) and isinstance(r.get("files"), dict) else r for r in rows]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def assert_identical_folders(a: Path, b: Path, *, roots: tuple[Path, Path] | None = None,
                             timing_keys=("seconds",)) -> int:
    """Same files; arrays, tensors, images and tables bit-identical (text with the run's output folder `roots`
    and the mtimes of identities of files under it masked, and the timing fields dropped). Returns the number of
    files compared."""
    root_a, root_b = (str(r) for r in (roots or (a, b)))

    files_a, files_b = comparable(a), comparable(b)
    assert sorted(files_a) == sorted(files_b), set(files_a) ^ set(files_b)
    for rel, pa in files_a.items():
        pb = files_b[rel]
        if pa.suffix in (".npy", ".npz"):
            ga, gb = np.load(pa), np.load(pb)
            for name in getattr(ga, "files", [None]):
                np.testing.assert_array_equal(ga if name is None else ga[name], gb if name is None else gb[name],
                                              err_msg=f"{rel}:{name}")
        elif pa.suffix == ".safetensors":
            ta, tb = load_file(pa), load_file(pb)
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), rel
        elif pa.suffix in TEXT_SUFFIXES:
            ta, tb = (OUT_FILE_IDENTITY.sub(r"\1:\2:<mtime>", p.read_text().replace(root, "<out>"))
                      for p, root in ((pa, root_a), (pb, root_b)))
            if pa.suffix in (".json", ".jsonl"):
                jsonl = pa.suffix == ".jsonl"
                assert _rows(ta, jsonl, timing_keys) == _rows(tb, jsonl, timing_keys), rel
            else:
                assert ta == tb, rel
        elif pa.suffix in (".png", ".pth", ".ckpt", ".parquet"):
            if pa.suffix == ".parquet":
                import pandas as pd

                fa, fb = pd.read_parquet(pa), pd.read_parquet(pb)
                for frame, root in ((fa, root_a), (fb, root_b)):
                    for column in frame.columns:
                        frame[column] = frame[column].map(lambda v, r=root: v.replace(r, "<out>")
                                                          if isinstance(v, str) else v)
                pd.testing.assert_frame_equal(fa, fb, check_exact=True, obj=rel)
            elif pa.suffix == ".png":
                assert pa.read_bytes() == pb.read_bytes(), rel
            else:
                sa, sb = torch.load(pa, weights_only=False), torch.load(pb, weights_only=False)
                state_a, state_b = sa.get("state_dict", sa), sb.get("state_dict", sb)
                assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k])
                                                                for k in state_a), rel
    return len(files_a)


def run_twice(compose_world, tmp_path, *overrides) -> tuple[Path, Path]:
    outs = tmp_path / "a", tmp_path / "b"
    for out in outs:
        run_stages(compose_world(out, *overrides))
    return outs


CONTROLNET = ["+stage=[train_controlnet]", "backbone.resolution=64", "stages.train_controlnet.max_steps=2",
              "stages.train_controlnet.batch_size=2", "stages.train_controlnet.accumulate_grad_batches=1",
              "stages.train_controlnet.num_workers=0", "stages.train_controlnet.sample_every_n_steps=0",
              "stages.train_controlnet.checkpoint_every_n_steps=2", "logger=none"]


@pytest.mark.parametrize("stage,overrides,subdir", [
    ("generate", [*GENERATE, "profile.num_samples=2"], "synthetic"),
    ("corrupt", ["+stage=[corrupt]", "stages.corrupt.resolution=64", "stages.corrupt.num_samples=2",
                 "stages.corrupt.corruptions=[fog,gaussian_noise]"], "corruptions"),
    ("inpaint", [*INPAINT, "stages.inpaint.objects=[zebra]", "stages.inpaint.samples_per_object=2"], "ood_objects"),
    ("caption", ["+stage=[caption]", "stages.caption.splits=[val]", "stages.caption.num_beams=1",
                 "stages.caption.max_new_tokens=8"], "captions"),
    pytest.param("train_controlnet", CONTROLNET, "controlnet/sd15/final", marks=pytest.mark.slow),
])
def test_same_seed_same_outputs(compose_world, world, tmp_path, stage, overrides, subdir):
    extra = [f"stages.train_controlnet.captions={world}/captions_train.jsonl"] if stage == "train_controlnet" else []
    a, b = run_twice(compose_world, tmp_path, *overrides, *extra)
    assert assert_identical_folders(a / subdir, b / subdir, roots=(a, b)) >= 1


def test_train_zoo_same_seed_same_weights(world, tmp_path):
    from synthrel.tiny.segmentation import ensure_tiny_segmenter
    from synthrel.zoo.training import TrainZooJob

    dataset = {"_target_": "synthrel.data.cityscapes.CityscapesDataset",
               "root": str(world / "outputs" / "tiny" / "data" / "cityscapes")}
    init_dir = ensure_tiny_segmenter("pspnet_r18", tmp_path / "init" / "pspnet_r18")
    outs = []
    for run in ("a", "b"):
        folder = tmp_path / run / "pspnet_r18"
        zoo = {"name": "tiny", "models": {"pspnet_r18": {
            "family": "PSPNet", "framework": "mmseg", "config": str(folder / "config.py"),
            "checkpoint": str(folder / "checkpoint.pth")}}}
        summary = TrainZooJob(zoo=zoo, dataset=dataset, steps={"pspnet_r18": 3}, init={"pspnet_r18": str(init_dir)},
                              batch_size=2, device="cpu").run()
        assert summary["trained"] == ["pspnet_r18"]
        outs.append(folder)
    assert assert_identical_folders(*outs) >= 2
    # and training changed the seeded init (the comparison is not between two untouched copies)
    init = torch.load(init_dir / "checkpoint.pth", weights_only=False)
    trained = torch.load(outs[0] / "checkpoint.pth", weights_only=False)
    init, trained = init.get("state_dict", init), trained["state_dict"]
    assert any(not torch.equal(init[k], trained[k]) for k in trained if k in init)


@pytest.mark.slow
def test_analysis_chain_same_seed_same_tables(compose_world, tmp_path):
    """evaluate -> calibrate -> correlate on two models and a synthetic set, twice: identical arrays and tables."""
    overrides = ["+stage=[generate,evaluate,calibrate,correlate]", *GENERATE[1:], "profile.num_samples=2",
                 "stages.evaluate.models=[pspnet_r18,segformer_b0]",
                 "stages.evaluate.datasets=[cityscapes,cityscapes_calib,acdc_fog,synthetic]", "stages.evaluate.num_workers=0",
                 "stages.calibrate.targets=[acdc_fog]", "stages.correlate.domains=[fog]",
                 "stages.correlate.bootstrap.n_resamples=50", "stages.correlate.ablation.sizes=[]"]
    a, b = run_twice(compose_world, tmp_path, *overrides)
    for sub in ("results", "calibration", "analysis"):
        # `data` fingerprints the files by absolute path (a moved set is evaluated again), so it differs by folder
        assert assert_identical_folders(a / sub, b / sub, roots=(a, b), timing_keys=("seconds", "data")) >= 2, sub


# ------------------------------------------------------------------------------------------------ shards
@pytest.mark.parametrize("stage,overrides,subdir,n_items", [
    ("generate", GENERATE, "synthetic/sd15/fog", 6),
    ("inpaint", INPAINT, "ood_objects/paper42", 6),
])
def test_shards_are_disjoint_and_make_the_unsharded_job(compose_world, tmp_path, stage, overrides, subdir, n_items):
    whole = tmp_path / "whole"
    run_stages(compose_world(whole, *overrides))
    sharded = tmp_path / "sharded"
    per_shard = {}
    for index in range(3):
        before = {r["id"] for r in manifest_records(sharded / subdir / "manifest.jsonl")} if index else set()
        summary = run_stages(compose_world(sharded, *overrides, f"shard={index}/3"))[stage]
        assert summary["shard"] == f"{index}/3"
        records = manifest_records(sharded / subdir / "manifest.jsonl")
        per_shard[index] = [r for r in records if r["id"] not in before]
    ids = [r["id"] for recs in per_shard.values() for r in recs]
    seeds = [str(r.get("seed", r.get("seeds"))) for recs in per_shard.values() for r in recs]
    assert all(per_shard.values()) and len(ids) == len(set(ids)) == n_items, "shards overlap or leave gaps"
    assert len(set(seeds)) == n_items, "two shards drew the same seed"
    whole_records = {r["id"]: r for r in manifest_records(whole / subdir / "manifest.jsonl")}
    assert {r["id"]: r for recs in per_shard.values() for r in recs} == whole_records
    assert assert_identical_folders(sharded / subdir, whole / subdir, roots=(sharded, whole)) >= n_items
