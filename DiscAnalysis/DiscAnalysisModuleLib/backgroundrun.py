"""One background runner for the modules' long steps: ``PythonSlicer -m DiscAnalysisLib.cli ARGS``.

Both modules (DiscAnalysis, DiscCohort) start the CLI in a ``qt.QProcess`` so the GUI stays responsive,
turn its ``PROGRESS`` lines into a progress bar, keep the other lines for the error message or the
summary, and can cancel. :class:`CliOutput` is the pure-Python part (tested without Qt);
:class:`BackgroundCliRun` wraps the QProcess (Qt imported only when a run starts, inside Slicer).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from DiscAnalysisLib.progress import parse_progress_line


class CliOutput:
    """What a CLI run printed: progress updates are returned by :meth:`feed`, other lines are kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = ""

    def feed(self, text: str) -> list[tuple[float, str]]:
        """Take a chunk of output (possibly ending mid-line); return the (fraction, message) updates in it."""
        text = self._partial + text
        complete, _, self._partial = text.rpartition("\n")
        return self._lines(complete.splitlines())

    def flush(self) -> list[tuple[float, str]]:
        """Take the last line when the output did not end with a newline (call once the process ended)."""
        rest, self._partial = self._partial, ""
        return self._lines([rest])

    def _lines(self, lines: Sequence[str]) -> list[tuple[float, str]]:
        updates = []
        for line in lines:
            parsed = parse_progress_line(line)
            if parsed:
                updates.append(parsed)
            elif line.strip():
                self.lines.append(line.rstrip())
        return updates

    def errorMessage(self, default: str, lastLines: int = 3) -> str:
        """The last lines printed: the CLI ends a bad-input run with one actionable line (exit code 2)."""
        return "\n".join(self.lines[-lastLines:]) or default

    def summary(self, maxChars: int = 600) -> str:
        """The printed summary, cut to its last ``maxChars`` characters."""
        return "\n".join(self.lines)[-maxChars:]


def showProgressOn(progressBar, statusLabel) -> Callable[[float, str], None]:
    """An ``onProgress`` callback for :class:`BackgroundCliRun` that drives a progress bar (0-100) and puts
    each non-empty message in a label."""

    def show(fraction: float, message: str) -> None:
        progressBar.value = int(fraction * 100)
        if message:
            statusLabel.text = message

    return show


class BackgroundCliRun:
    """Run the DiscAnalysis CLI in a QProcess.

    ``onProgress(fraction, message)`` is called for every progress line; ``onFinished(ok, output)`` once,
    when the process ends (``ok``: normal exit with code 0; ``output``: the :class:`CliOutput`), never after
    :meth:`cancel`. Keep a reference to the object while it runs (Qt calls its bound methods).
    """

    def __init__(self, args: Sequence[str], onProgress: Callable[[float, str], None],
                 onFinished: Callable[[bool, CliOutput], None], executable: str | None = None) -> None:
        self.args = ["-m", "DiscAnalysisLib.cli", *[str(a) for a in args]]
        # Inside Slicer sys.executable is PythonSlicer, which has DiscAnalysisLib on its path.
        self.executable = executable or sys.executable
        self.output = CliOutput()
        self._onProgress = onProgress
        self._onFinished = onFinished
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        import qt

        process = qt.QProcess()
        process.setProcessChannelMode(qt.QProcess.MergedChannels)
        process.connect("readyReadStandardOutput()", self._readOutput)
        process.connect("finished(int,QProcess::ExitStatus)", self._finished)
        self._process = process
        process.start(self.executable, self.args)

    def cancel(self) -> None:
        """Kill the process; no finished callback follows."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.waitForFinished(2000)

    def _readOutput(self) -> None:
        if self._process is None:  # cancelled: the killed process still signals
            return
        text = bytes(self._process.readAllStandardOutput()).decode("utf-8", "replace")
        for fraction, message in self.output.feed(text):
            self._onProgress(fraction, message)

    def _finished(self, exitCode, exitStatus) -> None:
        if self._process is None:  # cancelled
            return
        self._readOutput()
        for fraction, message in self.output.flush():
            self._onProgress(fraction, message)
        self._process = None
        # exitStatus 0 is QProcess.NormalExit; a crash (CrashExit) may still report exit code 0.
        self._onFinished(exitCode == 0 and int(exitStatus) == 0, self.output)
