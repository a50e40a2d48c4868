"""Where benchmarks write their JSON: --json, else the device tool's $OUT, else nowhere."""

import json

from benchmarks import write_result


def test_result_goes_to_the_given_path_else_to_out(tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    assert write_result({"a": 1}, "bench.json") is None
    given = write_result({"a": 1}, "bench.json", tmp_path / "sub" / "given.json")
    assert given == tmp_path / "sub" / "given.json" and json.loads(given.read_text()) == {"a": 1}
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    path = write_result({"b": [1, 2]}, "bench.json")
    assert path == tmp_path / "out" / "bench.json" and json.loads(path.read_text()) == {"b": [1, 2]}
    assert write_result({"b": 3}, "bench.json") == path and json.loads(path.read_text()) == {"b": 3}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bench.json"]  # no temporary left beside it
