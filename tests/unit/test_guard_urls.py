"""URL allow-lists (factor 10): the SSRF guard on tool arguments. Bypass attempts come from
SSRF cheat sheets: userinfo, alternative IP spellings, IDN homographs, parser differentials,
dangerous schemes; every one must be a finding, and no input may make the check raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elevenfactor.governance._guard_urls import find_url_violations

PROPERTY = settings(max_examples=200, deadline=None)
ALLOW = [
    "example.com",
    "*.cdn.example.net",
    "https://api.example.com/v1/",
    "https://docs.example.org/guide",
    "internal.example.com:8443",
    "10.0.0.5",
    "[2001:db8::1]",
    "data:",
    "bücher.de",
]


def rules_of(value: str, allow: list[str] | None = None) -> list[str]:
    return [f.rule for f in find_url_violations(value, ALLOW if allow is None else allow)]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",
        "http://example.com/any/path?q=1#frag",
        "HTTPS://EXAMPLE.COM/",  # case
        "https://example.com./x",  # one trailing dot
        "https://example.com:443/",  # explicit default port
        "http://example.com:80/",
        "example.com/x",  # schemeless: read as http
        "//example.com/x",
        " https://example.com ",  # surrounding whitespace, as browsers strip it
        "https://img.cdn.example.net/a.png",
        "https://a.b.cdn.example.net/",
        "https://api.example.com/v1/users/7",
        "https://api.example.com/v1/users/../orders",  # still under /v1/
        "https://docs.example.org/guide",
        "https://docs.example.org/guide/intro",
        "https://internal.example.com:8443/health",
        "http://10.0.0.5/",
        "http://012.0.0.5/",  # the same address in octal
        "http://167772165/",  # and as one decimal number
        "http://[2001:db8::1]/",
        "http://[2001:0db8:0:0:0:0:0:1]/",
        "data:text/plain;base64,SGk=",
        "https://bücher.de/",
        "https://xn--bcher-kva.de/",  # the same host in punycode
        "https://BÜCHER.de/",
        "https://ex%61mple.com/",  # percent-encoded host, decoded as browsers do
        # fullwidth letters and an ideographic full stop
        "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\u3002com/",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert find_url_violations(url, ALLOW) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # hosts not on the list
        ("https://evil.com/", ["url.not_allowed"]),
        ("https://www.example.com/", ["url.not_allowed"]),  # example.com has no wildcard
        ("https://cdn.example.net/", ["url.not_allowed"]),  # *.x does not match x
        ("https://example.com.evil.com/", ["url.not_allowed"]),
        ("https://evilexample.com/", ["url.not_allowed"]),
        ("https://evil.com#@example.com", ["url.not_allowed"]),
        ("https://evil.com?.example.com", ["url.not_allowed"]),
        ("https://evil.com/.example.com", ["url.not_allowed"]),
        ("//evil.com/x", ["url.not_allowed"]),
        ("evil.com", ["url.not_allowed"]),
        ("localhost:8080", ["url.not_allowed"]),
        ("https://ex\u0430mple.com/", ["url.not_allowed"]),  # Cyrillic a homograph
        # userinfo tricks: always a finding, and the real host is judged
        ("https://example.com@evil.com/", ["url.userinfo", "url.not_allowed"]),
        ("https://example.com:443@evil.com/", ["url.userinfo", "url.not_allowed"]),
        ("https://a@b@evil.com/", ["url.userinfo", "url.not_allowed"]),
        ("https://user:pass@example.com/", ["url.userinfo"]),
        ("https://example.com%40evil.com/", ["url.malformed"]),
        # allowed host, wrong scheme, port or path
        ("https://example.com:8080/", ["url.not_allowed"]),
        ("http://api.example.com/v1/", ["url.not_allowed"]),  # the pattern says https
        ("https://api.example.com/v2/", ["url.not_allowed"]),
        ("https://api.example.com/v1", ["url.not_allowed"]),  # /v1/ means under it
        ("https://api.example.com/v1/../admin", ["url.not_allowed"]),
        ("https://api.example.com/v1/%2e%2e/admin", ["url.not_allowed"]),
        ("https://api.example.com/v1/%2E%2E%2Fadmin", ["url.not_allowed"]),
        ("https://api.example.com/v1%2f..%2fadmin", ["url.not_allowed"]),
        ("https://api.example.com/v1/..%5cadmin", ["url.not_allowed"]),
        ("https://docs.example.org/guidebook", ["url.not_allowed"]),
        ("https://internal.example.com/", ["url.not_allowed"]),  # only :8443 is listed
        # IP literals in every spelling
        ("http://127.0.0.1/", ["url.ip_literal"]),
        ("http://2130706433/", ["url.ip_literal"]),
        ("http://0x7f000001/", ["url.ip_literal"]),
        ("http://0177.0.0.1/", ["url.ip_literal"]),
        ("http://0x7f.0.0.1/", ["url.ip_literal"]),
        ("http://127.1/", ["url.ip_literal"]),
        ("http://127.000.000.001/", ["url.ip_literal"]),
        ("http://0/", ["url.ip_literal"]),
        ("http://[::1]/", ["url.ip_literal"]),
        ("http://[::ffff:127.0.0.1]/", ["url.ip_literal"]),
        ("http://[::ffff:7f00:1]/", ["url.ip_literal"]),
        ("http://[0:0:0:0:0:0:0:1]/", ["url.ip_literal"]),
        ("http://[fe80::1%25eth0]/", ["url.ip_literal"]),
        ("http://169.254.169.254/latest/meta-data/", ["url.ip_literal"]),
        ("http://2852039166/", ["url.ip_literal"]),  # 169.254.169.254 as a number
        ("http://10.0.0.6/", ["url.ip_literal"]),
        ("http://8.8.8.8/", ["url.ip_literal"]),
        # schemes
        ("file:///etc/passwd", ["url.scheme"]),
        ("file://localhost/etc/passwd", ["url.scheme"]),
        ("gopher://example.com:70/_SET%20x", ["url.scheme"]),
        ("dict://example.com:11211/stat", ["url.scheme"]),
        ("ftp://example.com/", ["url.scheme"]),
        ("javascript:alert(1)", ["url.scheme"]),
        ("JaVaScRiPt:alert(1)", ["url.scheme"]),
        ("jar:http://example.com!/", ["url.scheme"]),
        ("ldap://example.com/", ["url.scheme"]),
        # parser differentials and junk: fail closed
        ("https://example.com\\@evil.com/", ["url.malformed"]),
        ("https://evil.com\\.example.com/", ["url.malformed"]),
        ("http:evil.com", ["url.malformed"]),
        ("http:/evil.com", ["url.malformed"]),
        ("http:///evil.com", ["url.malformed"]),
        ("https:\\\\evil.com", ["url.malformed"]),
        ("java\nscript:alert(1)", ["url.malformed"]),
        ("https://exa mple.com/", ["url.malformed"]),
        ("https://example.com\t/", ["url.malformed"]),
        ("https://example.com\x00.evil.com/", ["url.malformed"]),
        ("https://example.com../", ["url.malformed"]),
        ("https://.example.com/", ["url.malformed"]),
        ("https://example.com:99999/", ["url.malformed"]),
        ("https://example.com:80x/", ["url.malformed"]),
        ("http://[::1/", ["url.malformed"]),
        ("http://4294967296/", ["url.malformed"]),  # ends in a number, no IPv4 address
        ("http://1.2.3.4.5/", ["url.malformed"]),
        ("http://example.123/", ["url.malformed"]),
        ("https://xn--zz.example.com/", ["url.malformed"]),
        ("https://fa\u00df.example.com/", ["url.malformed"]),  # IDNA 2003 and 2008 differ
        ("https://ex%ffample.com/", ["url.malformed"]),
        ("https://exam<ple.com/", ["url.malformed"]),
        ("", ["url.malformed"]),
        ("http://", ["url.malformed"]),
    ],
)
def test_violations(url: str, expected: list[str]) -> None:
    found = find_url_violations(url, ALLOW)
    assert [f.rule for f in found] == expected
    for finding in found:
        assert finding.kind == finding.rule.replace(".", "_")
        assert (finding.start, finding.end) == (-1, -1)
        assert "evil" not in finding.detail


def test_ip_literal_detail_names_the_kind_of_address() -> None:
    metadata = find_url_violations("http://169.254.169.254/", ["example.com"])[0]
    assert metadata.detail == "URL host is an IP literal (link-local (cloud metadata))"
    assert "loopback" in find_url_violations("http://2130706433/", [])[0].detail
    assert "private" in find_url_violations("http://192.168.0.1/", [])[0].detail


def test_wildcard_allows_names_but_never_ip_literals() -> None:
    assert rules_of("https://anything.test/", ["*"]) == []
    assert rules_of("http://127.0.0.1/", ["*"]) == ["url.ip_literal"]
    assert rules_of("http://127.0.0.1/", ["127.0.0.1"]) == []
    assert rules_of("http://[::ffff:127.0.0.1]/", ["127.0.0.1"]) == []


def test_schemes_are_allowed_by_a_scheme_pattern_or_an_explicit_url() -> None:
    assert rules_of("ftp://files.example.com/a", ["ftp://files.example.com"]) == []
    assert rules_of("ftp://other.example.com/a", ["ftp://files.example.com"]) == ["url.not_allowed"]
    assert rules_of("https://files.example.com/a", ["ftp://files.example.com"]) == [
        "url.not_allowed"
    ]
    assert rules_of("mailto:a@example.com", ["mailto:"]) == []
    assert rules_of("wss://stream.example.com/", ["wss://stream.example.com"]) == []
    assert rules_of("ws://stream.example.com/", ["stream.example.com"]) == ["url.scheme"]


def test_path_prefix_without_trailing_slash_allows_itself_not_siblings() -> None:
    allow = ["https://api.example.com/v1"]
    assert rules_of("https://api.example.com/v1", allow) == []
    assert rules_of("https://api.example.com/v1/x", allow) == []
    assert rules_of("https://api.example.com/v10", allow) == ["url.not_allowed"]


def test_empty_allow_list_allows_nothing() -> None:
    assert rules_of("https://example.com/", []) == ["url.not_allowed"]


@pytest.mark.parametrize(
    "pattern",
    ["https://user@example.com", "example.com?q=1", "", "example.com:99999", "exa mple..com"],
)
def test_invalid_patterns_are_configuration_errors(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid URL allow-list pattern"):
        find_url_violations("https://example.com/", [pattern])


@PROPERTY
@given(st.text(max_size=80))
def test_any_text_never_raises(value: str) -> None:
    for finding in find_url_violations(value, ALLOW):
        assert finding.rule.startswith("url.")


@PROPERTY
@given(st.from_regex(r"/[A-Za-z0-9_\-/]{0,40}", fullmatch=True))
def test_any_plain_path_on_an_allowed_host_is_allowed(path: str) -> None:
    assert find_url_violations("https://example.com" + path, ALLOW) == []


@PROPERTY
@given(st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True))
def test_a_prefix_never_makes_another_domain_allowed(label: str) -> None:
    for url in (f"https://{label}example.com/", f"https://example.com.{label}.test/"):
        assert "url.not_allowed" in rules_of(url)
