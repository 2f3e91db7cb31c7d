"""Checks on drawn matplotlib figures: do an axis's tick labels collide?"""

from __future__ import annotations

from typing import List, Tuple


def x_tick_labels(ax, renderer) -> List[Tuple[str, object]]:
    """The x tick labels ``ax`` draws (inside its view, non-empty) with their bounding boxes in pixels, left to right."""
    lo, hi = sorted(ax.get_xlim())
    span = hi - lo
    out = []
    for tick in ax.xaxis.get_major_ticks():
        label = tick.label1
        if label.get_visible() and label.get_text() and lo - 1e-9 * span <= tick.get_loc() <= hi + 1e-9 * span:
            out.append((label.get_text(), label.get_window_extent(renderer)))
    return sorted(out, key=lambda t: t[1].x0)


def colliding_x_labels(fig, min_gap_pt: float = 2.0) -> List[Tuple[int, str, str]]:
    """``(axes index, left label, right label)`` for every pair of neighbouring x tick labels closer than
    ``min_gap_pt`` points (or overlapping) after a draw of ``fig``."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    gap_px = min_gap_pt * fig.dpi / 72.0
    bad = []
    for i, ax in enumerate(fig.axes):
        labels = x_tick_labels(ax, renderer)
        for (a, box_a), (b, box_b) in zip(labels, labels[1:]):
            if box_b.x0 - box_a.x1 < gap_px:
                bad.append((i, a, b))
    return bad
