"""`python -m replication ...`: a thin command line over the library (all logic lives in the modules)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .config import ARCHS, DATASETS, DEFAULT_LAMBDA_SIM, FIREFLY_START_WIDTH, PAPER, Config
from .experiments import DEFAULT_PRESET, plan, plans
from .growth.registry import METHODS
from .records import RESULTS_ROOT


def _parse_value(field: dataclasses.Field, text: str):
    """A --set value as the field's type; a ValueError says what was expected."""
    if text.lower() == "none":
        return None
    kind = str(field.type)
    if "bool" in kind:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    try:
        if "tuple[int" in kind:
            return tuple(int(v) for v in text.split(","))
        if "tuple" in kind:
            return tuple(float(v) for v in text.split(","))
        if "int" in kind and "float" not in kind:
            return int(text)
        if "float" in kind:
            return float(text)
    except ValueError:
        want = "integers" if "tuple[int" in kind else "numbers" if "tuple" in kind else \
            "an integer" if "float" not in kind else "a number"
        raise ValueError(f"expected {want}{' separated by commas' if 'tuple' in kind else ''}, got {text!r}") \
            from None
    return text


def config_from_args(args) -> Config:
    overrides = {}
    if getattr(args, "no_verify", False):
        overrides["verify_data"] = False
    for name in ("dataset", "arch", "method", "seed", "lambda_sim", "data_dir", "download", "num_threads"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set expects FIELD=VALUE with FIELD one of: {', '.join(fields)}; got {item!r}")
        try:
            overrides[key] = _parse_value(fields[key], value)
        except ValueError as exc:
            raise ValueError(f"--set {key}={value}: {exc}") from None
    if overrides.get("method") == "ours" and "lambda_sim" not in overrides:
        overrides["lambda_sim"] = DEFAULT_LAMBDA_SIM
    if overrides.get("method") == "fixed" and "start_width" not in overrides and args.full_width:
        overrides["start_width"] = None
    base = plan(args.preset).config
    if (overrides.get("arch") in FIREFLY_START_WIDTH and "start_width" not in overrides
            and base.start_width == FIREFLY_START_WIDTH[base.arch]):  # a preset at Firefly's start width keeps it
        overrides["start_width"] = FIREFLY_START_WIDTH[overrides["arch"]]  # 32 for MobileNetV1 (FF:model.py:51-52)
    return base.replace(**overrides)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replication",
                                description="Growing networks with a neuron-similarity constraint "
                                            "(replication of Sakai & Hotta 2024, arXiv 2408.13291).")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (and grow) one network; reuses a finished run with the same config")
    t.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"base configuration: the config of a study, {', '.join(plans())} (default {DEFAULT_PRESET})")
    t.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default: the preset's)")
    t.add_argument("--method", help=f"one of {', '.join(METHODS)} (default firefly); 'ours' = firefly + "
                                    "the similarity constraint")
    t.add_argument("--arch", help=f"one of {', '.join(ARCHS)} (default: the preset's)")
    t.add_argument("--seed", type=int, help="run seed (default 0)")
    t.add_argument("--lambda-sim", dest="lambda_sim", type=float,
                   help="weight of the similarity constraint (default 0; 'ours' defaults to the chosen value)")
    t.add_argument("--full-width", action="store_true",
                   help="with --method fixed: the full-width network (start_width=None) instead of the compact one")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set rounds=3 --set sim_variant=distribution")
    t.add_argument("--data-dir", dest="data_dir", help="folder holding the official CIFAR python layout "
                                                       "(default: $REPLICATION_DATA or data/)")
    t.add_argument("--download", action="store_true", default=None,
                   help="download CIFAR through torchvision if it is missing (needs network)")
    t.add_argument("--no-verify", dest="no_verify", action="store_true",
                   help="use data files that fail the md5 / pixel-fingerprint check (recorded as unverified)")
    t.add_argument("--threads", dest="num_threads", type=int, help="torch CPU threads (default: all cores)")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    t.add_argument("--out", default=RESULTS_ROOT,
                   help="results folder (default: results/ at the repository root, like data/, whatever the "
                        "working directory)")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint of this config")
    sub.add_parser("presets", help="list the presets and how they differ from the paper protocol")
    seal = sub.add_parser("seal-records", help="stamp run records and cached tables written before checksums "
                                               "existed (each record's consistency is checked first)")
    seal.add_argument("folders", nargs="+", help="results folders, e.g. results/quick")
    for name, text in (("study", "train every run the tables and figures need (cached runs are reused)"),
                       ("figures", "run every notebook with papermill: trains what is missing, renders all")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--preset", default=DEFAULT_PRESET,
                       help=f"the study: one of {', '.join(plans())} (default {DEFAULT_PRESET})")
        s.add_argument("--seeds", type=lambda v: tuple(int(x) for x in v.split(",")),
                       help="comma-separated seeds (default: the preset's, e.g. 0,1,2)")
        s.add_argument("--jobs", type=int, default=2, help="runs trained in parallel processes (default 2)")
        s.add_argument("--datasets", default="cifar10,cifar100",
                       help="data sets of the main tables (default cifar10,cifar100; missing data is skipped)")
        if name == "study":
            _add_executor_options(s)
    return p


def _add_executor_options(s: argparse.ArgumentParser) -> None:
    from .runs.executors import EXECUTORS, ClusterOptions
    d = ClusterOptions()
    g = s.add_argument_group("where the runs execute (README 'Running on a GPU or a cluster')")
    g.add_argument("--executor", default=d.executor, choices=EXECUTORS,
                   help="inline: this machine's process pool (default); local: submitit local processes; "
                        "slurm: submitit job arrays")
    g.add_argument("--device", default=d.device, help="torch device of every run, e.g. cuda (default cpu)")
    g.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    g.add_argument("--gpus-per-job", type=int, default=d.gpus_per_job, help="GPUs per job (default 0)")
    g.add_argument("--cpus-per-job", type=int, default=d.cpus_per_job,
                   help=f"CPU cores per job, also its torch threads (default {d.cpus_per_job})")
    g.add_argument("--time-min", type=int, default=d.time_min,
                   help=f"Slurm time limit per job in minutes; a job that reaches it is requeued and resumes "
                        f"(default {d.time_min})")
    g.add_argument("--array-parallelism", type=int, default=d.array_parallelism,
                   help=f"jobs of one array running at once (default {d.array_parallelism})")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option, repeatable, e.g. --sbatch account=abc --sbatch mem=32G")
    g.add_argument("--no-wait", action="store_true",
                   help="submit what is ready and return (call again to submit the rest and see the status)")
    g.add_argument("--poll-s", type=float, default=d.poll_s, help=f"seconds between status polls ({d.poll_s:g})")


def cluster_from_args(args):
    from .runs.executors import ClusterOptions
    return ClusterOptions(executor=args.executor, device=args.device, partition=args.partition,
                          gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job, time_min=args.time_min,
                          array_parallelism=args.array_parallelism, sbatch=tuple(args.sbatch),
                          wait=not args.no_wait, poll_s=args.poll_s)


def main(argv=None) -> int:
    from .data import DataError
    from .records import CannotWrite
    from .train import CheckpointMismatch, TrainingDiverged, run

    args = build_parser().parse_args(argv)
    try:
        if args.command == "presets":
            base = dataclasses.asdict(PAPER)
            for name, study in plans().items():
                diff = {k: v for k, v in dataclasses.asdict(study.config).items() if base[k] != v}
                print(f"{name} ({study.description}): {diff or 'the Firefly protocol'}")
            return 0
        if args.command == "seal-records":
            from .records import seal_folder
            for folder in args.folders:
                if not os.path.isdir(os.path.join(folder, "runs")):
                    raise ValueError(f"{folder} is not a results folder (it has no runs/)")
                seal_folder(folder)
            return 0
        if args.command == "study":
            from .runs.executors import StudyIncomplete
            from .pipeline import full_study
            try:
                full_study(args.preset, args.seeds, args.jobs, args.datasets.split(","),
                           cluster=cluster_from_args(args))
            except StudyIncomplete as exc:
                print(exc)
                return 1 if exc.failed else 0
            return 0
        if args.command == "figures":
            from .pipeline import full_study, run_notebooks
            if plan(args.preset).trains_in_figures:
                full_study(args.preset, args.seeds, args.jobs, args.datasets.split(","))
            else:
                # Its notebooks would otherwise train what is missing (hours), unasked, on a render command.
                missing = plan(args.preset).missing()
                if missing:
                    raise ValueError(f"{args.preset}: {len(missing)} run(s) of its plan are not stored yet (first: "
                                     f"{missing[0].name()}); its figures render from stored records only, and "
                                     f"`make results PRESET={args.preset}` trains them")
                print(f"[figures] {args.preset}: rendered from the stored records only")
            run_notebooks(args.preset, args.seeds, args.jobs)
            return 0
        cfg = config_from_args(args)
        rec = run(cfg, results_dir=args.out, device=args.device, resume=not args.no_resume)
        f = rec["final"]
        print(f"{cfg.name()}: test acc {f['test_acc']:.4f}, params {f['params']:,}, FLOPs/img {f['flops']:,}, "
              f"widths {f['widths']} ({rec['wall_time_s']:.0f}s) -> {args.out}/runs/{cfg.name()}.json")
        return 0
    except (DataError, ValueError, CannotWrite, CheckpointMismatch, TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
