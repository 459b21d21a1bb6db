"""`ahn.atomic`: finished files and directories only, never a half-written one."""

import os

import pytest

from ahn import atomic


def test_write_text_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic.write_json(path, {"b": 1, "a": "é"}, sort_keys=True)
    assert path.read_text(encoding="utf-8") == '{\n  "a": "\\u00e9",\n  "b": 1\n}\n'
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(path.parent) == ["a.json"]


def test_a_failing_directory_write_keeps_the_old_directory(tmp_path):
    target = tmp_path / "out"
    with atomic.directory(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic.directory(target) as tmp:
        (tmp / "x").write_text("2")
        raise RuntimeError("killed half-way")
    assert (target / "x").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the temporary is gone
    assert oct((target / "x").stat().st_mode & 0o777) == "0o644"
