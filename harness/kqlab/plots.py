"""The bench report's charts, drawn with matplotlib (Debian's python3-matplotlib) as SVG.

One kind of chart: a few series over the same categories (connection counts), each point a median with a bar from
the lowest to the highest run. The SVG is deterministic (no date, fixed ids), keeps its text as text, and is small
enough to commit beside the report.
"""
from __future__ import annotations

import io

# Colour-blind-safe (Okabe and Ito); the baseline, listed last by the bench, gets the dark grey.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
BASELINE_COLOUR = "#444444"


def _label(value: float) -> str:
    """A tick's label: 1.5k, 2M, 250."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def line_chart(title: str, categories: list[str], series: dict[str, list[tuple[float, float, float] | None]],
               y_label: str, x_label: str = "connections", baseline: str | None = None, log_y: bool = False) -> str:
    """`series`: name -> one (median, lowest, highest) per category, or None where it was not measured. `log_y`:
    a logarithmic y axis, for values that span several powers of ten (latencies)."""
    import matplotlib  # here: only the bench draws, and matplotlib takes a moment to load

    matplotlib.use("svg")
    from matplotlib import pyplot

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "kqlab", "font.family": "sans-serif",
                                "font.size": 10, "axes.spines.top": False, "axes.spines.right": False}):
        figure, axes = pyplot.subplots(figsize=(6.8, 3.8))
        try:
            colours = iter(COLOURS)
            for number, (name, points) in enumerate(series.items()):
                colour = BASELINE_COLOUR if name == baseline else next(colours)
                # Series side by side within a category, so that their spread bars do not hide each other.
                offset = (number - (len(series) - 1) / 2) * 0.06
                placed = [(index + offset, point) for index, point in enumerate(points) if point]
                if not placed:
                    continue
                xs = [x for x, _ in placed]
                medians = [point[0] for _, point in placed]
                spread = [[point[0] - point[1] for _, point in placed], [point[2] - point[0] for _, point in placed]]
                axes.errorbar(xs, medians, yerr=spread, color=colour, marker="o", markersize=4, linewidth=2,
                              capsize=0, linestyle="--" if name == baseline else "-", label=name)
            axes.set_xticks(range(len(categories)), categories)
            axes.set_xlim(-0.5, len(categories) - 0.5)
            if log_y:
                axes.set_yscale("log")
            else:
                axes.set_ylim(bottom=0)
            axes.grid(axis="y", color="#dddddd")
            axes.yaxis.set_major_formatter(lambda value, _: _label(value))
            axes.set_title(title, fontsize=12)
            axes.set_xlabel(x_label)
            axes.set_ylabel(y_label)
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9,
                        title="dot: median\nbar: lowest to highest run", title_fontsize=8)
            figure.tight_layout()
            svg = io.StringIO()
            figure.savefig(svg, format="svg", metadata={"Date": None}, bbox_inches="tight")
        finally:
            pyplot.close(figure)
    return svg.getvalue()
