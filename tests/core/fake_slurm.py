"""A one-machine stand-in for SLURM's `sbatch`, `srun` and `sacct`, so that the slurm launcher's real code path
(hydra-submitit-launcher -> submitit's SlurmExecutor -> sbatch script -> srun -> submitit worker) runs in a test.

`install(bin_dir, state_dir)` writes the three commands into bin_dir; put bin_dir first on PATH. `sbatch` keeps a
copy of every script it receives in state_dir (the test reads the #SBATCH lines from it), answers with a job id
as SLURM does, and runs the script's array tasks in a detached process with the SLURM_* variables a real
allocation sets. `srun` runs its command with --output/--error patterns filled in. `sacct` reports RUNNING until
a task has exited, then COMPLETED or FAILED.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

STATE_ENV = "FAKE_SLURM_DIR"


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write sbatch/srun/sacct into bin_dir; return the environment that puts them on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for command in ("sbatch", "srun", "sacct"):
        path = bin_dir / command
        path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {command} \"$@\"\n")
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STATE_ENV: str(state_dir)}


def _state() -> Path:
    return Path(os.environ[STATE_ENV])


def sbatch(args: list[str]) -> None:
    script = Path(args[-1])
    state = _state()
    job_id = str(1000 + len(list(state.glob("*.sbatch"))))
    text = script.read_text()
    (state / f"{job_id}.sbatch").write_text(text)
    tasks = _tasks(text)
    subprocess.Popen([sys.executable, __file__, "_allocate", str(script), job_id, *tasks], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    print(f"Submitted batch job {job_id}")


def _allocate(args: list[str]) -> None:
    """Run each array task of the script once submitit has moved its pickle into place (it does so after
    sbatch answers), as SLURM would once the job is scheduled."""
    script, job_id, tasks = Path(args[0]), args[1], args[2:]
    command = next(line for line in script.read_text().splitlines() if "submitit.core._submit" in line)
    folder_pattern = shlex.split(command)[-1]
    for task in tasks:
        full_id = f"{job_id}_{task}" if task else job_id
        env = {**os.environ, "SLURM_JOB_ID": str(int(job_id) + 1 + int(task or 0)), "SLURM_NTASKS": "1",
               "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
               "SLURM_JOB_NODELIST": "localhost"}
        if task:
            env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=task)
        pickle = Path(folder_pattern.replace("%j", full_id)) / f"{full_id}_submitted.pkl"
        deadline = time.monotonic() + 600
        while not pickle.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        rc = subprocess.run(["bash", str(script)], env=env).returncode
        (_state() / f"{full_id}.exit").write_text(str(rc))


def srun(args: list[str]) -> None:
    files = {}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in ("--output", "--error"):
            files[flag] = args.pop(0)
    fill = {"%A": os.environ.get("SLURM_ARRAY_JOB_ID", ""), "%a": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
            "%j": os.environ["SLURM_JOB_ID"], "%t": "0"}

    def path(pattern: str) -> Path:
        for key, value in fill.items():
            pattern = pattern.replace(key, value)
        Path(pattern).parent.mkdir(parents=True, exist_ok=True)
        return Path(pattern)

    out = path(files["--output"]).open("a") if "--output" in files else None
    err = path(files["--error"]).open("a") if "--error" in files else subprocess.STDOUT
    sys.exit(subprocess.run(args, stdout=out, stderr=err).returncode)


def _tasks(text: str) -> list[str]:
    array = re.search(r"^#SBATCH --array=(\d+)-(\d+)", text, re.M)
    return [str(k) for k in range(int(array[1]), int(array[2]) + 1)] if array else [""]


def sacct(args: list[str]) -> None:
    print("JobID|State|NodeList")
    for job_id in (args[k + 1] for k, flag in enumerate(args) if flag == "-j"):
        for task in _tasks((_state() / f"{job_id}.sbatch").read_text()):
            full_id = f"{job_id}_{task}" if task else job_id
            exit_file = _state() / f"{full_id}.exit"
            state = "RUNNING" if not exit_file.exists() else "COMPLETED" if exit_file.read_text() == "0" else "FAILED"
            print(f"{full_id}|{state}|localhost")


if __name__ == "__main__":
    {"sbatch": sbatch, "srun": srun, "sacct": sacct, "_allocate": _allocate}[sys.argv[1]](sys.argv[2:])
