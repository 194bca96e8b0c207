"""IOC 照合 (indicator matching): events against known-bad IPs, domains and URLs.

Fields looked at (whatever the source format, since the names do not clash):

- IPs (with their port, for ``IP:port`` indicators): Suricata ``src_ip``/``dest_ip``,
  FortiGate ``srcip``/``dstip`` (FortiOS 3 ``src``/``dst``, SSL-VPN ``remip``),
  Sysmon ``SourceIp``/``DestinationIp``.
- Domains (an indicator also matches its subdomains): Suricata ``dns.rrname``,
  ``dns.query.rrname``, ``dns.queries.rrname``, ``http.hostname``, ``tls.sni``;
  FortiGate ``hostname`` and the host of ``url``; Sysmon ``QueryName`` (EID 22) and
  ``DestinationHostname``. A domain field holding an IP is looked up as an IP.
- URLs: FortiGate ``hostname`` + ``url`` (or an absolute ``url``), Suricata
  ``http.hostname`` + ``http.url``.

Every lookup is a dict access: per field value at most one per domain label and per
directory of the URL path, never a loop over the indicators.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from otasuke.detect.detection import Detection, DetectionSource
from otasuke.detect.device import is_blocked
from otasuke.detect.ioc.formats import (
    IndicatorKind,
    IocSource,
    normalise_domain,
    normalise_ip,
    parse_list,
    url_key,
)
from otasuke.errors import ConfigError
from otasuke.ingest.event import Event

IP_FIELDS = (
    ("src_ip", "src_port"),
    ("dest_ip", "dest_port"),
    ("srcip", "srcport"),
    ("dstip", "dstport"),
    ("src", "src_port"),
    ("dst", "dst_port"),
    ("remip", "remport"),
    ("SourceIp", "SourcePort"),
    ("DestinationIp", "DestinationPort"),
)
DOMAIN_FIELDS = (
    "dns.rrname",
    "dns.query.rrname",
    "dns.queries.rrname",
    "http.hostname",
    "tls.sni",
    "hostname",
    "QueryName",
    "DestinationHostname",
)
URL_FIELDS = (("http.hostname", "http.url"), ("hostname", "url"), (None, "url"))
LIST_SUFFIXES = (".txt", ".csv", ".list")
NOT_LISTS = ("license", "readme", "notice", "copying")

Hit = tuple[str, Any, IndicatorKind, str]
"""(field name, event value, indicator kind, indicator)."""


class IocSet:
    """IOC リスト: indicators from maltrail and abuse.ch lists, looked up in O(1)."""

    def __init__(self) -> None:
        self._index: dict[IndicatorKind, dict[str, tuple[IocSource, ...]]] = {
            kind: {} for kind in IndicatorKind
        }
        self.skipped = 0
        """Lines of the lists that are not a supported indicator."""
        self.lists: list[str] = []

    @classmethod
    def load(cls, paths: str | Path | Iterable[str | Path]) -> IocSet:
        """Lists from files and folders (``*.txt``/``*.csv``, recursively; not LICENSE/README)."""
        iocs = cls()
        for path in _list_files(paths):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as err:
                raise ConfigError(
                    f"cannot read IOC list: {err.strerror}",
                    field="ioc_paths",
                    source=str(path),
                    hint="check the path and its permissions",
                ) from None
            iocs.add_list(path.stem, text)
        return iocs

    def add_list(self, list_name: str, text: str) -> int:
        """Add one list's indicators; returns how many it had."""
        parsed = parse_list(text, list_name)
        for indicator in parsed.indicators:
            index = self._index[indicator.kind]
            known = index.get(indicator.value, ())
            if indicator.source not in known:
                index[indicator.value] = (*known, indicator.source)
        self.skipped += parsed.skipped
        self.lists.append(list_name)
        return len(parsed.indicators)

    def __len__(self) -> int:
        return sum(len(index) for index in self._index.values())

    def counts(self) -> dict[str, int]:
        """Distinct indicators per kind (ip, ip_port, domain, url)."""
        return {kind.value: len(index) for kind, index in self._index.items()}

    def detections(self, event: Event) -> list[Detection]:
        """One Detection per list this event touches, for its most specific indicator.

        Specificity: URL, then domain, then IP:port, then IP.
        """
        seen: set[str] = set()
        found: list[Detection] = []
        blocked: bool | None = None
        for field, value, kind, indicator in self._hits(event.fields):
            for source in self._index[kind][indicator]:
                if source.list_name in seen:
                    continue
                seen.add(source.list_name)
                if blocked is None:
                    blocked = is_blocked(event)
                found.append(_detection(source, field, value, kind, indicator, blocked))
        return found

    def _hits(self, fields: Mapping[str, Any]) -> Iterator[Hit]:
        """Matches, most specific first (URL, domain, IP:port, IP)."""
        for host_field, url_field in URL_FIELDS:
            for value in _values(fields.get(url_field)):
                host = fields.get(host_field) if host_field else None
                yield from self._url_hits(url_field, value, host)
        for field in DOMAIN_FIELDS:
            for value in _values(fields.get(field)):
                yield from self._host_hits(field, value)
        ips, ip_ports = self._index[IndicatorKind.IP], self._index[IndicatorKind.IP_PORT]
        addresses = [
            (ip_field, value, ip, fields.get(port_field))
            for ip_field, port_field in IP_FIELDS
            for value in _values(fields.get(ip_field))
            if (ip := normalise_ip(value)) is not None
        ]
        for ip_field, value, ip, port in addresses:
            if port is not None and f"{ip}:{port}" in ip_ports:
                yield ip_field, value, IndicatorKind.IP_PORT, f"{ip}:{port}"
        for ip_field, value, ip, _ in addresses:
            if ip in ips:
                yield ip_field, value, IndicatorKind.IP, ip

    def _host_hits(self, field: str, value: str) -> Iterator[Hit]:
        ip = normalise_ip(value)
        if ip is not None:
            if ip in self._index[IndicatorKind.IP]:
                yield field, value, IndicatorKind.IP, ip
            return
        domain = normalise_domain(value)
        if domain is None:
            return
        domains = self._index[IndicatorKind.DOMAIN]
        labels = domain.split(".")
        for start in range(len(labels) - 1):  # the name and each parent, not the TLD
            candidate = ".".join(labels[start:])
            if candidate in domains:
                yield field, value, IndicatorKind.DOMAIN, candidate

    def _url_hits(self, field: str, value: str, host: Any) -> Iterator[Hit]:
        path = value
        if "://" in value:
            rest = value.split("://", 1)[1]
            url_host, slash, tail = rest.partition("/")
            host, path = url_host.rsplit("@", 1)[-1], slash + tail
            if not isinstance(host, str) or not host:
                return
            yield from self._host_hits(field, _strip_port(host))
        if not isinstance(host, str) or not host or not path.startswith("/"):
            return
        urls = self._index[IndicatorKind.URL]
        for candidate in _url_candidates(_strip_port(host), path):
            if candidate in urls:
                yield field, value, IndicatorKind.URL, candidate


def _url_candidates(host: str, path: str) -> list[str]:
    """The URL with and without query, and each directory above it (``host/a/``)."""
    bare = path.split("?", 1)[0].split("#", 1)[0]
    keys = {url_key(host, path), url_key(host, bare)}
    position = bare.find("/", 1)
    while position != -1:
        keys.add(url_key(host, bare[: position + 1]))
        position = bare.find("/", position + 1)
    return sorted(keys)


def _strip_port(host: str) -> str:
    if host.startswith("[") or host.count(":") != 1:
        return host.strip("[]").split("]")[0]
    return host.split(":", 1)[0]


def _values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _detection(
    source: IocSource, field: str, value: Any, kind: IndicatorKind, indicator: str, blocked: bool
) -> Detection:
    return Detection(
        source=DetectionSource.IOC,
        rule_id=f"ioc:{source.list_name}",
        title=f"Contact with a known {source.family} server",
        level="high",
        blocked=blocked,
        description=(
            f"{field} {value} matches the {kind.value.replace('_', ':')} indicator "
            f"{indicator} of the {source.list_name} IOC list."
        ),
        references=source.references,
        tags=("ioc", f"ioc.{kind.value}"),
        matched={field: value, "indicator": indicator},
    )


def _list_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    roots = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    files: list[Path] = []
    for root in roots:
        if root.is_dir():
            files.extend(
                path
                for path in sorted(root.rglob("*"))
                if path.is_file()
                and path.suffix.lower() in LIST_SUFFIXES
                and not path.name.lower().startswith(NOT_LISTS)
            )
        elif root.is_file():
            files.append(root)
        else:
            raise ConfigError(
                "IOC list path does not exist",
                field="ioc_paths",
                source=str(root),
                hint="give a list file or a folder of *.txt / *.csv lists",
            )
    return files
