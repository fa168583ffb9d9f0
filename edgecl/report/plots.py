"""PNG plots of a report (matplotlib, Agg backend: no display needed).

- accuracy_per_phase.png: accuracy on all classes seen so far after each phase, one line per
  method (mean over its runs) with a band of ± one standard deviation over seeds and folds;
  one-phase methods (joint) are a dashed horizontal line. When a few methods lie far below the
  rest (finetune), a second panel zooms on the top cluster.
- efficiency.png: A_last against mean seconds per memory update per method (log x), error bars;
  methods without a memory (finetune, joint) are horizontal reference lines.
- matrix/<method>.png: the accuracy matrix R[i][j] (task j after phase i) of the method's first run.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgecl.fileio import atomic_write_with
from edgecl.report.aggregate import MethodGroup, Workspace


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120,
                                                    bbox_inches="tight"))
    _plt().close(fig)
    return path


def _style(i: int, n: int):
    plt = _plt()
    colors = plt.get_cmap("tab10" if n <= 10 else "tab20").colors
    return colors[i % len(colors)], ("-", "--", ":", "-.")[(i // len(colors)) % 4]


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_") or "method"


def _mean_std_per_phase(group: MethodGroup):
    import numpy as np

    curves = group.phase_accuracy()
    length = min(len(c) for c in curves)
    data = np.array([c[:length] for c in curves], dtype=float)
    std = data.std(axis=0, ddof=1) if len(data) > 1 else np.zeros(length)
    return data.mean(axis=0), std


def _draw_phase_curves(ax, groups, n_phases: int) -> None:
    import numpy as np

    for i, group in enumerate(groups):
        color, style = _style(i, len(groups))
        mean, std = _mean_std_per_phase(group)
        label = f"{group.label} (n={len(group.runs)})"
        if len(mean) == 1 and n_phases > 1:  # joint: one phase over every class
            ax.axhline(mean[0], color=color, linestyle="--", linewidth=1.2, label=label)
            ax.axhspan(mean[0] - std[0], mean[0] + std[0], color=color, alpha=0.12)
            continue
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, color=color, linestyle=style, marker="o", markersize=3.5,
                linewidth=1.5, label=label)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    ax.set_xticks(range(1, n_phases + 1))
    ax.set_xlabel("phase (task learned)")
    ax.grid(True, alpha=0.3)


def accuracy_per_phase(ws: Workspace, path: Path) -> Path:
    plt = _plt()
    groups = [g for g in ws.groups if g.phase_accuracy() and min(map(len, g.phase_accuracy()))]
    n_phases = max((len(c) for g in groups for c in g.phase_accuracy()), default=1)
    # When most methods sit close together near the top (replay) and a few far below (finetune),
    # a second panel zooms on the top cluster so its lines can be told apart.
    lows = sorted(float(_mean_std_per_phase(g)[0].min()) for g in groups)
    upper = [v for v in lows if v >= lows[len(lows) // 2] - 0.1] if lows else []
    zoom = len(groups) > 2 and upper and lows[0] < upper[0] - 0.2
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(13 if zoom else 7.5, 4.8),
                             squeeze=False)
    ax = axes[0][0]
    _draw_phase_curves(ax, groups, n_phases)
    ax.set_ylabel("accuracy on all classes seen so far")
    ax.set_ylim(0, 1.02)
    ax.set_title("Accuracy after each phase (mean ± std over runs)")
    if zoom:
        close = [g for g in groups if float(_mean_std_per_phase(g)[0].min()) >= upper[0]]
        low = min(float((m - s).min()) for m, s in map(_mean_std_per_phase, close))
        zax = axes[0][1]
        _draw_phase_curves(zax, groups, n_phases)
        zax.set_ylim(max(0.0, low - 0.02), 1.005)
        zax.set_title("Zoom on the top methods")
        handles, labels = zax.get_legend_handles_labels()
        ax = zax
    ax.legend(fontsize=7 if len(groups) > 8 else 8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=2 if len(groups) > 16 else 1, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def efficiency(ws: Workspace, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    stats = [(g, g.stats()) for g in ws.groups]
    timed = [(g, s) for g, s in stats if s["mem_update_s_mean"] is not None
             and s["A_last_mean"] is not None]
    untimed = [(g, s) for g, s in stats if s["mem_update_s_mean"] is None
               and s["A_last_mean"] is not None]
    for i, (group, s) in enumerate(timed):
        color, _ = _style(i, len(timed))
        x, xstd = s["mem_update_s_mean"], s["mem_update_s_std"] or 0.0
        # on a log axis a bar below zero cannot be drawn: stop the left arm short of zero
        xerr = [[min(xstd, 0.9 * x)], [xstd]]
        ax.errorbar(x, s["A_last_mean"], xerr=xerr,
                    yerr=s["A_last_std"] or 0, fmt="o", color=color, markersize=6, capsize=3,
                    label=f"{group.label} (n={len(group.runs)})")
    for j, (group, s) in enumerate(untimed):
        ax.axhline(s["A_last_mean"], color="0.4", linestyle=(":", "--", "-.")[j % 3],
                   linewidth=1.1, label=f"{group.label}: no memory update (n={len(group.runs)})")
        ax.annotate(group.label, (0.01, s["A_last_mean"]), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=7, color="0.3")
    values = [s["mem_update_s_mean"] for _, s in timed]
    if values and min(values) > 0:  # samplers differ by orders of magnitude: log x, padded
        ax.set_xscale("log")
        lefts = [s["mem_update_s_mean"] - min(s["mem_update_s_std"] or 0.0,
                                               0.9 * s["mem_update_s_mean"]) for _, s in timed]
        rights = [s["mem_update_s_mean"] + (s["mem_update_s_std"] or 0.0) for _, s in timed]
        ax.set_xlim(min(lefts) / 2, max(rights) * 2)
    ax.set_xlabel("memory-update time (s per update, mean; log scale)")
    ax.set_ylabel("A_last (accuracy after the last phase)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3, which="both")
    ax.set_title("Final accuracy against memory-update cost (mean ± std)")
    ax.legend(fontsize=7 if len(stats) > 8 else 8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=2 if len(stats) > 16 else 1, frameon=False)
    return _save(fig, path)


def accuracy_matrix(group: MethodGroup, path: Path) -> Path:
    import numpy as np

    plt = _plt()
    run = group.runs[0]
    matrix = run.results.get("accuracy_matrix", [])
    rows = len(matrix)
    cols = max((len(r) for r in matrix), default=0)
    data = np.full((rows, cols), np.nan)
    for i, row in enumerate(matrix):
        data[i, :len(row)] = row
    fig, ax = plt.subplots(figsize=(1.1 * cols + 2.2, 0.9 * rows + 1.6))
    image = ax.imshow(np.ma.masked_invalid(data), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(rows):
        for j in range(cols):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if data[i, j] < 0.6 else "black")
    ax.set_xticks(range(cols), [f"task {j + 1}" for j in range(cols)])
    ax.set_yticks(range(rows), [f"after {i + 1}" for i in range(rows)])
    ax.set_xlabel("accuracy on the classes of")
    ax.set_ylabel("phase")
    ax.set_title(f"{group.label}\n{run.name}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    return _save(fig, path)


def write_plots(ws: Workspace, out: Path) -> list[Path]:
    out = Path(out)
    written = []
    if not ws.groups:
        return written
    written.append(accuracy_per_phase(ws, out / "accuracy_per_phase.png"))
    written.append(efficiency(ws, out / "efficiency.png"))
    for group in ws.groups:
        if group.runs and group.runs[0].results.get("accuracy_matrix"):
            written.append(accuracy_matrix(group, out / "matrix" / f"{safe_name(group.label)}.png"))
    return written
