"""コンパイル済みルールのキャッシュ (compiled-rule cache): skip YAML and pySigma when nothing changed.

Loading a rule means parsing YAML, building pySigma objects and applying the processing
pipelines: ~2 ms a rule. What comes out (:class:`~otasuke.detect.sigma.rules.RuleInfo`,
our own :data:`~otasuke.detect.sigma.compile.Node` tree, a rule's generated function as
marshalled code, refusals) is plain data, so it is pickled; closures are never pickled
(each value test carries the recipe it is rebuilt from).

One store file per set of rule roots, under the cache folder. An entry is kept per rule
file and reused only when its path, size, ``mtime_ns`` and the SHA-256 of its content are
all unchanged; a touched or edited file is compiled again, alone. The whole store is
ignored when :data:`ENGINE_VERSION` (a hash of this package's code, of the pySigma and
pipeline versions and of Python's bytecode version) differs, so an engine change never
runs on stale trees.

The cache is an accelerator, not a record: an unreadable or corrupt store is treated as
empty and a store that cannot be written is reported in :attr:`RuleCache.problem`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

_FORMAT = 3
_NOT_ENGINE = frozenset({"sqlite_reference.py"})
"""Modules of this package that do not shape compiled rules (tools around the engine)."""
_DISTRIBUTIONS = ("pySigma", "pysigma-pipeline-sysmon", "pysigma-pipeline-windows", "PyYAML")


def _engine_version() -> str:
    digest = hashlib.sha256(f"format {_FORMAT} python {sys.version_info[:2]}".encode())
    digest.update(importlib.util.MAGIC_NUMBER)  # rules keep marshalled code (codegen)
    for name in _DISTRIBUTIONS:
        try:
            digest.update(f"{name} {metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} absent".encode())
    for source in sorted(Path(__file__).resolve().parent.glob("*.py")):
        if source.name in _NOT_ENGINE:
            continue
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:32]


ENGINE_VERSION = _engine_version()
"""Changes whenever the engine's code or the pySigma/pipeline versions change."""


def default_cache_dir() -> Path:
    """``$OTASUKE_CACHE_DIR``, else ``$XDG_CACHE_HOME/otasuke``, else ``~/.cache/otasuke``."""
    explicit = os.environ.get("OTASUKE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "otasuke"


@dataclass(frozen=True, slots=True)
class FileKey:
    """What must be unchanged for a rule file's cached entry to be reused."""

    size: int
    mtime_ns: int
    sha256: str


def file_key(path: Path, content: bytes) -> FileKey:
    """The key of ``path`` whose bytes are ``content`` (stat taken now)."""
    stat = path.stat()
    return FileKey(stat.st_size, stat.st_mtime_ns, hashlib.sha256(content).hexdigest())


class RuleCache:
    """Per-file entries of one rule set, read once and written back when changed."""

    def __init__(self, cache_dir: Path, roots: Sequence[Path]) -> None:
        names = "\0".join(str(p.resolve()) for p in roots)
        tag = hashlib.sha256(names.encode()).hexdigest()[:16]
        self.path = cache_dir / f"sigma-rules-{tag}.pickle"
        self.problem: str | None = None
        """Why the store could not be written (the rules still load), or None."""
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, tuple[FileKey, Any]] = self._read()
        self._used: set[str] = set()
        self._changed = False

    def _read(self) -> dict[str, tuple[FileKey, Any]]:
        try:
            with self.path.open("rb") as stream:
                stored = pickle.load(stream)
        except FileNotFoundError:
            return {}
        except Exception:  # a corrupt or foreign store is rebuilt, never fatal
            self._changed = True
            return {}
        if not isinstance(stored, dict) or stored.get("engine") != ENGINE_VERSION:
            self._changed = True
            return {}
        entries = stored.get("files")
        return entries if isinstance(entries, dict) else {}

    def get(self, path: Path, key: FileKey) -> Any | None:
        """The cached items of ``path`` if its key is unchanged, else None."""
        name = str(path)
        self._used.add(name)
        entry = self._entries.get(name)
        if entry is not None and entry[0] == key:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def put(self, path: Path, key: FileKey, items: Any) -> None:
        """Remember the compiled items of ``path`` (written by :meth:`save`)."""
        name = str(path)
        self._used.add(name)
        self._entries[name] = (key, items)
        self._changed = True

    def save(self) -> None:
        """Write the store if anything changed; entries of files not seen are dropped."""
        stale = set(self._entries) - self._used
        for name in stale:
            del self._entries[name]
        if not (self._changed or stale):
            return
        payload = {"engine": ENGINE_VERSION, "files": self._entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as stream:
                    pickle.dump(payload, stream, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except (OSError, pickle.PicklingError, TypeError, RecursionError) as err:
            self.problem = f"rule cache not written to {self.path}: {err}"
            return
        self._changed = False
