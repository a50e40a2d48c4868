"""Every documented command runs as written, on the tiny profile, from an empty folder (`make test-full`).

The commands are read from README.md and experiments/ themselves, so the docs cannot drift from what works. The
only changes made to them are the ones README.md states: `python` is this interpreter, and `profile=tiny` is
appended to a command that does not set a profile, after the README's one-time tiny set-up command; recipes run
with `PROFILE=tiny` (experiments/README.md).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMAND = "python -m synthrel.run"
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline", "TQDM_DISABLE": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
RECIPE_ORDER = ("table1", "table5", "fig3", "table2", "table3", "table4", "fig6", "fig14", "fig15_16")

def readme_commands(text: str) -> list[list[str]]:
    """The `python -m synthrel.run` commands of a Markdown text, in document order: lines of ```bash blocks
    (shell comments dropped) and inline `code` spans, split as the shell splits them."""
    found = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        offset = block.start(1)
        for line in block.group(1).splitlines(keepends=True):
            if line.strip().startswith(COMMAND):
                found.append((offset, shlex.split(line, comments=True)))
            offset += len(line)
    prose = re.sub(r"```.*?```", lambda m: " " * len(m.group(0)), text, flags=re.S)
    for span in re.finditer(r"`(" + re.escape(COMMAND) + r" [^`]*)`", prose):
        found.append((span.start(), shlex.split(span.group(1))))
    return [args for _, args in sorted(found, key=lambda item: item[0])]


def on_tiny_profile(args: list[str]) -> list[str]:
    """The README's substitutions: this interpreter for `python`, `profile=tiny` appended."""
    assert args[:3] == ["python", "-m", "synthrel.run"], args
    tiny = [] if any(a.startswith("profile=") for a in args) else ["profile=tiny"]
    return [sys.executable, *args[1:], *tiny]


def test_readme_commands_are_extracted_in_order():
    commands = readme_commands((REPO / "README.md").read_text())
    assert commands[0] == ["python", "-m", "synthrel.run", "profile=tiny", "+stage=[tiny_models,demo_data,train_zoo]"]
    assert ["python", "-m", "synthrel.run", "+experiment=covariate_custom", "domain.name=sandstorm in Cairo"] in commands
    assert len(commands) >= 12 and all(c[:3] == ["python", "-m", "synthrel.run"] for c in commands)
    # the DDP line follows the one-GPU training: another world size is another run, replaced only with force
    ddp = [c for c in commands if "stages.train_controlnet.devices=4" in c]
    assert ddp and all("stages.train_controlnet.force=true" in c for c in ddp), ddp


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The overrides of each job Hydra's basic sweeper makes of a command line (`-m a=1,2 b=x,y`: 4 jobs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for k, a in enumerate(args) if a not in ("-m", "--multirun", "--cfg") and args[k - 1] != "--cfg"]
    choices = []
    for text, override in zip(args, OverridesParser.create().parse_overrides(args), strict=True):
        if override.is_sweep_override():
            choices.append([f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(job) for job in itertools.product(*choices)]


def test_every_readme_command_composes_on_the_tiny_profile(tmp_path, monkeypatch):
    """The cheap check of `make test`: each job of each README command composes from an empty folder, with its
    paths under that folder and its stages known; `make test-full` runs them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from synthrel.run import CONF_DIR, STAGE_ORDER

    monkeypatch.chdir(tmp_path)
    previous = HydraConfig.instance().cfg
    n_jobs = 0
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for args in readme_commands((REPO / "README.md").read_text()):
                for overrides in sweep_jobs(on_tiny_profile(args)[3:]):
                    cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
                    with open_dict(cfg):
                        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
                    HydraConfig.instance().set_config(cfg)
                    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
                    OmegaConf.to_container(job, resolve=True)  # every interpolation resolves
                    assert cfg.paths.root_dir == str(tmp_path) and cfg.profile.name == "tiny", overrides
                    assert cfg.stages and set(cfg.stages) <= set(STAGE_ORDER), overrides
                    n_jobs += 1
    finally:
        HydraConfig.instance().cfg = previous
    assert n_jobs >= 20


# A hang guard, not a speed limit: on a loaded 2-core box the README's compile line (7 tiny zoo models compiled per
# input size, 3 sets) ran past 25 minutes.
def _run(argv: list[str], cwd: Path, env: dict | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV, **(env or {})})


def _reported_paths(stdout: str) -> dict[str, Path]:
    """The `<stage>.<key>: <path>` lines synthrel.run prints when it finishes."""
    return {m[1]: Path(m[2]) for m in re.finditer(r"^  (\w+\.\w+): (.+)$", stdout, re.M)}


def _check_outputs(stdout: str) -> None:
    """What the command promises: its tables (correlate), its report, its synthetic sets and results."""
    paths = _reported_paths(stdout)
    for key, path in paths.items():
        if key.endswith(("_dir", "_path", "report", "report_html")):
            assert path.exists(), f"{key}: {path} does not exist"
    for key, path in paths.items():
        if key == "correlate.analysis_dir":
            assert list(path.glob("table1_*.csv")) or list(path.glob("table5_*.csv")), f"no table in {path}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """An empty folder, as a new user's."""
    return tmp_path_factory.mktemp("user")


@pytest.mark.full
def test_every_readme_command_runs_as_written_on_the_tiny_profile(workdir):
    failures = []
    for args in readme_commands((REPO / "README.md").read_text()):
        proc = _run(on_tiny_profile(args), workdir)
        if proc.returncode != 0:
            failures.append(f"{shlex.join(args)} -> exit {proc.returncode}\n{proc.stderr[-3000:]}")
            continue
        if "--cfg" in args:
            assert "stages:" in proc.stdout, proc.stdout[-2000:]
            continue
        _check_outputs(proc.stdout)
    assert not failures, "\n\n".join(failures)


@pytest.mark.full
@pytest.mark.parametrize("recipe", RECIPE_ORDER)
def test_every_recipe_runs_with_profile_tiny(workdir, recipe):
    """experiments/<recipe>.sh with PROFILE=tiny, after the README commands (the recipes need their captions and
    ControlNets), in the paper's order: table5 and fig3 reuse table1's evaluations."""
    proc = _run(["bash", str(REPO / "experiments" / f"{recipe}.sh")], workdir,
                env={"PROFILE": "tiny", "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for line in proc.stdout.splitlines():  # every python -m synthrel.run the recipe ran printed its outputs
        if line.startswith("  ") and ": " in line:
            key, path = line.strip().split(": ", 1)
            if key.endswith(("_dir", "report")):
                assert Path(path).exists(), f"{recipe}: {key} {path} missing"
    # the baseline generators' rows (synthrel/conf/generator/: physics fog per beta, Hendrycks per domain, external)
    analysis = workdir / "outputs" / "tiny" / "artifacts" / "analysis"
    if recipe == "table2":  # the PCC of the curated and the automatic OOD set, in both OOD conventions
        pcc = (analysis / "table2" / "table2_pcc_sd15.md").read_text()
        assert "curated" in pcc and "automatic" in pcc and "(rba_pooled)" in pcc and "(genval_per_image)" in pcc, pcc
    if recipe == "fig15_16":
        assert {p.name for p in (analysis / "fig15_16").glob("fig1[56]_*.png")} == {
            "fig15_predictions.png", "fig16_ood_confidence.png"}
    table = {"table1": analysis / "correlation" / "table1_mIoU.md", "table4": analysis / "table4" / "table4_fid.md"}
    if recipe in table:
        rows = {line.split("|")[1].strip() for line in table[recipe].read_text().splitlines() if line.startswith("|")}
        assert {"hendrycks", "physics_fog_beta0.005", "physics_fog_beta0.01", "physics_fog_beta0.02",
                "external_demo"} <= rows, rows


#: Guide commands that the tiny profile on one CPU machine cannot run as written, and why (the guides' own
#: placeholders, a scheduler, several GPUs, a config file the guide has the user write first).
GUIDE_SKIPS = {
    r"<|\.\.\.|path/to|cfg\.py": "a placeholder the reader fills in",
    r"launcher=slurm": "needs a SLURM cluster",
    r"devices=([2-9]|\d\d)": "needs several GPUs",
    r"\+experiment=mygen_": "the guide's own experiment file, written by the reader",
}


def demo_command() -> list[str]:
    """`make demo`'s command, read from the Makefile."""
    recipe = re.search(r"^demo:.*\n\t\$\(PY\) (.+)$", (REPO / "Makefile").read_text(), re.M)
    return [sys.executable, *shlex.split(recipe.group(1))]


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory):
    """`fresh()`: the folder where `make demo` ran, as the demo left it, at the demo's own path each time. Records
    name their inputs by absolute path (captions their images, sets their ControlNet): a copy elsewhere is a moved
    project whose records are all stale, not the user's folder."""
    base = tmp_path_factory.mktemp("after_demo")
    folder, pristine = base / "user", base / "pristine"
    folder.mkdir()
    proc = _run(demo_command(), folder, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    shutil.copytree(folder, pristine, symlinks=True)  # copy2: sizes and mtimes (the records' identities) kept

    def fresh() -> Path:
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder, symlinks=True)
        return folder

    return fresh


def _run_in_order(commands: list[list[str]], folder: Path) -> list[str]:
    failures = []
    for args in commands:
        proc = _run(on_tiny_profile(args), folder)
        if proc.returncode != 0:
            failures.append(f"{shlex.join(args)} -> exit {proc.returncode}\n{proc.stderr[-3000:]}")
        elif "--cfg" not in args:
            _check_outputs(proc.stdout)
    return failures


@pytest.mark.full
def test_readme_commands_run_in_order_after_the_demo(after_demo):
    """One synthetic set, one name: after the demo, `+experiment=covariate_fog` found the demo's fog results under
    synthetic_fog/ beside its own synthetic_sd15_fog/ and correlate stopped on duplicate rows."""
    failures = _run_in_order(readme_commands((REPO / "README.md").read_text()), after_demo())
    assert not failures, "\n\n".join(failures)


def guide_commands(guide: Path) -> list[list[str]]:
    return [args for args in readme_commands(guide.read_text())
            if not any(re.search(pattern, " ".join(args)) for pattern in GUIDE_SKIPS)]


@pytest.mark.full
@pytest.mark.parametrize("guide", sorted(p.name for p in (REPO / "docs" / "guide").glob("*.md")))
def test_guide_commands_run_in_order_after_the_demo(after_demo, guide):
    commands = guide_commands(REPO / "docs" / "guide" / guide)
    failures = _run_in_order(commands, after_demo()) if commands else []
    assert not failures, "\n\n".join(failures)


def test_guide_commands_are_extracted_and_only_the_unrunnable_ones_skipped():
    commands = {p.name: guide_commands(p) for p in (REPO / "docs" / "guide").glob("*.md")}
    trained = [" ".join(c) for c in commands["train-controlnet.md"]]
    # the bf16 line retrains the ControlNet the line before trained: the guide says to add force=true
    assert any("precision=bf16-mixed" in c and "force=true" in c for c in trained), trained
    assert not any("devices=8" in c for c in trained)
    assert any("+experiment=covariate_fog" in " ".join(c) for c in commands["new-domain-prompt.md"])
    assert demo_command()[1:] == ["-m", "synthrel.run", "+experiment=demo"]
