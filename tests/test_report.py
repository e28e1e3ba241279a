"""`hrm report` (shared/app/report.py, shared/app/report_page.py): the page's content, its sources, and the page in a
real headless browser (Debian's chromium; skipped when it is not installed)."""

import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from helpers import dataset_rows, invoke, write_arc_tasks
from hrm_shared.app.report import Outputs, write_report
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split
from hrm_shared.data.arc import build_arc_dataset
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles.render import ARC_PALETTE

CHROMIUM = "/usr/bin/chromium"
CARD = re.compile(r'<section class="card (solved|unsolved)"[^>]*>')


def save_outputs(path, predictions, labels, identifiers, q=None):
    """An outputs .npz as `hrm evaluate --save-outputs` writes it (labels -100 where ignored)."""
    labels = np.where(labels == 0, -100, labels).astype(np.int32)
    np.savez(path, predictions=predictions.astype(np.int32), labels=labels,
             q_halt_logits=np.zeros(len(labels), np.float32) if q is None else q,
             puzzle_identifiers=identifiers.astype(np.int32))
    return path


def arc_outputs(ds, path):
    """Outputs on an ARC build: every view right for tasks single and third, every view empty for multi."""
    labels, ids = dataset_rows(ds)
    predictions = labels.copy()
    names = json.loads((ds / "identifiers.json").read_text())
    predictions[[names[i].startswith("multi") for i in ids.tolist()]] = 0
    return save_outputs(path, predictions, labels, ids)


def cards(page: str) -> list[tuple[str, bool]]:
    """(state, hidden) of every card on a page."""
    return [(m.group(1), ' hidden=""' in m.group(0)) for m in CARD.finditer(page)]


def test_outputs_stream_in_chunks(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"predictions": rng.integers(0, 12, (50, 900)).astype(np.int32),
              "labels": rng.integers(0, 12, (50, 900)).astype(np.int32),
              "q_halt_logits": rng.normal(size=50).astype(np.float32),
              "puzzle_identifiers": rng.integers(0, 9, 50).astype(np.int32)}
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "o.npz", **arrays)
        outputs = Outputs(tmp_path / "o.npz")
        chunks = list(outputs.chunks(rows=16))
        assert outputs.rows == 50 and [len(c["labels"]) for c in chunks] == [16, 16, 16, 2]
        for key, value in arrays.items():
            assert np.array_equal(np.concatenate([c[key] for c in chunks]), value), key
    np.savez(tmp_path / "partial.npz", predictions=arrays["predictions"])
    with pytest.raises(HRMError, match="lacks labels, q_halt_logits, puzzle_identifiers"):
        Outputs(tmp_path / "partial.npz")
    (tmp_path / "text.npz").write_text("no zip")
    with pytest.raises(HRMError, match="not an outputs .npz"):
        Outputs(tmp_path / "text.npz")


def test_arc_page(arc_build, tmp_path):
    raw, ds, tasks = arc_build
    outputs = arc_outputs(ds, tmp_path / "out.npz")
    result = write_report(outputs, ds, tmp_path / "a.html")
    page = (tmp_path / "a.html").read_text()
    assert result["pass@2"].startswith("0.6667 (2 of 3)")
    assert result["cards"] == "2 of 2 solved (at pass@2) and 1 of 1 unsolved tasks"
    assert sorted(cards(page)) == [("solved", False), ("solved", False), ("unsolved", False)]
    assert "http" not in page and "src=" not in page  # nothing fetched from anywhere
    for name, task in tasks.items():
        for i, pair in enumerate(task["train"]):
            for side in ("input", "output"):
                grid = pair[side]
                cells = "".join(str(v) for row in grid for v in row)
                assert f'data-shape="{len(grid)}x{len(grid[0])}" data-cells="{cells}"' in page, (name, i, side)
    assert "right: attempt 1, 5 of 5 votes" in page and "the right answer got no vote" in page
    # The demonstrations from the task files give the same page as those from the build's train split.
    write_report(outputs, ds, tmp_path / "b.html", tasks_dirs=[raw])
    assert (tmp_path / "b.html").read_text() == page.replace(str(tmp_path / "a.html"), str(tmp_path / "b.html"))


def test_strict_build_asks_for_the_task_files(tmp_path):
    write_arc_tasks(tmp_path / "raw")
    build_arc_dataset([tmp_path / "raw"], tmp_path / "ds", num_aug=1, seed=0, strict=True)
    outputs = arc_outputs(tmp_path / "ds", tmp_path / "out.npz")
    write_report(outputs, tmp_path / "ds", tmp_path / "a.html", limit=1)
    page = (tmp_path / "a.html").read_text()
    assert len(cards(page)) == 2 and page.count("pass --tasks DIR") == 2 and "demonstrations" not in page
    write_report(outputs, tmp_path / "ds", tmp_path / "b.html", tasks_dirs=[tmp_path / "raw"])
    assert (tmp_path / "b.html").read_text().count("<h3>demonstrations</h3>") == 3


def test_sudoku_page_marks_wrong_cells(tmp_path):
    build_small_sudoku(tmp_path / "ds", 4, 4, 7, seed=0)
    _, sets = load_split(tmp_path / "ds", "test")
    labels = np.asarray(sets["all"].labels).astype(np.int32)
    predictions = labels.copy()
    predictions[1, :3] = 1 + labels[1, :3] % 4  # 3 cells wrong (other digits)
    predictions[4, 5] = 0
    save_outputs(tmp_path / "o.npz", predictions, labels, np.zeros(7))
    result = write_report(tmp_path / "o.npz", tmp_path / "ds", limit=5)
    page = (tmp_path / "o.html").read_text()
    assert result["puzzles"] == "sudoku" and result["exact accuracy"] == "0.7143 (5 of 7)"
    assert [s for s, _ in cards(page)] == ["solved", "unsolved", "solved", "solved", "unsolved", "solved", "solved"]
    assert result["cards"] == "5 of 5 solved (every cell right) and 2 of 2 unsolved examples"
    assert str(tmp_path) not in page  # names only: the page is for sharing
    # A small limit keeps the unsolved examples from the whole split, not only from its start.
    result = write_report(tmp_path / "o.npz", tmp_path / "ds", tmp_path / "small.html", limit=1)
    small = (tmp_path / "small.html").read_text()
    assert [s for s, _ in cards(small)] == ["solved", "unsolved"]
    assert result["cards"] == "1 of 5 solved (every cell right) and 1 of 2 unsolved examples"
    assert "prediction, 3 cells wrong" in page and "prediction, 1 cells wrong" in page
    assert 'data-wrong="1110000000000000"' in page and 'data-box="2x2"' in page


def test_run_directory_and_bad_sources(arc_build, tmp_path):
    _, ds, _ = arc_build
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    r = invoke("report", run_dir)
    assert r.exit_code == 1 and "eval_outputs.npz is missing" in r.output and r.output.count("\n") == 1
    arc_outputs(ds, run_dir / "eval_outputs.npz")
    assert "does not name the run's dataset" in invoke("report", run_dir).output
    (run_dir / "config.json").write_text(json.dumps({"dataset": {"path": str(ds)}}))
    r = invoke("report", run_dir)
    assert r.exit_code == 0, r.output
    assert (run_dir / "report.html").is_file() and "Report written to" in r.output and "pass@2" in r.output
    r = invoke("report", run_dir / "eval_outputs.npz")
    assert r.exit_code == 2 or (r.exit_code == 1 and "--data" in r.output), r.output
    labels, ids = dataset_rows(ds)
    save_outputs(tmp_path / "short.npz", labels[:-1], labels[:-1], ids[:-1])
    r = invoke("report", tmp_path / "short.npz", "--data", ds)
    assert r.exit_code == 1 and "the outputs are from another dataset" in r.output
    save_outputs(tmp_path / "shuffled.npz", labels, labels, ids[::-1].copy())
    r = invoke("report", tmp_path / "shuffled.npz", "--data", ds)
    assert r.exit_code == 1 and "differ from the dataset's from row 0" in r.output


# ---- in a browser ------------------------------------------------------------------------------------------------

def png_pixels(data: bytes) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an 8-bit, non-interlaced RGB or RGBA PNG (what chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert depth == 8 and interlace == 0 and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * bpp)
    rows = np.zeros((height + 1, width * bpp), np.int64)
    for y in range(height):
        kind, line, up = raw[y, 0], raw[y, 1:].astype(np.int64), rows[y]
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (line + up) % 256
        else:  # Average and Paeth depend on the pixel just decoded: one at a time
            cur = line.copy()
            for i in range(len(cur)):
                a, b, c = (cur[i - bpp] if i >= bpp else 0), up[i], (up[i - bpp] if i >= bpp else 0)
                p = a + b - c
                paeth = a if abs(p - a) <= min(abs(p - b), abs(p - c)) else b if abs(p - b) <= abs(p - c) else c
                cur[i] = (cur[i] + ((a + b) // 2 if kind == 3 else paeth)) % 256
        rows[y + 1] = cur
    return rows[1:].reshape(height, width, bpp)[..., :3].astype(np.uint8)


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no {CHROMIUM}: `apt-get install chromium` to see the page "
                                                       f"in a headless browser")
def test_page_in_a_headless_browser(arc_build, tmp_path):
    _, ds, _ = arc_build
    write_report(arc_outputs(ds, tmp_path / "out.npz"), ds, tmp_path / "page.html")
    url = (tmp_path / "page.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", url + "#unsolved").stdout
    assert sorted(cards(dom)) == [("solved", True), ("solved", True), ("unsolved", False)], dom[:2000]
    # The script drew the grids of the one card shown (multi: 2 demo pairs, 2 test inputs and expected outputs,
    # no answer), not those of the hidden cards.
    assert dom.count('class="grid"') == 20 and dom.count('<table class="g arc">') == 8
    assert '<button data-filter="unsolved" class="on">Unsolved (1)</button>' in dom
    done = chromium(tmp_path, "--window-size=900,700", f"--screenshot={tmp_path / 'shot.png'}", url)
    assert (tmp_path / "shot.png").is_file(), done.stderr[-2000:]
    pixels = png_pixels((tmp_path / "shot.png").read_bytes())
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    assert counts.max() < 0.9 * counts.sum()  # not one colour
    shown = {tuple(c) for c in colours[counts > 30].tolist()}
    assert len(shown & {tuple(c) for c in ARC_PALETTE.tolist()}) >= 4  # ARC cells drawn in their palette
