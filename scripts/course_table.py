"""The README's course table, from what ``make course`` measured (``build/course/summary.json``).

    python scripts/course_table.py build/course/summary.json            # print the table
    python scripts/course_table.py build/course/summary.json --readme   # replace it in README.md

The table sits in README.md between ``<!-- course-table:full:start -->`` and
``<!-- course-table:full:end -->`` (``quick`` for a quick-mode summary), so a new run replaces
exactly the figures it measured and nothing else.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def _machine(m: dict) -> str:
    flags = [name for name, key in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"),
                                    ("AMX", "amx_bf16")) if m.get(key)]
    if not m.get("avx512_bf16"):
        flags.append("no AVX512-BF16")
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {', '.join(flags)}"


def _minutes(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 60:.1f} min)"


def render(summary: dict) -> str:
    m = summary["machine"]
    loads = [n.get("load_average_at_end") for n in summary["notebooks"] if n.get("load_average_at_end")]
    load_text = f"load at start {(m.get('load_average_at_start') or ['?'])[0]}"
    if loads:
        load_text += f", 1-minute load at the end of each notebook {min(x[0] for x in loads)}-{max(x[0] for x in loads)}"
    lines = [
        f"`make course` in **{summary['mode']}** mode, {summary['started'][:10]}: {_machine(m)}; "
        f"{load_text}; Python {m.get('python', '?')}, torch {summary['versions'].get('torch')}, "
        f"transformers {summary['versions'].get('transformers')}. "
        f"All notebooks: **{_minutes(summary['wall_seconds'])}** wall, {summary['cpu_seconds']:,.0f} CPU-seconds"
        f"{' -- NOT ALL OK' if any(n['status'] != 'ok' for n in summary['notebooks']) else ''}"
        f"{' -- the run was stopped: ' + str(len(summary['pending'])) + ' notebooks not run' if summary.get('pending') else ''}.",
        "",
        "| notebook | status | wall | CPU-s | headline results |",
        "|---|---|---|---|---|",
    ]
    for n in summary["notebooks"]:
        heads = "; ".join(f"{h['name']}: {h['value']}" for h in n["headlines"]) or "--"
        error = re.sub(r"\x1b\[[0-9;]*m", "", n.get("error") or "")  # terminal colours of older summaries
        status = n["status"] if n["status"] == "ok" else f"**{n['status']}**: {error}"
        lines.append(f"| `{Path(n['notebook']).stem}` | {status} | {n['wall_seconds']:,.0f} s | "
                     f"{(n.get('cpu_seconds') or 0):,.0f} | {heads.replace('|', '/')} |")
    for name in summary.get("pending", []):
        lines.append(f"| `{Path(name).stem}` | not run (the run was stopped) | -- | -- | -- |")
    return "\n".join(lines)


def replace_in_readme(readme: Path, mode: str, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- course-table:{mode}:start -->", f"<!-- course-table:{mode}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {start} ... {end} block to replace")
    readme.write_text(pattern.sub(lambda _: f"{start}\n{table}\n{end}", text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path)
    parser.add_argument("--readme", nargs="?", const=Path(__file__).resolve().parents[1] / "README.md", type=Path)
    args = parser.parse_args(argv)
    summary = json.loads(args.summary.read_text(encoding="utf-8"))
    table = render(summary)
    if args.readme:
        replace_in_readme(args.readme, summary["mode"], table)
        print(f"replaced the {summary['mode']}-mode course table in {args.readme}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
