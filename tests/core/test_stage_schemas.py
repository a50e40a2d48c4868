"""Every stage's settings are checked against its Job dataclass (synthrel/schemas.py) right after composition:
an unknown key, a wrong type or a wrong enum value stops the run naming `stages.<stage>.<key>`, before the
preflight and before any stage is built. Every shipped profile and experiment passes the check."""

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hydra.utils import get_class

from synthrel.errors import ConfigError
from synthrel.run import CONF_DIR
from synthrel.schemas import check_settings, check_stage_settings, check_value
from synthrel.stages import STAGE_ORDER

ROOT = Path(__file__).resolve().parents[2]
TARGET = re.compile(r"^_target_:\s*(\S+)", re.M)


@dataclass
class Inner:
    size: int
    name: str = "x"


@dataclass
class Outer:
    inner: Inner
    items: dict[str, Inner] = field(default_factory=dict)


# (hint, value as YAML / the command line gives it, fits): what a user means, written out by hand
CASES = [
    (int, 3, True), (int, True, False), (int, 2.0, False), (int, "3", False), (int, None, False),
    (float, 3, True), (float, 0.5, True), (float, False, False), (float, "0.5", False),
    (bool, True, True), (bool, 1, False), (bool, "true", False),
    (str, "a", True), (str, 1, False), (str, None, False),
    (str | None, None, True), (int | None, "x", False),
    (Literal["fp32", "bf16"], "fp32", True), (Literal["fp32", "bf16"], "fp64", False),
    (Literal[-1, 0, 1], 1, True), (Literal[-1, 0, 1], True, False), (Literal["32"], 32, False),
    (list[int], [1, 2], True), (list[int], [1, "2"], False), (list[int], 1, False), (list[int], [], True),
    (list[float], [0.5, 1], True), (dict[str, int], {"a": 1}, True), (dict[str, int], {"a": "1"}, False),
    (dict, {"a": [1]}, True), (dict, [1], False), (list, [1, "a"], True),
    (str | list[str] | None, ["a"], True), (str | list[str] | None, [1], False),
    (float | Literal["dark_channel"], "dark_channel", True), (float | Literal["dark_channel"], "bright", False),
    (Any, object(), True), (Path, "/x", True),
    (Inner, {"size": 1}, True), (Inner, {"size": 1, "nme": "y"}, False), (Inner, {"name": "y"}, False),
    (Inner, 1, False), (dict[str, Inner], {"a": {"size": "big"}}, False),
]


@pytest.mark.parametrize(("hint", "value", "fits"), CASES)
def test_values_fit_their_type_hint_as_a_user_means_it(hint, value, fits):
    assert (check_value(value, hint, "k") == []) is fits


def test_problems_name_the_nested_key_what_is_expected_and_what_was_given():
    problems = check_settings(Outer, {"inner": {"size": "big", "nme": 1}, "items": {"a": {"size": 2, "name": 3}},
                                      "extra": 1}, "stages.x")
    assert problems == [
        "`stages.x.inner.size` is 'big' (str); expected int",
        "unknown key `stages.x.inner.nme`; did you mean `stages.x.inner.name`? valid keys of stages.x.inner: name, size",
        "`stages.x.items.a.name` is 3 (int); expected str",
        "unknown key `stages.x.extra`; valid keys of stages.x: inner, items",
    ]
    assert check_settings(Outer, {}, "stages.x") == [
        "`stages.x.inner` is required (a mapping with keys size, name); the stage config does not set it"]
    assert check_value([1, "a"], str | list[str], "k") == ["`k[0]` is 1 (int); expected str"]
    assert check_value("fp64", Literal["fp32", "bf16"], "k") == ["`k` is 'fp64' (str); expected one of 'fp32', 'bf16'"]


@pytest.mark.parametrize("path", sorted((CONF_DIR / "stage").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_stage_has_a_schema(path):
    """A stage's Job is a dataclass: else its settings would go unchecked."""
    job = get_class(TARGET.search(path.read_text())[1])
    assert is_dataclass(job), f"{path}: {job.__name__} is not a dataclass: its settings would not be checked"


SHIPPED = [("profile=tiny", f"+stage=[{','.join(STAGE_ORDER)}]"),
           ("profile=smoke", f"+stage=[{','.join(STAGE_ORDER)}]"),
           # tiny_models writes the tiny and smoke profiles' models: the paper profile has none to write
           ("profile=paper", f"+stage=[{','.join(s for s in STAGE_ORDER if s != 'tiny_models')}]")]
SHIPPED += [("profile=tiny", f"+experiment={p.stem}") for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))]
SHIPPED += [("profile=smoke", "+experiment=gpu_check")]
SHIPPED += [("profile=paper", f"+experiment={p.stem}") for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))
            if p.stem not in ("demo", "gpu_check")]  # the demo pipeline builds tiny models


@pytest.mark.parametrize("overrides", SHIPPED, ids=" ".join)
def test_every_shipped_profile_and_experiment_fits_the_schemas(compose_cfg, overrides):
    extra = ["domain.name=sandstorm"] if overrides[1] == "+experiment=covariate_custom" else []
    check_stage_settings(compose_cfg(*overrides, *extra))


def test_the_tiny_models_stage_on_the_paper_profile_names_the_profile_key(compose_cfg):
    with pytest.raises(ConfigError, match=r"`stages.tiny_models.models_dir` is null; expected str \(set from "
                                          r"`profile.models_dir`\)"):
        check_stage_settings(compose_cfg("profile=paper", "+stage=[tiny_models]"))


# (stage, settings, message): the hand checks the schemas replace, one each (jobs built in Python skip them)
REPLACED = [
    ("calibrate", {"methods": ["vector"]}, "`stages.calibrate.methods[0]` is 'vector' (str); expected one of "
                                           "'global', 'per_class', 'cluster', 'cluster_per_class'"),
    ("calibrate", {"objective": "mse"}, "`stages.calibrate.objective` is 'mse'"),
    ("caption", {"mode": "blip2"}, "`stages.caption.mode` is 'blip2' (str); expected one of 'blip', "
                                   "'clip_interrogator'"),
    ("generate", {"sampler": "euler"}, "`stages.generate.sampler` is 'euler' (str); expected one of 'fast', "
                                       "'diffusers'"),
    ("generate", {"scheduler": "euler"}, "`stages.generate.scheduler` is 'euler'"),
    ("generate", {"conditioning": "rgb"}, "`stages.generate.conditioning` is 'rgb'"),
    ("evaluate", {"precision": "fp64"}, "`stages.evaluate.precision` is 'fp64' (str); expected one of 'fp32', "
                                        "'fp16', 'bf16'"),
    ("evaluate", {"features": "pixels"}, "`stages.evaluate.features` is 'pixels'"),
    ("evaluate", {"verify": "md5"}, "`stages.evaluate.verify` is 'md5' (str); expected one of 'size', 'hash'"),
    ("evaluate", {"num_workers": 1.5}, "`stages.evaluate.num_workers` is 1.5 (float); expected int"),
    ("train_controlnet", {"precision": "64"}, "`stages.train_controlnet.precision` is '64'"),
    ("train_controlnet", {"strategy": "fsdp"}, "`stages.train_controlnet.strategy` is 'fsdp'"),
    ("train_controlnet", {"conditioning": "rgb"}, "`stages.train_controlnet.conditioning` is 'rgb'"),
    ("train_controlnet", {"keep_checkpoints": 2}, "`stages.train_controlnet.keep_checkpoints` is 2 (int); "
                                                  "expected one of -1, 0, 1"),
    ("train_controlnet", {"max_grad_norm": "big"}, "`stages.train_controlnet.max_grad_norm` is 'big'"),
    ("tiny_models", {"size": "huge"}, "`stages.tiny_models.size` is 'huge' (str); expected one of 'tiny', 'real'"),
    ("tiny_models", {"diffusion": ["sd3"]}, "`stages.tiny_models.diffusion[0]` is 'sd3'"),
    ("forecast", {"predictors": ["clean", "atlantis"]}, "`stages.forecast.predictors[1]` is 'atlantis'"),
    ("fid", {"feature_extractor": "clip"}, "`stages.fid.feature_extractor` is 'clip'"),
    ("inpaint", {"compile": "fastest"}, "`stages.inpaint.compile` is 'fastest' (str); expected one of 'default', "
                                        "'reduce-overhead', 'max-autotune-no-cudagraphs', 'auto' or null"),
    ("inpaint", {"dtype": "fp64"}, "`stages.inpaint.dtype` is 'fp64'"),
    ("physics_fog", {"airlight": "sunny"}, "`stages.physics_fog.airlight` is 'sunny' (str); expected a number or "
                                           "one of 'dark_channel'"),
    ("physics_fog", {"betas": [0.01, "thick"]}, "`stages.physics_fog.betas[1]` is 'thick'"),
    ("train_zoo", {"lr": "fast"}, "`stages.train_zoo.lr` is 'fast'"),
    ("train_zoo", {"steps": {"m": 1.5}}, "`stages.train_zoo.steps.m` is 1.5"),
    ("report", {"real_split": "val"}, "`stages.report.real_split` is 'val'"),
    ("correlate", {"bootstrap": {"n_resample": 10}}, "unknown key `stages.correlate.bootstrap.n_resample`; did you "
                                                     "mean `stages.correlate.bootstrap.n_resamples`?"),
    ("correlate", {"ablation": {"sizes": [16], "repeat": 2}}, "unknown key `stages.correlate.ablation.repeat`"),
    ("ood_detection", {"rba": {"finetune": {"variants": {"coco": {"outliers": "imagenet"}}}}},
     "`stages.ood_detection.rba.finetune.variants.coco.outliers` is 'imagenet' (str); expected one of 'synthetic', "
     "'coco'"),
    ("ood_detection", {"rba": {"finetune": {"variants": {"coco": {"outliers": "coco", "item": "all"}}}}},
     "unknown key `stages.ood_detection.rba.finetune.variants.coco.item`; did you mean "
     "`stages.ood_detection.rba.finetune.variants.coco.items`?"),
    ("ood_detection", {"rba": {"finetune": {"synthetic_mode": "paste"}}},
     "`stages.ood_detection.rba.finetune.synthetic_mode` is 'paste'"),
    ("ood_detection", {"rba": {"finetune": {"batchsize": 2}}}, "unknown key `stages.ood_detection.rba.finetune."
                                                               "batchsize`; did you mean"),
    ("forecast", {"evaluate": {"_target_": "synthrel.evaluation.job.EvaluateJob", "precison": "bf16"}},
     "unknown key `stages.forecast.evaluate.precison`; did you mean `stages.forecast.evaluate.precision`?"),
    ("ood_detection", {"rba": {"model": {}}}, "unknown key `stages.ood_detection.rba.model`; did you mean "
                                              "`stages.ood_detection.rba.models`?"),
]


@pytest.mark.parametrize(("stage", "settings", "message"), REPLACED, ids=lambda v: v if isinstance(v, str) else "")
def test_the_schema_names_each_wrong_setting(stage, settings, message):
    job = get_class(TARGET.search((CONF_DIR / "stage" / f"{stage}.yaml").read_text())[1])
    problems = [p for p in check_settings(job, settings, f"stages.{stage}") if "is required" not in p]
    assert len(problems) == 1 and message in problems[0], problems


def _run(tmp_path, *overrides):
    env = {**os.environ, "SYNTHREL_OUTPUTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "synthrel.run", "profile=tiny", "preflight=true", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("overrides", "messages"), [
    # typos, wrong types and enum values in three stages, one of them set through the backbone
    (["+stage=[generate,evaluate,calibrate]", "stages.evaluate.precision=fp64", "stages.evaluate.batch_size=two",
      "+stages.calibrate.methodz=[global]", "backbone.scheduler=euler"],
     ["`stages.evaluate.precision` is 'fp64' (str); expected one of 'fp32', 'fp16', 'bf16'",
      "`stages.evaluate.batch_size` is 'two' (str); expected int",
      "unknown key `stages.calibrate.methodz`; did you mean `stages.calibrate.methods`? valid keys of "
      "stages.calibrate: allow_overlap, calibration_sets,",
      "`stages.generate.scheduler` is 'euler' (str); expected one of 'ddim' (set from `backbone.scheduler`)"]),
    # nested settings and list items
    (["+stage=[correlate,corrupt,train_controlnet]", "+stages.correlate.bootstrap.n_resample=10",
      "stages.corrupt.severities=[3,high]", "stages.train_controlnet.keep_checkpoints=2"],
     ["unknown key `stages.correlate.bootstrap.n_resample`; did you mean `stages.correlate.bootstrap.n_resamples`?",
      "`stages.corrupt.severities[1]` is 'high' (str); expected int",
      "`stages.train_controlnet.keep_checkpoints` is 2 (int); expected one of -1, 0, 1"]),
])
def test_wrong_stage_settings_stop_the_cli_before_the_preflight(tmp_path, overrides, messages):
    proc = _run(tmp_path, *overrides)
    assert proc.returncode != 0
    assert f"{len(messages)} stage setting(s) do not fit" in proc.stderr, proc.stderr[-3000:]
    for message in messages:
        assert message in proc.stderr, proc.stderr[-3000:]
    assert not list(tmp_path.rglob("preflight.txt")) and "ready:" not in proc.stdout  # the preflight did not run
    assert not (tmp_path / "tiny" / "models").exists()
