"""Tables rendered only from run records: Markdown + CSV + LaTeX files and the README's results sections."""
from __future__ import annotations

import os

from ..records import atomic_write_text
from ..stats import ci95
from ..growth.registry import method_label, ordered_labels


def runs_table(records: list[dict]):
    """One row per run: config fields that vary in studies, and the final metrics."""
    import pandas as pd
    rows = []
    for r in records:
        c, f = r["config"], r["final"]
        rows.append({"dataset": c["dataset"], "arch": c["arch"], "method": c["method"], "seed": c["seed"],
                     "start_width": c["start_width"], "width_scale": c["width_scale"],
                     "lambda_sim": c["lambda_sim"], "sim_variant": c["sim_variant"], "sim_scope": c["sim_scope"],
                     "sim_from_round": c["sim_from_round"], "rounds": c["rounds"],
                     "epochs_per_round": c["epochs_per_round"], "test_acc": f["test_acc"],
                     "params": f["params"], "flops": f["flops"], "train_flops": f["train_flops"],
                     "wall_time_s": r["wall_time_s"], "key": r["config_key"]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Tables: rendered only from run records, written as Markdown + CSV + LaTeX
# ----------------------------------------------------------------------------------------------------------------
def main_table(records: list[dict]):
    """Per method: final params, FLOPs, cumulative training FLOPs, top-1 mean +- std over seeds; and the paired
    differences of each row of ours - firefly (same seeds) with their 95 % CI."""
    import pandas as pd

    df = runs_table(records)
    df["method"] = [method_label(r["config"]) for r in records]
    rows = []
    for method in ordered_labels([r["config"] for r in records]):
        g = df[df["method"] == method]
        rows.append({"method": method, "seeds": len(g), "params (K)": g["params"].mean() / 1e3,
                     "MFLOPs/img": g["flops"].mean() / 1e6, "train TFLOPs": g["train_flops"].mean() / 1e12,
                     "top-1 (%)": f"{100 * g['test_acc'].mean():.2f} ± {100 * g['test_acc'].std(ddof=1):.2f}"
                     if len(g) > 1 else f"{100 * g['test_acc'].mean():.2f}"})
    table = pd.DataFrame(rows)
    diffs = [paired_difference(df, "ours")]  # None ("no paired seeds") when a table has no ours
    if "ours (from round 0)" in set(df["method"]):  # fulldata's sixth row
        diffs.append(paired_difference(df, "ours (from round 0)"))
    return table, diffs


def paired_difference(df, method: str, reference: str = "firefly") -> dict | None:
    """`method` − `reference` in top-1 percentage points over the seeds both have, with its 95 % t-interval."""
    ref = df[df["method"] == reference].set_index("seed")["test_acc"]
    other = df[df["method"] == method].set_index("seed")["test_acc"]
    common = sorted(set(ref.index) & set(other.index))
    if not common:
        return None
    mean, half = ci95([100 * (other[s] - ref[s]) for s in common])
    return {"method": method, "seeds": len(common), "mean_pp": mean, "ci95_pp": half, "seed_list": common}


def comparisons_table(records: list[dict], comparisons, min_seeds: int):
    """One row per comparison (A, B, question): A − B in top-1 percentage points over the seeds both rows have,
    its 95 % t-interval, the training-FLOP ratio A/B over those seeds, and what the interval allows one to say
    (a comparison on fewer than `min_seeds` paired seeds is indicative)."""
    import pandas as pd

    df = runs_table(records)
    df["method"] = [method_label(r["config"]) for r in records]
    flops = df.set_index(["method", "seed"])["train_flops"]
    rows = []
    for a, b, question in comparisons:
        diff = paired_difference(df, a, b)
        row = {"A − B": f"{a} − {b}", "question": question, "paired seeds": diff["seeds"] if diff else 0}
        if diff is None:
            rows.append({**row, "difference (pp)": "-", "95 % CI (pp)": "-", "train FLOPs A/B": "-",
                         "verdict": "no paired seeds yet"})
            continue
        seeds, mean, half = diff["seed_list"], diff["mean_pp"], diff["ci95_pp"]
        ratio = sum(flops[(a, s)] / flops[(b, s)] for s in seeds) / len(seeds)
        if half != half:
            verdict = "one seed: no interval"
        elif mean - half > 0:
            verdict = "A above B"
        elif mean + half < 0:
            verdict = "A below B"
        else:
            verdict = "no difference shown (the interval includes 0)"
        if len(seeds) < min_seeds:
            verdict = f"indicative ({len(seeds)} seeds): {verdict}"
        rows.append({**row, "difference (pp)": f"{mean:+.2f}", "95 % CI (pp)": "n/a" if half != half
                     else f"± {half:.2f}", "train FLOPs A/B": f"{ratio:.2f}", "verdict": verdict})
    return pd.DataFrame(rows)


def render_comparisons(compared: dict, dataset: str, plan_name: str) -> tuple:
    """(table, caption, markdown) of a study's comparisons (`study.comparison_study`)."""
    table = comparisons_table(compared["records"], compared["comparisons"], compared["min_seeds"])
    pretty = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(dataset, dataset)
    caption = (f"{pretty}, {plan_name} preset: each comparison the text makes, A − B in last-epoch top-1 paired by "
               "seed, with its 95 % t-interval over the paired seeds and the ratio of training FLOPs (growth-step "
               "passes not counted). A verdict needs the interval to exclude 0; fewer than "
               f"{compared['min_seeds']} paired seeds is indicative.")
    if compared["missing"]:
        caption += (f" The study is in progress: {len(compared['missing'])} run(s) of its plan have not landed "
                    "yet.")
    return table, caption, f"{caption}\n\n{to_markdown(table, '.2f')}"


def side_by_side(compared: dict[str, dict]) -> "pd.DataFrame":
    """The comparisons two or more studies declare, row by row: for each comparison (A − B) that every study makes,
    each study's paired seeds, difference, 95 % interval and verdict; `compared` maps a study's name to its plan's
    `comparisons()` (e.g. the 8- and the 24-epoch rounds of issue 21)."""
    columns = ["A − B", "paired seeds", "difference (pp)", "95 % CI (pp)", "verdict"]
    return summaries_side_by_side({name: comparisons_table(c["records"], c["comparisons"], c["min_seeds"])[columns]
                                   for name, c in compared.items()}, keys=("A − B",))


def rows_side_by_side(records: dict[str, list[dict]], labels) -> "pd.DataFrame":
    """Per table row in `labels` and study: seeds, params, inference MFLOPs, training TFLOPs and top-1, from each
    study's main table (`records` maps a study's name to its main-table records)."""
    import pandas as pd
    out = []
    for name, recs in records.items():
        table = main_table(recs)[0].set_index("method")
        for label in labels:
            if label in table.index:
                out.append({"method": label, "study": name, **table.loc[label].to_dict()})
    return pd.DataFrame(out).sort_values(["method", "study"], key=lambda c: c.map(
        {v: i for i, v in enumerate(list(labels) + list(records))})).reset_index(drop=True)


# The main-table rows a study reported beside another shows for both (those the long-round study shares with fulldata)
BESIDE_ROWS = ("firefly", "ours", "fixed (Firefly's final widths)", "fixed (compact)")


def render_beside(study: str, other: str, compared: dict[str, dict], records: dict[str, list[dict]]) -> tuple:
    """(comparisons, rows, caption, markdown) of `study` reported beside `other` on CIFAR-10 (notebook 01, the
    README's beside section): `compared` and `records` map each study's name to its plan's `comparisons()` and
    main-table records."""
    beside = side_by_side({other: compared[other], study: compared[study]})
    rows = rows_side_by_side({other: records[other], study: records[study]}, BESIDE_ROWS)
    caption = f"{study} beside {other} (CIFAR-10): each comparison both make, and the rows they share."
    return beside, rows, caption, caption + "\n\n" + to_markdown(beside, ".2f") + "\n\n" + to_markdown(rows, ".2f")


def summaries_side_by_side(summaries: dict[str, "pd.DataFrame"], keys=("layer", "method")) -> "pd.DataFrame":
    """Tables of the same shape from two or more studies (e.g. `analysis.cam.cam_summary` of the 8- and the
    24-epoch rounds), interleaved row by row: for each `keys` value that every study has, one row per study."""
    import pandas as pd
    keys = list(keys)
    indexed = {name: t.set_index(keys) for name, t in summaries.items()}
    first = next(iter(indexed.values()))
    shared = [k for k in first.index if all(k in t.index for t in indexed.values())]
    rows = [{**dict(zip(keys, k if isinstance(k, tuple) else (k,))), "study": name, **t.loc[k].to_dict()}
            for k in shared for name, t in indexed.items()]
    return pd.DataFrame(rows)


def render_checks(checked: dict, plan_name: str) -> tuple:
    """(runs table, paired table, markdown) of a study's pre-registered check (a plan's `checks`)."""
    import pandas as pd
    runs, paired = pd.DataFrame(checked["runs"]), pd.DataFrame([checked["paired"]])
    verdict = "passes" if checked["passed"] else "fails"
    md = (f"{plan_name}: the pre-registered check {verdict} (the rule: replication/experiments/{plan_name}.py).\n\n"
          f"{runs.to_markdown(index=False, floatfmt='.2f')}\n\n{paired.to_markdown(index=False, floatfmt='.2f')}")
    return runs, paired, md


def render_main(records: list[dict], dataset: str, plan_name: str) -> tuple:
    """(table, caption, markdown) of a main table: what the notebook writes and the README shows."""
    table, diffs = main_table(records)
    pretty = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(dataset, dataset)
    counts = sorted({int(n) for n in table["seeds"]})
    over = (f"{counts[0]} seed(s)" if len(counts) == 1
            else f"each row's seeds ({', '.join(map(str, counts[:-1]))} or {counts[-1]}: the seeds column)")
    caption = (f"{pretty}, {plan_name} preset: final parameters, forward MFLOPs per image, cumulative "
               f"training TFLOPs and last-epoch top-1 test accuracy, mean ± std over {over}.")
    sentences = " ".join(diff_sentence(d) for d in diffs)
    md = f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.2f')}\n\n{sentences}"
    return table, caption, md


def per_run_table(records: list[dict]):
    """One row per run of a main table, in the table's row order then by seed: final size, cost, top-1 and the
    test top-1 at the end of each round (where each run's gain came from)."""
    import pandas as pd
    order = {label: i for i, label in enumerate(ordered_labels([r["config"] for r in records]))}
    rows = []
    for r in sorted(records, key=lambda r: (order[method_label(r["config"])], r["config"]["seed"])):
        f = r["final"]
        rows.append({"method": method_label(r["config"]), "seed": r["config"]["seed"],
                     "top-1 (%)": 100 * f["test_acc"], "params (K)": f["params"] / 1e3,
                     "MFLOPs/img": f["flops"] / 1e6, "train TFLOPs": f["train_flops"] / 1e12,
                     "round ends (%)": " → ".join(f"{100 * rd['test_acc']:.2f}" for rd in r["rounds"])})
    return pd.DataFrame(rows)


def render_runs(records: list[dict], dataset: str, plan_name: str) -> tuple:
    """(table, caption) of the runs behind a main table."""
    caption = (f"The runs behind the {dataset} main table ({plan_name} preset): last-epoch top-1, final parameters, "
               f"forward MFLOPs per image, cumulative training TFLOPs and the test top-1 at the end of each round.")
    return per_run_table(records), caption


def render_ablations(records: list[dict], plan_name: str) -> tuple:
    table = ablation_table(records)
    seeds = sorted({r["config"]["seed"] for r in records})
    which = f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds)) + ": see the seed column"
    caption = f"Ablations (CIFAR-10, {plan_name} preset, {which}): last-epoch top-1 and final similarity statistics."
    return table, caption, f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.4g')}"


def lambda_sweep_rows(ablations):
    """The rows of an ablation table that form the lambda sweep: Firefly-style growth, the default constraint
    (decorrelate, all layers, from round 1, all rows) and Firefly's scoring, on the one seed with the most lambda
    values > 0 (quick: seed 0 with Firefly as lambda = 0; fulldata: seed 100, where the rule needs no Firefly)."""
    t = ablations[(ablations["growth"] == "firefly") & (ablations["variant"].isin(["decorrelate", "-"]))
                  & (ablations["scope"].isin(["all", "-"])) & (ablations["from round"].astype(str).isin(["1", "-"]))
                  & (ablations["rows"].astype(str).isin(["all", "-"])) & (ablations["score at"] == "full")]
    swept = t[t["lambda_sim"] > 0].groupby("seed")["lambda_sim"].nunique()
    return t[t["seed"] == swept.idxmax()].sort_values("lambda_sim") if len(swept) else t.iloc[:0]


def from_round0_caption(plan) -> str:
    if plan.from_round0_in_main:
        return (f"The constraint from round 1 (ours) and from the first round on (CIFAR-10, {plan.name} preset), with "
                "the final similarity each leaves: paired differences to Firefly over the same seeds.")
    return (f"The constraint from the first round on, on every seed (CIFAR-10, {plan.name} preset): the follow-up "
            "of the largest single-seed effect above. Paired differences to Firefly over the same seeds.")


def diff_sentence(diff: dict | None) -> str:
    if diff is None:
        return "No paired seeds of Firefly and ours."
    ci = "n/a (one seed)" if diff["ci95_pp"] != diff["ci95_pp"] else f"± {diff['ci95_pp']:.2f}"
    return (f"Paired difference {diff.get('method', 'ours')} − Firefly over {diff['seeds']} seed(s): "
            f"{diff['mean_pp']:+.2f} percentage points (95 % CI {ci}).")


# Columns of signed text ("+0.58", or "-" when there is nothing to pair): tabulate would read a column of numbers
# written as text as floats, and print +0.58 as 0.58.
SIGNED_TEXT_COLUMNS = ("difference (pp)",)


def to_markdown(table, floatfmt: str = "g") -> str:
    """`table` as Markdown, its signed-text columns printed as written."""
    signed = [i for i, c in enumerate(table.columns) if c in SIGNED_TEXT_COLUMNS]
    return table.to_markdown(index=False, floatfmt=floatfmt, disable_numparse=signed or False)


def write_table(table, name: str, out_dir: str, caption: str = "", floatfmt: str = ".2f") -> dict[str, str]:
    """Write `table` as name.md / name.csv / name.tex; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in ("md", "csv", "tex")}
    md = to_markdown(table, floatfmt)
    atomic_write_text(paths["md"], (f"{caption}\n\n" if caption else "") + md + "\n")
    atomic_write_text(paths["csv"], table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(paths["tex"], table.to_latex(index=False, float_format="%.2f", caption=caption or None))
    return paths


def update_readme_section(readme_path: str, marker: str, body: str) -> bool:
    """Replace the text between <!-- marker:start --> and <!-- marker:end -->; True if the file changed."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = open(readme_path).read()
    if start not in text or end not in text:
        raise ValueError(f"{readme_path} has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    if new != text:
        atomic_write_text(readme_path, new)
    return new != text


def final_similarity(record: dict) -> dict:
    """Mean over layers of the final round's mean |C_sim| and near-duplicate share."""
    stats = [s for s in record["rounds"][-1]["similarity"] if "mean_abs" in s]
    return {"mean |C_sim|": sum(s["mean_abs"] for s in stats) / len(stats),
            "near-duplicate share": sum(s["near_duplicate_share"] for s in stats) / len(stats)}


def ablation_table(records: list[dict]):
    """One row per ablation run: what differs from the default, accuracy, size and final similarity."""
    import pandas as pd

    rows = []
    for r in records:
        c = r["config"]
        firefly = c["method"] in ("firefly", "ours")
        grown = [g["growth"] for g in r["rounds"] if g.get("growth")]
        rows.append({"growth": "firefly" if firefly else c["method"], "method": method_label(c),
                     "score at": c["firefly_score_at"] if firefly else "-",
                     "new→new": ("yes" if c["firefly_new_to_new"] else "no") if firefly else "-",
                     "lambda_sim": c["lambda_sim"], "variant": c["sim_variant"] if c["lambda_sim"] > 0 else "-",
                     "scope": c["sim_scope"] if c["lambda_sim"] > 0 else "-",
                     "from round": c["sim_from_round"] if c["lambda_sim"] > 0 else "-",
                     "rows": (c.get("sim_sample_rows") or "all") if c["lambda_sim"] > 0 else "-", "seed": c["seed"],
                     "split/new added": f"{sum(sum(g['split']) for g in grown)}/{sum(sum(g['new']) for g in grown)}",
                     "top-1 (%)": 100 * r["final"]["test_acc"], "params (K)": r["final"]["params"] / 1e3,
                     **final_similarity(r)})
    keys = ["growth", "score at", "new→new", "variant", "scope", "from round", "rows", "lambda_sim"]
    return pd.DataFrame(rows).sort_values(keys, key=lambda s: s.astype(str)).reset_index(drop=True)


def variants_table(records: list[dict], reference: str = "firefly"):
    """Per variant (method, and "from round 0" where the constraint also acts in the first round): seeds, top-1
    mean ± std, final mean |C_sim|, and the paired difference to `reference` over the seeds both have (95 % CI)."""
    import pandas as pd


    def label(c):
        return method_label(c) + (" (from round 0)" if c["method"] != "ours" and c["lambda_sim"] > 0
                                  and c["sim_from_round"] == 0 else "")
    acc: dict[str, dict[int, float]] = {}
    sim: dict[str, list[float]] = {}
    for r in records:
        name = label(r["config"])
        acc.setdefault(name, {})[r["config"]["seed"]] = 100 * r["final"]["test_acc"]
        sim.setdefault(name, []).append(final_similarity(r)["mean |C_sim|"])
    rows = []
    for name, by_seed in acc.items():
        values = list(by_seed.values())
        mean, sd = sum(values) / len(values), pd.Series(values).std(ddof=1)
        common = sorted(set(by_seed) & set(acc.get(reference, {})))
        row = {"method": name, "seeds": len(values), "top-1 (%)": f"{mean:.2f} ± {sd:.2f}",
               "mean |C_sim|": sum(sim[name]) / len(sim[name])}
        if name != reference and common:
            d_mean, half = ci95([by_seed[s] - acc[reference][s] for s in common])
            row[f"− {reference} (pp, 95 % CI)"] = f"{d_mean:+.2f} ± {half:.2f}"
        else:
            row[f"− {reference} (pp, 95 % CI)"] = "-"
        rows.append(row)
    return pd.DataFrame(rows)


def similarity_table(records: list[dict]):
    """Per method: final mean |C_sim| and near-duplicate share (means over layers, then over seeds)."""
    import pandas as pd

    df = pd.DataFrame([{"method": method_label(r["config"]), **final_similarity(r)} for r in records])
    return df.groupby("method").mean().reindex(ordered_labels([r["config"] for r in records])).reset_index()
