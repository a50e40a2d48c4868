"""Resume verifies what it skips, and no stage reads a set that is being written (issue #35 items 1 and 2).

Every output a manifest or DONE record lists carries its size and SHA-256. A re-run redoes an item whose files
are missing, truncated or (with verify=hash, the default) changed, and the log names it; it never counts it as
done. A set held by a writer, or left incomplete by a writer that stopped, is refused by its readers, naming
the writer's command and pid. Through `python -m synthrel.run` on the tiny world.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reliability_utils import GENERATE, run_cli, stage_overrides

from synthrel.data.synthetic import SyntheticDataset, item_damage, verified_records, write_item
from synthrel.jobs import IncompleteOutputError, check_readable, exclusive_output, sha256_file, writing

GENERATE_THREE = [*GENERATE, "profile.num_samples=3"]
ONE_PAIR = ["+stage=[evaluate]", "stages.evaluate.models=[pspnet_r18]", "stages.evaluate.datasets=[cityscapes]",
            "stages.evaluate.num_workers=0"]
EVAL_SYNTHETIC = ["+stage=[evaluate]", "stages.evaluate.models=[pspnet_r18]", "stages.evaluate.datasets=[synthetic]",
                  "stages.evaluate.num_workers=0"]


def _run_in_process(world: Path, artifacts: Path, stage: list[str]) -> dict:
    from hydra import compose, initialize_config_dir

    from synthrel.run import CONF_DIR, run_stages

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*stage_overrides(world, artifacts, stage),
                                                       f"paths.output_dir={artifacts}/run"])
    return run_stages(cfg)


@pytest.fixture(scope="module")
def generated(world, tmp_path_factory):
    """A finished 3-image fog set and a finished evaluation of one pair, made once."""
    artifacts = tmp_path_factory.mktemp("resume_verify")
    assert _run_in_process(world, artifacts, GENERATE_THREE)["generate"]["generated"] == 3
    _run_in_process(world, artifacts, ONE_PAIR)
    return artifacts


@pytest.fixture
def copy_of(generated, tmp_path):
    folder = tmp_path / "artifacts"
    shutil.copytree(generated, folder, ignore=shutil.ignore_patterns("run", "logs"))
    return folder


def _records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def _images(fog: Path) -> dict[str, Path]:
    return {p.name.removesuffix("_leftImg8bit.png"): p for p in sorted((fog / "leftImg8bit").rglob("*.png"))}


def _evaluated(artifacts: Path) -> list[str]:
    return sorted(p.parent.name for p in (artifacts / "results" / "tiny" / "pspnet_r18").glob("*/DONE"))


def test_generate_redoes_exactly_the_truncated_deleted_and_changed_items(world, copy_of, tmp_path):
    fog = copy_of / "synthetic" / "sd15" / "fog"
    images = _images(fog)
    truncated, deleted, changed = sorted(images)
    reference = {id: path.read_bytes() for id, path in images.items()}
    labels = {p.name: p.read_bytes() for p in (fog / "gtFine").rglob("*_labelIds.png")}
    records = _records(fog / "manifest.jsonl")
    assert all(set(r["files"]) >= {f"leftImg8bit/val/{r['city']}/{r['id']}_leftImg8bit.png"} for r in records)
    assert all(r["files"][k]["size"] > 0 and len(r["files"][k]["sha256"]) == 64 for r in records for k in r["files"])

    data = bytearray(images[changed].read_bytes())  # same size, other bytes: only a hash sees it
    data[-20] ^= 0xFF
    images[changed].write_bytes(bytes(data))
    images[truncated].write_bytes(reference[truncated][:100])
    deleted_label = next((fog / "gtFine").rglob(f"{deleted}_gtFine_labelIds.png"))
    deleted_label.unlink()

    base = stage_overrides(world, copy_of, GENERATE_THREE)
    sizes_only = run_cli([*base, "verify=size"], cwd=tmp_path)
    assert sizes_only.returncode == 0, sizes_only.stderr[-3000:]
    log = sizes_only.stdout + sizes_only.stderr
    assert "redoing 2 item(s)" in log
    assert f"redoing {truncated}: leftImg8bit/" in log and "100 bytes" in log and "(truncated or changed)" in log
    assert f"redoing {deleted}: gtFine/" in log and "_gtFine_labelIds.png: missing" in log
    assert f"redoing {changed}" not in log  # verify=size does not read the files
    assert len(_records(fog / "manifest.jsonl")) == 5  # two new records, nothing else redone
    assert images[truncated].read_bytes() == reference[truncated]  # made again, byte for byte
    assert deleted_label.read_bytes() == labels[deleted_label.name]

    default = run_cli(base, cwd=tmp_path)  # verify=hash by default
    assert default.returncode == 0, default.stderr[-3000:]
    log = default.stdout + default.stderr
    assert "redoing 1 item(s)" in log and f"redoing {changed}: leftImg8bit/" in log and "SHA-256 differs" in log
    assert {id: p.read_bytes() for id, p in _images(fog).items()} == reference
    assert len(_records(fog / "manifest.jsonl")) == 6

    again = run_cli(base, cwd=tmp_path)  # nothing left to redo
    assert again.returncode == 0 and "redoing" not in again.stdout + again.stderr
    assert "3 item(s) skipped" in again.stdout + again.stderr
    assert len(SyntheticDataset(fog)) == 3


def test_evaluate_redoes_a_pair_whose_metrics_table_was_truncated(world, copy_of, tmp_path):
    pair = copy_of / "results" / "tiny" / "pspnet_r18" / "cityscapes"
    reference = pd.read_parquet(pair / "metrics.parquet")
    done = json.loads((pair / "DONE").read_text())
    assert done["files"]["metrics.parquet"]["size"] == (pair / "metrics.parquet").stat().st_size
    assert done["files"]["confusion.npy"]["sha256"] == sha256_file(pair / "confusion.npy")
    (pair / "metrics.parquet").write_bytes((pair / "metrics.parquet").read_bytes()[:200])
    confusion = (pair / "confusion.npy").read_bytes()

    proc = run_cli([*stage_overrides(world, copy_of, ONE_PAIR)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "evaluating again, result files missing, truncated or changed" in log and "metrics.parquet: 200 bytes" in log
    pd.testing.assert_frame_equal(pd.read_parquet(pair / "metrics.parquet"), reference)
    assert (pair / "confusion.npy").read_bytes() == confusion

    (pair / "confusion.npy").unlink()  # a missing file is redone too
    proc = run_cli([*stage_overrides(world, copy_of, ONE_PAIR)], cwd=tmp_path)
    assert proc.returncode == 0 and "confusion.npy: missing" in proc.stdout + proc.stderr
    assert (pair / "confusion.npy").read_bytes() == confusion


def test_records_of_an_older_synthrel_without_sizes_are_checked_by_decoding(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for k in range(3):
        write_item(tmp_path, f"item{k}", "city", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                   np.zeros((16, 16), np.uint8), meta={"settings": {}})
    manifest = tmp_path / "manifest.jsonl"
    old = [{k: v for k, v in r.items() if k != "files"} for r in _records(manifest)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in old))
    image = tmp_path / "leftImg8bit" / "val" / "city" / "item1_leftImg8bit.png"
    image.write_bytes(image.read_bytes()[:60])
    (tmp_path / "gtFine" / "val" / "city" / "item2_gtFine_labelIds.png").unlink()
    with caplog.at_level("INFO"):
        kept = verified_records(tmp_path, ["item0", "item1", "item2"], "size", "generate")
    assert sorted(kept) == ["item0"]
    assert "does not decode" in caplog.text and "missing" in caplog.text and "older synthrel" in caplog.text
    assert item_damage(tmp_path, old[0]) == {}


def test_evaluate_refuses_a_set_that_generate_holds_naming_its_pid(world, copy_of, tmp_path):
    fog = copy_of / "synthetic" / "sd15" / "fog"
    with exclusive_output(fog):  # this test process is the generate run still writing the set
        proc = run_cli(stage_overrides(world, copy_of, EVAL_SYNTHETIC), cwd=tmp_path)
        assert proc.returncode != 0
        assert f"synthetic set {fog} is being written by another synthrel run" in proc.stderr
        assert f'"pid": {os.getpid()}' in proc.stderr and '"command":' in proc.stderr and "Wait for it" in proc.stderr
        with pytest.raises(IncompleteOutputError):
            check_readable(fog, "synthetic set")
    assert _evaluated(copy_of) == ["cityscapes"]  # nothing of the synthetic set
    proc = run_cli(stage_overrides(world, copy_of, EVAL_SYNTHETIC), cwd=tmp_path)  # released: it runs
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_set_whose_writer_stopped_is_refused_until_the_writer_finishes_it(world, copy_of, tmp_path):
    fog = copy_of / "synthetic" / "sd15" / "fog"
    with pytest.raises(KeyboardInterrupt), writing(fog):  # a generate run that stopped while writing
        raise KeyboardInterrupt
    assert (fog / ".synthrel.incomplete").is_file()
    proc = run_cli(stage_overrides(world, copy_of, EVAL_SYNTHETIC), cwd=tmp_path)
    assert proc.returncode != 0
    assert f"synthetic set {fog} is incomplete: its writer stopped before finishing" in proc.stderr
    assert f'"pid": {os.getpid()}' in proc.stderr and "Run that command again to finish the set" in proc.stderr
    assert _evaluated(copy_of) == ["cityscapes"]  # nothing of the synthetic set

    finish = run_cli(stage_overrides(world, copy_of, GENERATE_THREE), cwd=tmp_path)  # the writer's command
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert not list(fog.glob(".synthrel.incomplete*"))
    proc = run_cli(stage_overrides(world, copy_of, EVAL_SYNTHETIC), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_calibrate_fits_again_a_result_that_was_truncated_or_changed(tmp_path, caplog):
    from synthrel.calibration.job import CalibrateJob

    root = tmp_path / "results" / "tiny"
    rng = np.random.default_rng(0)
    for key in ("synth", "real"):
        path = root / "m" / key / "calib_sample.npz"
        path.parent.mkdir(parents=True)
        np.savez(path, logits=(rng.normal(size=(400, 19)) * 3).astype(np.float32),
                 labels=rng.integers(0, 19, 400).astype(np.uint8), image_index=np.repeat(np.arange(4), 100),
                 features=np.zeros((4, 8), np.float32), image_ids=np.array([f"{key}{i}" for i in range(4)]))

    def job(**kw):
        return CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                            calibration_sets={"s": ["synth"]}, targets=["real"], objective="nll", **kw)

    assert job().run()["fitted"] == 1
    result = next((tmp_path / "calib").rglob("m.json"))
    written = result.read_bytes()
    entry = _records(tmp_path / "calib" / "manifest.jsonl")[-1]
    assert entry["files"] == {str(result.relative_to(tmp_path / "calib")): {
        "size": len(written), "sha256": sha256_file(result)}}
    assert job().run()["fitted"] == 0

    result.write_bytes(written[:50])  # truncated: not valid JSON either
    with caplog.at_level("WARNING"):
        assert job().run()["fitted"] == 1
    assert "fitting again, its result file is missing, truncated or changed" in caplog.text and "50 bytes" in caplog.text
    assert result.read_bytes() == written

    assert b'"n_calib_pixels": 400' in written
    result.write_bytes(written.replace(b'"n_calib_pixels": 400', b'"n_calib_pixels": 401'))  # same size
    assert job(verify="size").run()["fitted"] == 0  # sizes only: not seen
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert job().run()["fitted"] == 1
    assert "SHA-256 differs" in caplog.text and result.read_bytes() == written
