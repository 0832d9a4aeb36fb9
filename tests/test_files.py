"""Atomic writes: the file at the path is its old content or its complete new content."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra.files import atomic_write


class Interrupt(Exception):
    pass


def _leftovers(folder: Path, name: str) -> list[Path]:
    """Anything beside ``name`` in ``folder``: a temporary file left behind."""
    return [p for p in folder.iterdir() if p.name != name]


def test_a_successful_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scores.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as file:
        file.write(b"new content")
    assert path.read_bytes() == b"new content"
    assert _leftovers(tmp_path, path.name) == []


def test_an_error_inside_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "scores.bin"
    path.write_bytes(b"old")
    with pytest.raises(Interrupt), atomic_write(path) as file:
        file.write(b"half of the new")
        raise Interrupt
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path, path.name) == []


def test_an_error_before_the_first_write_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "never.bin"
    with pytest.raises(Interrupt), atomic_write(path):
        raise Interrupt
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_file_is_not_at_the_path_until_the_end(tmp_path: Path) -> None:
    path = tmp_path / "scores.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as file:
        file.write(b"new")
        file.flush()
        assert path.read_bytes() == b"old"  # a reader meanwhile sees the old file whole
    assert path.read_bytes() == b"new"


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b c" / "d.txt"
    with atomic_write(path, "w") as file:
        file.write("x")
    assert path.read_text() == "x"


def test_text_mode_writes_text(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with atomic_write(path, "w") as file:
        file.write("model:\n  d_model: 16\n")
    assert path.read_text() == "model:\n  d_model: 16\n"
    assert _leftovers(tmp_path, path.name) == []
