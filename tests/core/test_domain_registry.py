"""A built-in domain's real counterpart is written once, in its file synthrel/conf/domain/<domain>.yaml: the code
reads it from there, stage configs ask for it by domain, and no other file repeats a pair."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from synthrel.config import real_counterparts
from synthrel.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
# The real counterparts of spec section 2.1, written out here rather than read from synthrel.
SPEC_REAL = {"fog": "acdc_fog", "night": "acdc_night", "rain": "acdc_rain", "snow": "acdc_snow", "india": "idd"}


def test_the_domain_files_declare_the_spec_pairs():
    assert real_counterparts() == SPEC_REAL


def test_no_other_file_repeats_a_pair():
    files = [p for p in (REPO / "synthrel").rglob("*") if p.suffix in (".py", ".yaml")
             and p.parent.name != "domain" and p.name != "measured_rates.json"]
    hits = []
    for domain, real in SPEC_REAL.items():
        pair = re.compile(rf"\b{domain}\b\W{{1,30}}\b{real}(_test|_calib)?\b|\b{real}(_test|_calib)?\b\W{{1,30}}\b{domain}\b")
        hits += [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in files
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pair.search(line)]
    assert hits == [], "a domain -> real set pair outside synthrel/conf/domain/:\n" + "\n".join(hits)


def test_a_declaration_under_another_name_is_refused_naming_the_file(tmp_path):
    (tmp_path / "dusk.yaml").write_text("name: dusk\nreal_dataset: ${synthrel.counterpart:dawn,acdc_night}\n")
    with pytest.raises(ConfigError, match=r"dusk\.yaml.*expected `\$\{synthrel\.counterpart:dusk,<dataset key>\}`"):
        real_counterparts(tmp_path)
    (tmp_path / "dusk.yaml").write_text("name: dusk\nreal_dataset: ${synthrel.counterpart:dusk,acdc_night}\n")
    (tmp_path / "custom.yaml").write_text("name: ???\nreal_dataset: null\n")
    assert real_counterparts(tmp_path) == {"dusk": "acdc_night"}


@pytest.mark.parametrize("split, suffix", [("test", "_test"), ("all", "")])
def test_a_stage_asks_for_any_builtin_domains_real_set(split, suffix):
    cfg = OmegaConf.create({"domain": {"name": "sandstorm", "real_dataset": None}, "real_split": split,
                            "night": "${synthrel.real:reported,night}", "india": "${synthrel.real:calib,india}",
                            "dusk": "${synthrel.real:reported,dusk}"})
    assert cfg.night == "acdc_night" + suffix and cfg.india == "idd_calib"
    with pytest.raises(Exception, match="domain 'dusk' has no real counterpart"):
        _ = cfg.dusk


@pytest.mark.parametrize("name, domain", [("acdc_fog", "fog"), ("acdc_snow_test", "snow"), ("idd_calib", "india"),
                                          ("cityscapes_test", "cityscapes_test"), ("road_anomaly", "road_anomaly")])
def test_evaluate_labels_real_sets_by_their_domain(name, domain):
    from synthrel.evaluation.job import EvaluateJob

    job = SimpleNamespace(dataset_labels={"road_anomaly": {"domain": "road_anomaly"}})
    assert EvaluateJob.labels(job, name) == {"domain": domain, "generator": "real", "key": name}
