"""Every default hub id in synthrel/conf/ and synthrel/ is one of the recorded ids (synthrel/preflight/sources.py), and no
retired id is used anywhere: a repository that moves on the hub is fixed in one place."""

from __future__ import annotations

import re
from pathlib import Path

from synthrel.preflight import collect
from synthrel.preflight.sources import HUB_MODELS, RETIRED
from synthrel.run import CONF_DIR, STAGE_ORDER

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "synthrel" / "preflight" / "sources.py"
ORGS = sorted({i.split("/")[0] for i in [*HUB_MODELS, *RETIRED]})
HUB_ID = re.compile(rf"(?<![\w./-])((?:{'|'.join(map(re.escape, ORGS))})/[\w.-]*[\w])")


def files(*folders: str, suffixes=(".py", ".yaml")) -> list[Path]:
    return [p for f in folders for p in (REPO / f).rglob("*") if p.suffix in suffixes and p != SOURCES]


def test_every_hub_id_written_in_conf_and_code_is_recorded():
    found = {m.group(1): p for p in files("synthrel") for m in HUB_ID.finditer(p.read_text())}
    assert len(found) >= 5, "the scan found too few hub ids to be looking at the right text"
    unknown = {i: str(p.relative_to(REPO)) for i, p in found.items() if i not in HUB_MODELS}
    assert not unknown, f"hub ids not in synthrel/preflight/sources.py HUB_MODELS: {unknown}"


def test_no_retired_id_is_used_in_code_conf_or_docs():
    texts = files("synthrel", "benchmarks", "docs", "experiments", suffixes=(".py", ".yaml", ".md", ".sh"))
    texts.append(REPO / "README.md")
    used = [(str(p.relative_to(REPO)), i) for p in texts for i in RETIRED
            if i in p.read_text() and not p.name == "install.md"]  # install.md explains the rename
    assert not used, used
    assert set(RETIRED.values()) <= set(HUB_MODELS)


def experiments() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if p.stem != "demo")


def test_every_experiment_reads_only_recorded_hub_ids(compose_cfg, tmp_path, monkeypatch):
    """Composed as a user runs them (paper profile, SD1.5; SDXL for training): every hub id read is recorded."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    runs = [[f"+experiment={name}", *(["domain.name=sandstorm"] if name == "covariate_custom" else [])]
            for name in experiments()]
    runs.append(["+experiment=train_controlnet", "backbone=sdxl", "backbone.vae=madebyollin/sdxl-vae-fp16-fix"])
    seen = set()
    for overrides in runs:
        hub_ids = {n.source for n in collect(compose_cfg(*overrides), STAGE_ORDER) if n.kind == "hub"}
        assert hub_ids <= set(HUB_MODELS), (overrides, hub_ids - set(HUB_MODELS))
        seen |= hub_ids
    assert seen == set(HUB_MODELS), f"recorded but never read: {set(HUB_MODELS) - seen}"
