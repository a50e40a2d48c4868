"""experiments/table2.sh as it composes: the zoo's OOD PCC on the curated and the automatic OOD-object set, both
OOD conventions, against Road Anomaly (the full run is tests/docs/test_readme_commands.py, `full` tier)."""

import re
import shlex
import subprocess

from omegaconf import OmegaConf

from synthrel.metrics.ood import describe_row
from synthrel.run import CONF_DIR

SCRIPT = CONF_DIR.parents[1] / "experiments" / "table2.sh"


def script_runs(marker: str) -> list[list[str]]:
    """Overrides of each `run ...` line of the recipe that contains `marker`, with its shell variables expanded
    where the recipe sets them (POOLED, PER_IMAGE) and the rest ($PROFILE, $MODELS, ...) left out."""
    text = re.sub(r"\\\n\s*", " ", SCRIPT.read_text())
    values = dict(re.findall(r"^(POOLED|PER_IMAGE)=(\S+)$", text, re.M))
    runs = []
    for line in text.splitlines():
        if line.startswith("run ") and marker in line:
            for name, value in values.items():
                line = line.replace(f"${name}", value)
            runs.append([t for t in shlex.split(line)[1:] if "$" not in t and t != "-m"])
    return runs


def test_the_recipe_correlates_both_ood_sets_in_both_conventions(compose_cfg):
    (overrides,) = script_runs("+experiment=correlation")
    cfg = compose_cfg(*overrides, "profile=tiny")
    correlate = OmegaConf.to_container(cfg.stages.correlate, resolve=True)
    assert correlate["domains"] == ["ood_objects_curated", "ood_objects"]
    assert {d: correlate["real_datasets"][d] for d in correlate["domains"]} == {
        "ood_objects_curated": "road_anomaly", "ood_objects": "road_anomaly"}
    conventions = {describe_row(m) for m in correlate["metrics"]}
    assert {c for c, _ in conventions} == {"rba_pooled", "genval_per_image"}
    assert {s for _, s in conventions} == {"msp", "max_logit", "entropy"}


def test_the_recipe_scores_the_zoo_on_the_curated_items(compose_cfg, tmp_path):
    (overrides,) = script_runs("task_name=table2_ood_curated")
    listed = tmp_path / "curated.txt"
    cfg = compose_cfg(*overrides, "profile=tiny", f"datasets.ood_objects_curated.item_list={listed}")
    evaluate = OmegaConf.to_container(cfg.stages.evaluate, resolve=True)
    assert evaluate["datasets"] == ["ood_objects_curated"]
    label = evaluate["dataset_labels"]["ood_objects_curated"]
    assert label["domain"] == "ood_objects_curated" and label["key"] == "ood_objects_curated_sd15_paper42"
    assert cfg.datasets.ood_objects_curated.root == cfg.datasets.ood_objects.root  # a subset of the same set
    # the fine-tune's curated rows read the same list by default
    cfg = compose_cfg("+stage=[ood_detection]", f"datasets.ood_objects_curated.item_list={listed}")
    assert cfg.stages.ood_detection.rba.finetune.curated_list == str(listed)


def test_the_recipe_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert subprocess.run(["bash", "-n", str(SCRIPT.with_name("fig15_16.sh"))], capture_output=True).returncode == 0
