"""Host names and IP literals in one comparable form, for the URL allow-list.

``normalize_host`` returns ``(name, ip)``: ``name`` is the lowercase ASCII (IDNA) form without
a trailing dot, or the IP address's canonical text when ``ip`` is set. IPv4 is read like the
WHATWG URL standard and ``inet_aton`` read it (1 to 4 parts, each decimal, octal with a
leading ``0`` or hex with ``0x``; the last part fills the remaining bytes), so every spelling
of ``127.0.0.1`` is the same address. Anything ambiguous raises ``HostError`` (fail closed).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import unquote

__all__ = ["HostError", "normalize_host"]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_NUMBER = re.compile(r"^(?:\d+|0[xX][0-9A-Fa-f]*)$", re.ASCII)
_HEX = re.compile(r"[0-9A-Fa-f]*")
_OCT = re.compile(r"0[0-7]+")
_DEC = re.compile(r"[0-9]+", re.ASCII)
_NAME = re.compile(r"^[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*$")


class HostError(ValueError):
    """The host cannot be read unambiguously; the message says why (never the host)."""


def normalize_host(host: str) -> tuple[str, IP | None]:
    """``(comparable name, IP address or None)`` for a URL's host (see the module docstring)."""
    if "%" in host and ":" not in host:
        try:
            host = unquote(host, errors="strict")
        except UnicodeDecodeError as exc:
            raise HostError("has a percent-encoded host that is not UTF-8") from exc
    if ":" in host:
        return _ipv6(host)
    host = host.translate(_DOTS)
    host = host.removesuffix(".")
    labels = host.split(".")
    if not host or "" in labels:
        raise HostError("has an empty host label")
    if _NUMBER.match(labels[-1]):
        ip = _ipv4(labels)
        if ip is None:
            raise HostError("host ends in a number but is no valid IPv4 address")
        return str(ip), ip
    name = host.lower() if host.isascii() else _to_ascii(host)
    if len(name) > 253 or not _NAME.match(name):
        raise HostError("has characters not allowed in a host name")
    for label in name.split("."):
        if label.startswith("xn--"):
            try:
                label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError) as exc:
                raise HostError("has an invalid punycode label") from exc
    return name, None


def _ipv6(host: str) -> tuple[str, IP]:
    try:
        ip = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError as exc:
        raise HostError("has an invalid IPv6 address") from exc
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return str(mapped), mapped
    return str(ip), ip


def _ipv4(labels: list[str]) -> ipaddress.IPv4Address | None:
    if len(labels) > 4:
        return None
    numbers = [_ipv4_number(label) for label in labels]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    address = values[-1]
    for i, n in enumerate(values[:-1]):
        address += n << (8 * (3 - i))
    return ipaddress.IPv4Address(address)


def _ipv4_number(label: str) -> int | None:
    if label[:2] in ("0x", "0X"):
        digits = label[2:]
        return int(digits or "0", 16) if _HEX.fullmatch(digits) else None
    if _OCT.fullmatch(label):
        return int(label, 8)
    return int(label, 10) if _DEC.fullmatch(label) else None


def _to_ascii(host: str) -> str:
    """IDNA 2003 (Python's codec), refused when IDNA 2008 / UTS 46 would give another name."""
    try:
        ace = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise HostError("is not a valid internationalised host name") from exc
    labels = unicodedata.normalize("NFKC", host).lower().split(".")
    ace_labels = ace.lower().split(".")
    if len(labels) != len(ace_labels):
        raise HostError("is an internationalised name that IDNA readings split differently")
    for label, ace_label in zip(labels, ace_labels, strict=True):
        expected = label if label.isascii() else "xn--" + label.encode("punycode").decode()
        if expected != ace_label:
            raise HostError("is an internationalised name whose IDNA 2003 and 2008 forms differ")
    return ace.lower()
