"""Progress in logs (DVC, CI): a few compact lines for long loops, none for quick ones."""

from __future__ import annotations

import io

from vogflow.common.progress import Progress


def test_a_quick_loop_prints_nothing_in_a_log():
    log = io.StringIO()
    with Progress(6, "gradients", unit="batch", stream=log) as bar:
        for _ in range(6):
            bar.update()
    assert log.getvalue() == ""


def test_a_long_loop_prints_about_ten_lines_never_a_bar():
    log = io.StringIO()
    with Progress(1000, "gradients", unit="batch", stream=log, every=0.0) as bar:
        for _ in range(1000):
            bar.update()
    lines = log.getvalue().splitlines()
    assert 9 <= len(lines) <= 11
    assert lines[-1].startswith("gradients: 1000/1000 batch")
    assert "\r" not in log.getvalue()
