"""Figures, drawn only from run records and stored metric tables (seaborn/matplotlib), saved as PNG + PDF."""
from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")  # headless by default; notebooks still display the returned figures inline
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..records import atomic_write_bytes  # noqa: E402
from ..similarity import HIST_BINS  # noqa: E402
from ..growth.registry import method_label  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def save(fig, out_dir: str, name: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = os.path.join(out_dir, f"{name}.{ext}")
        buf = io.BytesIO()
        # Fixed metadata keeps the PDF bytes stable when nothing changed.
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight",
                    metadata={"CreationDate": None} if ext == "pdf" else None)
        atomic_write_bytes(path, buf.getvalue())  # an interrupted render never leaves a truncated figure
        paths.append(path)
    return paths


def rounds_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (run, round): accuracy at the end of the round, params, FLOPs, cumulative training FLOPs."""
    rows = []
    for r in records:
        for rd in r["rounds"]:
            rows.append({"method": method_label(r["config"]), "seed": r["config"]["seed"], "round": rd["round"],
                         "test_acc": 100 * rd["test_acc"], "params_k": rd["params"] / 1e3,
                         "train_tflops": rd["train_flops"] / 1e12})
    return pd.DataFrame(rows)


def growth_curves(records: list[dict]):
    df = rounds_frame(records)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, x, label in ((axes[0], "params_k", "parameters (K)"),
                         (axes[1], "train_tflops", "cumulative training TFLOPs")):
        mean = df.groupby(["method", "round"], as_index=False)[[x, "test_acc"]].mean()
        sd = df.groupby(["method", "round"], as_index=False)["test_acc"].std()
        for method, g in mean.groupby("method", sort=False):
            err = sd[sd["method"] == method]["test_acc"].to_numpy()
            ax.errorbar(g[x], g["test_acc"], yerr=np.nan_to_num(err), marker="o", capsize=2, label=method)
        ax.set_xlabel(label)
    axes[0].set_ylabel("top-1 test accuracy (%) at the end of each round")
    axes[1].legend(fontsize=7)
    fig.suptitle("Accuracy per growth round (mean ± std over seeds)")
    return fig


def widths_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (run, conv layer): the final width."""
    rows = []
    for r in records:
        for layer, width in enumerate(r["final"]["widths"]):
            rows.append({"method": method_label(r["config"]), "seed": r["config"]["seed"], "layer": layer + 1,
                         "width": width})
    return pd.DataFrame(rows)


def width_stats(records: list[dict]) -> pd.DataFrame:
    """One row per (method, conv layer): mean and std over seeds of the final width; methods in record order."""
    df = widths_frame(records)
    return df.groupby(["method", "layer"], sort=False)["width"].agg(["mean", "std"]).reset_index()


def final_widths(stats: pd.DataFrame):
    """Where each method put its neurons, from `width_stats`: mean final width per conv layer (± std over seeds)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for method, g in stats.groupby("method", sort=False):
        g = g.sort_values("layer")
        ax.errorbar(g["layer"], g["mean"], yerr=np.nan_to_num(g["std"].to_numpy()), marker="o",
                    markersize=3, capsize=2, label=method)
    ax.set_xlabel("conv layer (input side first)")
    ax.set_ylabel("final width (channels)")
    ax.set_xticks(sorted(stats["layer"].unique()))
    ax.legend(fontsize=7)
    fig.suptitle("Final width per layer (mean ± std over seeds)")
    return fig


def similarity_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        for rd in r["rounds"]:
            for s in rd["similarity"]:
                if "mean" not in s:
                    continue
                rows.append({"method": method_label(r["config"]), "seed": r["config"]["seed"],
                             "round": rd["round"], "layer": s["layer"], "mean_abs": s["mean_abs"],
                             "mean": s["mean"], "std": s["std"], "near_duplicate_share": s["near_duplicate_share"],
                             "hist": s["hist"]})
    return pd.DataFrame(rows)


def similarity_histograms(records: list[dict], round_: int | None = None):
    """Per layer, the distribution of off-diagonal similarities (density over seeds) at one round."""
    df = similarity_frame(records)
    round_ = df["round"].max() if round_ is None else round_
    df = df[df["round"] == round_]
    layers = sorted(df["layer"].unique())
    cols = 4
    fig, axes = plt.subplots(int(np.ceil(len(layers) / cols)), cols, figsize=(12, 2.2 * np.ceil(len(layers) / cols)),
                             sharex=True)
    centres = np.linspace(-1, 1, HIST_BINS + 1)[:-1] + 1.0 / HIST_BINS
    for ax, layer in zip(np.ravel(axes), layers):
        for method, g in df[df["layer"] == layer].groupby("method", sort=False):
            h = np.sum(np.stack(g["hist"].to_numpy()), axis=0).astype(float)
            ax.plot(centres, h / max(h.sum(), 1), label=method)
        ax.set_title(f"conv {layer + 1}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in np.ravel(axes)[len(layers):]:
        ax.axis("off")
    np.ravel(axes)[0].legend(fontsize=6)
    fig.suptitle(f"Off-diagonal cosine similarity of neurons per layer, end of round {round_ + 1}")
    fig.supxlabel("C_sim[i, j], i ≠ j")
    fig.tight_layout()
    return fig


def similarity_over_rounds(records: list[dict]):
    df = similarity_frame(records)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.lineplot(df, x="layer", y="mean_abs", hue="method", style="round", ax=axes[0], errorbar="sd")
    sns.lineplot(df, x="layer", y="near_duplicate_share", hue="method", style="round", ax=axes[1],
                 errorbar="sd", legend=False)
    axes[0].set_ylabel("mean |C_sim| off-diagonal")
    axes[1].set_ylabel("share of pairs with |cos| > 0.9")
    for ax in axes:
        ax.set_xlabel("conv layer (0 = first)")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def cam_grid(images: list[np.ndarray], left: list[np.ndarray], right: list[np.ndarray], titles: list[str],
             left_name: str = "Firefly", right_name: str = "ours", per_row: int = 5):
    """The paper's Fig. 1b layout for each image: input on top, `left_name` bottom-left, `right_name` bottom-right."""
    n = len(images)
    rows = int(np.ceil(n / per_row))
    fig = plt.figure(figsize=(2.2 * per_row, 2.4 * rows))
    outer = fig.add_gridspec(rows, per_row, wspace=0.15, hspace=0.3)
    for k in range(n):
        inner = outer[k // per_row, k % per_row].subgridspec(2, 4, wspace=0.05, hspace=0.05)
        for spec, img, name in ((inner[0, 1:3], images[k], titles[k]), (inner[1, 0:2], left[k], left_name),
                                (inner[1, 2:4], right[k], right_name)):
            ax = fig.add_subplot(spec)
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=6, pad=2)
    return fig


def cam_metric_distributions(metrics: pd.DataFrame):
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    methods = list(dict.fromkeys(metrics["method"]))
    for ax, col in zip(axes, ("coverage", "confidence_change", "road")):
        ax.boxplot([metrics.loc[metrics["method"] == m, col] for m in methods], tick_labels=methods,
                   showfliers=False)
        ax.set_ylabel(col)
    fig.tight_layout()
    return fig


def lambda_sweep(table: pd.DataFrame):
    fig, ax1 = plt.subplots(figsize=(5, 3.4))
    ax1.semilogx(table["lambda_sim"], table["top-1 (%)"], marker="o", label="top-1 (%)")
    ax1.set_xlabel("lambda_sim")
    ax1.set_ylabel("top-1 test accuracy (%)")
    ax2 = ax1.twinx()
    ax2.semilogx(table["lambda_sim"], table["mean |C_sim|"], marker="s", color="C1", label="mean |C_sim|")
    ax2.set_ylabel("mean |C_sim| (final, all layers)")
    ax2.grid(False)
    fig.legend(loc="upper center", fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def neuron_census(stats: pd.DataFrame):
    """E1: hypo/hyper shares per layer and method, firing-rate distributions, and p vs its BN prediction."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for ax, kind in zip(axes[:2], ("hypo", "hyper")):
        # every layer, those without such a channel at 0 (value_counts would leave them out and join the others)
        d = stats.assign(share=stats["kind"] == kind).groupby(["method", "layer"])["share"].mean().reset_index()
        sns.lineplot(d, x="layer", y="share", hue="method", marker="o", ax=ax, legend=kind == "hypo")
        ax.set_title(f"{kind} share per layer")
    sns.histplot(stats, x="firing_rate", hue="method", element="step", stat="density", common_norm=False,
                 bins=20, ax=axes[2], legend=False)
    axes[2].set_title("firing rate p_c")
    sns.scatterplot(stats, x="phi_prediction", y="firing_rate", hue="method", s=6, ax=axes[3], legend=False)
    axes[3].plot([0, 1], [0, 1], color="k", lw=0.5)
    axes[3].set_title("measured p_c vs Φ(β/|γ|)")
    if axes[0].get_legend():
        sns.move_legend(axes[0], "upper left", fontsize=6)
    fig.tight_layout()
    return fig
