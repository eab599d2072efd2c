"""SVG charts drawn on the server: bars over time, with a title, axis labels and a tooltip per bar.

No script, no inline style (the CSP forbids both): presentation attributes and CSS classes only.
Jinja2 autoescaping does not apply to the returned markup, so every text is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH = 640
HEIGHT = 180
PAD_LEFT = 56
PAD_BOTTOM = 24
PAD_TOP = 10


def _short(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    if value and abs(value) < 1:
        # small spends: two significant digits in plain decimals ("0.000059"), not "0.00" or "5.9e-05"
        return f"{value:.{max(2, 1 - math.floor(math.log10(abs(value))))}f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{int(value)}"


def bars(
    labels: Sequence[str], values: Sequence[float], *, title: str, unit: str = "", every: int = 1, css: str = ""
) -> Markup:
    """A bar chart; ``labels[i]`` is shown under every ``every``-th bar and in each bar's tooltip."""
    top = max(values, default=0) or 1
    inner_w, inner_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - PAD_TOP
    step = inner_w / max(1, len(values))
    parts = [
        f'<svg class="chart {escape(css)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = PAD_TOP + inner_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>')
        label = escape(unit + _short(top * fraction))
        parts.append(f'<text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = inner_h * value / top
        x = PAD_LEFT + index * step
        tip = escape(f"{label}: {unit}{_short(value)}")
        parts.append(
            f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{PAD_TOP + inner_h - h:.1f}" '
            f'width="{max(1.0, step * 0.8):.1f}" height="{h:.1f}" data-value="{value}"><title>{tip}</title></rect>'
        )
        if index % every == 0:
            parts.append(
                f'<text class="axis" x="{x + step / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 -- every text above is escaped
