"""IOC リストの書式 (IOC list formats): maltrail trails and abuse.ch CSV, as text.

Pure functions: text in, :class:`Indicator` values out; reading files is
:mod:`otasuke.detect.ioc.iocset`'s job.

maltrail (``trails/static/malware/<family>.txt``): ``#`` comments, ``# Reference:
<url>`` lines that cover the indicators after them, then one indicator a line:
an IP (``1.2.3.4``), IP and port (``1.2.3.4:443``, matched only with that port),
a domain (``evil.example``; it also matches its subdomains), a URL
(``evil.example/gate.php``, ``http://1.2.3.4/x``; a URL without a path is a host
indicator). Not supported, counted as skipped: bare paths (``/zuniga.php``, maltrail's
generic trails match too many benign sites), CIDR ranges, and anything unreadable.

abuse.ch CSV (Feodo Tracker IP blocklist, URLhaus): ``#`` comment header whose last
comma-separated line names the columns (``Firstseen,DstIP,DstPort,Malware``;
``Dateadded (UTC),URL,URL_status,Threat,…``); IP columns give IP indicators (the
Feodo list is an IP blocklist), URL columns URL indicators, the malware/threat
column the family.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+")
_INLINE_COMMENT = re.compile(r"\s+#.*$")
_REFERENCE = re.compile(r"#\s*Reference:\s*(\S+)", re.IGNORECASE)


class IndicatorKind(StrEnum):
    IP = "ip"
    IP_PORT = "ip_port"
    DOMAIN = "domain"
    URL = "url"


@dataclass(frozen=True, slots=True)
class IocSource:
    """Where an indicator comes from: its list, family and the references above it."""

    list_name: str
    family: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Indicator:
    kind: IndicatorKind
    value: str
    """Normalised lookup key: ``1.2.3.4``, ``1.2.3.4:443``, ``evil.example``, ``host/path``."""
    source: IocSource


@dataclass(frozen=True, slots=True)
class ParsedList:
    indicators: list[Indicator]
    skipped: int


def normalise_ip(text: str) -> str | None:
    """Canonical text of an IPv4/IPv6 address, or None."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        return None


def normalise_domain(text: str) -> str | None:
    """Lower-case domain without trailing dot, or None when it is not a host name."""
    name = text.strip().lower().rstrip(".")
    return name if _DOMAIN.fullmatch(name) else None


def url_key(host: str, path: str) -> str:
    """Lookup key of a URL: lower-case ``host/path`` without scheme or port."""
    return f"{host.lower()}{path}".lower()


def parse_list(text: str, list_name: str) -> ParsedList:
    """A list in either format (CSV when the first data line has commas)."""
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
    if "," in first:
        return parse_abusech_csv(text, list_name)
    return parse_maltrail(text, list_name)


def parse_maltrail(text: str, list_name: str) -> ParsedList:
    """Indicators of a maltrail trail file, each with the references above it."""
    out: list[Indicator] = []
    skipped = 0
    references: list[str] = []
    source = IocSource(list_name, list_name)
    fresh_refs = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            ref = _REFERENCE.match(stripped)
            if ref:
                references = [*references, ref.group(1)] if fresh_refs else [ref.group(1)]
                fresh_refs = True
            continue
        value = _INLINE_COMMENT.sub("", stripped)
        if not value:
            continue
        if fresh_refs:
            source = IocSource(list_name, list_name, tuple(references))
            fresh_refs = False
        indicator = parse_trail(value, source)
        if indicator is None:
            skipped += 1
        else:
            out.append(indicator)
    return ParsedList(out, skipped)


def parse_trail(value: str, source: IocSource) -> Indicator | None:
    """One maltrail trail (IP, IP:port, domain or URL), or None when unsupported."""
    if "://" in value:
        value = value.split("://", 1)[1]
    host, slash, path = value.partition("/")
    if slash and host and path.strip("/"):
        name = _host_only(host)
        return Indicator(IndicatorKind.URL, url_key(name, "/" + path), source) if name else None
    if slash and not host:
        return None  # a bare path: generic trail, not supported
    ip = normalise_ip(host)
    if ip:
        return Indicator(IndicatorKind.IP, ip, source)
    address, colon, port = host.rpartition(":")
    if colon and port.isascii() and port.isdigit() and int(port) <= 65535:
        ip = normalise_ip(address)
        if ip:
            return Indicator(IndicatorKind.IP_PORT, f"{ip}:{int(port)}", source)
        host = address
    domain = normalise_domain(host)
    return Indicator(IndicatorKind.DOMAIN, domain, source) if domain else None


def _host_only(host: str) -> str | None:
    """``host[:port]`` → host (IP or domain), or None."""
    ip = normalise_ip(host)
    if ip:
        return ip
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return normalise_ip(name) or normalise_domain(name)


def parse_abusech_csv(text: str, list_name: str) -> ParsedList:
    """Indicators of an abuse.ch CSV feed (Feodo Tracker IPs, URLhaus URLs)."""
    header: list[str] = []
    rows: list[str] = []
    references: tuple[str, ...] = ()
    for line in text.splitlines():
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if "," in body:
                header = [_column(name) for name in next(csv.reader([body]))]
            urls = re.findall(r"https?://\S+", body)
            if urls and not references:
                references = (urls[0].rstrip("/#") + "/",)
        elif line.strip():
            rows.append(line)
    out: list[Indicator] = []
    skipped = 0
    for row in csv.reader(rows):
        record = dict(zip(header, row, strict=False))
        family = record.get("malware") or record.get("threat") or list_name
        indicator = _csv_indicator(record, IocSource(list_name, family, references))
        if indicator is None:
            skipped += 1
        else:
            out.append(indicator)
    return ParsedList(out, skipped)


def _column(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower().replace("(utc)", ""))


def _csv_indicator(record: dict[str, str], source: IocSource) -> Indicator | None:
    for column in ("dstip", "ipaddress", "ip"):
        ip = normalise_ip(record.get(column, ""))
        if ip and "url" not in record:
            return Indicator(IndicatorKind.IP, ip, source)
    if record.get("url"):
        return parse_trail(record["url"].strip(), source)
    return None
