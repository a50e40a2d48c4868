"""Top-level keys (device, threads, seed, shard, force) fail through the CLI before any model loads, naming the key."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(("override", "message"), [
    ("device=gpu", "`device` is 'gpu'; expected auto, cpu, cuda or cuda:N"),
    ("cpu_threads=-1", "`cpu_threads` is -1; expected null"),
    ("cpu_threads=two", "`cpu_threads` is 'two'"),
    ("seed=abc", "`seed` is 'abc'; expected an integer"),
    ("seed=-3", "`seed` is -3"),
    ("shard=2/2", "shard 2/2 is out of range (config key `shard`)"),
    ("force=maybe", "`force` is 'maybe'; expected true or false"),
    ("verify=md5", "`verify` is 'md5'; valid: size, hash"),
])
def test_bad_top_level_keys_fail_before_any_stage_runs(tmp_path, override, message):
    env = {**os.environ, "SYNTHREL_OUTPUTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "synthrel.run", "profile=tiny", "+stage=[evaluate]", override],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "stage evaluate: starting" not in proc.stderr + proc.stdout
    assert not (tmp_path / "tiny" / "models").exists()  # nothing was built or loaded


@pytest.mark.parametrize(("overrides", "message"), [
    # a key added with + that the stage's job does not take: named, with the valid keys listed
    (["+stage=[evaluate,generate]", "+stages.generate.guidanc_scale=3"],
     "unknown key(s) `stages.generate.guidanc_scale`; valid keys of stages.generate: backbone, batch_size, "),
    (["+stage=[evaluate]", "+stages.evaluate.precison=bf16"], "precision, profile, seed, shard"),
    # without + Hydra's struct mode refuses the key itself, naming it
    (["+stage=[evaluate]", "stages.evaluate.precison=bf16"], "Could not override 'stages.evaluate.precison'"),
    # a custom domain without a name: the key is domain.name, not the stage key that interpolates it
    (["+stage=[evaluate,generate]", "domain=custom", "domain.domains=[sandstorm]"], "`domain.name` is not set"),
])
def test_stage_key_errors_name_the_key_before_any_stage_runs(tmp_path, overrides, message):
    env = {**os.environ, "SYNTHREL_OUTPUTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "synthrel.run", "profile=tiny", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "stages.generate.set_name" not in proc.stderr
    assert "stage evaluate: starting" not in proc.stderr + proc.stdout  # evaluate runs first: it did not start
    assert not (tmp_path / "tiny" / "models").exists()
