"""`make results` / `make figures`: train every run a preset's tables need, compute the analyses, then execute every
notebook with papermill into build/notebooks/<preset>/ (kept as build output). The top layer: it may use all others.
"""
from __future__ import annotations

import contextlib
import glob
import os
import time

from .pool import ensure
from .records import REPO_ROOT, atomic_write_text, figures_dir, require_writable, tables_dir
from .study import (DEFAULT_SEEDS, RESULTS_ROOT, ablation_configs, from_round0_configs,
                    dataset_available, fulldata_study, main_configs, results_dir,
                    then_fixed_at_final_widths)


# Notebooks `make figures` leaves out per preset (none at present; a preset whose analyses would not fit its
# budget can list a notebook here, which still runs by hand).
SKIPPED_NOTEBOOKS: dict[str, tuple[str, ...]] = {}


def trains_in_figures(preset_name: str) -> bool:
    """`make figures` trains what a preset's tables lack, except for the fulldata study (hours of CPU): its runs
    train only through `make results`, so its figures always render the stored records."""
    return preset_name != "fulldata"


@contextlib.contextmanager
def _kernel_imports_this_repository():
    """Notebook kernels import the package of the repository they render, even where the environment has another
    clone installed in editable mode (the kernel inherits this process's environment; PYTHONPATH comes first)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + ([before] if before else []))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


# The kernel's own log lines on every successful notebook read as trouble: that its local TCP sockets are
# unencrypted (a warning) and, now and then, that the shutdown's interrupt reached it (an "ERROR" after the last
# cell). A failing cell still fails the render, with its traceback, through papermill.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


def mark_failed(path: str, exc: BaseException) -> None:
    """Put a first cell into an executed notebook that did not finish, so that it never reads as complete."""
    import nbformat
    if not os.path.isfile(path):
        return
    nb = nbformat.read(path, as_version=4)
    what = "was interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed ({type(exc).__name__})"
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        f"**This notebook {what} before its last cell: its outputs are incomplete.**"))
    nb.metadata.setdefault("replication", {})["status"] = "failed"
    atomic_write_text(path, nbformat.writes(nb))


def run_notebooks(preset_name: str, seeds=None, jobs: int = 2, log=print, build_dir: str | None = None) -> list[str]:
    """Execute every notebook for `preset_name` into `build_dir` (default build/notebooks/<preset>/)."""
    import papermill as pm

    out_dir = build_dir or os.path.join(REPO_ROOT, "build", "notebooks", preset_name)
    # Every folder a render writes, checked before the first notebook (a read-only one fails here in one line).
    require_writable(out_dir, figures_dir(preset_name), tables_dir(preset_name))
    os.makedirs(out_dir, exist_ok=True)
    done = []
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb"))):
        if os.path.basename(path) in SKIPPED_NOTEBOOKS.get(preset_name, ()):
            log(f"[figures] {os.path.basename(path)} skipped for {preset_name} (pipeline.SKIPPED_NOTEBOOKS)")
            continue
        declared = pm.inspect_notebook(path)
        params = {"preset": preset_name, "jobs": jobs}
        if seeds:
            params["seeds"] = list(seeds)
        params = {k: v for k, v in params.items() if k in declared}
        out = os.path.join(out_dir, os.path.basename(path))
        t0 = time.perf_counter()
        log(f"[figures] {os.path.basename(path)} ({preset_name}) ...")
        try:
            with _kernel_imports_this_repository():
                pm.execute_notebook(path, out, parameters=params, kernel_name="python3",
                                    cwd=os.path.dirname(path), progress_bar=False,
                                    extra_arguments=KERNEL_ARGUMENTS)
        except BaseException as exc:
            mark_failed(out, exc)
            raise
        log(f"[figures] {os.path.basename(path)} done in {time.perf_counter() - t0:.0f}s -> {out}")
        done.append(out)
    return done


def full_study(preset_name: str, seeds=None, jobs: int = 1, datasets=("cifar10", "cifar100"),
               root: str = RESULTS_ROOT, log=print, cluster=None) -> None:
    """Every run the notebooks need, trained up front in one pool (progress in the terminal), then the analyses
    the notebooks would otherwise compute (hyper/hypo E1-E4, Grad-CAM metrics), so that they only render.
    `cluster` (executors.ClusterOptions) sends the runs to submitit jobs instead; the analyses follow once every
    run is done (executors.StudyIncomplete until then)."""
    from .executors import runner_for
    runner = runner_for(cluster, jobs, log)
    if preset_name == "fulldata":  # its own plan: seeds, the lambda sweep (replication/fulldata.py)
        fulldata_study(jobs, root, log, runner=runner)
        from . import analysis, cam
        log("analyses: Grad-CAM metrics (5 seeds, 2 layers), hyper/hypo neurons E1-E4 (Firefly and ours) ...")
        cam.metrics_study(preset_name, "cifar10", jobs=jobs, root=root)
        analysis.neuron_study(preset_name, "cifar10", jobs=jobs, root=root)
        return
    seeds = tuple(seeds) if seeds else DEFAULT_SEEDS[preset_name]
    cfgs = []
    available = []
    for ds in datasets:
        if not dataset_available(preset_name, ds):
            log(f"{ds}: data not found in the data dir; its table is skipped (README 'Data' says how to get it)")
            continue
        available.append(ds)
        cfgs += main_configs(preset_name, ds, seeds)
    if "cifar10" in available:
        cfgs += ablation_configs(preset_name, "cifar10") + from_round0_configs(preset_name, "cifar10", seeds)
    ensure(cfgs, results_dir(preset_name, root), jobs, log, then=then_fixed_at_final_widths, runner=runner)
    if "cifar10" in available:
        from . import analysis, cam  # grad-cam's import takes seconds: only when the analyses run
        log("analyses: Grad-CAM metrics, hyper/hypo neurons E1-E4 ...")
        cam.metrics_study(preset_name, "cifar10", jobs=jobs, root=root)
        analysis.neuron_study(preset_name, "cifar10", seeds, jobs=jobs, root=root)
