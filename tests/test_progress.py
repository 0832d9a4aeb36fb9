"""Progress: a bar on a terminal; in a file or a pipe, a bounded number of plain log lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import pytest

from astra import progress as progress_module
from astra.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Pipe:
    """What was written to ``sys.stderr``, which pytest's capture makes a file, not a terminal."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Pipe:
    """``sys.stderr`` as a pipe, with no ``ASTRA_PROGRESS`` set."""
    monkeypatch.delenv(progress_module.ENVIRONMENT_VARIABLE, raising=False)
    return Pipe(capsys)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """``logged()``: the messages of the logger ``astra.progress`` so far."""
    caplog.set_level(logging.INFO, logger="astra.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "astra.progress"]


def test_off_a_terminal_a_quick_loop_logs_one_summary_and_no_bar(stderr, logged) -> None:
    items = list(progress(range(10_000), desc="checking train", unit="game"))
    assert items == list(range(10_000))
    assert stderr.getvalue() == ""  # no bar frames
    assert len(logged()) == 1  # done well within LOG_MIN_INTERVAL_SECONDS
    assert logged()[0].startswith("checking train: done, 10000 game in ")
    assert "game/s" in logged()[0]


def test_a_long_loop_logs_each_tenth_at_most(stderr, logged, monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "LOG_MIN_INTERVAL_SECONDS", 0.0)
    list(progress(range(10_000), desc="checking train", unit="game"))
    assert stderr.getvalue() == ""
    lines = logged()
    assert len(lines) == 10  # 10%, ..., 90%, and the summary in place of 100%
    assert not any("\r" in line or "\n" in line for line in lines)
    assert lines[0].startswith("checking train: 1000/10000 game (10%), ")
    assert "left" in lines[0]
    assert lines[8].startswith("checking train: 9000/10000 game (90%), ")
    assert lines[-1].startswith("checking train: done, 10000 game in ")


def test_without_a_total_only_the_interval_and_the_end_give_lines(stderr, logged) -> None:
    items = list(progress((i for i in range(10_000)), desc="scan"))
    assert len(items) == 10_000
    assert len(logged()) == 1  # well under 30 s
    assert logged()[0].startswith("scan: done, 10000 it in ")


def test_a_line_comes_each_time_the_interval_has_passed(stderr, logged, monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_SECONDS", 0.0)
    list(progress((i for i in range(5)), desc="slow", unit="game"))
    assert [line.split(",")[0] for line in logged()[:5]] == [f"slow: {n} game" for n in range(1, 6)]
    assert logged()[-1].startswith("slow: done, 5 game")


def test_each_line_carries_the_latest_postfix(stderr, logged, monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "LOG_MIN_INTERVAL_SECONDS", 0.0)
    bar = progress(range(100), desc="epoch 3", unit="batch")
    for step in bar:
        bar.set_postfix(loss=1.0 / (step + 1), lr="1e-3")
    assert logged()[0].endswith("left, loss=0.1, lr=1e-3")  # after batch 10
    assert logged()[-1].endswith("loss=0.01, lr=1e-3")


def test_disabled_shows_nothing(stderr, logged) -> None:
    bar = progress(range(50), desc="quiet", enabled=False)
    for _ in bar:
        bar.set_postfix(loss=0.5)
    assert list(bar) == list(range(50))
    assert stderr.getvalue() == ""
    assert len(logged()) == 0


def test_a_loop_left_early_says_where_it_stopped(stderr, logged) -> None:
    for item in progress(range(1000), desc="predict", unit="game"):
        if item == 41:
            break
    assert logged()[-1].startswith("predict: stopped, 41 game in ")  # the 42nd was not finished


def test_on_a_terminal_it_is_a_bar(monkeypatch, logged) -> None:
    monkeypatch.delenv(progress_module.ENVIRONMENT_VARIABLE, raising=False)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress(range(20), desc="simulating games", unit="game")
    for _ in bar:
        bar.set_postfix(loss=0.25)
    assert "simulating games" in terminal.getvalue()
    assert "\r" in terminal.getvalue()
    assert "loss=0.25" in terminal.getvalue()
    assert len(logged()) == 0


@pytest.mark.parametrize(("mode", "has_lines"), [("log", True), ("off", False)])
def test_the_environment_variable_overrides_the_terminal(
    monkeypatch, logged, mode: str, has_lines: bool
) -> None:
    monkeypatch.setenv(progress_module.ENVIRONMENT_VARIABLE, mode)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(progress(range(20), desc="work")) == list(range(20))
    assert terminal.getvalue() == ""  # no bar on the terminal
    assert (len(logged()) > 0) == has_lines


def test_bar_forced_in_a_pipe(stderr, logged, monkeypatch) -> None:
    monkeypatch.setenv(progress_module.ENVIRONMENT_VARIABLE, "BAR")
    list(progress(range(20), desc="work"))
    assert "work" in stderr.getvalue()
    assert len(logged()) == 0


def test_an_unknown_mode_names_the_variable(stderr, monkeypatch) -> None:
    monkeypatch.setenv(progress_module.ENVIRONMENT_VARIABLE, "fancy")
    with pytest.raises(ValueError, match="ASTRA_PROGRESS='fancy'"):
        progress(range(3), desc="work")
