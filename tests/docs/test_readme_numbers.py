"""Every measured number README quotes links to its section of docs/benchmarks.md, and that section holds it."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[([^\]]+)\]\(docs/benchmarks\.md#([\w-]+)\)")
NUMBER = re.compile(r"(?<![A-Za-z\d.])\d+(?:\.\d+)?")  # not the 1.5 of SD1.5 nor the 100 of H100


def _sections(text: str) -> dict[str, str]:
    """anchor -> the text from `<a id=anchor>` to the next anchor or `## ` heading after its own heading."""
    out = {}
    for m in re.finditer(r'<a id="([\w-]+)"></a>', text):
        rest = text[m.end():]
        ends = [k.start() for k in re.finditer(r'<a id="|\n## ', rest) if k.start() > 4]
        out[m.group(1)] = rest[: min(ends, default=len(rest))]
    return out


def _present(quoted: str, section: str) -> bool:
    """`quoted` (e.g. 3.9) is in the section as written or as a more precise value that rounds to it (3.94)."""
    digits = len(quoted.partition(".")[2])
    return any(f"{float(n):.{digits}f}" == quoted for n in NUMBER.findall(section))


def test_readme_numbers_link_to_measured_sections():
    readme = (REPO / "README.md").read_text()
    sections = _sections((REPO / "docs" / "benchmarks.md").read_text())
    links = LINK.findall(readme)
    assert len(links) >= 6
    for text, anchor in links:
        assert anchor in sections, f"README links to docs/benchmarks.md#{anchor}, which has no such anchor"
        for number in NUMBER.findall(text):
            assert _present(number, sections[anchor]), f"{number} ({text!r}) is not in docs/benchmarks.md#{anchor}"


def test_quoted_speedups_outside_links_are_none():
    """A speed-up or a rate in README prose outside a link to the benchmarks is a number without its source."""
    readme = LINK.sub("", (REPO / "README.md").read_text())
    unlinked = re.findall(r"(?<![A-Za-z\d.])\d+(?:\.\d+)?(?:x\b| img/s| s per image)", readme)
    assert unlinked == [], unlinked
