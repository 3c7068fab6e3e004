"""`paper`: the standard study at Firefly's full protocol (GPU-sized), with the fixed full-width net beside it."""
from ..config import PAPER
from .plan import STANDARD_MAIN_ROWS, STANDARD_NEURON_ROWS, Plan

PLAN = Plan(name="paper", config=PAPER, seeds=(0, 1, 2),  # paper-facts.md ("metric"): >= 3 seeds
            description="Firefly's protocol: 11 rounds x 160 epochs (GPU)",
            main_rows=STANDARD_MAIN_ROWS + ({"method": "fixed", "start_width": None},),
            neuron_rows=STANDARD_NEURON_ROWS + ("fixed (full)",),
            ablation_sample_rows=32,  # the size `make bench` times at full widths
            cam_layers=("last", "last 4x4"))  # the 2x2 maps of the last conv are coarse: also the last 4x4 layer
