"""Markdown + HTML report of one analysis folder: every table and figure with the settings that made them.

The correlate (and FID, forecast) jobs leave an index of their outputs (`*outputs.json`) and their settings
(`settings.json`, `<job>_settings.json`: job parameters, seeds, bootstrap, git SHA, package versions, the Hydra
config); the report only gathers them, so it can be rebuilt at any time without recomputing anything. Items
with a `section` (e.g. the forecast) get a section of their own after the correlation tables and figures.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from synthrel.config import RealSplit
from synthrel.errors import ConfigError, DatasetError
from synthrel.jobs import exclusive_output, read_json_artifact, write_text_atomic
from synthrel.reporting import MISSING, NA_FOOTNOTE, has_missing

log = logging.getLogger(__name__)

TINY_NOTICE = "Tiny profile: random tiny models and generated demo data; numbers are not the paper's."
#: The real data of the reported results, per `real_split` (synthrel.config.REAL_SPLITS), first line of the box.
REAL_DATA = {
    "test": "each real set's relis test split (paper protocol): `cityscapes_test` (Cityscapes val frankfurt), "
            "`acdc_<condition>_test` (the ACDC train scenes), `idd_test` (the 37 IDD train scenes relis lists)",
    "all": "the whole real sets (real_split=all, a deviation from the paper's protocol): `cityscapes` (all of "
           "Cityscapes val), `acdc_<condition>` (ACDC train), `idd` (IDD val, which is relis' calibration split)",
}
CALIBRATION_DATA = ("temperatures are fitted on synthetic sets and on the relis calibration splits only "
                    "(`cityscapes_calib` = munster + lindau, `acdc_<condition>_calib` = ACDC val, `idd_calib` = IDD val)")

SMOKE_NOTICE = ("Smoke profile: the paper's architectures with random weights, on a few generated images; "
                "numbers are not the paper's.")
NOTICES = {"tiny": TINY_NOTICE, "smoke": SMOKE_NOTICE}


def profile_notice(*profiles) -> str | None:
    """The first line a report on random models carries (tiny or smoke profile), else None."""
    return next((NOTICES[p] for p in profiles if p in NOTICES), None)

HTML_TEMPLATE = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.notice{background:#fff3cd;padding:.6em;font-weight:bold}
.protocol{border:2px solid #888;padding:.4em .8em;margin:1em 0}img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}</style></head>
<body>
{% if notice %}<p class="notice">{{ notice }}</p>
{% endif %}<h1>{{ title }}</h1>
{{ overview | safe }}
<p>{{ summary }}</p>
<div class="protocol"><b>Protocol</b><ul>{% for name, text in protocol %}<li><b>{{ name }}</b>: {{ text }}</li>
{% endfor %}</ul></div>
{% for section in sections %}{% if section.name %}<h2>{{ section.name }}</h2>
{% endif %}{% for item in section.tables %}<h3>{{ item.title }}</h3>
{{ item.html | safe }}
{% if item.footnote %}<p><small>{{ item.footnote }}</small></p>{% endif %}
<p>files: {% for name, path in item.files.items() %}<a href="{{ path }}">{{ name }}</a> {% endfor %}</p>
{% endfor %}{% for item in section.figures %}<h3>{{ item.title }}</h3>
<img src="{{ item.image }}" alt="{{ item.title }}"><p>{% for path in item.files %}<a href="{{ path }}">{{ path }}</a>
{% endfor %}</p>
{% endfor %}{% endfor %}{% if warnings %}<h2>Warnings</h2>
{% for cause, items in warnings.items() %}<h3>{{ cause }} ({{ items | length }})</h3><ul>
{% for text in items %}<li>{{ text }}</li>
{% endfor %}</ul>
{% endfor %}{% endif %}<h2>Data</h2><ul>
{% for item in data %}<li><a href="{{ item.csv }}">{{ item.title }}</a></li>
{% endfor %}</ul>
<h2>Settings</h2><pre>{{ settings }}</pre>
</body></html>
""",
    autoescape=True,
)


@dataclass
class ReportJob:
    """Write report.md and report.html for the analysis in `analysis_dir`; returns {"report": path}."""

    analysis_dir: str
    output_dir: str | None = None
    profile: str = "paper"
    title: str = "synthrel analysis"
    real_split: RealSplit = "test"
    # further lines of the protocol box (name -> text: conventions, deviations); null values are left out
    protocol: dict | None = None

    def run(self) -> dict:
        analysis = Path(self.analysis_dir)
        out = Path(self.output_dir or analysis)
        with exclusive_output(out):
            return self._write(analysis, out)

    def _write(self, analysis: Path, out: Path) -> dict:
        index = gather_index(analysis)
        settings = read_settings(analysis)
        profile = settings.get("profile", self.profile)
        notice = profile_notice(profile, self.profile)
        box = protocol_box(self.real_split, self.protocol)
        md_path, html_path = out / "report.md", out / "report.html"
        write_text_atomic(md_path, render_markdown(index, settings, self.title, notice, analysis, out, box))
        write_text_atomic(html_path, render_html(index, settings, self.title, notice, analysis, out, box))
        log.info("report: %s", md_path)
        return {"report": str(md_path), "report_html": str(html_path), "report_dir": str(out)}


def protocol_box(real_split: str, extra: dict | None = None) -> list[tuple[str, str]]:
    """(name, text) lines of the report's protocol box: the real data, the calibration data, then `extra`."""
    if real_split not in REAL_DATA:
        raise ConfigError(f"stages.report.real_split is {real_split!r}; expected one of {sorted(REAL_DATA)}")
    lines = [("Real data", REAL_DATA[real_split]), ("Calibration data", CALIBRATION_DATA)]
    return lines + [(str(k), str(v)) for k, v in (extra or {}).items() if v is not None]


REPAIR = "Run the stage that wrote it again (correlate, fid or forecast: each rewrites its outputs)"


def gather_index(analysis: Path) -> list[dict]:
    files = sorted(analysis.glob("*outputs.json"))
    if not files:
        raise DatasetError(f"{analysis}: no outputs.json; run the correlate stage (or FID job) first")
    return [item for f in files for item in read_json_artifact(f, "an index of analysis outputs", REPAIR, kind=list)]


def read_settings(analysis: Path) -> dict:
    """settings.json, with each `<job>_settings.json` under its job name (its profile, git SHA and model count
    fill in when the correlate stage did not run)."""
    path = analysis / "settings.json"
    settings = read_json_artifact(path, "the analysis settings", REPAIR) if path.exists() else {}
    for extra in sorted(analysis.glob("*_settings.json")):
        sub = read_json_artifact(extra, "the settings of an analysis job", REPAIR)
        settings[extra.stem.removesuffix("_settings")] = sub
        for key in ("profile", "git_sha", "n_models", "sources"):
            if key in sub:
                settings.setdefault(key, sub[key])
    return settings


def sections(index: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """Items grouped by `section` in order of first appearance; the unnamed (correlation) section first."""
    names = [None] + list(dict.fromkeys(i["section"] for i in index if i.get("section")))
    return [(name, [i for i in index if i.get("section") == name]) for name in names]


def _rel(path: str, out: Path) -> str:
    return os.path.relpath(path, out)


def _summary(settings: dict) -> str:
    boot = settings.get("bootstrap", {})
    parts = [f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
             f"profile `{settings.get('profile', '?')}`",
             f"git `{settings.get('git_sha') or 'unknown'}`",
             f"{settings.get('n_models', '?')} models from {len(settings.get('sources', []))} result tables"]
    missing = settings.get("not_evaluated") or {}
    if missing:
        parts.append(f"{len(missing)} zoo model(s) not evaluated: "
                     + ", ".join(f"{k} ({why})" for k, why in sorted(missing.items())))
    if boot:
        parts.append(f"Pearson r headline; intervals: {100 * boot['confidence']:.0f}% percentile bootstrap over "
                     f"models, {boot['n_resamples']} resamples, seed {boot['seed']}")
    return "; ".join(parts) + "."


#: Causes of the analysis warnings (first match), so that a reader sees each kind once with its cells under it.
WARNING_CAUSES = (
    ("is undefined", "Cells without a value: the metric is undefined on a set, although every model was evaluated"),
    ("evaluated on both", "Cells with too few models for a correlation"),
    ("result: ", "Cells with models evaluated on one side only"),
    ("left out (evaluate", "Shifts whose real set has no results: their column is left out"),
    ("data-size ablation", "Data-size ablation"),
)


def warning_groups(warnings: list[str]) -> dict[str, list[str]]:
    """The analysis warnings by cause (WARNING_CAUSES, else "Other"), in the order of the causes."""
    groups: dict[str, list[str]] = {cause: [] for _, cause in WARNING_CAUSES} | {"Other": []}
    for text in warnings:
        cause = next((cause for marker, cause in WARNING_CAUSES if marker in text), "Other")
        groups[cause].append(text)
    return {cause: items for cause, items in groups.items() if items}


HEADLINE = "table1_mIoU.md"  # Table 1 (mIoU): the paper's headline


def overview(index: list[dict], settings: dict, analysis: Path) -> list[str]:
    """The first screen: what was run and on what, the headline table, and where the rest is."""
    job = settings.get("job") or {}
    lines = ["## Summary", ""]
    lines.append(f"- **Run**: analysis `{analysis.name}` on the `{settings.get('profile', '?')}` profile: "
                 f"{settings.get('n_models', '?')} zoo model(s), {len(settings.get('sources', []))} result table(s)"
                 + (f", shifts {', '.join(job['domains'])}" if job.get("domains") else "")
                 + (f", metrics {', '.join(job['metrics'])}" if job.get("metrics") else "") + ".")
    missing = settings.get("not_evaluated") or {}
    if missing:
        lines.append(f"- **Not evaluated**: {', '.join(f'{k} ({why})' for k, why in sorted(missing.items()))}.")
    headline = next((Path(i["md"]) for i in index if i["kind"] == "table" and Path(i["md"]).name == HEADLINE), None)
    if headline is not None and headline.is_file():
        lines += ["- **Headline** (Table 1, Pearson r over the zoo of mIoU on each predictor set vs on the real "
                  "shifted set; close to 1: the set ranks the models as the real data does):", "",
                  headline.read_text().rstrip(), ""]
    sections_found = [name for name, items in sections(index) if name and items]
    counts = {kind: sum(i["kind"] == kind for i in index) for kind in ("table", "figure")}
    lines.append(f"- **In this report**: {counts['table']} table(s), {counts['figure']} figure(s)"
                 + (f"; sections {', '.join(sections_found)}" if sections_found else "") + ".")
    groups = warning_groups(settings.get("warnings") or [])
    if groups:
        lines.append("- **Warnings**: " + "; ".join(f"{cause} ({len(items)})" for cause, items in groups.items())
                     + " (section Warnings).")
    return lines + [""]


def warnings_section(settings: dict) -> list[str]:
    lines = []
    for cause, items in warning_groups(settings.get("warnings") or []).items():
        lines += [f"### {cause} ({len(items)})", ""] + [f"- {text}" for text in items] + [""]
    return ["## Warnings", ""] + lines if lines else []


def render_markdown(index, settings, title, notice, analysis: Path, out: Path, box=()) -> str:
    lines = [notice, ""] if notice else []
    lines += [f"# {title}", "", *overview(index, settings, analysis), _summary(settings), ""]
    if box:
        lines += ["> **Protocol**", ">"] + [f"> - **{name}**: {text}" for name, text in box] + [""]
    for name, items in sections(index):
        tables = [i for i in items if i["kind"] == "table"]
        figures = [i for i in items if i["kind"] == "figure"]
        if name is not None:
            lines += [f"## {name}", ""]
        if tables and name is None:
            lines += ["## Tables", ""]
        for item in tables:
            lines += [f"### {item['title']}", "", Path(item["md"]).read_text().rstrip(), "",
                      f"Files: [csv]({_rel(item['csv'], out)}), [LaTeX]({_rel(item['tex'], out)})", ""]
        if figures and name is None:
            lines += ["## Figures", ""]
        for item in figures:
            png = next(p for p in item["files"] if p.endswith(".png"))
            lines += [f"### {item['title']}", "", f"![{item['title']}]({_rel(png, out)})", "",
                      "Files: " + ", ".join(f"[{Path(p).suffix[1:]}]({_rel(p, out)})" for p in item["files"]), ""]
    lines += warnings_section(settings)
    lines += ["## Data", ""]
    lines += [f"- [{i['title']}]({_rel(i['csv'], out)})" for i in index if i["kind"] == "data"]
    lines += ["", "## Settings", "", "```yaml", yaml.safe_dump(settings, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def render_html(index, settings, title, notice, analysis: Path, out: Path, box=()) -> str:
    def table_entry(item):
        table = pd.read_csv(item["csv"], keep_default_na=True)
        return {"title": item["title"], "files": {k: _rel(item[k], out) for k in ("csv", "md", "tex")},
                "html": table.to_html(index=False, float_format="%.2f", na_rep=MISSING),
                "footnote": item["footnote"] if "footnote" in item else NA_FOOTNOTE if has_missing(table) else None}

    groups = [{"name": name,
               "tables": [table_entry(i) for i in items if i["kind"] == "table"],
               "figures": [{"title": i["title"], "files": [_rel(p, out) for p in i["files"]],
                            "image": _rel(next(p for p in i["files"] if p.endswith(".png")), out)}
                           for i in items if i["kind"] == "figure"]}
              for name, items in sections(index)]
    data = [{"title": i["title"], "csv": _rel(i["csv"], out)} for i in index if i["kind"] == "data"]
    overview_html = markdown_lite("\n".join(overview(index, settings, analysis)))
    warnings = warning_groups(settings.get("warnings") or [])
    return HTML_TEMPLATE.render(title=title, notice=notice, summary=_summary(settings), protocol=box, sections=groups,
                                overview=overview_html, warnings=warnings, data=data,
                                settings=yaml.safe_dump(settings, sort_keys=False))


def markdown_lite(text: str) -> str:
    """The overview's Markdown (bullets, **bold**, `code`, one pipe table) as HTML."""
    html, table = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            rows = [[cell.strip() for cell in row.strip("|").split("|")] for row in table
                    if not set(row) <= set("|:- ")]
            html.append("<table>" + "".join("<tr>" + "".join(f"<td>{jinja2.filters.escape(c)}</td>" for c in row)
                                           + "</tr>" for row in rows) + "</table>")
            table = []
        if line.startswith("## "):
            html.append(f"<h2>{jinja2.filters.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            item = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", str(jinja2.filters.escape(line[2:])))
            html.append("<p>" + re.sub(r"`(.+?)`", r"<code>\1</code>", item) + "</p>")
    return "\n".join(html)
