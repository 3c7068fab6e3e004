"""`make figures`: execute every notebook with papermill into build/notebooks/<preset>/ (kept as build output)."""
from __future__ import annotations

import glob
import os
import time

from .results import REPO_ROOT


def run_notebooks(preset_name: str, seeds=None, jobs: int = 2, log=print) -> list[str]:
    import papermill as pm

    out_dir = os.path.join(REPO_ROOT, "build", "notebooks", preset_name)
    os.makedirs(out_dir, exist_ok=True)
    done = []
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb"))):
        declared = pm.inspect_notebook(path)
        params = {"preset": preset_name, "jobs": jobs}
        if seeds:
            params["seeds"] = list(seeds)
        params = {k: v for k, v in params.items() if k in declared}
        out = os.path.join(out_dir, os.path.basename(path))
        t0 = time.perf_counter()
        log(f"[figures] {os.path.basename(path)} ({preset_name}) ...")
        pm.execute_notebook(path, out, parameters=params, kernel_name="python3", cwd=os.path.dirname(path),
                            progress_bar=False)
        log(f"[figures] {os.path.basename(path)} done in {time.perf_counter() - t0:.0f}s -> {out}")
        done.append(out)
    return done
