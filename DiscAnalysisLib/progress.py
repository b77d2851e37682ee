"""One progress-reporting mechanism for the CLI (a progress bar) and Slicer (a callback).

Long steps accept ``progress: ProgressCallback | None``. A callback receives ``(fraction, message)`` with
``fraction`` in [0, 1]; it may raise :class:`~DiscAnalysisLib.errors.CancelledError` to cancel, which the
step lets propagate between chunks of work (slices, discs, subjects). ``Progress`` wraps a callback so
that nested steps can report into a sub-range of their parent's bar.

When a step runs in a child process (Slicer's background ``PythonSlicer`` run), :func:`line_reporter`
writes machine-readable lines ``PROGRESS <fraction> <message>`` that the parent parses with
:func:`parse_progress_line`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

from .errors import CancelledError

ProgressCallback = Callable[[float, str], None]
T = TypeVar("T")

PROGRESS_PREFIX = "PROGRESS"


class Progress:
    """Reports the progress of a step into ``[start, stop]`` of a parent's progress range.

    >>> p = Progress(callback)                 # whole range 0..1
    >>> seg = p.sub(0.0, 0.5)                  # first half for segmentation
    >>> for s in seg.iterate(slices, "Segmenting"):
    ...     ...
    """

    def __init__(
        self,
        callback: ProgressCallback | None = None,
        start: float = 0.0,
        stop: float = 1.0,
        cancel_event: threading.Event | None = None,
    ) -> None:
        self._callback = callback
        self._start = float(start)
        self._stop = float(stop)
        self._cancel = cancel_event

    @classmethod
    def wrap(cls, progress: Progress | ProgressCallback | None) -> Progress:
        """Accept a Progress, a bare callback or None, so public functions can take any of them."""
        if isinstance(progress, Progress):
            return progress
        return cls(progress)

    def report(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1) of this step; raises CancelledError if cancellation was requested."""
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError("Cancelled by the user.")
        if self._callback is not None:
            f = min(max(float(fraction), 0.0), 1.0)
            self._callback(self._start + f * (self._stop - self._start), message)

    def sub(self, start: float, stop: float) -> Progress:
        """A child reporter covering ``[start, stop]`` (fractions of this reporter's range)."""
        span = self._stop - self._start
        return Progress(self._callback, self._start + start * span, self._start + stop * span, self._cancel)

    def iterate(self, items: Iterable[T], message: str = "", total: int | None = None) -> Iterator[T]:
        """Yield ``items`` while reporting progress after each one (and a 0 at the start)."""
        if total is None:
            try:
                total = len(items)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.report(0.0, message)
        for i, item in enumerate(items):
            yield item
            if total:
                self.report((i + 1) / total, message)
        self.report(1.0, message)


def line_reporter(stream: TextIO | None = None) -> ProgressCallback:
    """A callback writing ``PROGRESS <fraction> <message>`` lines (for a parent process to follow)."""

    def callback(fraction: float, message: str) -> None:
        out = stream or sys.stdout
        out.write(f"{PROGRESS_PREFIX} {fraction:.4f} {message}\n")
        out.flush()

    return callback


def parse_progress_line(line: str) -> tuple[float, str] | None:
    """Parse a line written by :func:`line_reporter`; None for any other line."""
    parts = line.rstrip("\n").split(" ", 2)
    if len(parts) < 2 or parts[0] != PROGRESS_PREFIX:
        return None
    try:
        fraction = float(parts[1])
    except ValueError:
        return None
    return fraction, parts[2] if len(parts) > 2 else ""


class TqdmReporter:
    """A progress callback that drives a tqdm bar on stderr (the CLI's face of :class:`Progress`)."""

    def __init__(self, description: str = "", disable: bool | None = None) -> None:
        from tqdm import tqdm

        # disable=None lets tqdm hide the bar when stderr is not a terminal (CI logs stay readable).
        self._bar = tqdm(total=1000, desc=description, unit="‰", leave=False, disable=disable,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        target = int(round(fraction * 1000))
        self._bar.update(max(0, target - self._bar.n))
        if message:
            self._bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TqdmReporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
