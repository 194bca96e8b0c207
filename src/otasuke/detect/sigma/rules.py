"""Sigma ルール読込 (rule loading): YAML files → compiled rules or refusals.

pySigma parses each file and applies the sysmon and Windows log-source processing
pipelines (a ``logsource`` becomes ``Channel``/``EventID`` conditions); the engine in
:mod:`otasuke.detect.sigma.compile` evaluates the result. A rule that cannot be run
becomes a :class:`RuleRefusal` with the reason, never an exception.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.pipelines.sysmon.sysmon import sysmon_pipeline
from sigma.pipelines.windows.windows import windows_logsource_pipeline
from sigma.rule import SigmaRule, SigmaRuleBase

from otasuke.detect.sigma.cache import RuleCache, file_key
from otasuke.detect.sigma.codegen import bound_predicate, predicate_code
from otasuke.detect.sigma.compile import (
    And,
    Node,
    Or,
    Predicate,
    fields_named,
    from_pysigma,
    simplify,
)
from otasuke.detect.sigma.compile import predicate as build_predicate
from otasuke.detect.sigma.correlation import (
    CorrelationSpec,
    correlation_spec,
    default_condition,
    resolve,
)
from otasuke.detect.sigma.filters import FilterSpec, is_filter_document, parse_filter
from otasuke.detect.sigma.index import index_keys
from otasuke.detect.sigma.mappings import LogSource
from otasuke.detect.sigma.repair import is_metadata_error, one_line, repair
from otasuke.detect.sigma.values import Unsupported
from otasuke.detect.sigma.view import EventView

BUNDLED_DIR = Path(__file__).resolve().parent.parent.parent / "rules" / "sigma"
SIGMAHQ_COMMIT = "8eaafff1f2845a696050e05e72ba1140ee190698"
SIGMAHQ_URL = "https://github.com/SigmaHQ/sigma"
SIGMAHQ_FOLDERS = ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-dfir")
DRL_URL = "https://github.com/SigmaHQ/Detection-Rule-License/blob/main/LICENSE.Detection.Rules.md"
LEVELS = ("informational", "low", "medium", "high", "critical")
NETWORK_CATEGORIES = frozenset({"firewall", "proxy", "dns", "webserver", "network_connection_zeek"})
"""Log source categories without a product that describe network devices, not PCs."""
LOG = logging.getLogger(__name__)
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when present: 5× faster than the pure-Python one, same documents."""


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What an alert keeps of its rule: DRL 1.1 attribution (author, licence, link)."""

    id: str
    title: str
    level: str
    status: str | None
    author: str
    description: str
    references: tuple[str, ...]
    tags: tuple[str, ...]
    path: str
    rule_url: str
    licence: str = "DRL-1.1"
    licence_url: str = DRL_URL


@dataclass(frozen=True, slots=True)
class RuleRefusal:
    """A rule file (or one rule in it) that is not evaluated, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RuleTree:
    """A rule after pySigma and the pipelines: plain data, what the rule cache keeps."""

    info: RuleInfo
    tree: Node
    windows: bool
    """False for a rule that cannot concern Windows event logs (see :func:`applies_to_windows`)."""
    notes: tuple[str, ...] = ()
    """What was wrong with the file but did not stop the rule (bad tags, repaired values)."""
    name: str | None = None
    """The rule's ``name`` (Sigma v2), by which correlations and filters may refer to it."""
    logsource: LogSource = LogSource()  # noqa: RUF009 - frozen, shared on purpose
    correlation: CorrelationSpec | None = None
    """Set for a correlation rule (相関ルール); ``tree`` is then empty."""
    filter: FilterSpec | None = None
    """Set for a filter (除外フィルタ); ``tree`` is its condition."""
    digest: str = ""
    """SHA-256 of the pickled ``tree`` (made with it, kept in the rule cache): names the
    rule's condition where a cache keeps what is made of it (rule buckets)."""
    code: bytes | None = None
    """A rule's generated function, marshalled (:func:`~otasuke.detect.sigma.codegen.predicate_code`):
    made once with the tree and kept with it in the rule cache. None: closures."""

    @property
    def kind(self) -> str:
        """``rule``, ``correlation`` or ``filter``."""
        if self.correlation is not None:
            return "correlation"
        return "filter" if self.filter is not None else "rule"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule ready to evaluate (コンパイル済みルール)."""

    info: RuleInfo
    tree: Node
    predicate: Predicate
    fields: frozenset[str]
    """Lowercased field names the rule looks at."""
    windows: bool = True
    """False: evaluated only on non-Windows events of a log source it accepts."""
    name: str | None = None
    logsource: LogSource = LogSource()  # noqa: RUF009 - frozen, shared on purpose
    digest: str = ""
    """The tree's :attr:`RuleTree.digest` ("" when not known)."""


def compiled(rule: RuleTree) -> CompiledRule:
    """The evaluable form of a rule tree: its generated function bound (see
    :mod:`otasuke.detect.sigma.codegen`), else its closures; never cached itself.

    A rule whose log source no pipeline maps to Windows channels (Linux, network, cloud…)
    is evaluated only on events whose fields it names: it needs at least one of them
    present, so ``not selection`` cannot fire on an event the rule knows nothing about.
    """
    names = frozenset(fields_named(rule.tree))
    test = bound_predicate(rule.code, rule.tree) if rule.code is not None else None
    if test is None:
        test = build_predicate(rule.tree)
    return CompiledRule(
        info=rule.info,
        tree=rule.tree,
        predicate=_naming_a_field(test, rule, names),
        fields=names,
        windows=rule.windows,
        name=rule.name,
        logsource=rule.logsource,
        digest=rule.digest,
    )


def _naming_a_field(test: Predicate, rule: RuleTree, names: frozenset[str]) -> Predicate:
    """``test``, for a rule off Windows only on events naming one of its fields."""
    if rule.windows or not names:
        return test
    wanted = tuple(names)

    def names_a_field(view: EventView) -> bool:
        original = view.original
        for name in wanted:
            if name in original:
                return test(view)
        return False

    return names_a_field


def rule_files(paths: Sequence[Path]) -> list[Path]:
    """The ``.yml``/``.yaml`` files named or found (recursively) under ``paths``."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
            )
        else:
            found.append(path)
    return found


def load_rules(
    paths: Sequence[Path],
    progress: Callable[[int, int], None] | None = None,
    *,
    cache_dir: Path | None = None,
) -> tuple[list[CompiledRule], list[RuleRefusal]]:
    """Compile every rule under ``paths``; refuse (with a reason) what cannot be run.

    With ``cache_dir``, files unchanged since the last load come from the compiled-rule
    cache (:mod:`otasuke.detect.sigma.cache`) instead of YAML and pySigma.
    """
    trees, refused = load_rule_trees(paths, progress, cache_dir=cache_dir)
    return [compiled(tree) for tree in trees if tree.kind == "rule"], refused


def load_rule_trees(
    paths: Sequence[Path],
    progress: Callable[[int, int], None] | None = None,
    *,
    cache_dir: Path | None = None,
) -> tuple[list[RuleTree], list[RuleRefusal]]:
    """The rule trees (and refusals) under ``paths``, in file order; duplicates refused.

    Correlation rules come out with their rule references resolved to rule ids (one that
    refers to no loaded rule is refused); filters come out as they are (they may name
    rules loaded elsewhere, e.g. a customer's filters).
    """
    files = rule_files(paths)
    cache = RuleCache(cache_dir, paths) if cache_dir is not None else None
    pipeline: Any = None
    trees: list[RuleTree] = []
    refused: list[RuleRefusal] = []
    seen: dict[str, str] = {}
    for done, path in enumerate(files, start=1):
        items = None
        content = _read_bytes(path)
        key = file_key(path, content) if cache is not None and content is not None else None
        if cache is not None and key is not None:
            items = cache.get(path, key)
        if items is None:
            if pipeline is None:
                pipeline = sysmon_pipeline() + windows_logsource_pipeline()
            items = list(_compile_file(path, content, pipeline))
            if cache is not None and key is not None:
                cache.put(path, key, items)
        for item in items:
            if isinstance(item, RuleRefusal):
                refused.append(item)
            elif item.info.id in seen:
                reason = f"duplicate rule id {item.info.id} (first in {seen[item.info.id]})"
                refused.append(RuleRefusal(str(path), reason))
            else:
                seen[item.info.id] = str(path)
                trees.append(item)
        if progress is not None:
            progress(done, len(files))
    if cache is not None:
        cache.save()
        if cache.problem is not None:
            LOG.warning("%s", cache.problem)
    return resolve_correlations(trees, refused)


def resolve_correlations(
    trees: list[RuleTree], refused: list[RuleRefusal]
) -> tuple[list[RuleTree], list[RuleRefusal]]:
    """Correlation references (ids or names) → rule ids; unresolvable ones refused."""
    if not any(t.correlation is not None for t in trees):
        return trees, refused
    ids: dict[str, str] = {}
    for tree in trees:
        if tree.filter is None:
            ids[tree.info.id] = tree.info.id
            if tree.name:
                ids.setdefault(tree.name, tree.info.id)
    kept: list[RuleTree] = []
    for tree in trees:
        if tree.correlation is not None:
            try:
                tree = replace(tree, correlation=resolve(tree.correlation, ids))
            except Unsupported as err:
                refused.append(RuleRefusal(tree.info.path, str(err)))
                continue
        kept.append(tree)
    return kept, refused


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _compile_file(
    path: Path, content: bytes | None, pipeline: Any
) -> Iterator[RuleTree | RuleRefusal]:
    try:
        if content is None:
            content = path.read_bytes()
        text = content.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        yield RuleRefusal(str(path), f"unreadable: {err}")
        return
    try:
        documents = [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if d is not None]
    except yaml.YAMLError as err:
        yield RuleRefusal(str(path), f"not YAML: {one_line(err)}")
        return
    rules: list[Any] = []
    notes: list[str] = []
    for document in documents:
        if not isinstance(document, dict):
            yield RuleRefusal(str(path), f"not a Sigma rule: a YAML {type(document).__name__}")
        elif "correlation" in document:
            yield _compile_correlation(document, path)
        elif is_filter_document(document):
            yield _compile_filter(document, path)
        else:
            notes.extend(repair(document))
            rules.append(document)
    if not rules:
        if not documents:
            yield RuleRefusal(str(path), "not a Sigma rule: empty file")
        return
    try:
        collection = SigmaCollection.from_dicts(rules, collect_errors=True)
    except SigmaError as err:
        yield RuleRefusal(str(path), f"pySigma: {one_line(err)}")
        return
    if collection.errors and not collection.rules:
        yield RuleRefusal(str(path), f"pySigma: {one_line(collection.errors[0])}")
        return
    for rule in collection.rules:
        yield _compile_rule(rule, path, pipeline, tuple(notes))


def _compile_correlation(document: dict[str, Any], path: Path) -> RuleTree | RuleRefusal:
    """相関ルール: a ``correlation:`` document as a tree holding its spec."""
    where = str(path)
    default_condition(document)
    try:
        rule = SigmaCorrelationRule.from_dict(document, collect_errors=True)
        fatal = [e for e in rule.errors if not is_metadata_error(e)]
        if fatal:
            return RuleRefusal(where, f"pySigma: {one_line(fatal[0])}")
        spec = correlation_spec(rule)
    except Unsupported as err:
        return RuleRefusal(where, str(err))
    except SigmaError as err:
        return RuleRefusal(where, f"pySigma: {one_line(err)}")
    notes = tuple(f"metadata: {one_line(e)}" for e in rule.errors)
    return RuleTree(rule_info(rule, path), And(()), False, notes, name=rule.name, correlation=spec)


def _compile_filter(document: dict[str, Any], path: Path) -> RuleTree | RuleRefusal:
    """除外フィルタ: a ``filter:`` document as a tree (its condition) and its targets."""
    where = str(path)
    try:
        parsed, spec, tree = parse_filter(document)
        fatal = [e for e in parsed.errors if not is_metadata_error(e)]
        if fatal:
            return RuleRefusal(where, f"pySigma: {one_line(fatal[0])}")
    except Unsupported as err:
        return RuleRefusal(where, str(err))
    except SigmaError as err:
        return RuleRefusal(where, f"pySigma: {one_line(err)}")
    except RecursionError:
        return RuleRefusal(where, "condition nested too deeply")
    return RuleTree(
        rule_info(parsed, path),
        tree,
        False,
        (),
        name=parsed.name,
        filter=spec,
        logsource=spec.logsource,
    )


def _compile_rule(
    rule: Any, path: Path, pipeline: Any, notes: tuple[str, ...] = ()
) -> RuleTree | RuleRefusal:
    where = str(path)
    if not isinstance(rule, SigmaRule):
        return RuleRefusal(where, f"{type(rule).__name__} (not yet supported)")
    fatal = [e for e in rule.errors if not is_metadata_error(e)]
    if fatal:
        return RuleRefusal(where, f"pySigma: {one_line(fatal[0])}")
    notes += tuple(f"metadata: {one_line(e)}" for e in rule.errors)
    try:
        pipeline.apply(rule)
        conditions = [c.parsed for c in rule.detection.parsed_condition]
        trees = [from_pysigma(c) for c in conditions]
    except Unsupported as err:
        return RuleRefusal(where, str(err))
    except SigmaError as err:
        return RuleRefusal(where, f"pySigma: {one_line(err)}")
    except RecursionError:
        return RuleRefusal(where, "condition nested too deeply")
    if not trees:
        return RuleRefusal(where, "no condition")
    tree = simplify(trees[0] if len(trees) == 1 else Or(tuple(trees)))
    source = rule.logsource
    logsource = LogSource(
        (source.product or "").lower() or None,
        (source.category or "").lower() or None,
        (source.service or "").lower() or None,
    )
    windows = applies_to_windows(rule, tree)
    info = rule_info(rule, path)
    code = predicate_code(tree, info.id)
    digest = hashlib.sha256(pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    return RuleTree(info, tree, windows, notes, rule.name, logsource, digest=digest, code=code)


def applies_to_windows(rule: SigmaRule, tree: Node) -> bool:
    """Whether a rule can concern Windows event logs.

    True when the pipelines tied it to a channel, or its log source says ``windows``, or
    names neither a product nor a service (a generic category such as ``antivirus``);
    False for other products (linux, macos, aws, zeek…), for categories of network devices
    (firewall, proxy, dns, webserver) without a product, and for a service without a
    product that no pipeline tied to a channel (``service: apache``, ``nginx``…): a
    service names one program's log, and Windows services become channel conditions.
    """
    if any(channel is not None for channel, _ in index_keys(tree)):
        return True
    logsource = rule.logsource
    product = (logsource.product or "").lower()
    if product:
        return product == "windows"
    if logsource.service:
        return False
    return (logsource.category or "").lower() not in NETWORK_CATEGORIES


def rule_info(rule: SigmaRuleBase, path: Path) -> RuleInfo:
    """The attribution an alert carries (DRL 1.1: author, licence, link to the rule)."""
    level = rule.level.name.lower() if rule.level is not None else "medium"
    return RuleInfo(
        id=str(rule.id) if rule.id is not None else f"file:{path.name}",
        title=rule.title or path.stem,
        level=level if level in LEVELS else "medium",
        status=rule.status.name.lower() if rule.status is not None else None,
        author=rule.author or "unknown",
        description=(rule.description or "").strip(),
        references=tuple(str(r) for r in rule.references or ()),
        tags=tuple(str(t) for t in rule.tags or ()),
        path=str(path),
        rule_url=rule_url(path),
    )


def rule_url(path: Path) -> str:
    """Link to the rule in SigmaHQ/sigma when the path shows where it comes from."""
    resolved = path.resolve()
    if resolved.is_relative_to(BUNDLED_DIR):
        relative = resolved.relative_to(BUNDLED_DIR).as_posix()
        return f"{SIGMAHQ_URL}/blob/{SIGMAHQ_COMMIT}/rules/{relative}"
    parts = resolved.parts
    for at in range(len(parts) - 2, -1, -1):
        if parts[at] in SIGMAHQ_FOLDERS:
            return f"{SIGMAHQ_URL}/blob/{SIGMAHQ_COMMIT}/" + "/".join(parts[at:])
    return resolved.as_uri()
