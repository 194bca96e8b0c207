"""``otasuke rules check``: which Sigma rules load, which cannot be used, and why.

Loads every rule under the given folders exactly as detection does (pySigma, the sysmon and
Windows pipelines, our compiler), with a progress bar on stderr; prints each refused rule
with its reason, then a summary by reason and the totals. ``--format json`` prints the same
as one JSON document for machines. Rules whose log source is not Windows (Linux, network,
cloud…) load too: they are evaluated on events that are not Windows event logs and that
carry at least one of the fields they name (see :func:`otasuke.detect.sigma.rules.compiled`).
"""

from __future__ import annotations

import re
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from otasuke.detect.sigma.rules import RuleRefusal, RuleTree, load_rule_trees

rules_app = typer.Typer(
    help="Sigma ルール / rules: check what loads.", no_args_is_help=True, add_completion=False
)


class CheckFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|%\w+%""")
_CATEGORIES = (
    ("duplicate rule id", "duplicate rule id"),
    (
        "pySigma: The pipe syntax",
        "aggregation in the condition (Sigma 1 '| count()'; not supported)",
    ),
    ("not YAML", "not YAML"),
    ("unreadable", "unreadable file"),
)


def reason_category(reason: str) -> str:
    """A refusal reason without its specifics (ids, paths, quoted values): what to count by."""
    for prefix, category in _CATEGORIES:
        if reason.startswith(prefix):
            return category
    return _QUOTED.sub("…", reason)[:160]


def check_report(trees: list[RuleTree], refused: list[RuleRefusal]) -> dict[str, Any]:
    """What ``rules check`` prints, as data."""
    by_reason = Counter(reason_category(r.reason) for r in refused)
    notes = Counter(_QUOTED.sub("…", n) for t in trees for n in t.notes)
    kinds = Counter(t.kind for t in trees)
    return {
        "loaded": len(trees),
        "refused": len(refused),
        "loaded_windows": sum(1 for t in trees if t.kind == "rule" and t.windows),
        "loaded_other_logsources": sum(1 for t in trees if t.kind == "rule" and not t.windows),
        "loaded_correlations": kinds["correlation"],
        "loaded_filters": kinds["filter"],
        "loaded_with_notes": sum(1 for t in trees if t.notes),
        "by_reason": dict(by_reason.most_common()),
        "notes": dict(notes.most_common()),
        "refusals": [{"path": r.path, "reason": r.reason} for r in refused],
    }


@rules_app.command("check")
def rules_check_command(
    dirs: Annotated[
        list[Path], typer.Argument(help="Sigma rule files or folders (walked recursively).")
    ],
    output_format: Annotated[
        CheckFormat, typer.Option("--format", help="table (people) or json (machines).")
    ] = CheckFormat.TABLE,
) -> None:
    """ルール検査 / check: load every rule; list each one that cannot be used and why."""
    err = Console(stderr=True)
    missing = [p for p in dirs if not p.exists()]
    if missing:
        for path in missing:
            err.print(f"[red]見つかりません / not found:[/red] {path}")
        raise typer.Exit(2)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task("ルール検査 / checking rules", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        trees, refused = load_rule_trees(dirs, advance)
    report = check_report(trees, refused)
    if output_format is CheckFormat.JSON:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    out = Console(highlight=False, soft_wrap=True)
    for refusal in refused:
        out.print(f"[red]使用不可 / refused[/red] {refusal.path}", markup=True)
        out.print(f"    {refusal.reason}", markup=False)
    out.print(_summary(report))
    out.print(
        f"読込 / loaded {report['loaded']} (Windows {report['loaded_windows']}, other log "
        f"sources {report['loaded_other_logsources']}, 相関 / correlations "
        f"{report['loaded_correlations']}, フィルタ / filters {report['loaded_filters']}, "
        f"with notes {report['loaded_with_notes']}) · 使用不可 / refused {report['refused']}",
        markup=False,
    )


def _summary(report: dict[str, Any]) -> Table:
    table = Table(title="ルール検査 / rules check")
    table.add_column("理由 / reason")
    table.add_column("件数 / rules", justify="right")
    for reason, count in report["by_reason"].items():
        table.add_row(reason, str(count))
    for note, count in report["notes"].items():
        table.add_row(f"(loaded, note) {note}", str(count), style="dim")
    return table
