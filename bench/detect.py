"""Sigma 検知ベンチマーク: parse floor, pySigma's SQLite backend, ours on one and two cores.

Run from the repository root::

    .venv/bin/python bench/detect.py [--repeat 10] [--corpus PATH] [--rules DIR ...]

Each variant runs in its own subprocess (so its peak RSS is its own) over the EVTX files
of ``<corpus>/evtx`` taken ``--repeat`` times, and prints one JSON line; the parent prints
the table and the ratios. A shared machine's speed drifts by ±10 % within minutes, so the
variants other than (b) run ``--rounds`` times, interleaved (a, c, d, c′, a, c, …): each
rate is the median of its rounds and each ratio the median of the ratios of the same
round. See bench/README.md for what each variant measures.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = Path(os.environ.get("OTASUKE_CORPUS", ROOT.parent / "shared" / "corpus"))
VARIANTS = ("a", "b", "c", "d", "c-decoded")
TITLES = {
    "a": "(a) parse floor: evtx → dicts",
    "b": "(b) pySigma SQLite backend",
    "c": "(c) ours, 1 core",
    "d": "(d) ours, 2 cores",
    "c-decoded": "(c′) ours, 1 core, every record decoded",
}


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_items(corpus: Path, repeat: int) -> list[Path]:
    files = sorted(p for p in (corpus / "evtx").rglob("*.evtx") if p.is_file())
    return files * repeat


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The parse floor: each record of the file as a Python dict, nothing else."""
    import evtx

    item: Any  # typed Optional by the stub; the iterator ends rather than yield None
    for item in evtx.PyEvtxParser(str(path), 1).records_json():
        yield orjson.loads(item["data"])


# --- variants (each runs in its own process) ----------------------------------------------


def variant_a(files: list[Path], _args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    count = 0
    for path in files:
        for _record in records(path):
            count += 1
    return {"events": count, "seconds": time.perf_counter() - started}


def _events(path: Path) -> Iterator[Any]:
    """Our EVTX parser (otasuke.ingest.parsers.evtx), as ``otasuke detect`` runs it.

    ``parse_for_detection``: the fields, time, host and record id of ``parse`` (the same
    parse errors), without the content hash and raw text that only ingest stores.
    """
    from otasuke.ingest.parsers import ParseContext
    from otasuke.ingest.parsers.evtx import EvtxParser

    parser = EvtxParser()
    ctx = ParseContext(sensor=str(path))
    parse = parser.parse_for_detection
    for record in parser.read_file(path):
        yield parse(record.raw, ctx)


def variant_b(files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    from otasuke.detect.sigma.sqlite_reference import EventTable, convert_rules, event_row

    started = time.perf_counter()
    rules, refused = convert_rules(args.rules)
    converted = time.perf_counter()
    rows = [event_row(event.fields) for path in files for event in _events(path)]
    table = EventTable(rows)
    del rows
    found = table.matches(rules)
    finished = time.perf_counter()
    return {
        "events": table.size,
        "seconds": finished - converted,
        "load_seconds": converted - started,
        "rules": len(rules),
        "refused": len(refused),
        "matches": len(found),
        "fired": len({rule_id for rule_id, _ in found}),
    }


def _load(args: argparse.Namespace) -> tuple[Any, float]:
    from otasuke.detect.sigma import RuleSet
    from otasuke.ingest.parsers import file_parsers

    started = time.perf_counter()
    ruleset = RuleSet.load(args.rules, cache_dir=args.cache_dir)
    # Set-up, as the rules: the parser modules, imported on first use (~65 ms), and the
    # detect command's module (rich, typer: ~50 ms), imported by ``otasuke detect`` first.
    file_parsers()
    importlib.import_module("otasuke.detect.command")
    loaded = time.perf_counter() - started
    gc.collect()
    gc.freeze()  # as otasuke detect does: the rules stay out of the cyclic GC's walks
    return ruleset, loaded


def _scan(ruleset: Any, files: list[Path], screen_text: bool = True) -> tuple[int, int, set[str]]:
    """``otasuke detect``'s own loop (``scan_file``), without writing the matches."""
    from otasuke.detect.command import Tally, scan_file

    tally = Tally()
    for path in files:
        for _rule, _event in scan_file(path, ruleset, tally, _ignore, screen_text=screen_text):
            pass
    return tally.records, tally.matches, set(tally.fired)


def _ignore(_note: str) -> None:
    """Parse-error notes are counted in the tally; the bench does not print them."""


def variant_load(_files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Rule loading alone (cold: empty cache folder; warm: filled by the cold run).

    After timing the load, the cold run also builds every rule bucket (``prepare``), which
    keeps their compiled prefilters in the cache folder as any earlier run would have.
    """
    ruleset, loaded = _load(args)
    started = time.perf_counter()
    buckets = ruleset.prepare()
    return {
        "load_seconds": loaded,
        "rules": len(ruleset.rules),
        "refused": len(ruleset.refused),
        "buckets": buckets,
        "prepare_seconds": time.perf_counter() - started,
    }


def variant_c(
    files: list[Path], args: argparse.Namespace, screen_text: bool = True
) -> dict[str, Any]:
    ruleset, loaded = _load(args)
    started = time.perf_counter()
    count, matches, fired = _scan(ruleset, files, screen_text=screen_text)
    return {
        "events": count,
        "seconds": time.perf_counter() - started,
        "load_seconds": loaded,
        "rules": len(ruleset.rules),
        "refused": len(ruleset.refused),
        "matches": matches,
        "fired": len(fired),
    }


def variant_c_decoded(files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """(c) with every record decoded and viewed, as ingest workers receive events."""
    return variant_c(files, args, screen_text=False)


def variant_d(files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Fork ``--workers`` processes after compiling; files dealt out by size."""
    ruleset, loaded = _load(args)
    shares: list[list[Path]] = [[] for _ in range(args.workers)]
    weights = [0] * args.workers
    for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        lightest = weights.index(min(weights))
        shares[lightest].append(path)
        weights[lightest] += path.stat().st_size
    started = time.perf_counter()
    pipes = []
    for share in shares:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker
            os.close(read_end)
            count, matches, fired = _scan(ruleset, share)
            result = {"events": count, "matches": matches, "fired": sorted(fired)}
            result["rss_mib"] = peak_rss_mib()
            with os.fdopen(write_end, "wb") as out:
                out.write(orjson.dumps(result))
            os._exit(0)
        os.close(write_end)
        pipes.append((pid, read_end))
    results = []
    for pid, read_end in pipes:
        with os.fdopen(read_end, "rb") as stream:
            results.append(orjson.loads(stream.read()))
        os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    return {
        "events": sum(r["events"] for r in results),
        "seconds": elapsed,
        "load_seconds": loaded,
        "rules": len(ruleset.rules),
        "refused": len(ruleset.refused),
        "matches": sum(r["matches"] for r in results),
        "fired": len({rule for r in results for rule in r["fired"]}),
        # Each worker's peak, summed: pages shared after fork are counted twice (an upper bound).
        "rss_mib": peak_rss_mib() + sum(r["rss_mib"] for r in results),
    }


def variant_profile(files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Where the time of (c) goes: the same scan cut into cumulative stages, in-process.

    CPU time of this process (``time.process_time``), so other work on a shared machine
    inflates it less than wall time; each stage reads every file again.
    """
    import evtx

    from otasuke.detect.sigma.native import available
    from otasuke.detect.sigma.view import EventView
    from otasuke.ingest.parsers import ParseContext
    from otasuke.ingest.parsers.evtx import EvtxParser

    ruleset, _loaded = _load(args)
    parser = EvtxParser()
    native = available()

    def library() -> int:
        count = 0
        for path in files:
            for _item in evtx.PyEvtxParser(str(path), 1).records_json():
                count += 1
        return count

    def floor() -> int:
        return sum(1 for path in files for _record in records(path))

    def read_file() -> int:
        return sum(1 for path in files for _record in parser.read_file(path))

    def parsed(detection: bool, view: bool = False, match: bool = False) -> Callable[[], int]:
        def run() -> int:
            count = 0
            parse = parser.parse_for_detection if detection else parser.parse
            for path in files:
                ctx = ParseContext(sensor=str(path))
                for record in parser.read_file(path):
                    event = parse(record.raw, ctx)
                    count += 1
                    if view:
                        event_view = EventView(event.fields)
                        if match:
                            ruleset.matching_rules(event_view)
            return count

        return run

    def rendered(key: bool = False) -> Callable[[], int]:
        def run() -> int:
            count = 0
            key_of = parser.rendered_key
            for path in files:
                for record in parser.read_rendered(path):
                    count += 1
                    if key:
                        key_of(record.raw)
            return count

        return run

    def screened(compiled: bool) -> Callable[[], int]:
        def run() -> int:
            count = 0
            screen = ruleset.record_screen(parser.rendered_key, compiled=compiled)
            for path in files:
                for _record in parser.read_screened(path, screen):
                    count += 1
            return count + int(screen.ruled_out)

        return run

    def scan(screen_text: bool) -> Callable[[], int]:
        return lambda: _scan(ruleset, files, screen_text)[0]

    stages: list[tuple[str, Callable[[], int]]] = [
        ("evtx records_json(), iterated", library),
        ("+ orjson.loads (= a, parse floor)", floor),
        ("read_rendered (records as JSON text)", rendered()),
        ("+ rendered_key (Channel, EventID from the text)", rendered(key=True)),
        ("read_screened: key + literal prefilter, Python", screened(compiled=False)),
        *([("read_screened: the same, compiled", screened(compiled=True))] if native else []),
        ("scan_file (= c: the rest decoded, viewed, matched)", scan(True)),
        ("read_file (+ orjson.loads, RawRecord)", read_file),
        ("read_file + parse (ingest: hash, raw)", parsed(False)),
        ("read_file + parse_for_detection", parsed(True)),
        ("+ EventView", parsed(True, view=True)),
        ("+ matching_rules", parsed(True, view=True, match=True)),
        ("scan_file, every record decoded (= c′)", scan(False)),
    ]
    rows = []
    for name, stage in stages:
        gc.collect()
        started = time.process_time()
        count = stage()
        rows.append({"stage": name, "events": count, "cpu_seconds": time.process_time() - started})
    # matching_rules alone: the views of one pass over the corpus built first, then matched
    # as often as the corpus is repeated.
    ctx = ParseContext()
    views = [
        EventView(parser.parse_for_detection(record.raw, ctx).fields)
        for path in sorted(set(files))
        for record in parser.read_file(path)
    ]
    times = len(files) // max(len(set(files)), 1)
    gc.collect()
    started = time.process_time()
    for _ in range(times):
        for view in views:
            ruleset.matching_rules(view)
    rows.append(
        {
            "stage": "matching_rules alone, views prebuilt",
            "events": len(views) * times,
            "cpu_seconds": time.process_time() - started,
        }
    )
    return {"events": rows[0]["events"], "seconds": 0.0, "stages": rows}


def profile_report(result: dict[str, Any]) -> str:
    lines = [
        "| stage (cumulative) | events | CPU s | µs/event | events/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["stages"]:
        per = row["cpu_seconds"] / row["events"] * 1e6 if row["events"] else 0.0
        rate = row["events"] / row["cpu_seconds"] if row["cpu_seconds"] else 0.0
        lines.append(
            f"| {row['stage']} | {row['events']:,} | {row['cpu_seconds']:.2f} "
            f"| {per:.1f} | {rate:,.0f} |"
        )
    return "\n".join(lines)


RUNNERS = {
    "a": variant_a,
    "b": variant_b,
    "c": variant_c,
    "c-decoded": variant_c_decoded,
    "d": variant_d,
    "load": variant_load,
    "profile": variant_profile,
}


# --- the parent: one subprocess per variant, then the table -------------------------------


def run_child(variant: str, args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--variant",
        variant,
        "--repeat",
        str(args.repeat),
        "--corpus",
        str(args.corpus),
        "--cache-dir",
        str(cache_dir),
        "--workers",
        str(args.workers),
    ]
    for rules in args.rules:
        command += ["--rules", str(rules)]
    print(f"… {TITLES.get(variant, variant)}", file=sys.stderr, flush=True)
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(orjson.loads(done.stdout.strip().splitlines()[-1]))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def speedups_built() -> str:
    """Whether the compiled twins of the hot loops (``make install``) are there, and the
    compiled screen's Hyperscan C library."""
    try:
        import otasuke._speedups  # noqa: F401
    except ImportError:
        return "otasuke._speedups NOT built (Python only)"
    from otasuke.detect.sigma.native import hyperscan_library

    library = hyperscan_library()
    screen = f"libhs {library}" if library else "no libhs.so.5: Python screen"
    return f"otasuke._speedups built ({screen})"


ROUNDED = ("a", "c", "d", "c-decoded")
"""The variants run ``--rounds`` times ((b) takes minutes and moves less than the ratios)."""


def rate_of(result: dict[str, Any]) -> float:
    return float(result["events"] / result["seconds"]) if result["seconds"] else 0.0


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate (its other figures with it), with every round's rate."""
    ordered = sorted(runs, key=rate_of)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["round_rates"] = [rate_of(r) for r in runs]
    return chosen


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    def rate(v: str) -> float:
        return rate_of(results[v])

    def ratio(top: str, bottom: str) -> float:
        """The median over rounds of top/bottom measured in the same round."""
        tops = results[top].get("round_rates", [rate(top)])
        bottoms = results[bottom].get("round_rates", [rate(bottom)])
        if len(tops) == len(bottoms):
            return float(
                statistics.median([t / b for t, b in zip(tops, bottoms, strict=True) if b])
            )
        return rate(top) / rate(bottom)

    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs ({cpu_model()}) · "
        f"Python {platform.python_version()} · corpus evtx × {args.repeat} · "
        f"{speedups_built()}",
        "",
        "| variant | events | events/s | peak RSS (MiB) | matches | rules fired | rules ready (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in VARIANTS:
        r = results[v]
        ready = f"{r['load_seconds']:.2f}" if "load_seconds" in r else "–"
        matches = f"{r['matches']:,}" if "matches" in r else "–"
        fired = f"{r['fired']:,}" if "fired" in r else "–"
        lines.append(
            f"| {TITLES[v]} | {r['events']:,} | {rate(v):,.0f} | {r['rss_mib']:,.0f} "
            f"| {matches} | {fired} | {ready} |"
        )
    cold, warm = results["load-cold"], results["c"]
    rounds = len(results["c"].get("round_rates", [0]))
    per_round = (
        "   ".join(
            f"{c / a:.0%}"
            for c, a in zip(results["c"]["round_rates"], results["a"]["round_rates"], strict=True)
        )
        if "round_rates" in results["c"]
        else ""
    )
    lines += [
        "",
        f"c/b = {rate('c') / rate('b'):.1f}×   c/a = {ratio('c', 'a'):.0%}   "
        f"d/b = {rate('d') / rate('b'):.1f}×   d/a = {ratio('d', 'a'):.0%}   "
        f"c′/b = {rate('c-decoded') / rate('b'):.1f}×   c′/a = {ratio('c-decoded', 'a'):.0%}",
        f"{rounds} rounds (medians above); c/a by round: {per_round}",
        f"rule loading: {cold['rules']:,} rules ({cold['refused']} refused), "
        f"cold {cold['load_seconds']:.2f} s (no cache), warm {warm['load_seconds']:.2f} s "
        f"(compiled-rule cache); SQLite backend: {results['b']['rules']:,} rules converted "
        f"({results['b']['refused']} not convertible) in {results['b']['load_seconds']:.2f} s",
        f"prefilters: {cold['buckets']} rule buckets built and their Hyperscan databases "
        f"cached in {cold['prepare_seconds']:.2f} s (after the cold load, not in any rate)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="times the corpus is read")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--rules", type=Path, action="append", help="default: bundled rules")
    parser.add_argument("--workers", type=int, default=2, help="processes of variant d")
    parser.add_argument(
        "--rounds", type=int, default=5, help="runs of (a), (c), (d), (c′), interleaved"
    )
    parser.add_argument("--variant", choices=[*RUNNERS], help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the variants: where (c)'s time goes, stage by stage (CPU time)",
    )
    args = parser.parse_args()
    if not args.rules:
        from otasuke.detect.sigma import default_rule_paths

        args.rules = default_rule_paths()
    if args.variant:  # child
        result = RUNNERS[args.variant](work_items(args.corpus, args.repeat), args)
        result.setdefault("rss_mib", peak_rss_mib())
        print(orjson.dumps(result).decode())
        return
    if not (args.corpus / "evtx").is_dir():
        sys.exit(f"no EVTX corpus at {args.corpus / 'evtx'}: pass --corpus or set OTASUKE_CORPUS")
    cache_dir = Path(tempfile.mkdtemp(prefix="otasuke-bench-cache-"))
    if args.profile:
        try:
            run_child("load", args, cache_dir)  # fills the cache
            profiled = run_child("profile", args, cache_dir)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        print(orjson.dumps(profiled, option=orjson.OPT_INDENT_2).decode() if args.json else "")
        print(profile_report(profiled))
        return
    try:
        results = {"load-cold": run_child("load", args, cache_dir)}  # fills the cache
        results["b"] = run_child("b", args, cache_dir)
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in ROUNDED}
        for _round in range(max(args.rounds, 1)):
            for variant in ROUNDED:
                runs[variant].append(run_child(variant, args, cache_dir))
        for variant in ROUNDED:
            results[variant] = median_round(runs[variant])
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() if args.json else "")
    print(report(results, args))


if __name__ == "__main__":
    main()
