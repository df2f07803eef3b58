"""Sandbox paths (factor 10): a path argument must not name anything outside the sandbox
root, whatever traversal, encoding, symlink or Windows form it uses (path traversal cheat
sheets), and the check never raises."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elevenfactor.governance._guard_paths import MAX_PATH_LENGTH, find_path_escapes

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def rules_of(findings: list[object]) -> list[str]:
    return [getattr(f, "rule", "") for f in findings]


# --- sandbox paths --------------------------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "out_link")
    os.symlink(root / "sub", root / "in_link")
    os.symlink(tmp_path, root / "parent_link")
    return root


@pytest.mark.parametrize(
    "value",
    [
        "a.txt",
        "sub/new/file.txt",  # does not exist yet: pure string logic
        "./sub/../a.txt",
        "sub/./../a.txt",
        "in_link/x",  # a symlink that stays inside
        "",
        ".",
        "a..b",  # dots inside a name are not traversal
        "..a/b",
        "sub/~not-home",  # ~ only means a home directory at the start
    ],
)
def test_paths_inside_the_root(sandbox: Path, value: str) -> None:
    assert find_path_escapes(value, sandbox) == []


def test_absolute_path_inside_the_root_is_fine(sandbox: Path) -> None:
    assert find_path_escapes(str(sandbox / "sub" / "x"), sandbox) == []
    assert rules_of(find_path_escapes(str(sandbox) + "x/y", sandbox)) == ["path.outside_root"]


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("../x", "path.outside_root"),
        ("sub/../../x", "path.outside_root"),
        ("sub/../../root2/x", "path.outside_root"),
        ("/etc/passwd", "path.outside_root"),
        ("//etc/passwd", "path.outside_root"),
        ("~", "path.outside_root"),
        ("~/.ssh/id_rsa", "path.outside_root"),
        ("~root/.bashrc", "path.outside_root"),
        ("out_link/secret", "path.outside_root"),  # symlink resolved with realpath
        ("parent_link/outside", "path.outside_root"),
        ("in_link/../../x", "path.outside_root"),
        ("..\\..\\windows\\win.ini", "path.outside_root"),
        ("sub\\..\\..\\x", "path.outside_root"),
        ("C:\\Windows\\System32", "path.outside_root"),
        ("c:/windows", "path.outside_root"),
        ("C:foo", "path.outside_root"),  # drive-relative
        ("\\\\server\\share\\x", "path.outside_root"),
        ("\\\\?\\C:\\x", "path.outside_root"),
        ("\\\\.\\pipe\\x", "path.outside_root"),
        ("/\\server\\share", "path.outside_root"),
        ("\\etc\\passwd", "path.outside_root"),
        ("file:///etc/passwd", "path.outside_root"),
        (" ../x", "path.outside_root"),  # a tool that strips would climb out
        ("\uff0e\uff0e\uff0fx", "path.outside_root"),  # fullwidth ../ after NFKC
        ("%2e%2e/x", "path.encoded_traversal"),
        ("%2E%2E%2Fx", "path.encoded_traversal"),
        ("..%2fx", "path.encoded_traversal"),
        ("sub%2f..%2f..%2fx", "path.encoded_traversal"),
        ("%252e%252e%252fx", "path.encoded_traversal"),  # double-encoded
        ("%25252e%25252e/x", "path.encoded_traversal"),  # triple-encoded
        ("..%5c..%5cx", "path.encoded_traversal"),
        ("%2fetc%2fpasswd", "path.encoded_traversal"),
        ("%c0%ae%c0%ae/x", "path.encoded_traversal"),  # overlong UTF-8
        ("%c0%af", "path.encoded_traversal"),
        ("a.txt\x00.png", "path.nul_byte"),
        ("a.txt%00.png", "path.nul_byte"),
    ],
)
def test_paths_outside_the_root(sandbox: Path, value: str, rule: str) -> None:
    found = find_path_escapes(value, sandbox)
    assert rules_of(found) == [rule]
    assert found[0].start == -1
    assert len(value) < 3 or value not in found[0].detail


def test_root_reached_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "d").mkdir(parents=True)
    os.symlink(real, tmp_path / "alias")
    assert find_path_escapes("d/x", tmp_path / "alias") == []
    assert find_path_escapes(str(real / "d"), tmp_path / "alias") == []
    assert rules_of(find_path_escapes("../x", tmp_path / "alias")) == ["path.outside_root"]


def test_overlong_path_is_refused(sandbox: Path) -> None:
    assert rules_of(find_path_escapes("a/" * MAX_PATH_LENGTH, sandbox)) == ["path.outside_root"]


_SEGMENT = st.text(
    alphabet=st.characters(categories=["L", "N"], include_characters="_-. "),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip(" .") != "" and not s.startswith(("~", " ")) and "%" not in s)


@PROPERTY
@given(st.lists(_SEGMENT, min_size=1, max_size=6))
def test_safe_segments_stay_inside(segments: list[str]) -> None:
    root = Path("/nonexistent-sandbox-root/project")
    assert find_path_escapes("/".join(segments), root) == []


@PROPERTY
@given(st.lists(_SEGMENT, max_size=5), st.integers(min_value=1, max_value=3))
def test_climbing_above_the_depth_escapes(segments: list[str], extra: int) -> None:
    root = Path("/nonexistent-sandbox-root/project")
    value = "/".join([*segments, *[".."] * (len(segments) + extra), "x"])
    assert rules_of(find_path_escapes(value, root)) == ["path.outside_root"]


@PROPERTY
@given(st.text(max_size=60))
def test_any_path_text_never_raises(value: str) -> None:
    for finding in find_path_escapes(value, Path("/nonexistent-sandbox-root")):
        assert finding.rule in {"path.outside_root", "path.encoded_traversal", "path.nul_byte"}
