import io
import threading

import pytest

from DiscAnalysisLib.errors import CancelledError
from DiscAnalysisLib.progress import Progress, line_reporter, parse_progress_line


def test_sub_ranges_map_into_parent():
    seen = []
    p = Progress(lambda f, m: seen.append(round(f, 6)))
    list(p.sub(0.5, 1.0).iterate(range(4), "x"))
    assert seen[0] == 0.5 and seen[-1] == 1.0
    assert seen == sorted(seen)
    assert 0.625 in seen


def test_cancel_between_chunks():
    ev = threading.Event()
    p = Progress(lambda f, m: None, cancel_event=ev)
    it = p.iterate(range(10))
    next(it)
    ev.set()
    with pytest.raises(CancelledError):
        next(it)


def test_line_reporter_round_trip():
    buf = io.StringIO()
    cb = line_reporter(buf)
    cb(0.25, "segmenting L4-L5")
    assert parse_progress_line(buf.getvalue()) == (0.25, "segmenting L4-L5")
    assert parse_progress_line("some other output") is None
