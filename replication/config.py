"""One frozen configuration for every run, and the named presets derived from it.

A run is fully described by a `Config`; its `key()` (a hash of every field that can change a result) names the
run's result file, so an identical config is recognised and reused. Presets differ from `PAPER` only by
`dataclasses.replace`, so every scale runs the same code path.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

from .data import READERS
from .growth.ours import DEFAULT_LAMBDA_SIM  # noqa: F401 (lambda_sim of "ours" unless set; kept importable here)
from .growth.registry import METHODS, method

DATASETS = tuple(READERS)  # data/__init__.py: one reader each
ARCHS = ("vgg11", "vgg16", "vgg19", "mobilenetv1")
SIM_VARIANTS = ("decorrelate", "distribution")
SIM_SCOPES = ("all", "new")
INITS = ("default", "kaiming")
SCORE_POINTS = ("full", "zero")
NEW_DEPTHWISE = ("trained", "zero")
# Arithmetic of every forward/backward pass: fp32 (Firefly's, the default), TF32 tensor cores (CUDA only) or bf16
# autocast. Non-fp32 is a deviation from the protocol (docs/method.md).
PRECISIONS = ("fp32", "tf32", "bf16")
# Firefly grows MobileNetV1 from 32 channels in every layer, VGG from 16 (FF:model.py:51-52, FF:main.py dim_hidden).
FIREFLY_START_WIDTH = {"vgg11": 16, "vgg16": 16, "vgg19": 16, "mobilenetv1": 32}
LAMBDA_SWEEP = (1e-3, 1e-2, 1e-1, 1.0)  # paper-facts.md: sweep {1e-3, 1e-2, 1e-1, 1}

# Fields that only say where things live or how fast they run; they never change a number in the results.
# cudnn_benchmark is here although cuDNN's choice of algorithm can move the last bits of a GPU run: cuDNN's backward
# kernels are not bit-deterministic anyway, so GPU runs reproduce within a tolerance only (docs/results.md).
NON_RESULT_FIELDS = ("data_dir", "download", "verify_data", "num_threads", "progress", "cudnn_benchmark")
# Result fields added after run records were first committed (2026-11-30): omitted from the key at their default.
# A new field goes here, with a default that reproduces the behaviour before it existed.
KEY_OMITTED_AT_DEFAULT: tuple[str, ...] = ("precision", "compile_model")

# Fields that act only after the first round (growth, and the constraint when it starts at round 1): runs that differ
# only in them train an identical round 0, which `train.run` computes once and forks from (`round0_key`).
AFTER_ROUND0_FIELDS = ("method", "rounds", "grow_ratio", "split_noise", "rebuild_optimizer", "lambda_sim",
                       "sim_variant", "sim_scope", "sim_from_round", "sim_sample_rows")


def default_data_dir() -> str:
    """$REPLICATION_DATA, else data/ at the repository root (not the working directory: notebooks run elsewhere)."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("REPLICATION_DATA", os.path.join(repo_root, "data"))


@dataclass(frozen=True)
class Config:
    # --- data ---
    dataset: str = "cifar10"
    data_dir: str = field(default_factory=default_data_dir)
    download: bool = False
    verify_data: bool = True  # False accepts files that fail the md5/pixel check (recorded as "unverified")
    train_per_class: int | None = None  # stratified subset of the training split; None = all
    test_per_class: int | None = None
    augment: bool = True  # random crop 32 (pad 4) + horizontal flip, as Firefly's CIFAR pipeline
    synthetic_train_per_class: int = 100  # only for dataset="synthetic"
    synthetic_test_per_class: int = 50
    synthetic_classes: int = 10

    # --- model ---
    arch: str = "vgg19"
    start_width: int | None = 16  # every growable layer starts this wide (Firefly: 16 for VGG); None = full widths
    width_scale: float = 1.0  # multiplies the full widths when start_width is None (fixed-full baselines)
    widths: tuple[int, ...] | None = None  # explicit per-layer widths; overrides start_width/width_scale
    # Firefly's code has no init of its own, so PyTorch's defaults apply (U(+-1/sqrt(fan_in)) convs, classifier bias).
    # "kaiming" = He-normal fan_out on every conv, the 1x1 classifier included (this project's first choice).
    init: str = "default"

    # --- growth ---
    method: str = "firefly"
    rounds: int = 11  # Firefly: 11 rounds, a growth step between consecutive rounds
    epochs_per_round: int = 160  # Firefly: 160 epochs per round
    grow_ratio: float = 0.30  # Firefly paper (maintainer, issue #1); its code's default is 0.35
    firefly_new_per_layer: int = 70  # Firefly: K = 70 brand-new candidates per layer
    firefly_split_init: float = 0.1  # Firefly: split direction ~ U(-0.1, 0.1)
    firefly_new_filter_std: float = 0.1  # Firefly: new filters ~ N(0, 0.1)
    firefly_new_fanout_init: float = 0.01  # Firefly: new outgoing weights ~ U(-0.01, 0.01)
    firefly_candidate_lr: float = 1e-3  # Firefly: RMSprop lr 1e-3 for the candidate pass (FF:model.py:255)
    firefly_rmsprop_momentum: float = 0.1  # FF:model.py:255
    firefly_rmsprop_alpha: float = 0.9  # FF:model.py:255
    # L2 penalties of the candidate pass: 1e-2 * (sum v^2 + 1e-2 * sum n^2), fan-out none (FF:sp/conv.py:173-177).
    firefly_l2_split: float = 1e-2
    firefly_l2_new_fanin: float = 1e-4
    firefly_l2_new_fanout: float = 0.0
    # "full": dL/dt of the loss along each candidate's own perturbation with every candidate on (FF:model.py:271-280,
    # FF:sp/conv.py:237-244); "zero": dL/dg at g = 0, every candidate off (this project's first version).
    firefly_score_at: str = "full"
    firefly_new_to_new: bool = True  # learn, keep weights between consecutive layers' new neurons (FF:sp/conv.py:200)
    firefly_keep_extra: int = 1  # Firefly keeps scores <= the n-th smallest: n + 1 neurons (FF:sp/net.py:65)
    firefly_grouped_selection: bool = True  # MobileNetV1: two groups, each its own quota (FF:model.py:87); VGG: one
    firefly_new_depthwise: str = "trained"  # MobileNetV1 new channels' depthwise filters; Firefly's code keeps "zero"
    firefly_candidate_images: int | None = None  # images per candidate pass; None = the whole training split
    firefly_score_images: int | None = None  # images of the scoring pass; None = firefly_candidate_images
    firefly_candidate_batch_size: int = 128  # smaller batches bound the candidate net's memory
    split_noise: float = 1e-2  # method "split": Net2Wider-style noise on the duplicated filters
    rebuild_optimizer: bool = True  # Firefly: optimiser rebuilt and lr reset after every growth step

    # --- similarity constraint (the paper's method; form and weight are our choices, docs/method.md) ---
    lambda_sim: float = 0.0
    sim_variant: str = "decorrelate"
    sim_scope: str = "all"
    sim_from_round: int = 1  # 1 = rounds after the first growth step; 0 = also the first round
    sim_sample_rows: int | None = None  # rows per layer per step for a stochastic estimate; None = exact (all rows)

    # --- optimisation (Firefly protocol) ---
    batch_size: int = 128
    eval_batch_size: int = 500
    eval_every_epoch: bool = True  # False: test accuracy only at the end of each round (what tables and curves use)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of a round at which lr drops by lr_gamma
    # Firefly decays after 1-indexed epochs E//2 - 1 and E//4*3 - 1 (FF:main.py:124-128): 79/40/41 of 160.
    lr_milestone_shift: int = -1
    lr_gamma: float = 0.1

    # --- run ---
    seed: int = 0
    num_threads: int | None = None  # None = all cores (see train.configure_threads)
    progress: bool = True
    precision: str = "fp32"  # PRECISIONS; part of the run key (omitted at its default: older records keep theirs)
    # torch.compile the training step each round (recompiled after every growth step); off: docs/performance.md
    # weighs compile time against the time saved. A result field: fused kernels may round differently.
    compile_model: bool = False
    cudnn_benchmark: bool = True  # let cuDNN time its algorithms once per shape (CUDA only)

    def __post_init__(self):
        # Lists from JSON or the CLI become tuples so configs stay hashable and compare equal.
        for name in ("lr_milestones", "widths"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for f in dataclasses.fields(self):  # NaN passes every "> 0" check silently (lambda_sim=nan would be "off")
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("method", self.method, tuple(METHODS))
        _check_choice("sim_variant", self.sim_variant, SIM_VARIANTS)
        _check_choice("sim_scope", self.sim_scope, SIM_SCOPES)
        _check_choice("init", self.init, INITS)
        _check_choice("firefly_score_at", self.firefly_score_at, SCORE_POINTS)
        _check_choice("firefly_new_depthwise", self.firefly_new_depthwise, NEW_DEPTHWISE)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.firefly_keep_extra < 0:
            raise ValueError("firefly_keep_extra must be >= 0")
        if self.rounds < 1 or self.epochs_per_round < 1:
            raise ValueError("rounds and epochs_per_round must be >= 1")
        growth = method(self.method)
        if growth.grows and self.start_width is None and not self.widths:
            raise ValueError(f"method {self.method!r} grows a network: set start_width (e.g. 16)")
        if growth.needs_constraint and self.lambda_sim <= 0:
            raise ValueError(f"method {self.method!r} is {growth.needs_constraint}: lambda_sim must be > 0")
        if not 0 < self.grow_ratio <= 1:
            raise ValueError("grow_ratio must be in (0, 1]")
        if self.lambda_sim < 0:
            raise ValueError("lambda_sim must be >= 0")
        if self.sim_sample_rows is not None and self.sim_sample_rows < 2:
            raise ValueError("sim_sample_rows must be >= 2 (or None for the exact constraint)")

    @property
    def total_epochs(self) -> int:
        return self.rounds * self.epochs_per_round

    @property
    def grows(self) -> bool:
        return method(self.method).grows and self.rounds > 1

    def result_fields(self) -> dict:
        d = dataclasses.asdict(self)
        for k in NON_RESULT_FIELDS:
            d.pop(k)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # as JSON stores it

    def key(self) -> str:
        """Short stable hash of every result-relevant field: equal keys mean the same experiment. A field added
        after records were committed is left out while it has its default (KEY_OMITTED_AT_DEFAULT), so adding it
        leaves every existing key, hence every committed record, valid (tests/test_config.py pins them)."""
        return _short_hash(self._keyed_fields())

    def _keyed_fields(self) -> dict:
        fields = self.result_fields()
        for f in dataclasses.fields(self):
            if f.name in KEY_OMITTED_AT_DEFAULT and fields[f.name] == f.default:
                del fields[f.name]
        return fields

    def round0_key(self) -> str | None:
        """Hash of everything that shapes round 0, or None when round 0 is this run's own (one round, or the
        constraint already on in round 0, or a fixed net at explicit widths: growing runs start from
        `start_width`, so no other run of a study starts where it does)."""
        if self.rounds < 2 or (self.lambda_sim > 0 and self.sim_from_round == 0):
            return None
        if self.method == "fixed" and self.widths is not None:
            return None
        return _short_hash({k: v for k, v in self._keyed_fields().items()
                            if k not in AFTER_ROUND0_FIELDS and not k.startswith("firefly_")})

    def name(self) -> str:
        lam = f"-lam{self.lambda_sim:g}" if self.lambda_sim > 0 else ""
        return f"{self.dataset}-{self.arch}-{self.method}{lam}-s{self.seed}-{self.key()}"

    def replace(self, **changes) -> "Config":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _short_hash(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()[:12]


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")


# The Firefly protocol at full scale (GPU-sized: ~1,760 epochs per growing run).
PAPER = Config()

# CPU minutes on real CIFAR-10: a stratified subset, 3 short rounds (2 growth steps), a short candidate pass.
QUICK = dataclasses.replace(
    PAPER,
    train_per_class=400,
    test_per_class=200,
    rounds=3,
    epochs_per_round=4,  # Firefly's lr rule: 1 / 1 / 2 epochs at 0.1 / 0.01 / 0.001
    firefly_candidate_images=512,
    eval_batch_size=1000,
    eval_every_epoch=False,  # evaluating 2,000 test images is ~20 % of a quick epoch; every number uses round ends
)

# All 50,000 CIFAR-10 training and 10,000 test images, Firefly's VGG-19 from 16 channels and its protocol; only
# the number of rounds, the epochs per round and the candidate passes are shortened, so that the whole study fits
# ~10 h of this 2-core CPU (README, docs/method.md; the pilot that sized it: docs/performance.md).
FULLDATA = dataclasses.replace(
    PAPER,
    rounds=3,  # Firefly: 11 (10 growth steps); here 2 growth steps
    epochs_per_round=8,  # Firefly: 160; 8 keeps its lr rule meaningful (3 / 2 / 3 epochs at 0.1 / 0.01 / 0.001)
    firefly_candidate_images=100 * 128,  # 100 RMSprop steps of batch 128 (Firefly: one pass, 391 steps)
    firefly_score_images=50 * 128,  # 50 scoring batches (Firefly: one pass)
    eval_batch_size=1000,
    eval_every_epoch=False,
)

# Seconds, on synthetic data: exercises every code path in CI.
SMOKE = dataclasses.replace(
    PAPER,
    dataset="synthetic",
    arch="vgg11",
    start_width=4,
    synthetic_train_per_class=32,
    synthetic_test_per_class=16,
    rounds=2,
    epochs_per_round=2,
    batch_size=64,
    firefly_new_per_layer=4,
    firefly_candidate_images=128,
    firefly_candidate_batch_size=64,
    progress=False,
    num_threads=1,  # models this small run fastest on one thread (and tests may run beside other work)
)
