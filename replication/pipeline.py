"""`make results` / `make figures`: train every run a preset's tables need, compute the analyses, then execute every
notebook with papermill into build/notebooks/<preset>/ (kept as build output). The top layer: it may use all others.
"""
from __future__ import annotations

import contextlib
import glob
import os
import time

from .experiments import Plan, plan
from .records import REPO_ROOT, RESULTS_ROOT, atomic_write_text, figures_dir, require_writable, tables_dir


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
    """Execute every notebook for the study `preset_name` into `build_dir` (default build/notebooks/<preset>/),
    except those its plan skips."""
    import papermill as pm

    skipped = plan(preset_name).skipped_notebooks
    out_dir = build_dir or os.path.join(REPO_ROOT, "build", "notebooks", preset_name)
    # Every folder a render writes, checked before the first notebook (a read-only one fails here in one line).
    require_writable(out_dir, figures_dir(preset_name), tables_dir(preset_name))
    os.makedirs(out_dir, exist_ok=True)
    done = []
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb"))):
        if os.path.basename(path) in skipped:
            log(f"[figures] {os.path.basename(path)} skipped for {preset_name} (its plan's skipped_notebooks)")
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


def full_study(study: str | Plan, seeds=None, jobs: int = 1, datasets=("cifar10", "cifar100"),
               root: str = RESULTS_ROOT, log=print, cluster=None) -> None:
    """Every run a study's notebooks need, trained up front in one pool (progress in the terminal), then the
    analyses the notebooks would otherwise compute (hyper/hypo E1-E4, Grad-CAM metrics), so that they only render.
    `study` is a plan or its name. `cluster` (runs/executors.ClusterOptions) sends the runs to submitit jobs
    instead; the analyses follow once every run is done (StudyIncomplete until then)."""
    from .runs.executors import runner_for
    study = plan(study)
    runner = runner_for(cluster, jobs, log)
    if "cifar10" in study.train_all(seeds, jobs, datasets, root, log, runner):
        from .analysis import cam, hyper_hypo  # grad-cam's import takes seconds: only when the analyses run
        log(f"analyses: Grad-CAM metrics ({len(seeds or study.seeds)} seeds, {len(study.cam_layers)} layer(s))"
            + (f", hyper/hypo neurons E1-E4 ({', '.join(study.neuron_rows)})" if study.neuron_rows else "") + " ...")
        cam.metrics_study(study, "cifar10", seeds, jobs=jobs, root=root)  # the seeds it trained, no others
        if study.neuron_rows:
            hyper_hypo.neuron_study(study, "cifar10", seeds, jobs=jobs, root=root)
