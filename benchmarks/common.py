"""What the benchmarks share: a benchmark's result and the report's number formatting and
tables; memory measurement; the machine's description; writing ``REPORT.md`` and
``results.csv``; and the options of the benchmarks of a run's validation images
(``scale_estimate.py``, ``tta_scales.py``, ``ensemble.py``).

Every script in ``benchmarks/`` imports this module before ``nucseg_utils``: it puts the
repository on ``sys.path``, so the scripts also run from a checkout where nucseg is not
installed."""
from __future__ import annotations

import argparse
import platform
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nucseg_utils.core import runs  # noqa: E402
from nucseg_utils.model import (
    NucleusModel,  # noqa: E402
    engines,  # noqa: E402
)

DEFAULT_MODEL = REPO / "models" / "cpu" / "model.npz"
STAGE1_TEST_IMAGES = 65
RUN_MINUTES_TARGET = 15.0           # the whole benchmark, one command (issue #6) ...
UNTIMED = ("big",)                  # ... but section 7, whose slide-sized mosaic alone is longer


def timed_minutes(meta: dict) -> float:
    """The run's minutes that the target counts: all but the sections of :data:`UNTIMED`."""
    return meta.get("timed_wall", meta["wall"]) / 60


def _target_name() -> str:
    return f"the benchmark runs in < {RUN_MINUTES_TARGET:g} min (all but section 7)"


# --------------------------------------------------------------------------- results
@dataclass
class Result:
    """What a benchmark hands to the report: CSV rows, Markdown lines and verdicts."""
    rows: list = field(default_factory=list)
    md: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)

    def add(self, section, item, value, unit="", note=""):
        self.rows.append({"section": section, "item": item, "value": value, "unit": unit,
                          "note": note})

    def verdict(self, target, measured, met, missed_by="", why=""):
        if met is None:
            text = f"not measured{f' ({why})' if why else ''}"
        elif met:
            text = "met"
        else:
            text = f"missed by {missed_by}" + (f": {why}" if why else "")
        self.verdicts.append({"target": target, "measured": measured, "verdict": text})


def md_table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def shown(path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def fmt(v, digits=3):
    """A number for a table: ints as ints, floats to ``digits`` significant figures."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    v = float(v)
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss, KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2 ** 20


# --------------------------------------------------------------------------- machine
def load_stardist():
    """(matching function, version, None) or (None, None, why it is not available)."""
    # imported here: StarDist is optional (benchmarks/requirements.txt), its import can fail
    # in several ways, and `stardist.matching` pulls numba and llvmlite (seconds to import)
    try:
        import stardist
        from stardist.matching import matching
    except Exception as err:  # noqa: BLE001 - any import failure means "skip"
        return None, None, f"{type(err).__name__}: {err}"
    return matching, getattr(stardist, "__version__", "?"), None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def versions() -> dict:
    v = runs.library_versions()
    _, sd_version, _ = load_stardist() if "stardist" in sys.modules else (None, None, None)
    if sd_version:
        v["stardist"] = sd_version
    return v


# --------------------------------------------------------------------------- report
def _target_rows(meta: dict, results: dict, titles: dict) -> list:
    """The rows of the report's table of targets: each benchmark's verdicts, then the run's."""
    vrows = []
    for name, title in titles.items():
        r = results.get(name)
        if r is None:
            continue
        for v in r.verdicts:
            vrows.append([title.split(". ")[0], v["target"], v["measured"],
                          f"**{v['verdict']}**"])
    minutes = timed_minutes(meta)
    if meta.get("full"):
        ok = minutes < RUN_MINUTES_TARGET
        vrows.append(["all", _target_name(), f"{minutes:.1f} min", "**met**" if ok else
                      f"**missed by {minutes - RUN_MINUTES_TARGET:.1f} min**"])
    else:
        vrows.append(["all", _target_name(), f"{minutes:.1f} min",
                      "not measured (not a full run)"])
    return vrows


def render_report(meta: dict, results: dict, walls: dict, titles: dict) -> str:
    """REPORT.md from the run's metadata, the benchmarks' results and the wall times;
    ``titles``: {benchmark name: its section's title}, in the report's order."""
    lines = ["# nucseg benchmarks", ""]
    if meta.get("dev"):
        lines += [f"> **Development run** ({meta['dev']}): not the committed report; sizes "
                  f"are reduced and the numbers say little.", ""]
    lines += [
        f"Written by `{meta['command']}` on {meta['date']}, in {meta['wall']:.0f} s "
        f"({meta['wall'] / 60:.1f} min). Regenerate with the same command from the repository "
        f"root; it rewrites this file and `results.csv` (one row per number: section, item, "
        f"value, unit, note).",
        "",
        "## Machine",
        "",
        *md_table(["cores", "CPU", "platform", "niceness", "load average at start / end"],
                  [[meta["machine"]["cores"], meta["cpu"], meta["machine"]["platform"],
                    meta["nice"], f"{meta['load_start']} / {meta['load_end']}"]]),
        "",
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) +
        ".",
        "",
        f"Model: `{meta['model']}`" + (f" (sha256 {meta['model_sha']}...)"
                                       if meta.get("model_sha") else " (not found)") +
        f". Data: `{meta['data']}`.",
        "",
        "## Targets",
        "",
    ]
    lines += md_table(["#", "target", "measured", "verdict"],
                      _target_rows(meta, results, titles))
    lines += ["", "## Wall time per section", "",
              *md_table(["section", "s"], [[k, f"{v:.1f}"] for k, v in walls.items()]), ""]
    for name, title in titles.items():
        if name not in results:
            continue
        lines += [f"## {title}", ""] + results[name].md + [""]
    return "\n".join(lines).rstrip() + "\n"


def results_table(results: dict, walls: dict, meta: dict, sections) -> pd.DataFrame:
    """results.csv: one row per number, the benchmarks' in the order of ``sections``."""
    rows = []
    for name in sections:
        if name in results:
            rows += results[name].rows
            rows += [{"section": name, "item": f"target: {v['target']}", "value": np.nan,
                      "unit": "", "note": f"{v['verdict']} (measured {v['measured']})"}
                     for v in results[name].verdicts]
    rows += [{"section": "run", "item": f"wall time: {k}", "value": v, "unit": "s", "note": ""}
             for k, v in walls.items()]
    minutes = timed_minutes(meta)
    rows.append({"section": "run",
                 "item": f"target: {_target_name()}",
                 "value": minutes, "unit": "min",
                 "note": ("met" if minutes < RUN_MINUTES_TARGET else
                          f"missed by {minutes - RUN_MINUTES_TARGET:.1f} min")
                 if meta.get("full") else "not measured (not a full run)"})
    rows += [{"section": "run", "item": "cores", "value": meta["machine"]["cores"], "unit": "",
              "note": meta["machine"]["platform"]},
             {"section": "run", "item": "command", "value": np.nan, "unit": "",
              "note": meta["command"]}]
    return pd.DataFrame(rows, columns=["section", "item", "value", "unit", "note"])


def write_outputs(out_dir, meta, results, walls, titles):
    """Write results.csv and REPORT.md into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    table = results_table(results, walls, meta, list(titles))
    runs.write_text(out_dir / "results.csv", table.to_csv(index=False, float_format="%.6g"))
    runs.write_text(out_dir / "REPORT.md", render_report(meta, results, walls, titles))
    return out_dir / "REPORT.md", out_dir / "results.csv"


# --------------------------------------------------------------------------- validation runs
def run_folder(path) -> Path:
    """A run folder given on the command line: absolute, or relative to the repository."""
    return Path(path) if Path(path).is_absolute() else REPO / path


def open_run(doc: str, out: str, argv=None):
    """The options of a benchmark of a run's validation images (``doc``: the script's
    docstring, its first paragraph the description; ``out``: the default output under
    ``benchmarks/``); returns (options, the run folder, the network, its config)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--run", default="runs/cpu", help="run folder (relative to the repository)")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / out))
    a = ap.parse_args(argv)
    run = run_folder(a.run)
    net = NucleusModel.load(a.model, engine=engines.exact())
    return a, run, net, net.config
