"""The CLI as a user starts it: `--help` and `--cfg` load no heavy library, and a user's own config folder
(`hydra.searchpath`) adds experiments and a `local/default.yaml` without editing the package."""

import json
import subprocess
import sys

import pytest
import yaml

HEAVY = ("torch", "pandas", "scipy", "sklearn", "matplotlib", "transformers", "diffusers", "mmseg", "mmengine",
         "torchmetrics", "synthrel.analysis", "synthrel.preflight")

# Runs synthrel.run as `python -m synthrel.run ARGS` does, then prints which HEAVY modules were imported.
WRAPPER = """
import atexit, json, runpy, sys
heavy = {heavy!r}
atexit.register(lambda: print("IMPORTED=" + json.dumps(sorted(m for m in heavy if m in sys.modules))))
sys.argv = ["synthrel", *sys.argv[1:]]
runpy.run_module("synthrel.run", run_name="__main__", alter_sys=True)
"""


def run_cli(args, cwd):
    out = subprocess.run([sys.executable, "-c", WRAPPER.format(heavy=HEAVY), *args], capture_output=True,
                         text=True, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("IMPORTED="))
    return out.stdout, json.loads(line.removeprefix("IMPORTED="))


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "+experiment=demo"]], ids=["help", "cfg_job"])
def test_help_and_cfg_import_no_heavy_library(args, tmp_path):
    stdout, imported = run_cli(args, tmp_path)
    assert imported == []
    if "--cfg" in args:  # the composed demo config was printed, so the wrapper did reach Hydra's output
        job = yaml.safe_load(stdout.split("IMPORTED=")[0])
        assert job["task_name"] == "demo" and "tiny_models" in job["stages"]


def test_user_config_folder_on_the_search_path(tmp_path):
    """A folder outside the package gives a new experiment and, through the primary config's `optional local:
    default`, machine settings; both reach the composed job."""
    conf = tmp_path / "myconf"
    (conf / "local").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "local" / "default.yaml").write_text("# @package _global_\ncpu_threads: 3\ntags: [from_local]\n")
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /stage: [demo_data]\n  - override /profile: tiny\n\n"
        "task_name: mine\nseed: 17\n")
    work = tmp_path / "work"
    work.mkdir()
    stdout, _ = run_cli(["--cfg", "job", f"hydra.searchpath=[file://{conf}]", "+experiment=mine"], work)
    job = yaml.safe_load(stdout.split("IMPORTED=")[0])
    assert (job["task_name"], job["seed"], list(job["stages"]), job["profile"]["name"]) == (
        "mine", 17, ["demo_data"], "tiny")
    assert (job["cpu_threads"], job["tags"]) == (3, ["from_local"])


def test_user_experiment_without_search_path_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "synthrel.run", "--cfg", "job", "+experiment=mine"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert "Could not find 'experiment/mine'" in out.stderr + out.stdout
