"""The HTML of `hrm report`: a page of cards (a task or an example each) with grids, a summary table and
solved/unsolved filters; its CSS and script are inline, so the file needs no network.

Grids travel as one character per cell in data attributes (a 400-task ARC page is about a megabyte instead of
tens) and the script draws each as an HTML table when it scrolls into view; the first screenful is drawn at load.
"""

import html
from dataclasses import dataclass, field

import numpy as np

from hrm_shared.puzzles.render import ARC_PALETTE

CELL_PX = {"arc": 13, "sudoku": 21, "maze": 8}  # drawn cell size with its border, to reserve room before drawing
DRAWN_AT_LOAD = 60  # grids drawn before the first paint; the rest as they scroll into view


@dataclass
class Grid:
    """One picture: `cells` one character per cell, row-major, of a [rows, cols] grid of `kind` 'arc' (colour
    digits), 'sudoku' (digits, '.' blank) or 'maze' (`# SGo`, '?' other tokens); `wrong` bool [rows, cols] marks
    cells to highlight; `box` (rows, cols) of a Sudoku box; `changed` bool [rows, cols] marks the cells a segment
    changed (a trajectory)."""

    kind: str
    cells: str
    shape: tuple[int, int]
    caption: str
    wrong: np.ndarray | None = None
    box: tuple[int, int] | None = None
    changed: np.ndarray | None = None


@dataclass
class Card:
    """One task or example: a title, whether it is solved, labelled rows of grid groups (a group, such as a
    demonstration's input and output, stays on one line), and a line of notes."""

    title: str
    solved: bool
    rows: list[tuple[str, list[list[Grid]]]] = field(default_factory=list)
    note: str = ""


_COLOURS = "\n".join(f"table.arc td.c{i}{{background:#{r:02x}{g:02x}{b:02x}}}"
                     for i, (r, g, b) in enumerate(ARC_PALETTE.tolist()))

CSS = """
body{font:14px system-ui,sans-serif;margin:0 1.5em 3em;color:#222;background:#f6f6f6}
h1{font-size:1.35em;margin:.8em 0 .4em}
table.summary{border-collapse:collapse;background:#fff;margin:.4em 0}
table.summary th,table.summary td{padding:3px 12px;border:1px solid #ddd;text-align:left}
table.summary th{font-weight:600;background:#eee}
nav{margin:.8em 0}
nav button{font:inherit;padding:3px 12px;margin-right:4px;border:1px solid #888;border-radius:4px;background:#fff;
  cursor:pointer}
nav button.on{background:#333;color:#fff}
.index{line-height:1.9}
.index a{margin:1px;padding:1px 4px;border-radius:3px;text-decoration:none;font:11px monospace}
.index a.solved{background:#cdeccd;color:#064}
.index a.unsolved{background:#f3d2d2;color:#802}
.card{background:#fff;border:1px solid #ccc;border-left:6px solid #c0392b;margin:1em 0;padding:.4em 1em .8em}
.card.solved{border-left-color:#27ae60}
.card h2{font-size:1.1em;margin:.3em 0}
.badge{font-size:.8em;padding:1px 8px;border-radius:9px;color:#fff;background:#c0392b;vertical-align:middle}
.card.solved .badge{background:#27ae60}
.note{color:#555;margin:.2em 0}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:14px 28px;margin:.5em 0}
.group{display:flex;align-items:flex-start;gap:8px}
.row>h3{flex-basis:100%;font-size:.95em;margin:.4em 0 0}
figure{margin:0}
figcaption{font-size:12px;color:#444;max-width:22em;margin-top:2px}
table.g{border-collapse:collapse}
table.g td{padding:0}
table.arc td{width:12px;height:12px;border:1px solid #555}
table.sudoku td{width:20px;height:20px;border:1px solid #bbb;text-align:center;font:13px monospace}
table.sudoku td.bl{border-left:2px solid #222}
table.sudoku td.bt{border-top:2px solid #222}
table.maze td{width:8px;height:8px}
table.maze .mw{background:#333}table.maze .mo{background:#fff}table.maze .ms{background:#2ecc40}
table.maze .mg{background:#e74c3c}table.maze .mp{background:#3498db}table.maze .mu{background:#f0f}
table.sudoku td.d{background:#fff1a8}
table.arc td.d,table.maze td.d{box-shadow:inset 0 0 0 2px #ffd400}
table.sudoku td.x{background:#f8c4c4;color:#a00;font-weight:bold}
table.arc td.x,table.maze td.x{outline:2px solid #ff2d55;outline-offset:-2px}
""" + _COLOURS

SCRIPT = """
const MAZE = {"#": "mw", " ": "mo", "S": "ms", "G": "mg", "o": "mp"};
function draw(el) {
  if (el.dataset.drawn) return;
  el.dataset.drawn = "1";
  const [h, w] = el.dataset.shape.split("x").map(Number);
  const kind = el.dataset.kind, cells = el.dataset.cells, wrong = el.dataset.wrong || "";
  const changed = el.dataset.changed || "";
  const [bh, bw] = (el.dataset.box || "0x0").split("x").map(Number);
  const out = [`<table class="g ${kind}">`];
  for (let r = 0; r < h; r++) {
    out.push("<tr>");
    for (let c = 0; c < w; c++) {
      const i = r * w + c, ch = cells[i], cls = [];
      if (kind === "arc") cls.push("c" + ch);
      if (kind === "maze") cls.push(MAZE[ch] || "mu");
      if (kind === "sudoku" && bw && c && c % bw === 0) cls.push("bl");
      if (kind === "sudoku" && bh && r && r % bh === 0) cls.push("bt");
      if (changed[i] === "1") cls.push("d");
      if (wrong[i] === "1") cls.push("x");
      out.push(`<td class="${cls.join(" ")}">${kind === "sudoku" && ch !== "." ? ch : ""}</td>`);
    }
    out.push("</tr>");
  }
  el.innerHTML = out.join("") + "</table>";
  el.style.width = el.style.height = "";
}
function setFilter(name) {
  const f = name === "solved" || name === "unsolved" ? name : "all";
  for (const card of document.querySelectorAll(".card"))
    card.hidden = f !== "all" && !card.classList.contains(f);
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("on", b.dataset.filter === f);
}
for (const b of document.querySelectorAll("nav button"))
  b.addEventListener("click", () => { location.hash = b.dataset.filter; });
window.addEventListener("hashchange", () => {
  setFilter(location.hash.slice(1));
  const target = document.getElementById(location.hash.slice(1));  // a card link: shown again by "all"
  if (target) target.scrollIntoView();
});
setFilter(location.hash.slice(1));
const grids = document.querySelectorAll(".grid");
if ("IntersectionObserver" in window) {
  const watcher = new IntersectionObserver(entries => {
    for (const e of entries) if (e.isIntersecting) { draw(e.target); watcher.unobserve(e.target); }
  }, {rootMargin: "1000px"});
  grids.forEach(g => watcher.observe(g));
  document.querySelectorAll(".card:not([hidden]) .grid").forEach((g, i) => { if (i < __DRAWN_AT_LOAD__) draw(g); });
} else {
  grids.forEach(draw);
}
""".replace("__DRAWN_AT_LOAD__", str(DRAWN_AT_LOAD))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def grid_html(grid: Grid) -> str:
    """A grid as a <figure>: a placeholder the script fills with a table, and its caption."""
    h, w = grid.shape
    attrs = {"kind": grid.kind, "shape": f"{h}x{w}", "cells": grid.cells}
    if grid.wrong is not None and grid.wrong.any():
        attrs["wrong"] = "".join("1" if x else "0" for x in grid.wrong.reshape(-1).tolist())
    if grid.box is not None:
        attrs["box"] = f"{grid.box[0]}x{grid.box[1]}"
    if grid.changed is not None and grid.changed.any():
        attrs["changed"] = "".join("1" if x else "0" for x in grid.changed.reshape(-1).tolist())
    data = " ".join(f'data-{k}="{_e(v)}"' for k, v in attrs.items())
    px = CELL_PX[grid.kind]
    return (f'<figure><div class="grid" {data} style="width:{w * px + 1}px;height:{h * px + 1}px"></div>'
            f"<figcaption>{_e(grid.caption)}</figcaption></figure>")


def card_html(card: Card, anchor: str) -> str:
    """A card as a <section> with id `anchor`, classed solved or unsolved for the filters."""
    state = "solved" if card.solved else "unsolved"
    parts = [f'<section class="card {state}" id="{_e(anchor)}"><h2>{_e(card.title)} '
             f'<span class="badge">{state}</span></h2>']
    if card.note:
        parts.append(f'<p class="note">{_e(card.note)}</p>')
    for label, groups in card.rows:
        inner = "".join(f'<div class="group">{"".join(map(grid_html, group))}</div>' for group in groups)
        parts.append(f'<div class="row"><h3>{_e(label)}</h3>{inner}</div>')
    parts.append("</section>")
    return "".join(parts)


def page(title: str, summary: list[tuple[str, str]], cards: list[Card]) -> str:
    """The whole HTML document: title, summary table (label, value), filter buttons with counts, an index of
    the cards (links coloured by state) and the cards."""
    solved = sum(c.solved for c in cards)
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in summary)
    buttons = "".join(f'<button data-filter="{f}">{label} ({n})</button>' for f, label, n in
                      (("all", "All", len(cards)), ("solved", "Solved", solved),
                       ("unsolved", "Unsolved", len(cards) - solved)))
    anchors = [f"card-{i}" for i in range(len(cards))]
    index = "".join(f'<a href="#{a}" class="{"solved" if c.solved else "unsolved"}">{_e(c.title)}</a> '
                    for a, c in zip(anchors, cards))
    body = "".join(card_html(c, a) for c, a in zip(cards, anchors))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"
            f'<table class="summary">{rows}</table><nav>{buttons}</nav><div class="index">{index}</div>'
            f"{body}<script>{SCRIPT}</script></body></html>\n")
