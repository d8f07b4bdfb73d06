"""A PNG of time and anonymous memory rise against size, for lazy open, save and load.

Drawn only when several sizes were run (``--sizes 256M,1G,4G``) and matplotlib is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .peers import CONTENDERS
from .report import Measurement
from .units import format_bytes

PANELS = ("lazy", "save", "load")
CASE = "checkpoint"
MIB = 1 << 20
GIB = 1 << 30


def unavailable() -> str | None:
    """Why no chart can be drawn here, or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "no chart: matplotlib is not installed (pip install -e '.[bench]')"
    return None


def draw(measurements: list[Measurement], path: Path) -> str | None:
    """Draw the chart into ``path``; return a note when it is not drawn (and then remove a
    chart left by an earlier run, which would not match the JSON beside it)."""
    rows = [m for m in measurements if m["case"] == CASE and m.get("ok") and m.get("best")]
    why_not = unavailable()
    if not why_not and len({m["size"] for m in rows}) < 2:
        why_not = "no chart: it needs several sizes (--sizes 256M,1G,2G)"
    if why_not:
        path.unlink(missing_ok=True)
        return why_not
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    palette = plt.get_cmap("tab20")
    colours = {name: palette(i % 20) for i, name in enumerate(CONTENDERS)}
    sizes_run = sorted({m["size"] for m in rows})
    figure, axes = plt.subplots(2, len(PANELS), figsize=(5 * len(PANELS), 8), squeeze=False)
    for column, op in enumerate(PANELS):
        lines: dict[str, list[Measurement]] = {}
        for m in rows:
            if m["op"] == op:
                lines.setdefault(m["label"], []).append(m)
        for label, points in sorted(lines.items()):
            points.sort(key=lambda m: m["size"])
            sizes = [m["size"] / GIB for m in points]
            role = points[0]["role"]
            style: dict[str, object] = {
                "color": colours[points[0]["contender"]],
                "marker": "o",
                "label": label,
                "linestyle": "--" if role in ("limit", "memory") else "-",
            }
            style.update({"linewidth": 2.5} if role == "subject" else {"alpha": 0.8})
            axes[0][column].plot(sizes, [m["best"] for m in points], **style)
            axes[1][column].plot(sizes, [(m["d_anon"] or 0) / MIB for m in points], **style)
        axes[0][column].set_title(f"{op} ({CASE})")
        axes[0][column].set_ylabel("seconds (best of the alternating runs)")
        axes[1][column].set_ylabel("anonymous memory rise during the run (MiB)")
        axes[0][column].set_yscale("log")
        axes[1][column].set_yscale("symlog", linthresh=1.0)  # a rise of 0 is common
        axes[1][column].set_ylim(bottom=0)
        axes[1][column].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        for axis in (axes[0][column], axes[1][column]):
            axis.set_xscale("log", base=2)
            axis.set_xticks([size / GIB for size in sizes_run])
            axis.set_xticklabels([format_bytes(size) for size in sizes_run])
            axis.xaxis.set_minor_locator(NullLocator())
            axis.set_xlabel("checkpoint size")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
