"""Progress of long loops: a bar on a terminal, a few log lines everywhere else.

A tqdm bar written to a file or a pipe (CI, ``nohup``, a Ray worker's log, a SLURM job)
leaves every redraw in the log: megabytes over a 40-epoch run. :func:`progress` draws the
bar only when ``sys.stderr`` is a terminal; otherwise it logs through the logger
``astra.progress`` at INFO: a line when ``LOG_INTERVAL_SECONDS`` have passed since the
last one, or when another tenth of ``total`` is done and ``LOG_MIN_INTERVAL_SECONDS``
have passed; and one at the end with the count, the elapsed time, the rate and the
latest postfix. A loop of a few seconds logs its summary only.

The environment variable ``ASTRA_PROGRESS`` overrides the choice:

- ``auto`` (or unset): a bar on a terminal, log lines otherwise;
- ``bar``: always a bar; ``log``: always log lines; ``off``: neither.

Log lines appear only where logging is configured at INFO: ``astra`` commands do it in
``astra.cli``; a Ray worker process starts with none (its root logger at WARNING, no
handler), so a worker must configure it to show them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

ENVIRONMENT_VARIABLE = "ASTRA_PROGRESS"
MODES: tuple[str, ...] = ("auto", "bar", "log", "off")
LOG_INTERVAL_SECONDS = 30.0  # a line at least this often while items come: a day is under 3000 lines
LOG_FRACTION = 0.1  # and one per tenth of the total, when the total is known,
LOG_MIN_INTERVAL_SECONDS = 5.0  # unless the last line is more recent than this

log = logging.getLogger("astra.progress")

T = TypeVar("T")


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    unit: str = "it",
    total: int | None = None,
    enabled: bool = True,
    leave: bool = True,
) -> Progress[T]:
    """Wrap ``iterable`` to show its progress; iterate over the result, call ``set_postfix`` on it.

    ``total`` defaults to ``len(iterable)`` where it has one. ``enabled=False`` shows
    nothing. ``leave=False`` clears the bar when done (log lines are kept either way).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    mode = _mode() if enabled else "off"
    if mode == "bar":
        return _Bar(iterable, desc=desc, unit=unit, total=total, leave=leave)
    if mode == "log":
        return _LogLines(iterable, desc=desc, unit=unit, total=total)
    return Progress(iterable)


class Progress(Generic[T]):
    """An iterable that shows nothing; the bar and the log lines below share its interface."""

    def __init__(self, iterable: Iterable[T]) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[T]:
        return iter(self.iterable)

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count (``loss=0.12``): on the bar, or in the next log lines."""


class _Bar(Progress[T]):
    def __init__(
        self, iterable: Iterable[T], *, desc: str, unit: str, total: int | None, leave: bool
    ) -> None:
        from tqdm import tqdm

        super().__init__(iterable)
        self.bar = tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave, dynamic_ncols=True)

    def __iter__(self) -> Iterator[T]:
        return iter(self.bar)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_postfix(**values)


class _LogLines(Progress[T]):
    def __init__(self, iterable: Iterable[T], *, desc: str, unit: str, total: int | None) -> None:
        super().__init__(iterable)
        self.desc = desc
        self.unit = unit
        self.total = total
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def __iter__(self) -> Iterator[T]:
        start = last_line = time.monotonic()
        count = 0
        # Counts at which a tenth of the total is done (none without a total).
        step = max(1, round(self.total * LOG_FRACTION)) if self.total else 0
        next_count = step if step else None
        finished = False
        try:
            for item in self.iterable:
                yield item
                count += 1
                now = time.monotonic()
                since_last = now - last_line
                tenth_done = next_count is not None and count >= next_count
                if since_last >= LOG_INTERVAL_SECONDS or (
                    tenth_done and since_last >= LOG_MIN_INTERVAL_SECONDS
                ):
                    if self.total is None or count < self.total:  # the last one gets the summary
                        log.info("%s", self._line(count, now - start))
                    last_line = now
                while next_count is not None and next_count <= count:
                    next_count += step
            finished = True
        finally:
            log.info("%s", self._summary(count, time.monotonic() - start, finished))

    def _line(self, count: int, elapsed: float) -> str:
        if not self.total:
            return f"{self.desc}: {count} {self.unit}, {_duration(elapsed)}{self._postfix()}"
        remaining = elapsed * (self.total - count) / count
        done = f"{count}/{self.total} {self.unit} ({100 * count / self.total:.0f}%)"
        return (
            f"{self.desc}: {done}, {_duration(elapsed)}, about {_duration(remaining)} left{self._postfix()}"
        )

    def _summary(self, count: int, elapsed: float, finished: bool) -> str:
        rate = _rate(count / elapsed) if elapsed > 0 else "-"
        state = "done" if finished else "stopped"
        amount = f"{count} {self.unit} in {_duration(elapsed)} ({rate} {self.unit}/s)"
        return f"{self.desc}: {state}, {amount}{self._postfix()}"

    def _postfix(self) -> str:
        if not self.postfix:
            return ""
        return ", " + ", ".join(f"{key}={_format(value)}" for key, value in self.postfix.items())


def _mode() -> str:
    mode = os.environ.get(ENVIRONMENT_VARIABLE, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return "bar" if isatty is not None and isatty() else "log"
    return mode


def _duration(seconds: float) -> str:
    """``42.0s``, ``3m05s``, ``2h07m``: short enough for a log line."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _rate(per_second: float) -> str:
    return f"{per_second:.3g}" if per_second < 1000 else f"{per_second:.0f}"


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
