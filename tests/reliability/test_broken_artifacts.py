"""Readers of synthrel's own files (issue #35 item 5): a corrupt or unexpected captions file, calibration
sample, DONE record or result table is an error naming the file, what was expected and how to repair it, never
a parser's traceback; a user's captions file without its final newline is read as it is."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from reliability_utils import GENERATE, run_cli, stage_overrides

from synthrel.calibration.data import CalibSample, load_image_ids
from synthrel.captions.job import read_captions
from synthrel.errors import DatasetError
from synthrel.evaluation.results import is_done
from synthrel.jobs import ArtifactError, read_json_artifact, read_parquet_artifact

GENERATE_TWO = [*GENERATE, "profile.num_samples=2"]


def _captions(world) -> list[dict]:
    return [json.loads(line) for line in (world / "captions_val.jsonl").read_text().splitlines()]


def test_a_captions_file_keyed_text_names_the_file_line_and_keys(world, tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"id": r["id"], "text": r["caption"]}) + "\n" for r in _captions(world)))
    proc = run_cli([*stage_overrides(world, tmp_path / "artifacts", GENERATE_TWO),
                    f"stages.generate.captions={captions}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert f"captions file {captions}, line 1: found ['id', 'text']; expected a JSON object with string keys " \
           '"id" and "caption" per line (config key `stages.generate.captions`)' in proc.stderr
    assert "KeyError" not in proc.stderr
    assert not (tmp_path / "artifacts" / "synthetic").exists() or not list((tmp_path / "artifacts").rglob("*.png"))


def test_a_captions_file_without_its_final_newline_is_read(world, tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text((world / "captions_val.jsonl").read_text().rstrip("\n"))
    proc = run_cli([*stage_overrides(world, tmp_path / "artifacts", GENERATE_TWO),
                    f"stages.generate.captions={captions}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_captions(captions) == read_captions(world / "captions_val.jsonl")


def test_a_captions_file_cut_in_its_last_line_says_so(world, tmp_path):
    text = (world / "captions_val.jsonl").read_text()
    captions = tmp_path / "captions.jsonl"
    captions.write_text(text[:-15])
    n_lines = text.count("\n")
    with pytest.raises(DatasetError, match=rf"the last line \({n_lines}\) has no newline and is not a complete JSON "
                                           r"record: the file was cut short.*Re-run the caption stage"):
        read_captions(captions)
    captions.write_text("not json\n" + text)
    with pytest.raises(DatasetError, match=r"line 1: not JSON \('not json'\)"):
        read_captions(captions)


def test_a_truncated_calibration_sample_names_the_file_and_the_repair(tmp_path):
    path = tmp_path / "calib_sample.npz"
    rng = np.random.default_rng(0)
    np.savez(path, logits=rng.normal(size=(50, 19)).astype(np.float32), labels=np.zeros(50, np.uint8),
             image_index=np.zeros(50, np.int32), features=np.zeros((1, 4), np.float32), image_ids=np.array(["a"]))
    assert CalibSample.load(path).n_images == 1
    path.write_bytes(path.read_bytes()[:300])
    for read in (CalibSample.load, load_image_ids):
        with pytest.raises(ArtifactError, match=rf"{path}: cannot be read as a calibration sample of the evaluate "
                                                r"stage.*\(an \.npz archive\).*Re-run the evaluate stage"):
            read(path)
    np.savez(path, logits=np.zeros((1, 19), np.float32))
    with pytest.raises(ArtifactError, match=r"missing \['labels', 'image_index', 'features', 'image_ids'\], found "
                                            r"\['logits'\]"):
        CalibSample.load(path)


def test_a_corrupt_done_record_is_evaluated_again_and_json_and_tables_name_the_file(tmp_path, caplog):
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "DONE").write_text('{"job": "m/d", "precision"')
    with caplog.at_level(logging.WARNING):
        assert not is_done(pair)
    assert f"evaluating again: {pair / 'DONE'}: cannot be read as an evaluate DONE record" in caplog.text
    (pair / "DONE").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match=r"a JSON object with \['job'\]; found list"):
        read_json_artifact(pair / "DONE", "an evaluate DONE record", "repair", keys=("job",))
    (pair / "metrics.parquet").write_bytes(b"PAR1 not a table")
    with pytest.raises(ArtifactError, match=r"metrics.parquet: cannot be read as a table \(a parquet table\) "
                                            r"\(Arrow\w+: .*\)\. rerun it"):
        read_parquet_artifact(pair / "metrics.parquet", "a table", "rerun it")


def test_a_manifest_line_without_its_key_names_the_file_and_line(tmp_path):
    from synthrel.jobs import Manifest

    manifest = Manifest(tmp_path / "manifest.jsonl", key="job")
    manifest.append({"job": "m/a"})
    with open(manifest.path, "a") as f:
        f.write('{"id": "m/b"}\n')
    with pytest.raises(ArtifactError, match=rf"{manifest.path}, line 2: expected a manifest record \(a JSON object "
                                            r"with key 'job'\), found '\{\"id\": \"m/b\"\}'\..*remove the line"):
        manifest.read()
