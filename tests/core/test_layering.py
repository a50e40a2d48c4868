"""The import graph of synthrel/ (read with ast, lazy imports inside functions included): no cycle, layers that
only point down, and no production module that imports the tiny profile. docs/architecture.md shows the same
layers; tools/import_graph.py builds the graph."""

from pathlib import Path

import pytest

from tools.import_graph import edges_into, find_cycle, import_graph, layer_violations, unit_graph

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "synthrel"

#: The layers of synthrel, bottom to top, as the code has them. A unit (subpackage or top-level module) imports
#: units of its own layer or lower ones, never a higher one; within a layer the unit graph has no cycle either
#: (captions <- generation <- controlnet/corruptions; calibration, evaluation <- ood_detection; analysis <- forecast).
LAYERS = [
    ("ground", {"synthrel", "conventions", "errors", "jobs", "stages", "config", "schemas", "runtime", "runstats", "tracking", "reporting", "data",
                "metrics"}),
    ("models", {"zoo", "diffusion_loading"}),
    ("stages", {"tiny", "captions", "generation", "controlnet", "corruptions", "ood_objects", "evaluation",
                "calibration", "ood_detection"}),
    ("analysis", {"analysis", "forecast"}),
    ("entry", {"preflight", "run"}),
]
#: The tiny profile: its models are written by its stage (synthrel/tiny/job.py) into folders that synthrel/conf/ points to;
#: production code never imports it.
PROFILE = "tiny"


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE)


def test_the_graph_sees_module_level_and_lazy_imports(graph):
    assert "synthrel.zoo.registry" in graph["synthrel.zoo.predictor"]  # module level
    assert "synthrel.tiny.blip" in graph["synthrel.tiny.job"]  # inside a function
    assert "synthrel.data.demo.scene" in graph["synthrel.data.demo"]  # a package's __init__


def test_no_import_cycle_between_modules_or_units(graph):
    assert find_cycle(graph) is None, f"module import cycle: {' -> '.join(find_cycle(graph))}"
    units = {u: set(t) for u, t in unit_graph(graph).items()}
    assert find_cycle(units) is None, f"unit import cycle: {' -> '.join(find_cycle(units))}"


def test_layers_point_down(graph):
    assert layer_violations(unit_graph(graph), LAYERS) == []
    named = [u for _, members in LAYERS for u in members]
    assert len(named) == len(set(named)), "a unit is in two layers"
    assert set(named) == set(unit_graph(graph)), f"layers name units that do not exist: {set(named) - set(unit_graph(graph))}"


def test_no_production_module_imports_the_tiny_profile(graph):
    assert edges_into(graph, PROFILE) == set(), "production code imports synthrel.tiny; point a config at a " \
                                                "folder the tiny_models stage writes instead"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


CLEAN = {"__init__.py": "", "errors.py": "", "jobs.py": "from pkg.errors import X\n",
         "zoo/__init__.py": "", "zoo/registry.py": "from ..jobs import Y\n",
         "analysis/__init__.py": "", "analysis/report.py": "import pkg.zoo.registry\n",
         "tiny/__init__.py": "", "tiny/job.py": "from pkg.zoo import registry\n"}
PLANTED_LAYERS = [("ground", {"pkg", "errors", "jobs"}), ("models", {"zoo"}), ("stages", {"tiny"}),
                  ("analysis", {"analysis"})]


def test_a_clean_temporary_package_passes(tmp_path):
    graph = import_graph(_package(tmp_path, CLEAN))
    assert graph["pkg.zoo.registry"] == {"pkg.jobs"} and graph["pkg.tiny.job"] == {"pkg.zoo.registry"}
    assert find_cycle(graph) is None and layer_violations(unit_graph(graph), PLANTED_LAYERS) == []
    assert edges_into(graph, "tiny") == set()


def test_a_planted_relative_cycle_fails(tmp_path):
    graph = import_graph(_package(tmp_path, {**CLEAN, "errors.py": "def g():\n    from . import jobs\n"}))
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["pkg.errors", "pkg.jobs"]
    assert layer_violations(unit_graph(graph), PLANTED_LAYERS) == []  # same layer: only the cycle check sees it


def test_a_planted_lazy_upward_import_fails(tmp_path):
    lazy = "from ..jobs import Y\n\ndef f():\n    from pkg.analysis import report\n"
    graph = import_graph(_package(tmp_path, {**CLEAN, "zoo/registry.py": lazy}))
    assert layer_violations(unit_graph(graph), PLANTED_LAYERS) == [
        "zoo (models) imports analysis (analysis, a higher layer) in pkg.zoo.registry"]
    assert layer_violations(unit_graph(graph), PLANTED_LAYERS[:-1])[0] == "unit 'analysis' is in no layer"


def test_a_planted_production_import_of_the_profile_fails(tmp_path):
    graph = import_graph(_package(tmp_path, {**CLEAN, "jobs.py": "from pkg.errors import X\nfrom pkg.tiny.job import b\n"}))
    assert edges_into(graph, "tiny") == {("pkg.jobs", "pkg.tiny.job")}
    cycle = find_cycle(graph)  # and here the profile also closes a loop: jobs -> tiny -> zoo -> jobs
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["pkg.jobs", "pkg.tiny.job", "pkg.zoo.registry"]


def test_docs_show_the_same_layers():
    text = (REPO / "docs" / "architecture.md").read_text()
    for name, members in LAYERS:
        row = next((line for line in text.splitlines() if line.startswith(f"| {name} |")), None)
        assert row is not None, f"docs/architecture.md has no row for layer {name!r}"
        assert {u.strip(" `") for u in row.split("|")[2].split(",")} == members, row
