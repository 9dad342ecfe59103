"""pass@k (and maj@k) against k as a small inline SVG: no script, no network, our own numbers only
(the view's and the report's pages embed it as is)."""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 420, 240, 44, 96, 14, 34


def curve(values: dict, prefix: str) -> list[tuple[int, float]]:
    points = []
    for key, value in values.items():
        if key.startswith(prefix) and not key.endswith("_ci") and value is not None:
            try:
                points.append((int(key[len(prefix):]), float(value)))
            except ValueError:
                continue
    return sorted(points)


def pass_at_k_svg(values: dict) -> str | None:
    """The split's pass@k and maj@k by k (log2 axis); None when there is no curve to draw."""
    series = [("pass@k", curve(values, "pass@"), "#4f81bd"), ("maj@k", curve(values, "maj@"), "#c0504d")]
    ks = sorted({k for _, points, _ in series for k, _ in points})
    if len(ks) < 2:
        return None
    span = math.log2(ks[-1]) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(k: int) -> float:
        return LEFT + plot_w * math.log2(k) / span

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="passk" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="pass@k against k">',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{LEFT - 4}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">'
                     f'{int(tick * 100)}%</text>')
    for k in ks:
        parts.append(f'<text x="{x(k):.1f}" y="{TOP + plot_h + 14}" font-size="10" text-anchor="middle">{k}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" font-size="11" text-anchor="middle">k '
                 f'(samples per prompt)</text>')
    for row, (label, points, color) in enumerate(series):
        if not points:
            continue
        path = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in points)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{x(k):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"><title>{escape(label)} k={k}: '
                  f'{100 * v:.1f}%</title></circle>' for k, v in points]
        parts.append(f'<text x="{LEFT + plot_w + 8}" y="{TOP + 14 + 16 * row}" font-size="11" fill="{color}">'
                     f'{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
