"""SVG charts written by hand (no plotting library): the bench report's plots, small enough to read as text.

One kind of chart: a few series over the same categories (connection counts), each point a median with a bar
from the lowest to the highest run.
"""
from __future__ import annotations

import math
from html import escape

# Colour-blind-safe (Okabe and Ito); the baseline, listed last by the bench, gets the dark grey.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
BASELINE_COLOUR = "#444444"

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 72, 150, 40, 56


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def _label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def line_chart(title: str, categories: list[str], series: dict[str, list[tuple[float, float, float] | None]],
               y_label: str, x_label: str = "connections", baseline: str | None = None, log_y: bool = False) -> str:
    """`series`: name -> one (median, lowest, highest) per category, or None where it was not measured. `log_y`:
    a logarithmic y axis, for values that span several powers of ten (latencies)."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [value for points in series.values() for point in points if point for value in point if value > 0]
    if log_y:
        bottom_power = math.floor(math.log10(min(values, default=1.0)))
        top_power = max(math.ceil(math.log10(max(values, default=10.0))), bottom_power + 1)
        ticks = [10.0 ** power for power in range(bottom_power, top_power + 1)]
    else:
        top_value = _nice_ceiling(max(values, default=1.0) * 1.05)
        ticks = [top_value * tick / 5 for tick in range(6)]

    def x(index: int) -> float:
        return LEFT + plot_width * (index + 0.5) / len(categories)

    def y(value: float) -> float:
        if log_y:
            share = (math.log10(max(value, ticks[0])) - bottom_power) / (top_power - bottom_power)
        else:
            share = value / top_value
        return TOP + plot_height * (1 - share)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f'<title>{escape(title)}</title>',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for value in ticks:  # horizontal grid and the y axis's labels
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_width}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{_label(value)}</text>')
    for index, category in enumerate(categories):
        parts.append(f'<text x="{x(index):.1f}" y="{TOP + plot_height + 18}" text-anchor="middle">'
                     f'{escape(category)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_height}" stroke="#333"/>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_width}" y1="{TOP + plot_height}" y2="{TOP + plot_height}" '
                 f'stroke="#333"/>')
    parts.append(f'<text x="{LEFT + plot_width / 2}" y="{HEIGHT - 12}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(16 {TOP + plot_height / 2}) rotate(-90)" text-anchor="middle">'
                 f'{escape(y_label)}</text>')

    colours = iter(COLOURS)
    for number, (name, points) in enumerate(series.items()):
        colour = BASELINE_COLOUR if name == baseline else next(colours)
        dash = ' stroke-dasharray="6 4"' if name == baseline else ""
        # Series side by side within a category, so that their spread bars do not hide each other.
        offset = (number - (len(series) - 1) / 2) * 6
        placed = [(x(i) + offset, point) for i, point in enumerate(points) if point]
        if len(placed) > 1:
            path = " ".join(f"{px:.1f},{y(point[0]):.1f}" for px, point in placed)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for px, (median, low, high) in placed:
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" '
                         f'stroke="{colour}" stroke-width="1.5"/>')
            parts.append(f'<circle cx="{px:.1f}" cy="{y(median):.1f}" r="3.5" fill="{colour}">'
                         f'<title>{escape(name)}: {median:.4g} ({low:.4g} to {high:.4g})</title></circle>')
        legend_y = TOP + 10 + 20 * number
        parts.append(f'<line x1="{WIDTH - RIGHT + 14}" x2="{WIDTH - RIGHT + 38}" y1="{legend_y}" y2="{legend_y}" '
                     f'stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 44}" y="{legend_y + 4}">{escape(name)}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT + 14}" y="{TOP + 20 + 20 * len(series)}" fill="#666" font-size="10">'
                 f'dot: median; bar: lowest</text>')
    parts.append(f'<text x="{WIDTH - RIGHT + 14}" y="{TOP + 32 + 20 * len(series)}" fill="#666" font-size="10">'
                 f'to highest run</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
