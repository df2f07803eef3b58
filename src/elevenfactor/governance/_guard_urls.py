"""URL arguments outside an allow-list (factor 10, tool-call stage): the SSRF guard.

**Allow-list patterns** (a URL is allowed when one pattern matches all of its parts):

- ``example.com``: that host, ``http`` or ``https``, the scheme's default port, any path.
- ``*.example.com``: any subdomain (not ``example.com`` itself: list both); ``*``: any host
  *name* (never an IP literal).
- ``https://api.example.com``: only that scheme; ``api.example.com:8443``: only that port
  (without a port, only the default one: 80 for ``http``, 443 for ``https``).
- ``https://api.example.com/v1/``: paths under ``/v1/``; ``…/v1`` also allows ``/v1`` itself,
  never ``/v10``. Paths are compared after URL-decoding and removing ``.``/``..`` segments,
  so ``/v1/../admin`` and ``/v1/%2e%2e/admin`` are outside.
- ``10.0.0.5``, ``[::1]``: that IP literal (in any spelling of it).
- ``data:``, ``mailto:``, ``ftp:``: every URL of that scheme. Other schemes than ``http`` and
  ``https`` (``file:``, ``gopher:``, ``javascript:``, ``dict:``) are violations unless allowed.

Hosts are compared in their ASCII form: lowercased, one trailing dot dropped, percent-decoded
and IDNA-encoded (``bücher.de`` matches ``xn--bcher-kva.de``; a homograph, a Cyrillic
letter in place of a Latin one, does not match). IPv4 literals are read the way browsers and
``inet_aton`` read them (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) and IPv6
ones with their IPv4-mapped form (``[::ffff:127.0.0.1]``); a host ending in a number that is no
valid IPv4 address is malformed. Schemeless values (``example.com/x``, ``//evil.com``) are
read as ``http``.

**Findings** (kind = rule with ``_``; about the whole value, ``start``/``end`` -1):
``url.userinfo`` (any ``user@`` part: credentials, or the ``https://example.com@evil.com``
trick, whatever the host), ``url.scheme``, ``url.ip_literal`` (detail names loopback, private,
link-local/cloud metadata…), ``url.not_allowed`` and ``url.malformed``: whitespace or control
characters, a backslash before the path, ``http:evil.com`` or ``http:///evil.com``, a bad
port, an empty label, or an IDN whose IDNA 2003 and 2008 readings differ (``ß``, ``ς``,
joiners): parsers disagree on those, so they fail closed.

This is a string check: a name on the list that resolves to an internal address (DNS
rebinding) must be caught by the HTTP client at connect time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from elevenfactor.governance._guard_types import Finding
from elevenfactor.governance._guard_urls_host import HostError, normalize_host

__all__ = ["find_url_violations"]

_WEB = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_SCHEME_ONLY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:$")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class _Url:
    scheme: str
    host: str | None  # None for opaque URLs (data:, mailto:)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    port: int | None
    paths: tuple[str, ...] = ()  # the path as sent and as a server may decode it


@dataclass(frozen=True, slots=True)
class _Pattern:
    scheme: str | None  # None: http or https
    host: str | None  # None: the whole scheme; "*": any name; "*.x": subdomains of x
    port: int | None  # None: the scheme's default port
    path: str  # "/" or "": any


def find_url_violations(value: str, allow: Sequence[str]) -> list[Finding]:
    """Findings when ``value`` is not a URL the ``allow`` patterns permit (see the module
    docstring). Never raises for any value; raises ``ValueError`` for an invalid pattern."""
    patterns = [_pattern(p) for p in allow]
    if not isinstance(value, str):
        return [_finding("malformed", "is not a string")]
    parsed = _parse(value)
    if isinstance(parsed, str):
        return [_finding("malformed", parsed)]
    url, has_userinfo = parsed
    findings = []
    if has_userinfo:
        findings.append(_finding("userinfo", "has a user@ part (credentials or a host trick)"))
    if not any(_matches(p, url) for p in patterns):
        findings.append(_violation(url, patterns))
    return findings


def _violation(url: _Url, patterns: list[_Pattern]) -> Finding:
    if url.scheme not in _WEB and not any(p.scheme == url.scheme for p in patterns):
        return _finding("scheme", f"scheme {url.scheme[:20]!r} is not allowed")
    if url.ip is not None:
        return _finding("ip_literal", f"host is an IP literal ({_ip_category(url.ip)})")
    if any(_host_ok(p, url) for p in patterns):
        return _finding("not_allowed", "host is allowed, but not with this scheme, port or path")
    return _finding("not_allowed", "host is not in the allow-list")


def _matches(pattern: _Pattern, url: _Url) -> bool:
    if pattern.host is None:
        return pattern.scheme == url.scheme
    if url.host is None or not _host_ok(pattern, url):
        return False
    if (url.scheme not in _WEB) if pattern.scheme is None else (url.scheme != pattern.scheme):
        return False
    port = pattern.port if pattern.port is not None else _DEFAULT_PORTS.get(url.scheme)
    if url.port != port:
        return False
    return all(_under(path, pattern.path) for path in url.paths)


def _host_ok(pattern: _Pattern, url: _Url) -> bool:
    host = pattern.host
    if host is None or url.host is None:
        return False
    if host == "*":
        return url.ip is None
    if host.startswith("*."):
        return url.ip is None and url.host.endswith(host[1:])
    return url.host == host


def _under(path: str, prefix: str) -> bool:
    if prefix in ("", "/") or (prefix.endswith("/") and path.startswith(prefix)):
        return True
    return path == prefix or path.startswith(prefix + "/")


def _parse(value: str) -> tuple[_Url, bool] | str:
    """``(url, has userinfo)``, or why the value is malformed."""
    text = value.strip()
    if not text or _BAD_CHARS.search(text):
        return "is empty or holds whitespace or control characters"
    match = _SCHEME.match(text)
    rest = text[match.end() :] if match else text
    if match is None or "." in match.group(1) or re.match(r"\d+(?:[/?#]|$)", rest):
        text, rest = "http://" + text.removeprefix("//"), text.removeprefix("//")
    else:
        scheme = match.group(1).lower()
        if not rest.startswith("//"):
            if scheme in _DEFAULT_PORTS:
                return "web URL without // (parsers disagree on its host)"
            return _Url(scheme=scheme, host=None, ip=None, port=None), False
        rest = rest[2:]
        if scheme not in _DEFAULT_PORTS and rest[:1] in ("", "/"):
            return _Url(scheme=scheme, host=None, ip=None, port=None), False  # file:///x
    if rest[:1] in ("/", "\\") or "\\" in re.split(r"[/?#]", rest, maxsplit=1)[0]:
        return "extra slash or backslash before the host (parsers disagree on its host)"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "has an invalid port or bracketed host"
    host = parts.hostname
    if not host:
        return "has no host"
    try:
        name, ip = normalize_host(host)
    except HostError as exc:
        return str(exc)
    scheme = parts.scheme.lower()
    url = _Url(scheme, name, ip, port if port is not None else _DEFAULT_PORTS.get(scheme))
    return _with_paths(url, parts), "@" in parts.netloc


def _with_paths(url: _Url, parts: SplitResult) -> _Url:
    raw = parts.path or "/"
    decoded = unquote(raw, errors="replace").replace("\\", "/")
    paths = tuple(dict.fromkeys((_clean(raw), _clean(decoded))))
    return _Url(url.scheme, url.host, url.ip, url.port, paths)


def _clean(path: str) -> str:
    """RFC 3986 dot-segment removal: ``/a/b/../c`` is ``/a/c``."""
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments and segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def _pattern(text: str) -> _Pattern:
    if _SCHEME_ONLY.match(text):
        return _Pattern(text[:-1].lower(), None, None, "")
    scheme: str | None = None
    match = _SCHEME.match(text)
    if match and text[match.end() :].startswith("//"):
        scheme = match.group(1).lower()
        text = text[match.end() + 2 :]
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL allow-list pattern {text!r}: {exc}") from exc
    host = parts.hostname or ""
    if "@" in parts.netloc or parts.query or parts.fragment or not host:
        raise ValueError(f"invalid URL allow-list pattern {text!r}: expected [scheme://]host")
    if host != "*":
        wildcard = host.startswith("*.")
        try:
            name, ip = normalize_host(host[2:] if wildcard else host)
        except HostError as exc:
            raise ValueError(f"invalid URL allow-list pattern {text!r}: {exc}") from exc
        host = ("*." if wildcard else "") + (name if ip is None else str(ip))
    path = _clean(parts.path) if parts.path not in ("", "/") else ""
    return _Pattern(scheme, host, port, path)


def _ip_category(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("link-local (cloud metadata)", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return label
    return "public"


def _finding(kind: str, detail: str) -> Finding:
    return Finding(rule=f"url.{kind}", kind=f"url_{kind}", detail=f"URL {detail}")
