"""Multi-process runs on CPU, through `python -m synthrel.run` as on GPUs:

- Lightning DDP over gloo (2 processes, batch b each) trains the same ControlNet as one process with batch 2b
  (same global batch, same accumulation): rank r draws the stream positions that the single process puts at
  places r, r + 2, ... of each global batch, and the noise, timestep and VAE sample are seeded per position.
- generation shards 0/2 and 1/2 running at the same time in two processes, writing into one folder and its
  shared manifest, give exactly the files and records of the unsharded run.
"""

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from synthrel.run import run_stages

STEPS, ACCUMULATE, PER_RANK, LR = 2, 2, 2, 1e-4
# Why the two runs cannot be compared element by element at fp32 rounding (issue #35: 1e-5 failed on another
# machine): the gradients of a batch of 4 and of two all-reduced batches of 2 differ by fp32 rounding, ~1e-9 here,
# and Adam amplifies a difference near a zero gradient. Its step is lr * m/(sqrt(v) + eps) with eps = 1e-8; at g ~ 0
# its slope is about lr * 0.5 / eps = 5e3, so a 4e-9 rounding difference in an element whose gradient is ~0 moves
# that weight by 2e-5 (measured on a 2-core box: 4 of 1.09 M elements beyond 1e-5, max 2.2e-5, in trunk convs that
# get their first nonzero gradient at step 2). This does not depend on load or threads (both runs use one thread):
# it depends on which elements sit near zero and on the CPU's kernels. So the test asks what rounding allows:
ATOL = 1e-6          # nearly every element agrees to fp32 rounding after Adam (measured: 99.97 %)
MAX_BEYOND = 1e-3    # share of elements allowed beyond ATOL: those with a gradient within rounding of zero
BOUND = 2 * LR * STEPS  # and none beyond what Adam can move a weight in STEPS steps (|step| <= lr * ~1)


def test_each_rank_draws_its_places_of_every_global_batch(tiny_tree):
    """Resumed at optimizer step 3 with accumulation 2 and global batch 4, 24 draws are used: the next two
    micro-batches of one process are 24..27 and 28..31; rank r of two takes 24 + r, 26 + r, then 28 + r, 30 + r."""
    from synthrel.controlnet.data import ControlNetTrainData, load_captions
    from synthrel.controlnet.module import ControlNetModule
    from synthrel.data.cityscapes import CityscapesDataset
    from synthrel.diffusion_loading import load_base_pipeline

    data = ControlNetTrainData(CityscapesDataset(tiny_tree / "tiny/data/cityscapes", split="train"),
                               load_captions(tiny_tree / "tiny/artifacts/captions/cityscapes_train.jsonl"), 32)
    base = load_base_pipeline(str(tiny_tree / "tiny/models/sd15"))

    def micro_batches(batch_size, rank, world_size):
        module = ControlNetModule(base, data, conditioning_channels=1, lr=1e-4, batch_size=batch_size)
        module._trainer = SimpleNamespace(global_step=3, accumulate_grad_batches=2, global_rank=rank,
                                          world_size=world_size)
        return [list(b) for b in itertools.islice(module.train_dataloader().batch_sampler, 2)]

    assert micro_batches(4, 0, 1) == [[24, 25, 26, 27], [28, 29, 30, 31]]
    assert micro_batches(2, 0, 2) == [[24, 26], [28, 30]]
    assert micro_batches(2, 1, 2) == [[25, 27], [29, 31]]


def train_overrides(root: Path, name: str, devices: int, batch_size: int) -> list[str]:
    key = "stages.train_controlnet"
    return ["+stage=[train_controlnet]", "profile=tiny", f"paths.output_root={root}", f"task_name={name}",
            "device=cpu", "logger=none", "backbone.resolution=32", f"{key}.output_dir={root}/controlnet_{name}",
            f"{key}.devices={devices}", f"{key}.strategy={'ddp' if devices > 1 else 'auto'}",
            f"{key}.batch_size={batch_size}", f"{key}.accumulate_grad_batches={ACCUMULATE}", f"{key}.max_steps={STEPS}",
            f"{key}.lr={LR}", f"{key}.num_workers=0", f"{key}.sample_every_n_steps=0",
            f"{key}.checkpoint_every_n_steps=1"]


@pytest.mark.slow
def test_ddp_on_two_processes_trains_what_one_process_trains(tiny_tree, run_synthrel, finish_all, compose_cfg):
    ddp = run_synthrel(*train_overrides(tiny_tree, "ddp", 2, PER_RANK))
    run_stages(compose_cfg(*train_overrides(tiny_tree, "single", 1, 2 * PER_RANK)))  # the reference, in-process
    finish_all([ddp])
    records = {name: json.loads((tiny_tree / f"controlnet_{name}/final/training.json").read_text())
               for name in ("single", "ddp")}
    assert (records["single"]["world_size"], records["ddp"]["world_size"]) == (1, 2)
    assert records["single"]["effective_batch_size"] == records["ddp"]["effective_batch_size"] == 8
    assert records["single"]["global_step"] == records["ddp"]["global_step"] == STEPS
    weights = {name: load_file(tiny_tree / f"controlnet_{name}/final/diffusion_pytorch_model.safetensors")
               for name in ("single", "ddp")}
    assert weights["single"].keys() == weights["ddp"].keys()
    diffs = torch.cat([(weights["ddp"][key] - value).abs().flatten() for key, value in weights["single"].items()])
    assert float(diffs.max()) <= BOUND
    beyond = float((diffs > ATOL).double().mean())
    assert beyond <= MAX_BEYOND, f"{beyond:.2%} of the weights differ by more than {ATOL}"
    # The comparison can fail: the zero convolutions started at 0 and moved by about lr x steps = 2e-4 (Adam); a
    # run on another stream moves most elements otherwise (seed=1: 89 % of the elements beyond ATOL, against
    # 0.03 % for this DDP run; a DDP run with hflip ended 4e-4 away).
    moved = max(float(v.abs().max()) for k, v in weights["single"].items() if k.startswith("controlnet_down_blocks"))
    assert moved > 100 * ATOL
    checkpoint = torch.load(tiny_tree / "controlnet_ddp/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == STEPS
    for key, value in weights["ddp"].items():
        assert torch.equal(checkpoint["state_dict"][f"controlnet.{key}"], value), key


def generate_overrides(root: Path, name: str, shard: str) -> list[str]:
    return ["+stage=[generate]", "profile=tiny", f"paths.output_root={root}", f"task_name={name}", "device=cpu",
            "domain=fog", "backbone.resolution=32", "backbone.num_inference_steps=2",
            f"backbone.controlnet={root}/tiny/models/controlnet_sd15", "profile.num_samples=8",
            "stages.generate.batch_size=2", f"stages.generate.out_root={root}/{name.rstrip('01')}", f"shard={shard}"]


def test_concurrent_shards_in_two_processes_give_the_unsharded_set(tiny_tree, run_synthrel, finish_all, compose_cfg):
    shards = [run_synthrel(*generate_overrides(tiny_tree, name, shard)) for name, shard in (("shard0", "0/2"),
                                                                                            ("shard1", "1/2"))]
    run_stages(compose_cfg(*generate_overrides(tiny_tree, "whole", "0/1")))  # the reference, in-process
    finish_all(shards)
    whole, sharded = tiny_tree / "whole" / "fog", tiny_tree / "shard" / "fog"

    def pngs(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.png")}

    def records(folder):
        text = (folder / "manifest.jsonl").read_text()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]  # every line is one whole JSON record

    reference, written = pngs(whole), pngs(sharded)
    assert len(reference) == 8 * 4  # image, labelIds, labelTrainIds, original per item
    assert written.keys() == reference.keys()
    assert all(written[name] == reference[name] for name in reference)  # same seeds per item, same bytes
    expected = {r["id"]: r for r in records(whole)}
    got = records(sharded)
    assert len(got) == len(expected) == 8
    assert {r["id"]: r for r in got} == expected


@pytest.mark.slow
def test_a_ddp_relaunch_is_checked_against_the_recorded_devices_and_retrains_with_force(tiny_tree, tmp_path,
                                                                                        run_synthrel, finish_all,
                                                                                        compose_cfg):
    """`+experiment=train_controlnet` (caption, then train) on one process, then on two (DDP over gloo): the global
    batch doubles, so the recorded run is not reused; with force=true only rank 0 captions again and writes, the
    rank that DDP starts by running the command again leaves the captions to it and trains beside it."""
    import shutil

    from synthrel.tiny.blip import build_tiny_blip

    root = tmp_path / "outputs"
    shutil.copytree(tiny_tree / "tiny", root / "tiny")
    build_tiny_blip(root / "tiny" / "models" / "blip")

    def overrides(devices: int, *extra: str) -> list[str]:
        base = [o for o in train_overrides(root, "relaunch", devices, 2) if not o.startswith(("+stage=", "task_name="))]
        return ["+experiment=train_controlnet", *base, "stages.caption.num_beams=1", "stages.caption.max_new_tokens=8",
                "stages.caption.min_new_tokens=1", *extra]

    run_stages(compose_cfg(*overrides(1, "force=true")))
    record = root / "controlnet_relaunch" / "final" / "training.json"
    assert json.loads(record.read_text())["settings"]["world_size"] == 1
    refused = run_synthrel(*overrides(2))
    out, _ = refused.communicate(timeout=900)
    assert refused.returncode != 0
    assert "world_size 1 -> 2" in out and "effective_batch_size 4 -> 8" in out and "force=true" in out, out[-3000:]
    relaunch = run_synthrel(*overrides(2, "force=true"))
    out, _ = relaunch.communicate(timeout=900)
    assert relaunch.returncode == 0, out[-6000:]
    assert "stage caption: left to rank 0" in out  # the relaunched rank 1 (its output goes to the same pipe)
    assert "OutputBusyError" not in out
    trained = json.loads(record.read_text())
    assert trained["world_size"] == trained["settings"]["world_size"] == 2
    assert trained["settings"]["strategy"] == "ddp" and trained["effective_batch_size"] == 8
