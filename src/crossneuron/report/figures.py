"""The report's figures (matplotlib, no display): each function returns a Figure or None."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from ..errors import CrossneuronError  # noqa: E402
from ..result import Result  # noqa: E402
from .load import Run  # noqa: E402

MODE_STYLE = {
    "uniform-layer": ("tab:blue", "o"),
    "uniform-patch": ("tab:orange", "s"),
    "uniform-filters": ("tab:green", "^"),
    "max-granularity": ("tab:red", "D"),
}
BASELINE = dict(color="black", marker="*", markersize=14, linestyle="none")


def _load_masks(path: Path) -> dict[str, torch.Tensor]:
    """A run's masks.safetensors (safetensors: no code runs on load), or one clear error."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        reason = " ".join(str(exc).split())[:120]
        raise CrossneuronError(f"{path} is corrupt ({reason}): re-run `crossneuron optimize` into that run folder "
                               "(it resumes from its records)") from None  # fmt: skip


def _style(mode: str):
    return MODE_STYLE.get(mode, ("tab:gray", "x"))


def savings_vs_drop(run: Run):
    """The main figure: test-split MACs saved (% of network) against the accuracy drop on the test split
    (left) and on the check images (right), one curve per mode through its epsilons, the 2018 diagonal
    at its own drop, the oracle as a line."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    oracle = run.any_result().oracle_pct_network
    for ax, key, where in ((axes[0], "test_drop", "test split"), (axes[1], "check_drop", "check images")):
        for mode, by_eps in run.results.items():
            color, marker = _style(mode)
            points = [(getattr(by_eps[e], key), by_eps[e].macs_saved_pct_network, e) for e in sorted(by_eps)
                      if getattr(by_eps[e], key) is not None]  # fmt: skip
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], color=color, marker=marker, label=mode)
            labels: dict[tuple[float, float], list[str]] = {}  # one label per point, its epsilons joined
            for x, y, e in points:
                labels.setdefault((x, y), []).append(f"{e:g}")
            for (x, y), eps in labels.items():
                ax.annotate("eps " + ", ".join(eps), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                            color=color)  # fmt: skip
        ax.axhline(oracle, color="gray", linestyle="--", label=f"oracle (all true zeros): {oracle:.1f}%")
        b = run.baseline
        drop = None if not b else b["test"]["drop"] if key == "test_drop" else (b.get("check") or {}).get("drop")
        if drop is not None:
            ax.plot([drop], [b["test"]["macs_saved_pct_network"]], **BASELINE, label="2018 diagonal baseline")
        ax.axvline(0, color="gray", linewidth=0.8)
        ax.set_xlabel(f"accuracy drop on the {where} (points)")
        ax.set_title(f"against the drop on the {where}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MACs saved on the test split (% of network)")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("MACs saved against the accuracy they cost on images the search never saw")
    fig.tight_layout()
    return fig


def savings_vs_eps(run: Run):
    """Test-split MACs saved against epsilon, % of network and % of sites, baseline and oracle."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    any_result = run.any_result()
    for ax, key, oracle_key, title in (
        (axes[0], "macs_saved_pct_network", "oracle_pct_network", "of network MACs"),
        (axes[1], "macs_saved_pct_sites", "oracle_pct_sites", "of site MACs (the 2019 denominator)"),
    ):
        for mode, by_eps in run.results.items():
            color, marker = _style(mode)
            eps = sorted(by_eps)
            ax.plot(eps, [getattr(by_eps[e], key) for e in eps], color=color, marker=marker, label=mode)
        ax.axhline(getattr(any_result, oracle_key), color="gray", linestyle="--", label="oracle (all true zeros)")
        if run.baseline:
            b = run.baseline
            ax.plot([max(0.0, b["calib"]["drop"])], [b["test"][key]], **BASELINE,
                    label=f"2018 diagonal baseline (test drop {b['test']['drop']:.2f} pts)")  # fmt: skip
        ax.set_xlabel("accuracy budget epsilon (points, on calibration images)")
        ax.set_ylabel("MACs saved on the test split (%)")
        ax.set_title(f"% {title}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="center right")
    fig.suptitle("MACs saved against the accuracy budget")
    fig.tight_layout()
    return fig


def modes_bars(run: Run):
    """Bars: MACs saved (% of network, test split) per mode at each epsilon."""
    eps = run.eps
    modes = run.modes
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(eps) * max(1, len(modes)) / 2), 4))
    width = 0.8 / len(modes)
    top = 0.0
    for i, mode in enumerate(modes):
        color, _ = _style(mode)
        xs = [k + (i - (len(modes) - 1) / 2) * width for k in range(len(eps))]
        ys = [run.results[mode][e].macs_saved_pct_network if e in run.results[mode] else 0 for e in eps]
        bars = ax.bar(xs, ys, width, color=color, label=mode)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
        top = max([top, *ys])
    if run.baseline:
        ax.axhline(run.baseline["test"]["macs_saved_pct_network"], color="black", linestyle=":",
                   label=f"diagonal baseline (drop {run.baseline['test']['drop']:.2f} pts)")  # fmt: skip
    if run.baseline:
        top = max(top, run.baseline["test"]["macs_saved_pct_network"])
    ax.set_ylim(0, 1.35 * top + 1e-9)  # room for the legend above the bars
    ax.set_xticks(range(len(eps)), [f"eps = {e:g}" for e in eps])
    return _finish(fig, ax, "MACs saved (% of network, test split)", "Modes side by side at each accuracy budget")


def _finish(fig, ax, ylabel: str, title: str):
    """Bar charts' common ending: y label, title, legend, horizontal grid."""
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _finish_plane(fig, ax, oracle: float, oracle_label: str, xlabel: str, title: str):
    """The MACs-saved / test-drop plane's common ending: the oracle as a dashed line, labels, legend, grid."""
    ax.axhline(oracle, color="gray", linestyle="--", label=oracle_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MACs saved (% of network, test split)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def per_site(result: Result, title: str):
    """Per site: its share of network MACs, the MACs saved there and its oracle (% of network)."""
    rows = result.per_site or []
    if not rows:
        return None
    names = [r["name"] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(rows)), 4.2))
    ax.bar(xs, [r["share_of_network_pct"] for r in rows], 0.8, color="lightgray", label="site's share of network")
    ax.bar(xs, [r["oracle_pct_network"] for r in rows], 0.55, color="lightsteelblue", label="oracle (true zeros)")
    ax.bar(xs, [r["macs_saved_pct_network"] for r in rows], 0.3, color="tab:blue", label="saved by the masks")
    ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=8)
    return _finish(fig, ax, "MACs (% of network, test split)", title)


def _mask_image(ax, mask: torch.Tensor, title: str, fontsize=7):
    ax.imshow(mask.float().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def masks_by_site(masks_path: Path, title: str, order: list[str] | None = None):
    """Channel 0's mask of every site, in execution order (white: computed, black: predicted when
    the computed positions are zero)."""
    masks = _load_masks(masks_path)
    names = [n for n in (order or []) if n in masks] or list(masks)
    cols = min(6, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.5 * rows + 0.5), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        m = masks[name]
        _mask_image(ax, m[0], f"{name}\n{100 * (1 - m.float().mean()):.0f}% predicted")
    fig.suptitle(f"{title}: channel 0 of every site (white computed, black predicted)", fontsize=9)
    fig.tight_layout()
    return fig


def masks_of_site(masks_path: Path, site: str, title: str, limit: int = 256):
    """Every channel's mask of one site in a grid (at most ``limit`` channels)."""
    m = _load_masks(masks_path)[site]
    shown = m[:limit]
    cols = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(14, 0.9 * cols + 1), min(14, 0.9 * rows + 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c, ax in enumerate(axes.flat[: len(shown)]):
        ax.imshow(shown[c].float().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    more = f" (first {limit} of {len(m)})" if len(m) > limit else ""
    fig.suptitle(f"{title}: all channels of {site}{more}", fontsize=9)
    fig.tight_layout()
    return fig


def trajectory(run: Run, mode: str):
    """The layer quantizer's path: calibration accuracy against MACs saved, chosen points marked."""
    by_eps = run.results[mode]
    steps = next(iter(by_eps.values())).trajectory
    if not steps:
        return None
    color, marker = _style(mode)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    full = [s for s in steps if not s.get("cut_short") and s.get("stage", "layer") == "layer"]
    refine = [s for s in steps if not s.get("cut_short") and s.get("stage") == "refine"]
    cut = [s for s in steps if s.get("cut_short")]
    ax.plot([s["macs_saved_pct_network"] for s in full], [s["calib_accuracy"] for s in full], color=color,
            marker=".", linewidth=0.8, label="layer quantizer (SPEC 6)")  # fmt: skip
    if refine:
        ax.plot([s["macs_saved_pct_network"] for s in refine], [s["calib_accuracy"] for s in refine],
                color="tab:purple", marker=".", linewidth=0.8,
                label="refine (forward greedy, kept and rejected moves)")  # fmt: skip
    if cut:
        ax.scatter([s["macs_saved_pct_network"] for s in cut], [s["calib_accuracy"] for s in cut],
                   facecolors="none", edgecolors="gray", s=18, label="cut short (accuracy at most)")  # fmt: skip
    base = next(iter(by_eps.values())).calib_base_accuracy
    ax.axhline(base, color="black", linewidth=0.8, label="no prediction")
    chosen: dict[int, list[float]] = {}
    for e, r in sorted(by_eps.items()):
        chosen.setdefault(r.chosen_step, []).append(e)
    for step, eps in chosen.items():
        s = steps[step]
        ax.plot(s["macs_saved_pct_network"], s["calib_accuracy"], marker=marker, color=color, markersize=9,
                markeredgecolor="black", linestyle="none")  # fmt: skip
        ax.annotate("eps " + ", ".join(f"{e:g}" for e in eps), (s["macs_saved_pct_network"], s["calib_accuracy"]),
                    fontsize=8, xytext=(5, -12), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("MACs saved (% of network, calibration images)")
    ax.set_ylabel("top-1 accuracy (%, calibration images)")
    ax.set_title(f"{mode}: layer quantizer trajectory ({len(steps)} steps)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def retraining(run: Run):
    """Test accuracy and MACs saved before and after retraining with the masks on."""
    if not run.retrain:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['mode']} eps {r['eps']:g}" for r in run.retrain]
    xs = range(len(labels))
    ax.bar([x - 0.3 for x in xs], [r["base_accuracy"] for r in run.retrain], 0.2, color="lightgray",
           label="no prediction")  # fmt: skip
    ax.bar([x - 0.1 for x in xs], [r["before"]["test_accuracy"] for r in run.retrain], 0.2, color="tab:orange",
           label="masks, before retraining")  # fmt: skip
    ax.bar([x + 0.1 for x in xs], [r["after"]["test_accuracy"] for r in run.retrain], 0.2, color="tab:blue",
           label="masks, after retraining")  # fmt: skip
    low = min(min(r["before"]["test_accuracy"], r["after"]["test_accuracy"]) for r in run.retrain)
    ax.set_ylim(max(0, low - 5), 100)
    ax.set_xticks(list(xs), labels, fontsize=8)
    return _finish(fig, ax, "top-1 accuracy (%, test split)", "Retraining with prediction on")


def strategies(run: Run):
    """MACs saved against test drop relative to the *original* model, for every retraining (before and
    after, joined by an arrow) and every search-retrain round (a line through the rounds)."""
    from .load import strategy

    if not run.retrain and not run.rounds:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(run.retrain):
        color = f"C{i % 10}"
        points = [(r["base_accuracy"] - r[k]["test"]["accuracy"], r[k]["test"]["macs_saved_pct_network"])
                  for k in ("before", "after")]  # fmt: skip
        ax.annotate("", xy=points[1], xytext=points[0], arrowprops=dict(arrowstyle="->", color=color))
        ax.plot(*points[1], "o", color=color, label=f"{r['mode']} eps {r['eps']:g}: {strategy(r)}")
        ax.plot(*points[0], "o", mfc="white", color=color)
    for j, summary in enumerate(run.rounds):
        rows = summary["rounds"]
        xs = [r.get("chosen", r["searched"])["drop_vs_original"] for r in rows]
        ys = [r.get("chosen", r["searched"])["macs_saved_pct_network"] for r in rows]
        ax.plot(xs, ys, "s-", color=f"C{(len(run.retrain) + j) % 10}",
                label=f"{summary['mode']} eps {summary['eps']:g}: rounds 1-{len(rows)}")  # fmt: skip
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(str(r["round"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    oracle = run.any_result().oracle_pct_network
    return _finish_plane(fig, ax, oracle, f"oracle of the original model ({oracle:.1f}%)",
                         "test accuracy drop against the original model (points)",
                         "Retraining strategies (open: before, filled: after)")  # fmt: skip


def peers(run: Run):
    """Every scheme of ``crossneuron compare`` on one plane: MACs saved against test drop, the oracle above."""
    if not run.compare:
        return None
    rows = [r for r in run.compare["rows"] if r["macs_saved_pct_network"] is not None and r["test_drop"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    kinds = list(dict.fromkeys(r["scheme"] for r in rows))
    for i, kind in enumerate(kinds):  # a scheme's points joined in the order of their saving (budget order)
        mine = sorted((r for r in rows if r["scheme"] == kind), key=lambda r: r["macs_saved_pct_network"])
        xs, ys = [r["test_drop"] for r in mine], [r["macs_saved_pct_network"] for r in mine]
        ax.plot(xs, ys, "o-" if len(mine) > 1 else "o", color=f"C{i % 10}", label=kind)
        for r, x, y in zip(mine, xs, ys, strict=True):
            if len(mine) > 1 and r["setting"].startswith("eps "):
                ax.annotate(r["setting"].split(" (")[0].split(",")[0], (x, y), textcoords="offset points",
                            xytext=(4, 3), fontsize=6, color=f"C{i % 10}")  # fmt: skip
    oracle = run.compare["oracle_pct_network"]
    ax.axvline(0, color="lightgray", linewidth=0.8)
    return _finish_plane(fig, ax, oracle, f"oracle ({oracle:.1f}%)",
                         "test accuracy drop (points; retrained: against the original model)",
                         "The field side by side (SnaPEA and combined: counted on the first test images)")  # fmt: skip
