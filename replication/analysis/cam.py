"""Grad-CAM maps of finished (grown) models and the numbers behind the paper's "attends to the whole object" claim.

Uses the grad-cam library (pytorch-grad-cam). Its hooks attach to the module objects passed in, so a CAM is only
ever built on a model whose growth has finished (growth replaces parameters, not modules, but a later growth step
would change the maps). Maps are computed for the ground-truth class and upsampled to 32x32 by the library.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import torch
from torch import nn


COVERAGE_THRESHOLD = 0.5  # share of pixels whose (per-image min-max scaled) CAM exceeds this (our choice)
ROAD_PERCENTILES = (20, 40, 60, 80)  # fewer than the library's default nine, to keep 500 images in CPU minutes
# ROAD's imputation adds noise from torch's global generator; seeding it (in a forked RNG state) makes the metric
# reproducible from run to run without touching the caller's random stream.
ROAD_NOISE_SEED = 0


@contextlib.contextmanager
def _library_quiet():
    """grad-cam 1.5.7 calls np.transpose on torch tensors, which NumPy 2 flags as deprecated; nothing we can fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array_wrap__ must accept context", category=DeprecationWarning)
        yield


def target_layer(model: nn.Module, layer: int = -1) -> nn.Module:
    """The block whose output Grad-CAM reads: unit `layer` (default the last conv, 2x2 maps in VGG-19)."""
    units = model.units()
    return units[layer].output if layer != -1 else model.cam_layer()


def pick_images(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """The first `per_class` test images of every class, in class order: a fixed set covering all classes."""
    idx = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique().tolist()]
    return torch.stack(idx, 1).flatten() if per_class > 1 else torch.cat(idx)


def cam_maps(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, layer: int = -1,
             batch_size: int = 100, *, normalise) -> np.ndarray:
    """(N, 32, 32) Grad-CAM maps in [0, 1] for the ground-truth classes."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    out = []
    with _library_quiet(), GradCAM(model=model, target_layers=[target_layer(model, layer)]) as cam:
        for start in range(0, len(labels), batch_size):
            x = normalise(images_uint8[start:start + batch_size])
            targets = [ClassifierOutputTarget(int(c)) for c in labels[start:start + batch_size]]
            out.append(cam(input_tensor=x, targets=targets))
    return np.concatenate(out)


def overlay(images_uint8: torch.Tensor, maps: np.ndarray) -> list[np.ndarray]:
    """RGB overlays; the library wants un-normalised float images in [0, 1]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = images_uint8.permute(0, 2, 3, 1).float().div(255).numpy()
    with _library_quiet():
        return [show_cam_on_image(img, m, use_rgb=True) for img, m in zip(rgb, maps)]


def cam_metrics(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, layer: int = -1,
                batch_size: int = 100, *, normalise):
    """Per-image table: coverage, the library's confidence change when the image is multiplied by its CAM, and
    ROAD (combined MoRF/LeRF, higher = more faithful), with the model's correctness."""
    import pandas as pd
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    maps = cam_maps(model, images_uint8, labels, layer, batch_size, normalise=normalise)
    conf_change, road = [], []
    road_metric = ROADCombined(percentiles=list(ROAD_PERCENTILES))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ROAD_NOISE_SEED)
        for start in range(0, len(labels), batch_size):
            x = normalise(images_uint8[start:start + batch_size])
            targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels[start:start + batch_size]]
            m = maps[start:start + batch_size]
            with _library_quiet():
                conf_change.append(np.asarray(CamMultImageConfidenceChange()(x, m, targets, model)).reshape(-1))
                road.append(np.asarray(road_metric(x, m, targets, model)).reshape(-1))
    with torch.no_grad():
        pred = torch.cat([model(normalise(images_uint8[s:s + batch_size])).argmax(1)
                          for s in range(0, len(labels), batch_size)])
    return pd.DataFrame({"image": np.arange(len(labels)), "label": labels.numpy(),
                         "correct": (pred == labels).numpy(),
                         "coverage": (maps > COVERAGE_THRESHOLD).mean(axis=(1, 2)),
                         "confidence_change": np.concatenate(conf_change), "road": np.concatenate(road)})


def resolve_layer(model: nn.Module, layer: str | int) -> int:
    """A unit index: an int as given, "last" = -1, "last 4x4" = the last unit whose maps are 4x4 at 32x32 input."""
    if isinstance(layer, int):
        return layer
    if layer == "last":
        return -1
    if layer == "last 4x4":
        sizes = []
        hooks = [u.output.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for u in model.units()]
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
        return max(i for i, size in enumerate(sizes) if size == 4)
    raise ValueError(f"unknown CAM layer {layer!r}; valid: an int, 'last', 'last 4x4'")


def _metrics_one(item, shared):
    from ..train import load_model
    name, cfg = item
    ds, idx = shared["ds"], shared["images"]
    model = load_model(cfg, shared["rdir"], ds.num_classes)
    frames = []
    for layer in shared["layers"]:
        unit = resolve_layer(model, layer)
        m = cam_metrics(model, ds.test_x[idx], ds.test_y[idx], unit, normalise=ds.normalise)
        m.insert(0, "layer", f"{layer} ({model.units()[unit].name})")
        m.insert(0, "seed", cfg.seed)
        m.insert(0, "method", name)
        m["image"] = idx.numpy()
        frames.append(m)
    import pandas as pd
    return pd.concat(frames, ignore_index=True)


def metrics_study(plan, dataset: str, seeds=None, layers=None, n_images: int | None = None, jobs: int = 1,
                  root: str | None = None):
    """Per-image CAM metrics of Firefly and ours of every seed, at each layer, on the same fixed test images
    covering all classes; one process per model, cached in a CSV whose first line records what produced it
    (config keys, layers, image count, ROAD noise seed)."""
    import pandas as pd

    from ..data import load_dataset
    from ..records import cached_csv
    from ..runs.pool import ensure, map_processes

    from ..records import RESULTS_ROOT
    root = root or RESULTS_ROOT
    n_images = n_images if n_images is not None else plan.cam_images
    layers = tuple(layers) if layers else plan.cam_layers
    items = [(name, cfg) for s in (tuple(seeds) if seeds else plan.seeds)
             for name, cfg in plan.cam_configs(dataset, s, root).items()]
    rdir = plan.results_dir(root)
    key = "|".join([c.key() for _, c in items] + [str(layers), str(n_images), f"road_seed={ROAD_NOISE_SEED}"])

    def compute():
        # A render-only study (its runs train through `make results`) must not train from inside a notebook
        ensure([c for _, c in items], rdir, jobs, train=plan.trains_in_figures)
        ds = load_dataset(items[0][1])
        images = pick_images(ds.test_y, max(1, n_images // ds.num_classes))
        shared = {"ds": ds, "images": images, "rdir": rdir, "layers": layers}
        return pd.concat(map_processes(_metrics_one, items, jobs, shared, label="Grad-CAM metrics, models"),
                         ignore_index=True)
    return cached_csv(os.path.join(rdir, f"cam_metrics_{dataset}.csv"), key, compute)


def cam_summary(metrics):
    """Per layer: mean ± std per method (over images and seeds), and ours − Firefly: the mean over seeds of each
    seed's mean per-image difference, with a 95 % CI **over seeds** (the unit that varies between reruns); with a
    single seed the CI is over images and says nothing about seed-to-seed variation."""
    import pandas as pd

    from ..stats import ci95
    cols = ["coverage", "confidence_change", "road"]
    rows = []
    for layer, by_layer in metrics.groupby("layer", sort=False):
        methods = list(dict.fromkeys(by_layer["method"]))
        for m in methods:
            g = by_layer[by_layer["method"] == m]
            rows.append({"layer": layer, "method": m, "seeds": g["seed"].nunique(), "images": len(g),
                         "accuracy (%)": 100 * g["correct"].mean(),
                         **{c: f"{g[c].mean():.4f} ± {g[c].std(ddof=1):.4f}" for c in cols}})
        if len(methods) != 2:
            continue
        pair = by_layer.pivot_table(index=["seed", "image"], columns="method", values=cols)
        diff = {c: pair[(c, methods[1])] - pair[(c, methods[0])] for c in cols}
        seeds = sorted(by_layer["seed"].unique())
        over = "seeds" if len(seeds) > 1 else "images, one seed"
        row = {"layer": layer, "method": f"{methods[1]} − {methods[0]} (95 % CI over {over})", "seeds": len(seeds),
               "images": len(pair), "accuracy (%)": float("nan")}
        for c in cols:
            values = diff[c].groupby(level="seed").mean().tolist() if len(seeds) > 1 else diff[c].tolist()
            mean, half = ci95(values)
            row[c] = f"{mean:+.4f} ± {half:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)
