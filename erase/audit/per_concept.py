"""An audit of several concepts: each concept's own report in ``<out>/<concept>/``, with an index.

The concepts' reports are made one by one in ``.<out>.parts`` beside ``--out`` (a finished concept's
report stays there, so an interrupted audit continues with the next concept; parts made for other
models or settings are discarded), then copied into ``--out`` in one rename with ``report.json``
(``{"concepts", "reports", "summary"}``) and ``report.md`` on top.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from ..core import distributed as dist
from ..core.atomic import write_text_atomic
from ..core.outputs import guard_output, legacy_report
from ..core.errors import UserError


def per_concept_reports(out: Path, concepts: list[str], run: Callable[[str, Path], dict], key: dict,
                        summarize: Callable[[dict], dict], title: str, overwrite: bool = False,
                        command: str = "audit concept", reads: list = ()) -> dict:
    """``run(concept, folder)`` writes one concept's report into ``folder`` and returns it; ``key`` is
    everything the reports depend on (the models and settings), to know whether parts can be reused;
    ``command``: the audit writing them (its output marker), ``reads``: the models it reads (never written)."""
    if len(set(concepts)) < len(concepts):
        raise UserError("a --concept is given twice")
    out = Path(out)
    guard_output(out, command, reads=reads, overwrite=overwrite, own=legacy_report(command))
    parts = out.parent / f".{out.name}.parts"
    stamp = json.dumps(key, sort_keys=True, default=str)
    if dist.is_main():  # several processes: the main one keeps the parts folder, all run each audit
        if parts.exists() and (not (parts / "key.json").exists() or (parts / "key.json").read_text() != stamp):
            shutil.rmtree(parts)  # made for other models or settings
        parts.mkdir(parents=True, exist_ok=True)
        write_text_atomic(parts / "key.json", stamp)
    dist.barrier()
    reports = {}
    for c in concepts:
        done = dist.broadcast((parts / c / "report.json").exists())
        reports[c] = json.loads((parts / c / "report.json").read_text()) if done else run(c, parts / c)
    index = {"concepts": concepts, "reports": {c: f"{c}/report.json" for c in concepts},
             "summary": {c: summarize(r) for c, r in reports.items()}}
    with dist.written_once(out, overwrite=overwrite, mark=command) as tmp:
        for c in concepts:
            shutil.copytree(parts / c, tmp / c)
        (tmp / "report.json").write_text(json.dumps(index, indent=2))
        (tmp / "report.md").write_text(_markdown(index, title))
    if dist.is_main():
        shutil.rmtree(parts, ignore_errors=True)
    return index


def _markdown(index: dict, title: str) -> str:
    lines = [f"# {title}: {', '.join(index['concepts'])}", "", "Each concept's own report: "
             + ", ".join(f"[{c}]({c}/report.md)" for c in index["concepts"]) + ".", ""]
    for c, s in index["summary"].items():
        lines += [f"## {c}", "", "| model | " + " | ".join(next(iter(s.values()))) + " |",
                  "|---|" + "---|" * len(next(iter(s.values())))]
        for model, row in s.items():
            lines.append(f"| {model} | " + " | ".join(f"{v:.1%}" if isinstance(v, float) else str(v)
                                                     for v in row.values()) + " |")
        lines.append("")
    return "\n".join(lines)
