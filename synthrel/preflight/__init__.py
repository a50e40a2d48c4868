"""Preflight: before the first stage, list every weight and dataset the composed run reads, say what is
missing and how to fix it, and (`preflight=download`) fetch the public pieces.

Config key `preflight` (synthrel/conf/config.yaml):
- `auto` (default): check, write the report to the run folder, stop with the report if something is missing;
- `true`: print the report and exit (status 1 if something is missing), without running any stage;
- `download`: fetch what is missing and public, print the report, exit (status 1 if something is still missing);
- `false`: skip the checks.
Under Hydra multirun it runs in every job, on that job's composed config: `-m ... preflight=true` checks a
whole sweep in seconds (every job reports, then the sweep fails if one of them misses something).
"""

from __future__ import annotations

import logging
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from synthrel.errors import ConfigError, SynthrelError
from synthrel.preflight import hub
from synthrel.preflight.download import DownloadError, download_file
from synthrel.preflight.needs import Collector, Need
from synthrel.preflight.report import render

log = logging.getLogger(__name__)
MODES = ("auto", "true", "false", "download")


class PreflightError(SynthrelError):
    """Something the run reads is missing or broken; the message is the preflight report."""


def mode_of(cfg: DictConfig) -> str:
    value = cfg.get("preflight", "auto")
    mode = str(value).lower()  # Hydra reads preflight=true / false as booleans
    if mode not in MODES:
        raise ConfigError(f"`preflight` is {value!r}; valid: auto (check, then run), true (report only), "
                          "download (fetch what is missing), false (skip)")
    return mode


def command_line() -> str:
    """The user's command without its `preflight=` override (for the fixes the report prints)."""
    from hydra.core.hydra_config import HydraConfig

    base = "python -m synthrel.run"
    if not HydraConfig.initialized():
        return base
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("preflight=")]
    return " ".join([base, *overrides])


def collect(cfg: DictConfig, order: tuple[str, ...]) -> list[Need]:
    return Collector(cfg, order).collect()


def _remote_size(need: Need) -> None:
    """Exact download size from the hub's file list or the server's Content-Length (best effort)."""
    try:
        if need.kind == "hub":
            files = hub.remote_files(need.source)
            chosen = hub.select_files(list(files), need.library or "transformers")
            need.size, need.exact_size = float(sum(files[f] or 0 for f in chosen)), True
        elif need.kind == "url":
            request = urllib.request.Request(need.source, method="HEAD")
            with urllib.request.urlopen(request, timeout=10) as response:
                length = response.headers.get("Content-Length")
            if length:
                need.size, need.exact_size = float(length), True
    except Exception as e:  # sizes are informative only: the report keeps the recorded estimate
        log.debug("no remote size for %s: %s", need.source, e)


def refine_sizes(needs: list[Need]) -> None:
    todo = [n for n in needs if n.downloadable]
    if todo and not hub.is_offline():
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(_remote_size, todo))


def download_missing(needs: list[Need]) -> list[str]:
    """Fetch every missing public item; returns the error of each one that failed (the others go on)."""
    errors = []
    for need in [n for n in needs if n.downloadable]:
        if hub.is_offline():
            errors.append(f"{need.source}: not downloaded, HF_HUB_OFFLINE=1 (unset it on a machine with network)")
            continue
        print(f"downloading {need.what}: {need.source}", flush=True)
        try:
            if need.kind == "hub":
                hub.download(need.source, need.library or "transformers")
            else:
                if need.status == "corrupt":
                    Path(need.dest).unlink()
                    print(f"  deleted the corrupt {need.dest}", flush=True)
                download_file(need.source, need.dest, sha256=need.sha256, prefix=need.prefix)
        except (DownloadError, OSError) as e:
            errors.append(str(e))
        except Exception as e:  # hub errors (gated repo, 404, network): reported per item, the others go on
            errors.append(f"{need.source}: {type(e).__name__}: {e}")
    hub.forget_cache_scan()
    return errors


def _save(cfg: DictConfig, text: str) -> None:
    try:
        out = Path(str(OmegaConf.select(cfg, "paths.output_dir")))
    except InterpolationResolutionError:  # no Hydra runtime (composed in a test): no run folder
        return
    if out.is_dir():
        (out / "preflight.txt").write_text(text + "\n")


def gate(cfg: DictConfig, order: tuple[str, ...]) -> bool:
    """Run the preflight that `cfg.preflight` asks for; True when the run should stop after it (report modes).

    Raises PreflightError (mode auto) or SystemExit(1) (modes true/download) when something is missing.
    """
    mode = mode_of(cfg)
    if mode == "false":
        return False
    start = time.perf_counter()
    stages = [s for s in order if s in (cfg.get("stages") or {})]
    needs = collect(cfg, order)
    errors = []
    if mode == "download":
        errors = download_missing(needs)
        needs = collect(cfg, order)
    if mode != "auto":
        refine_sizes(needs)
    text = render(needs, cfg, stages, hub.is_offline(), command_line())
    if errors:
        text += "\ndownload errors:\n" + "\n".join(f"  {e}" for e in errors)
    _save(cfg, text)
    blocking = [n for n in needs if n.blocking]
    if mode == "auto":
        if blocking:
            raise PreflightError(f"preflight failed, nothing was run (preflight=false skips this check):\n{text}")
        log.info("preflight: %d item(s) ready in %.1f s", len(needs), time.perf_counter() - start)
        return False
    print(text, flush=True)
    if blocking or errors:
        if in_multirun():  # an exception lets Hydra run every job's preflight, then fail the sweep
            raise PreflightError(f"preflight: {len(blocking)} item(s) missing for this job (report above)")
        raise SystemExit(1)
    return True


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
