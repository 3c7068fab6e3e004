"""`smoke`: every code path of the standard study in seconds, on synthetic data (CI and the notebooks' tests)."""
from ..config import SMOKE
from .plan import Plan

PLAN = Plan(name="smoke", config=SMOKE, seeds=(0, 1), description="seconds, synthetic data: every code path",
            ablation_sample_rows=2,  # smoke widths are 4-7
            cam_images=100, adapt_steps=4, default_jobs=1)
