"""The shared background runner's output handling (no Qt needed) and its QProcess wiring with a fake qt."""

from __future__ import annotations

import io
import sys
import types

import pytest

from conftest import REPO_ROOT
from DiscAnalysisLib.progress import Progress, line_reporter

MODULE_DIR = REPO_ROOT / "DiscAnalysis"


@pytest.fixture
def br(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    import DiscAnalysisModuleLib.backgroundrun

    return DiscAnalysisModuleLib.backgroundrun


def _progress_lines(*steps):
    """What the CLI prints for progress: the real line format of DiscAnalysisLib.progress."""
    stream = io.StringIO()
    prog = Progress.wrap(line_reporter(stream))
    for fraction, message in steps:
        prog.report(fraction, message)
    return stream.getvalue().splitlines()


def test_output_splits_progress_from_messages_across_chunk_boundaries(br):
    progress = _progress_lines((0.25, "segmenting"), (1.0, "done"))
    text = f"{progress[0]}\nwrote /tmp/x.nrrd\n{progress[1]}\nsummary line\n"
    out = br.CliOutput()
    updates = []
    for i in range(0, len(text), 7):  # chunks cut lines anywhere
        updates += out.feed(text[i:i + 7])
    updates += out.flush()
    assert updates == [(0.25, "segmenting"), (1.0, "done")]
    assert out.lines == ["wrote /tmp/x.nrrd", "summary line"]
    assert out.summary(maxChars=12) == "summary line"


def test_error_message_is_the_last_lines_or_a_default(br):
    out = br.CliOutput()
    assert out.errorMessage("the process failed") == "the process failed"
    out.feed("a\nb\nc\nerror: the image is axial; reorient it first\n")
    assert out.errorMessage("x", lastLines=1) == "error: the image is axial; reorient it first"
    out.feed("no newline at the end")
    assert out.flush() == [] and out.lines[-1] == "no newline at the end"


class _FakeProcess:
    """Stands in for qt.QProcess: records the command and lets the test play the process's signals."""

    MergedChannels = 1
    instances: list = []

    def __init__(self):
        self.slots, self.killed, self.pending = {}, False, b""
        _FakeProcess.instances.append(self)

    def setProcessChannelMode(self, mode):
        self.mode = mode

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def start(self, executable, args):
        self.command = (executable, list(args))

    def readAllStandardOutput(self):
        data, self.pending = self.pending, b""
        return data

    def kill(self):
        self.killed = True

    def waitForFinished(self, ms):
        return True

    def emit_output(self, text):
        self.pending += text.encode()
        self.slots["readyReadStandardOutput()"]()

    def emit_finished(self, code, status=0):
        self.slots["finished(int,QProcess::ExitStatus)"](code, status)


@pytest.fixture
def fake_qt(monkeypatch):
    _FakeProcess.instances.clear()
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QProcess=_FakeProcess))
    return _FakeProcess


def test_run_reports_progress_and_finishes_once(br, fake_qt):
    seen, finished = [], []
    run = br.BackgroundCliRun(["segment", "in.nrrd"], lambda f, m: seen.append((f, m)),
                              lambda ok, out: finished.append((ok, list(out.lines))), executable="/x/PythonSlicer")
    run.start()
    proc = fake_qt.instances[-1]
    assert proc.command == ("/x/PythonSlicer", ["-m", "DiscAnalysisLib.cli", "segment", "in.nrrd"])
    assert run.running
    proc.emit_output(_progress_lines((0.5, "half"))[0] + "\nwrote out.nrrd")
    proc.emit_finished(0)
    assert seen == [(0.5, "half")]
    assert finished == [(True, ["wrote out.nrrd"])] and not run.running


def test_failed_crashed_and_cancelled_runs(br, fake_qt):
    finished = []
    run = br.BackgroundCliRun(["grade"], lambda f, m: None, lambda ok, out: finished.append((ok, out.errorMessage("?"))))
    run.start()
    fake_qt.instances[-1].emit_output("error: no disc found; check the input\n")
    fake_qt.instances[-1].emit_finished(2)
    assert finished == [(False, "error: no disc found; check the input")]

    run.start()
    fake_qt.instances[-1].emit_finished(0, status=1)  # CrashExit with a meaningless exit code 0
    assert finished[-1][0] is False

    run.start()
    proc = fake_qt.instances[-1]
    run.cancel()
    assert proc.killed and not run.running
    proc.emit_output("late output\n")
    proc.emit_finished(9)  # the killed process still signals: no callback
    assert len(finished) == 2


def test_progress_display_sets_the_bar_and_keeps_the_last_message(br):
    bar, label = types.SimpleNamespace(value=0), types.SimpleNamespace(text="Running...")
    show = br.showProgressOn(bar, label)
    show(0.42, "segmenting")
    show(0.5, "")
    assert bar.value == 50 and label.text == "segmenting"
