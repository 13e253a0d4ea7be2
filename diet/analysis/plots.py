"""Paper figures (PNG), one set per block, drawn from the same tables the paper shows.

Byte-stable output: Agg canvas on a bare Figure (no pyplot state), matplotlib's default style
(ignores any user matplotlibrc), fixed size and dpi, no "Software" metadata, sorted inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")

import matplotlib.style  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from diet.analysis.blocks import LABELS, METHOD_ORDER, Block, method_rank, task_rank  # noqa: E402
from diet.dims.choice import sort_key  # noqa: E402
from diet.io import atomic_write  # noqa: E402
from diet.registry import Registry  # noqa: E402
from diet.analysis.tables import score_columns, TABLES  # noqa: E402

FIGSIZE = (6.4, 4.0)
DPI = 100
THRESHOLD = LABELS["threshold"]  # the vote-threshold column of the ablation table
Records = dict[str, dict[str, Any]]  # config_hash -> record (for the mask statistics)
FigureBuilder = Callable[[Block, Records], "list[tuple[str, Figure]]"]
FIGURES: Registry[FigureBuilder] = Registry("figure")


def new_figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def method_color(method: str) -> Any:
    # one colour per method in every figure
    palette = matplotlib.colormaps["tab10"].colors
    return palette[method_rank(method)[0] % len(palette)] if method in METHOD_ORDER else "0.4"


def _label(method: str, variant: str) -> str:
    return method if not variant else f"{method} [{variant}]"


@FIGURES.register("avg_vs_sparsity")
def avg_vs_sparsity(block: Block, records: Records) -> list[tuple[str, Figure]]:
    """Average score vs the fraction of non-embedding parameters removed, one line per method (±1 se); dense as a
    dashed line. Parameters, not each method's knob: LLM-Pruner's ratio and SliceGPT's hidden width mean other
    models at the same number (docs/study.md)."""
    table = TABLES.get("main")(block)
    # a perplexity-only block has no accuracy average to draw (perplexities are never averaged)
    if table is None or "average" not in table.data or not (table.data["method"] != "dense").any():
        return []
    data = table.data.assign(variant=table.data.get("variant", ""))
    fig, ax = new_figure()
    markers = "osD^vP*X"  # variants of one method share its colour, not its marker
    seen: dict[str, int] = {}
    for (method, variant), rows in sorted(data.groupby(["method", "variant"], sort=False),
                                          key=lambda item: (method_rank(item[0][0]), item[0][1])):
        marker = markers[seen.setdefault(method, 0) % len(markers)]
        seen[method] += 1
        if method == "dense":
            ax.axhline(rows["average"].iloc[0], color=method_color(method), linestyle="--", label="dense")
            continue
        rows = rows.sort_values("non_embedding")
        ax.errorbar(rows["non_embedding"], rows["average"], yerr=rows["average_se"], marker=marker, capsize=3,
                    color=method_color(method), label=_label(method, variant))
    ax.set(xlabel="fraction of non-embedding parameters removed", ylabel="average score (points, ±1 se)",
           title=f"{block.model}, {block.docs_title}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return [(f"avg_vs_sparsity__{block.label}", fig)]


@FIGURES.register("threshold")
def accuracy_vs_threshold(block: Block, records: Records) -> list[tuple[str, Figure]]:
    """Average score vs vote threshold (ticks also give k votes), one line per threshold-ablation group."""
    table = TABLES.get("ablation_threshold")(block)
    if table is None:
        return []
    data = table.data
    fixed = [c for c in data.columns if c in ("method", "sparsity", *(LABELS[key] for key in ("calib_n", "stat", "scope", "merge")))]
    fig, ax = new_figure()
    for key, rows in data.groupby(fixed, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c}={v:g}" if isinstance(v, float) else f"{v}" for c, v in zip(fixed, key))
        rows = rows.sort_values(THRESHOLD)
        ax.errorbar(rows[THRESHOLD], rows["average"], yerr=rows["average_se"], marker="o", capsize=3,
                    label=label)
    ticks = data[[THRESHOLD, "k"]].drop_duplicates().sort_values(THRESHOLD)
    ax.set_xticks(ticks[THRESHOLD].tolist(),
                  [f"{t:.2f}\nk={k}" for t, k in zip(ticks[THRESHOLD], ticks["k"])], fontsize="small")
    ax.set(xlabel="vote threshold (k = votes needed)", ylabel="average score (points, ±1 se)",
           title=f"{block.model}, {block.docs_title}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return [(f"threshold__{block.label}", fig)]


@FIGURES.register("dims")
def accuracy_by_dims(block: Block, records: Records) -> list[tuple[str, Figure]]:
    """Average and above-chance average per pruned dimension type (±1 se), dense as dashed lines; one
    figure per group of runs that differ only in `dims` (method, sparsity and budget fixed)."""
    table = TABLES.get("ablation_dims")(block)
    if table is None:
        return []
    data = table.data
    fixed = [c for c in data.columns if c in ("method", "sparsity", "sparsity_of")]
    dense = next((run for run in block.main if run["method"] == "dense"), None)
    figures = []
    for index, (key, rows) in enumerate(data.groupby(fixed, sort=True)):
        rows = rows.assign(order=[sort_key(d) for d in rows["dims"]])
        rows = rows.sort_values(["order", "dims"])
        fig, ax = new_figure()
        x = np.arange(len(rows))
        columns = [("average", "average", 0)]
        if "avg_above_chance" in rows and rows["avg_above_chance"].notna().any():
            columns.append(("avg_above_chance", "tasks above chance", 1))
        width = 0.8 / len(columns)
        palette = matplotlib.colormaps["tab10"].colors
        for column, label, slot in columns:
            offset = (slot - (len(columns) - 1) / 2) * width
            ax.bar(x + offset, rows[column], width, yerr=rows[f"{column}_se"], capsize=3, color=palette[slot],
                   label=label)
            if dense is not None:
                level = score_columns(dense, block)[column]
                ax.axhline(level, color=palette[slot], linestyle="--", linewidth=1, label=f"dense, {label}")
        ax.set_xticks(x, [f"{d}\n{a:.1%} of dim\n{p:.1%} params" for d, a, p in
                          zip(rows["dims"], rows["actual"], rows["non_embedding"])], fontsize="small")
        of = {run["sparsity_of"] for run in block.runs if run["config_hash"] in set(rows["config_hash"])}
        budget = "of non-embedding params" if of == {"params"} else "of each pruned dim"
        method, sparsity = rows["method"].iloc[0], rows["sparsity"].iloc[0]
        low = min((rows[c] - rows[f"{c}_se"]).min() for c, _, _ in columns)
        ax.set_ylim(bottom=max(0.0, 5 * np.floor(low / 5) - 5))
        ax.set_ylabel("score (points, ±1 se)")
        ax.set_title(f"{block.model}, {block.docs_title}: {method}, {sparsity:.0%} {budget}", fontsize="medium")
        ax.legend(fontsize="x-small", loc="lower right")
        fig.tight_layout()
        suffix = "" if index == 0 else f"__{index}"
        figures.append((f"dims__{block.label}{suffix}", fig))
    return figures


def diet_runs(block: Block, records: Records) -> list[dict[str, Any]]:
    """The first DIET run of the main table at each sparsity (default settings first) with a mask."""
    runs: dict[float, dict[str, Any]] = {}
    for run in block.main:
        if run["method"] == "diet" and (records[run["config_hashes"][0]].get("mask") or {}).get("kept_per_layer"):
            runs.setdefault(run["sparsity"], run)
    return [runs[s] for s in sorted(runs)]


@FIGURES.register("kept_per_layer")
def kept_per_layer(block: Block, records: Records) -> list[tuple[str, Figure]]:
    """MLP channels DIET keeps in each layer, one line per sparsity."""
    runs = diet_runs(block, records)
    if not runs:
        return []
    fig, ax = new_figure()
    for run in runs:
        kept = records[run["config_hashes"][0]]["mask"]["kept_per_layer"]
        ax.plot(range(len(kept)), kept, marker=".", label=_label(f"sparsity {run['sparsity']:.2f}", run["variant"]))
    ax.set(xlabel="layer", ylabel="kept MLP channels", title=f"DIET, {block.model}, {block.docs_title}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return [(f"kept_per_layer__{block.label}", fig)]


@FIGURES.register("jaccard")
def jaccard_heatmap(block: Block, records: Records) -> list[tuple[str, Figure]]:
    """Jaccard overlap of the per-task keep-masks, one heatmap per DIET sparsity."""
    figures = []
    for run in diet_runs(block, records):
        pairs = records[run["config_hashes"][0]]["mask"].get("jaccard") or {}
        tasks = sorted({t for pair in pairs for t in pair.split("|")}, key=task_rank)
        if len(tasks) < 2:
            continue
        index = {task: i for i, task in enumerate(tasks)}
        matrix = np.eye(len(tasks))
        for pair, value in pairs.items():
            a, b = pair.split("|")
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
        fig, ax = new_figure()
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", fontsize="small")
        ax.set_yticks(range(len(tasks)), tasks, fontsize="small")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                    color="black" if value > 0.6 else "white")
        fig.colorbar(image, ax=ax, label="Jaccard of kept channels")
        ax.set_title(f"DIET task masks, {block.model}, sparsity {run['sparsity']:.2f}")
        fig.tight_layout()
        figures.append((f"jaccard__{block.label}__s{run['sparsity']:.2f}", fig))
    return figures


def build_figures(blocks: list[Block], records: Records) -> list[tuple[str, Figure]]:
    with matplotlib.style.context("default"):  # figures are drawn (and their text laid out) here
        figures = [item for block in blocks for name in FIGURES for item in FIGURES.get(name)(block, records)]
    return sorted(figures, key=lambda item: item[0])


def write_figures(figures: list[tuple[str, Figure]], out_dir: str | Path) -> list[Path]:
    paths = []
    with matplotlib.style.context("default"):
        for name, fig in figures:
            paths.append(atomic_write(Path(out_dir) / f"{name}.png",
                                      lambda p, fig=fig: fig.savefig(p, format="png", dpi=DPI,
                                                                     metadata={"Software": None})))
    return paths
