"""synthrel installed from its wheel, not from the checkout (as Hydra's hydra_app_example/tests/test_installed_app.py):
build the wheel, install it non-editable into a fresh venv, run the `synthrel` command from an empty folder
(`make test`: --help, --cfg job, completion, the demo's first stages; `make test-full`: the whole demo).

The fresh venv sees this test environment's dependencies through a .pth line naming its site-packages; Python
does not process the .pth files of a folder added that way, so the editable synthrel of the checkout stays out
(checked: `synthrel.__file__` is inside the new venv). An audit hook records every file the app opens or lists
under the checkout's `synthrel/`: there must be none.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "synthrel"

# Loaded at start-up by every python of the venv (a .pth line that starts with `import` runs, in a function's
# namespace: the hook takes its variables as defaults).
AUDIT = (
    "import os, sys; _src = os.environ.get('SYNTHREL_SOURCE_GUARD'); _log = os.environ.get('SYNTHREL_SOURCE_LOG'); "
    "_src and sys.addaudithook(lambda ev, args, _src=_src, _log=_log: ev in ('open', 'os.listdir', 'os.scandir') and args "
    "and isinstance(args[0], (str, bytes, os.PathLike)) and os.fsdecode(args[0]).startswith(_src) "
    "and open(_log, 'a').write(os.fsdecode(args[0]) + chr(10)))\n"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build from a copy holding only what the sdist would (pyproject, README, the package): the checkout
    stays clean, and nothing else of it can end up in the wheel. The build warns of no deprecated metadata
    (setuptools' SetuptoolsDeprecationWarning, e.g. for a `project.license` table)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(SOURCE, src / "synthrel", ignore=shutil.ignore_patterns("__pycache__", "local"))
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-index",
                            "--no-build-isolation", "-w", str(dist), str(src)], check=True, capture_output=True, text=True)
    deprecated = [line for line in (build.stdout + build.stderr).splitlines() if "deprecat" in line.lower()]
    assert not deprecated, deprecated
    (path,) = dist.glob("synthrel-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    shared = sysconfig.get_paths()["purelib"]
    Path(purelib, "zz_test_env.pth").write_text(f"{shared}\n{AUDIT}")
    return root


def run(venv, args, cwd, tmp_path, source_reads=(), timeout=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    log = tmp_path / "source_reads.log"
    env.update(SYNTHREL_SOURCE_GUARD=str(SOURCE), SYNTHREL_SOURCE_LOG=str(log), HF_HUB_OFFLINE="1",
               WANDB_MODE="disabled", TQDM_DISABLE="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    reads = log.read_text().splitlines() if log.exists() else []
    assert sorted(set(reads)) == sorted(source_reads), f"the installed app read the source tree: {sorted(set(reads))[:10]}"
    return out.stdout


def test_wheel_ships_the_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ["synthrel/conf/config.yaml", "synthrel/conf/experiment/demo.yaml", "synthrel/conf/zoo/tiny.yaml",
                 "synthrel/conf/zoo/paper40.yaml", "synthrel/zoo/configs/segformer_mit-b5_cityscapes-1024x1024_v2.py"]:
        assert name in names, f"{name} missing from {wheel.name}"
    assert not [n for n in names if n.startswith("synthrel/conf/local/")]
    entry_points = zipfile.ZipFile(wheel).read("synthrel-0.1.0.dist-info/entry_points.txt").decode()
    assert "synthrel = synthrel.run:main" in entry_points


def test_installed_package_is_the_wheel(venv, tmp_path):
    out = run(venv, [str(venv / "bin" / "python"), "-c", "import synthrel, torch; print(synthrel.__file__)"],
              tmp_path, tmp_path)
    assert Path(out.strip()).is_relative_to(venv), out


def test_source_guard_sees_a_read(venv, tmp_path):
    """The guard of the other tests is live: a read of the checkout's package is reported."""
    target = str(SOURCE / "run.py")
    run(venv, [str(venv / "bin" / "python"), "-c", f"open({target!r}).close()"], tmp_path, tmp_path, [target])


@pytest.mark.slow
def test_installed_app_runs_from_an_empty_folder(venv, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    synthrel = str(venv / "bin" / "synthrel")
    assert "== Configuration groups ==" in run(venv, [synthrel, "--help"], work, tmp_path)
    job = run(venv, [synthrel, "--cfg", "job", "+experiment=demo"], work, tmp_path)
    assert "task_name: demo" in job and "tiny_models:" in job
    assert "bash" in run(venv, [synthrel, "-sc", "install=bash"], work, tmp_path)
    out = run(venv, [synthrel, "profile=tiny", "+stage=[tiny_models,demo_data]", "cpu_threads=1"], work, tmp_path)
    assert f"tiny_models.models_dir: {work}/outputs/tiny/models" in out
    assert (work / "outputs" / "tiny" / "data").is_dir()
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]


@pytest.mark.full
def test_installed_app_runs_the_whole_demo_from_an_empty_folder(venv, tmp_path):
    """The issue's done-when: `synthrel +experiment=demo`, every stage, from the wheel, in an empty folder."""
    work = tmp_path / "empty"
    work.mkdir()
    out = run(venv, [str(venv / "bin" / "synthrel"), "+experiment=demo"], work, tmp_path, timeout=3600)
    printed = dict(re.findall(r"^  (\w+\.\w+): (.+)$", out, re.M))
    report = Path(printed["report.report"])
    assert report.is_relative_to(work) and report.is_file(), out[-2000:]
    assert "## Summary" in report.read_text() and "mIoU" in report.read_text(), report
    assert report.with_suffix(".html").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]
