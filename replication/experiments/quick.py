"""`quick`: the standard study in CPU minutes on a stratified subset of real CIFAR-10 (the default preset)."""
from ..config import QUICK
from .plan import Plan

PLAN = Plan(name="quick", config=QUICK, seeds=(0, 1, 2), description="CPU minutes, real CIFAR-10 subset",
            ablation_sample_rows=8,  # a third to a half of a quick layer's 16-42 rows
            ablation_scoring_variants=False,  # its 4-batch candidate passes make scoring variants noise
            cam_images=300,  # x 3 seeds: 900 image pairs, in CPU minutes
            # E4 adapts each model 7 x 5 times: only the first seed's models, so that `make figures` fits 30 min
            # on the slower machines of this kind (docs/performance.md)
            adapt_seeds=1,
            readme_sections={"main": "results-{dataset}"})
