import pandas as pd
import pytest
import yaml
from analysis_zoo import make_zoo, write_zoo

from synthrel.analysis import aggregate
from synthrel.errors import DatasetError


def test_load_results_concatenates_every_job_table(tmp_path):
    zoo = make_zoo(n_models=4, domains=("fog",))
    write_zoo(zoo, tmp_path / "results")
    loaded = aggregate.load_results(tmp_path / "results")
    assert len(loaded) == len(zoo)
    assert loaded["source"].nunique() == zoo.groupby(["model", "dataset"]).ngroups
    key = ["model", "dataset", "metric", "cls"]
    merged = loaded.merge(zoo, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(zoo) and (merged["value"] == merged["value_ref"]).all()


@pytest.mark.parametrize("column", ["profile", "experiment"])
def test_mixing_profiles_or_experiments_raises_naming_the_file(tmp_path, column):
    write_zoo(make_zoo(n_models=3, domains=("fog",)).assign(experiment="covariate_fog"), tmp_path / "a")
    odd = make_zoo(n_models=1, domains=("fog",)).assign(experiment="covariate_fog", model="odd-m9")
    odd[column] = "paper" if column == "profile" else "covariate_night"
    write_zoo(odd, tmp_path / "b")
    with pytest.raises(DatasetError, match=f"refusing to mix {column}s") as err:
        aggregate.load_results([tmp_path / "a", tmp_path / "b"])
    assert "odd-m9" in str(err.value)  # the offending file is named


def _write_job(job_dir, overrides, results_dir):
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "evaluate"}))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / "summary.yaml").write_text(yaml.safe_dump({"evaluate": {"results_dir": str(results_dir.parent),
                                                                       "result_dirs": [str(results_dir)]}}))


def test_collect_two_job_sweep(tmp_path):
    zoo = make_zoo(n_models=2, domains=("fog",))
    artifacts = write_zoo(zoo, tmp_path / "artifacts" / "results" / "tiny")
    sweep = tmp_path / "logs" / "evaluate" / "multiruns" / "2024-01-01_00-00-00"
    models = sorted(zoo["model"].unique())
    for num, model in enumerate(models):
        _write_job(sweep / str(num), [f"segmenter={model}", "domain=fog"], artifacts / model)
    (sweep / "2" / ".hydra").mkdir(parents=True)  # a job that died before writing anything
    (sweep / "2" / ".hydra" / "config.yaml").write_text("{}")
    table = aggregate.collect_sweep(sweep)
    assert len(table) == len(zoo)
    per_job = table.groupby("job_dir")["model"].unique()
    assert {tuple(v) for v in per_job} == {(m,) for m in models}
    assert set(table["overrides"]) == {f"segmenter={m} domain=fog" for m in models}

    out = tmp_path / "all.parquet"
    aggregate.main([str(sweep), "--out", str(out)])
    assert len(pd.read_parquet(out)) == len(zoo)


def test_missing_root_and_empty_root_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        aggregate.load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="run the evaluate stage"):
        aggregate.load_results(tmp_path / "empty")
