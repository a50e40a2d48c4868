"""pyproject.toml declares no dependency that nothing imports (issue #32): each runtime dependency is imported by
synthrel's code (an import statement, `importlib.import_module` / `find_spec` of a literal name, or a config's
`_target_`), or its line says why it is declared anyway (`# not imported...`), and no such line is stale.
Distribution -> module names come from the installed metadata (`importlib.metadata.packages_distributions`)."""

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "synthrel"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> set[str]:
    """Top-level module names synthrel's code and configs import."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "find_spec")):
                names.add(node.args[0].value)
    for path in (PACKAGE / "conf").rglob("*.yaml"):
        names |= set(re.findall(r"_target_:\s*[\"']?([\w.]+)", path.read_text()))
    return {name.split(".")[0] for name in names}


def locked() -> tuple[dict[str, str], set[str]]:
    """requirements.lock: name -> pinned version, and the names pip-compile marked `via synthrel (pyproject.toml)`."""
    pins, direct, name = {}, set(), None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][\w.\-]*)==(\S+)", line):
            name = normalize(match[1])
            pins[name] = match[2]
        elif "synthrel (pyproject.toml)" in line:
            direct.add(name)
    return pins, direct


def declared() -> dict[str, str]:
    """Runtime dependency (normalized name) -> the comment on its line in pyproject.toml."""
    text = (REPO / "pyproject.toml").read_text()
    comments = {}
    for requirement in tomllib.loads(text)["project"]["dependencies"]:
        line = next(line for line in text.splitlines() if f'"{requirement}"' in line)
        comments[normalize(Requirement(requirement).name)] = line.partition("#")[2].strip()
    return comments


def test_every_declared_dependency_is_imported_or_says_why_not():
    modules_of: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(normalize(dist), set()).add(module)
    imported = imported_modules()
    problems = []
    for name, comment in declared().items():
        assert name in modules_of, f"{name} is declared but not installed in the test environment"
        used = bool(modules_of[name] & imported)
        says_unused = comment.startswith("not imported")
        if not used and not says_unused:
            problems.append(f"{name}: nothing in synthrel/ imports {sorted(modules_of[name])}; remove it, or say why "
                            f"it is needed on its line (`# not imported: ...`)")
        if used and says_unused:
            problems.append(f"{name}: its line says `not imported` but synthrel imports it")
    assert not problems, "\n".join(problems)


def test_the_scan_sees_imports_of_every_kind():
    """The scan is live: plain, from-, importlib and _target_ imports each count."""
    imported = imported_modules()
    assert {"torch", "omegaconf", "hydra", "mmpretrain", "synthrel"} <= imported
    assert "rich" not in imported


def test_the_lock_pins_every_declared_dependency_inside_its_range():
    """What CI installs (requirements.lock) is one point inside every declared range, and the lock was made from
    today's pyproject.toml: its direct requirements are exactly the declared ones (runtime and dev)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins, direct = locked()
    assert direct == {normalize(r.name) for r in requirements}, "requirements.lock is stale: run `make lock`"
    outside = [f"{r.name}=={pins[normalize(r.name)]} not in {r.specifier}" for r in requirements
               if not r.specifier.contains(pins[normalize(r.name)], prereleases=True)]
    assert not outside, outside
