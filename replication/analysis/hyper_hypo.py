"""Experiments E1-E4 of docs/hyper-hypo.md on the finished runs of the main study (results cached as CSV).

Statistics and channel selections use clean *training* images (the source domain); accuracies use the test split;
adaptation uses corrupted training images without labels and is evaluated on the same corruption of the test split.
Each experiment is computed model by model (`jobs` processes: `pool.map_processes`); `neuron_study` runs them all
with the defaults, as `make figures` does before the notebook renders them.
"""
from __future__ import annotations

import os

import pandas as pd
import torch

from ..data import corruptions
from . import neurons
from .adaptation import CONDITIONS, AdaptConfig, adapt
from ..records import cached_csv
from ..train import evaluate, load_model

SOURCE_IMAGES = 1000  # clean training images for the statistics and selections
ADAPT_IMAGES = 1000  # corrupted training images the adaptation sees
REMOVAL_SEVERITY = 3  # E3 corrupted accuracy: every family at this severity
REMOVAL_CLEAN_IMAGES = 1000  # E3: clean test images (the same for every removal, so differences are paired)
REMOVAL_CORRUPTED_IMAGES = 400  # E3: test images per corruption family
ADAPT_SEVERITY = 5  # E4: the strongest shift
ADAPT_EVAL_IMAGES = 1000  # E4: corrupted test images per family
PRUNE_SHARE = 0.10  # E2: bottom 10 % of every layer under each criterion


ADAPT_METHODS = ("firefly", "ours")  # models adapted in E4


def _acc(model, x_uint8, y, normalise):
    return evaluate(model, x_uint8, y, 500, "cpu", normalise=normalise)[1]


def _load(record, ds, rdir):
    """(method label, seed, model) of a finished run."""
    from ..config import Config
    from ..growth.registry import method_label
    cfg = Config.from_dict(record["config"])
    return method_label(record["config"]), cfg.seed, load_model(cfg, rdir, ds.num_classes)


def _key(records, what):
    return what + "|" + "|".join(sorted(r["config_key"] for r in records))


def _per_model(fn, records, jobs, label, **shared) -> pd.DataFrame:
    from ..runs.pool import map_processes
    return pd.concat(map_processes(fn, records, jobs, shared, label=f"{label}, models"), ignore_index=True)


def _census_one(record, shared) -> pd.DataFrame:
    ds = shared["ds"]
    method, seed, model = _load(record, ds, shared["rdir"])
    df = neurons.channel_stats(model, ds.train_x[:SOURCE_IMAGES], normalise=ds.normalise)
    df.insert(0, "seed", seed)
    df.insert(0, "method", method)
    return df


def census(records, ds, rdir, jobs: int = 1) -> pd.DataFrame:
    """E1 (and the input of E2-E4): per-channel statistics of every model on clean training images."""
    return cached_csv(os.path.join(rdir, "neurons_stats.csv"), _key(records, "stats"),
                      lambda: _per_model(_census_one, records, jobs, "E1 census", ds=ds, rdir=rdir))


def census_table(stats: pd.DataFrame, by=("method",), relative: bool = False) -> pd.DataFrame:
    """Shares of channels by firing rate per group; with `relative`, also how extreme the relative definition's
    hypo and hyper channels are (their mean and most moderate firing rate)."""
    g = stats.groupby(list(by))
    extra = {}
    if relative:
        rel = stats.assign(kind=neurons.relative_kind(stats)).groupby(list(by))

        def rates(kind, how):  # the firing rates of the relative definition's `kind` channels, aggregated by `how`
            return rel.apply(lambda d: d.loc[d["kind"] == kind, "firing_rate"].agg(how), include_groups=False)
        extra = {"rel. hypo: mean p": rates("hypo", "mean"), "rel. hypo: max p": rates("hypo", "max"),
                 "rel. hyper: mean p": rates("hyper", "mean"), "rel. hyper: min p": rates("hyper", "min")}
    return pd.DataFrame({
        "channels": g.size(), "hypo (%)": 100 * g["kind"].apply(lambda k: (k == "hypo").mean()),
        "hyper (%)": 100 * g["kind"].apply(lambda k: (k == "hyper").mean()),
        "hypo@0.01 (%)": 100 * g["firing_rate"].apply(lambda p: (p <= 0.01).mean()),
        "hyper@0.99 (%)": 100 * g["firing_rate"].apply(lambda p: (p >= 0.99).mean()),
        "hypo@0.10 (%)": 100 * g["firing_rate"].apply(lambda p: (p <= 0.10).mean()),
        "hyper@0.90 (%)": 100 * g["firing_rate"].apply(lambda p: (p >= 0.90).mean()),
        "redundant (max|C_sim|>0.9, %)": 100 * g["max_abs_csim"].apply(lambda c: (c > 0.9).mean()),
        "mean max|corr|": g["max_abs_corr"].mean(),
        "corr(p, Φ(β/|γ|))": g.apply(lambda d: d["firing_rate"].corr(d["phi_prediction"]), include_groups=False),
        **extra,
    }).reset_index()


def _model_stats(stats: pd.DataFrame, method: str, seed: int) -> pd.DataFrame:
    return stats[(stats["method"] == method) & (stats["seed"] == seed)].reset_index(drop=True)


def _criteria_one(record, shared) -> pd.DataFrame:
    ds = shared["ds"]
    method, seed, model = _load(record, ds, shared["rdir"])
    taylor = neurons.taylor_scores(model, ds.train_x[:SOURCE_IMAGES], ds.train_y[:SOURCE_IMAGES],
                                   normalise=ds.normalise)
    definitions = shared["definitions"]
    rows = []
    for definition in definitions:
        st = neurons.with_kind(_model_stats(shared["stats"], method, seed), definition)
        scores = neurons.criterion_scores(st, taylor, seed)
        for crit in neurons.CRITERIA:
            sel = neurons.bottom_k(scores, crit, PRUNE_SHARE)
            rows.append({**({"definition": definition} if len(definitions) > 1 else {}),
                         "method": method, "seed": seed, "criterion": crit, "selected": len(sel),
                         "hypo share (%)": 100 * (sel["kind"] == "hypo").mean(),
                         "hyper share (%)": 100 * (sel["kind"] == "hyper").mean(),
                         "base hypo (%)": 100 * (st["kind"] == "hypo").mean(),
                         "base hyper (%)": 100 * (st["kind"] == "hyper").mean()})
    return pd.DataFrame(rows)


def _definitions_key(definitions) -> str:
    """Cache-key suffix of non-default definitions (the absolute one alone keeps the keys of older caches)."""
    return "" if tuple(definitions) == ("absolute",) else "|definitions=" + ",".join(definitions) + "|controls=2"


def criteria_overlap(records, ds, rdir, stats: pd.DataFrame, jobs: int = 1,
                     definitions=("absolute",)) -> pd.DataFrame:
    """E2: for each criterion, the hypo/hyper shares of its bottom PRUNE_SHARE channels per layer, under each
    definition of hypo/hyper."""
    return cached_csv(os.path.join(rdir, "neurons_criteria.csv"),
                      _key(records, "criteria") + _definitions_key(definitions),
                      lambda: _per_model(_criteria_one, records, jobs, "E2 pruning criteria", ds=ds, rdir=rdir,
                                         stats=stats, definitions=tuple(definitions)))


def _random_like(rows: pd.DataFrame, stats: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Random channels with the same count per layer as `rows` (the equal-size control)."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for layer, n in rows.groupby("layer").size().items():
        pool = stats[stats["layer"] == layer]
        picks.append(pool.iloc[torch.randperm(len(pool), generator=g)[:n].tolist()])
    return pd.concat(picks) if picks else rows


def _removal_one(record, shared) -> pd.DataFrame:
    ds = shared["ds"]
    method, seed, model = _load(record, ds, shared["rdir"])
    n = REMOVAL_CORRUPTED_IMAGES
    corrupted = {f: corruptions.to_uint8(corruptions.corrupt(ds.test_x[:n], f, REMOVAL_SEVERITY, seed=1))
                 for f in corruptions.FAMILIES}
    st = _model_stats(shared["stats"], method, seed)
    sets = {"none": st.iloc[:0]}
    for definition in shared["definitions"]:
        d = neurons.with_kind(st, definition)
        tag = "" if definition == "absolute" else f" ({definition})"
        sets.update({f"hypo{tag}": d[d["kind"] == "hypo"], f"hyper{tag}": d[d["kind"] == "hyper"],
                     f"hyper+hypo{tag}": d[d["kind"] != "normal"]})
        sets[f"random (size of hyper+hypo{tag})"] = _random_like(sets[f"hyper+hypo{tag}"], st, seed)
        if definition == "relative":  # sets of tens of channels: each needs an equal-size control of its own;
            # the relative hypo and hyper sets have the same count per layer by construction, so one serves both
            sets[f"random (size of hypo = size of hyper{tag})"] = _random_like(sets[f"hypo{tag}"], st, seed + 1)
    values = neurons.mean_values(st)
    rows = []
    for name, chosen in sets.items():
        for mode in ("zero", "mean") if name != "none" else ("-",):
            with neurons.ablate(model, neurons.channels_by_layer(chosen), values if mode == "mean" else None):
                clean = _acc(model, ds.test_x[:REMOVAL_CLEAN_IMAGES], ds.test_y[:REMOVAL_CLEAN_IMAGES], ds.normalise)
                corr = sum(_acc(model, x, ds.test_y[:len(x)], ds.normalise) for x in corrupted.values()) / len(corrupted)
            rows.append({"method": method, "seed": seed, "removed": name, "ablation": mode,
                         "channels": len(chosen), "clean acc (%)": 100 * clean,
                         f"corrupted acc, severity {REMOVAL_SEVERITY} (%)": 100 * corr})
    return pd.DataFrame(rows)


def removal(records, ds, rdir, stats: pd.DataFrame, jobs: int = 1, definitions=("absolute",)) -> pd.DataFrame:
    """E3: accuracy with hypo, hyper, both, or an equal-size random set removed (zero- and mean-ablation), the
    sets of each definition."""
    key = _key(records, f"removal|{REMOVAL_SEVERITY}|{REMOVAL_CLEAN_IMAGES}|{REMOVAL_CORRUPTED_IMAGES}")
    return cached_csv(os.path.join(rdir, "neurons_removal.csv"), key + _definitions_key(definitions),
                      lambda: _per_model(_removal_one, records, jobs, "E3 removal", ds=ds, rdir=rdir, stats=stats,
                                         definitions=tuple(definitions)))


# E3's paired contrasts: a removed set against the equal-size random set of the same model (same count per layer).
REMOVAL_CONTRASTS = (("hyper+hypo", "random (size of hyper+hypo)"),
                     ("hyper+hypo (relative)", "random (size of hyper+hypo (relative))"),
                     ("hypo (relative)", "random (size of hypo = size of hyper (relative))"),
                     ("hyper (relative)", "random (size of hypo = size of hyper (relative))"))


def removal_contrasts(e3: pd.DataFrame) -> pd.DataFrame:
    """Accuracy after removing a set minus after removing its equal-size random control, paired by model (seed),
    with the 95 % t-interval over seeds, per method and ablation; only sets that are non-empty in every model."""
    from ..stats import ci95
    corrupted = [c for c in e3.columns if c.startswith("corrupted acc")][0]
    rows = []
    for (method, ablation), g in e3[e3["ablation"] != "-"].groupby(["method", "ablation"]):
        by = g.set_index(["removed", "seed"])
        for removed, control in REMOVAL_CONTRASTS:
            if removed not in by.index.get_level_values(0) or (by.loc[removed, "channels"] == 0).any():
                continue
            seeds = sorted(by.loc[removed].index)
            row = {"method": method, "ablation": ablation, "removed − its random control": f"{removed} − {control}",
                   "seeds": len(seeds), "channels": by.loc[removed, "channels"].mean()}
            for column, name in (("clean acc (%)", "clean (pp)"), (corrupted, "corrupted (pp)")):
                mean, half = ci95([by.loc[(removed, s), column] - by.loc[(control, s), column] for s in seeds])
                row[name] = f"{mean:+.2f} ± {half:.2f}"
            rows.append(row)
    return pd.DataFrame(rows)


def _adaptation_one(record, shared) -> pd.DataFrame:
    ds, cfg = shared["ds"], shared["cfg"]
    method, seed, model = _load(record, ds, shared["rdir"])
    st = neurons.with_kind(_model_stats(shared["stats"], method, seed), shared["definition"])
    hh = st[st["kind"] != "normal"]
    selections = {"hyper_hypo": neurons.channels_by_layer(hh),
                  "random_channels": neurons.channels_by_layer(_random_like(hh, st, seed))}
    test_x, test_y = ds.test_x[:ADAPT_EVAL_IMAGES], ds.test_y[:ADAPT_EVAL_IMAGES]
    rows = []
    for family in corruptions.FAMILIES:
        target = corruptions.to_uint8(corruptions.corrupt(ds.train_x[-ADAPT_IMAGES:], family, ADAPT_SEVERITY, seed=2))
        test = corruptions.to_uint8(corruptions.corrupt(test_x, family, ADAPT_SEVERITY, seed=3))
        for cond in CONDITIONS:
            adapted = adapt(model, target, cond, cfg, selections.get(cond), seed=seed, normalise=ds.normalise)
            rows.append({"method": method, "seed": seed, "family": family, "condition": cond,
                         "selected channels": len(hh) if cond in selections else 0,
                         "error (%)": 100 * (1 - _acc(adapted, test, test_y, ds.normalise))})
    return pd.DataFrame(rows)


def adaptation(records, ds, rdir, stats: pd.DataFrame, cfg: AdaptConfig = AdaptConfig(),
               jobs: int = 1, definition: str = "absolute") -> pd.DataFrame:
    """E4: test error on each corruption family after each adaptation condition (same step budget); the
    hyper_hypo condition selects the channels of `definition`."""
    key = _key(records, f"adapt|{cfg}|{ADAPT_SEVERITY}|{ADAPT_IMAGES}|{ADAPT_EVAL_IMAGES}")
    key += "" if definition == "absolute" else f"|definition={definition}"
    return cached_csv(os.path.join(rdir, "neurons_adaptation.csv"), key,
                      lambda: _per_model(_adaptation_one, records, jobs, "E4 adaptation", ds=ds, rdir=rdir,
                                         stats=stats, cfg=cfg, definition=definition))


def neuron_study(plan, dataset: str, seeds=None, jobs: int = 1, root: str | None = None,
                 adapt_methods=ADAPT_METHODS, adapt_steps: int | None = None) -> dict:
    """E1-E4 on the models `plan.neuron_records` names, with the plan's definitions and E4 budget (notebook 07
    renders them): {"records", "ds", "stats", "definitions", "adapt_definition", "e2", "e3", "e4"}."""
    from .. import data
    from ..growth.registry import method_label
    from ..records import RESULTS_ROOT
    root = root or RESULTS_ROOT
    records = plan.neuron_records(dataset, seeds, jobs, root)
    ds = data.load_dataset(plan.base_config(dataset))
    rdir = plan.results_dir(root)
    definitions = plan.neuron_definitions
    stats = census(records, ds, rdir, jobs)
    adapt_records = [r for r in records if method_label(r["config"]) in adapt_methods]
    if plan.adapt_seeds is not None:
        keep = sorted({r["config"]["seed"] for r in adapt_records})[:plan.adapt_seeds]
        adapt_records = [r for r in adapt_records if r["config"]["seed"] in keep]
    steps = adapt_steps if adapt_steps is not None else plan.adapt_steps
    return {"records": records, "ds": ds, "stats": stats, "definitions": definitions,
            "adapt_definition": plan.adapt_definition,
            "e2": criteria_overlap(records, ds, rdir, stats, jobs, definitions),
            "e3": removal(records, ds, rdir, stats, jobs, definitions),
            "e4": adaptation(adapt_records, ds, rdir, stats, AdaptConfig(steps=steps), jobs, plan.adapt_definition)}


def adaptation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Error per family and condition (mean ± std over seeds and methods' models), and the paired difference of
    hyper+hypo-first minus the random-channel control."""
    cells = df.groupby(["condition", "family"])["error (%)"].agg(["mean", "std"]).reset_index()
    cells["cell"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(cells["mean"], cells["std"].fillna(0))]
    table = cells.pivot(index="condition", columns="family", values="cell").reindex(CONDITIONS)
    table["mean over families"] = df.groupby("condition")["error (%)"].mean().reindex(CONDITIONS).map("{:.2f}".format)
    paired = df.pivot_table(index=["method", "seed", "family"], columns="condition", values="error (%)")
    diff = paired["hyper_hypo"] - paired["random_channels"]
    from ..stats import ci95
    row = {}
    for family in corruptions.FAMILIES:
        mean, half = ci95(list(diff.xs(family, level="family").to_numpy()))
        row[family] = f"{mean:+.2f} ± {half:.2f}"
    mean, half = ci95(list(diff.to_numpy()))
    row["mean over families"] = f"{mean:+.2f} ± {half:.2f}"
    table.loc["hyper_hypo − random_channels (95 % CI)"] = row
    return table.reset_index()
