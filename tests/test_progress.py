"""Progress without a terminal (CI logs, nohup, pipes, notebooks): a logged line at least every interval with count,
rate and ETA; nothing when INFO is not logged (--quiet)."""

import logging
import time

from hrm_shared.core.progress import duration, progress, progress_line


def slow(n: int, seconds: float):
    for i in range(n):
        time.sleep(seconds)
        yield i


def test_lines_arrive_while_the_work_runs(caplog):
    caplog.set_level(logging.INFO, logger="hrm_shared")  # pytest's captured stderr is not a terminal: no bar
    assert list(progress(slow(6, 0.05), label="Evaluating", length=6, interval=0.1)) == list(range(6))
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "Evaluating (6)"
    assert len(lines) >= 3 and all(line.startswith("Evaluating: ") for line in lines[1:])
    assert lines[-1].startswith("Evaluating: 6/6 (100%), ") and lines[-1].endswith("ETA 0s")
    assert "/s" in lines[1]


def test_nothing_when_info_is_not_logged(caplog):
    caplog.set_level(logging.WARNING, logger="hrm_shared")
    assert list(progress(slow(3, 0.01), label="Evaluating", length=3, interval=0.0)) == [0, 1, 2]
    assert caplog.records == []


def test_line_format():
    assert progress_line("Building", 50, 200, 10.0) == "Building: 50/200 (25%), 5.0/s, ETA 30s"
    assert progress_line("Generating", 7, None, 2.0) == "Generating: 7, 3.5/s"
    assert (duration(42), duration(185), duration(3725)) == ("42s", "3m05s", "1h02m")
