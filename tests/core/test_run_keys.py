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
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "stage evaluate: starting" not in proc.stderr + proc.stdout
    assert not (tmp_path / "tiny" / "models").exists()  # nothing was built or loaded


@pytest.mark.parametrize(("overrides", "message"), [
    # a key added with + that the stage's job does not take: named, with the valid keys listed
    (["+stage=[evaluate,generate]", "+stages.generate.guidanc_scale=3"],
     "unknown key `stages.generate.guidanc_scale`; did you mean `stages.generate.guidance_scale`? valid keys of "
     "stages.generate: backbone, batch_size, "),
    (["+stage=[evaluate]", "+stages.evaluate.precison=bf16"], "precision, profile, seed, shard"),
    # without + Hydra's struct mode refuses the key itself, naming it
    (["+stage=[evaluate]", "stages.evaluate.precison=bf16"], "Could not override 'stages.evaluate.precison'"),
    # a custom domain without a name: the key is domain.name, not the stage key that interpolates it
    (["+stage=[evaluate,generate]", "domain=custom", "domain.domains=[sandstorm]"], "`domain.name` is not set"),
])
def test_stage_key_errors_name_the_key_before_any_stage_runs(tmp_path, overrides, message):
    env = {**os.environ, "SYNTHREL_OUTPUTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "synthrel.run", "profile=tiny", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "stages.generate.set_name" not in proc.stderr
    assert "stage evaluate: starting" not in proc.stderr + proc.stdout  # evaluate runs first: it did not start
    assert not (tmp_path / "tiny" / "models").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    # non-finite numbers: refused at composition, naming the key (nan generated with guidance off)
    (["+stage=[generate]", "backbone.guidance_scale=nan"], "`backbone.guidance_scale` is nan; expected a finite"),
    (["+stage=[inpaint]", "stages.inpaint.refine_strength=-inf"], "`stages.inpaint.refine_strength` is -inf"),
    # empty lists that no stage documents: evaluate read [] as the whole zoo, inpaint as nothing to do
    (["+stage=[evaluate]", "stages.evaluate.models=[]"], "`stages.evaluate.models` is an empty list"),
    (["+stage=[inpaint]", "profile.inpaint_objects=[]"], "`profile.inpaint_objects` is an empty list"),
    # a setting no selected stage uses: calibrate fitted every model in every shard
    (["+stage=[calibrate]", "shard=1/2"], "`shard=1/2` is not used by stage(s) calibrate: they do not shard"),
    # a stage typo: the valid stages listed (Hydra's message for a list override lists none)
    (["+stage=[genrate]"], "unknown stage(s) genrate in `+stage=[...]`; valid stages: tiny_models, demo_data,"),
])
def test_settings_that_would_be_ignored_or_misread_are_refused_naming_the_key(tmp_path, overrides, message):
    env = {**os.environ, "SYNTHREL_OUTPUTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "synthrel.run", "profile=tiny", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "starting" not in proc.stderr + proc.stdout
    assert not (tmp_path / "tiny" / "models").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("paths:\n  data_dir: /data\n", "lacks its package header: expected `# @package _global_` as its first line"),
    ("# @package _global_\npaths:\n  dataa_dir: /data\n", "unknown key `paths.dataa_dir` (no config has it); valid "
                                                          "keys under `paths`: artifacts_dir, cache_dir, data_dir"),
    ("# @package _global_\ndevcie: cpu\n", "unknown key `devcie`"),
])
def test_a_local_config_file_with_a_key_that_lands_nowhere_is_refused(tmp_path, text, message):
    """`local/default.yaml` in the user's config folder (hydra.searchpath): its keys landed under `local.` without
    the package header, and a misspelt key was added unread."""
    local = tmp_path / "conf" / "local" / "default.yaml"
    local.parent.mkdir(parents=True)
    local.write_text(text)
    env = {**os.environ, "SYNTHREL_OUTPUTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "synthrel.run", "profile=tiny", "+stage=[evaluate]",
                           f"hydra.searchpath=[file://{tmp_path}/conf]"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert f"local config file {local}" in proc.stderr and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "tiny" / "models").exists()


def test_a_valid_local_config_file_is_read(tmp_path):
    """New entries of named mappings (datasets, profile.models) and known keys pass; the value is used."""
    local = tmp_path / "conf" / "local" / "default.yaml"
    local.parent.mkdir(parents=True)
    local.write_text("# @package _global_\n# my machine\npaths:\n  data_dir: /my/data\nprofile:\n  models:\n"
                     "    mine: /my/model\ndatasets:\n  mine: {root: /x}\n")
    env = {**os.environ, "SYNTHREL_OUTPUTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "synthrel.run", "profile=tiny", "+stage=[calibrate]",
                           f"hydra.searchpath=[file://{tmp_path}/conf]", "preflight=true"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ready: everything this run reads is present" in proc.stdout + proc.stderr


def test_shard_beside_a_stage_that_shards_is_logged_as_ignored_by_the_others(compose_cfg, caplog):
    from synthrel.config import check_shard_used

    check_shard_used(compose_cfg("profile=tiny", "+stage=[evaluate,calibrate,correlate]", "shard=1/2"))
    assert "`shard=1/2` is ignored by stage(s) calibrate, correlate" in caplog.text
    caplog.clear()
    check_shard_used(compose_cfg("profile=tiny", "+stage=[calibrate]"))  # 0/1: nothing to say
    assert not caplog.text


def test_lists_documented_as_possibly_empty_pass_and_nested_non_finite_values_are_named(compose_cfg):
    from synthrel.config import check_values
    from synthrel.errors import ConfigError

    check_values(compose_cfg("profile=tiny", "+stage=[correlate,forecast]", "stages.correlate.ablation.sizes=[]",
                             "stages.correlate.class_metrics=[]", "stages.forecast.qualitative_models=[]"))
    with pytest.raises(ConfigError, match=r"`stages.correlate.bootstrap.confidence` is inf; expected a finite"):
        check_values(compose_cfg("profile=tiny", "+stage=[correlate]", "stages.correlate.bootstrap.confidence=inf"))
    with pytest.raises(ConfigError, match=r"`stages.fid.resolution\[1\]` is nan"):
        check_values(compose_cfg("profile=tiny", "+stage=[fid]", "stages.fid.resolution=[64,nan]"))
