import dataclasses

import pytest

from replication import cli
from replication.config import PAPER, QUICK, SMOKE, Config
from replication.experiments import plan, plans


def test_presets_differ_from_paper_only_by_replace():
    for study in plans().values():
        assert isinstance(study.config, Config)
    assert PAPER.batch_size == 128 and PAPER.lr == 0.1 and PAPER.momentum == 0.9 and PAPER.nesterov
    assert PAPER.weight_decay == 1e-4 and PAPER.rounds == 11 and PAPER.epochs_per_round == 160
    assert PAPER.grow_ratio == 0.30 and PAPER.firefly_new_per_layer == 70 and PAPER.start_width == 16


def test_key_ignores_paths_and_threads_but_not_results():
    assert QUICK.key() == QUICK.replace(data_dir="/elsewhere", num_threads=1, progress=False).key()
    assert QUICK.key() != QUICK.replace(seed=1).key()
    assert QUICK.key() != QUICK.replace(lambda_sim=0.5).key()


def test_config_is_frozen_and_lists_become_tuples():
    cfg = Config.from_dict({**dataclasses.asdict(SMOKE), "lr_milestones": [0.5, 0.75], "widths": None})
    assert cfg == SMOKE
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


@pytest.mark.parametrize("field,value", [("dataset", "mnist"), ("method", "magic"), ("arch", "resnet"),
                                         ("sim_variant", "x"), ("sim_scope", "old")])
def test_unknown_choices_list_the_valid_ones(field, value):
    with pytest.raises(ValueError, match="valid:"):
        SMOKE.replace(**{field: value})


def test_ours_needs_a_positive_lambda_and_growing_needs_a_start_width():
    with pytest.raises(ValueError, match="lambda_sim"):
        SMOKE.replace(method="ours", lambda_sim=0.0)
    with pytest.raises(ValueError, match="start_width"):
        SMOKE.replace(method="firefly", start_width=None)
    with pytest.raises(ValueError, match="unknown preset"):
        plan("huge")
    with pytest.raises(ValueError, match="unknown config field"):
        SMOKE.replace(colour="red")
    with pytest.raises(ValueError, match="sim_sample_rows"):
        SMOKE.replace(sim_sample_rows=1)


def test_cli_builds_configs_and_rejects_bad_input(capsys):
    args = cli.build_parser().parse_args(["train", "--preset", "smoke", "--method", "ours", "--set", "rounds=3",
                                          "--set", "widths=4,4,4,4,4,4,4,4", "--set", "rebuild_optimizer=false"])
    cfg = cli.config_from_args(args)
    assert cfg.method == "ours" and cfg.lambda_sim > 0 and cfg.rounds == 3 and cfg.widths == (4,) * 8
    assert cfg.rebuild_optimizer is False
    assert cli.main(["train", "--preset", "smoke", "--set", "nonsense=1"]) == 2
    assert "FIELD=VALUE" in capsys.readouterr().err
    assert cli.main(["train", "--preset", "smoke", "--dataset", "imagenet"]) == 2
    assert "valid: cifar10, cifar100, synthetic" in capsys.readouterr().err


def test_mobilenet_starts_at_firefly_width_32_from_the_cli():
    from replication import cli
    args = cli.build_parser().parse_args(["train", "--preset", "quick", "--arch", "mobilenetv1"])
    assert cli.config_from_args(args).start_width == 32
    args = cli.build_parser().parse_args(["train", "--preset", "quick", "--arch", "vgg16"])
    assert cli.config_from_args(args).start_width == 16
    args = cli.build_parser().parse_args(["train", "--preset", "smoke", "--arch", "mobilenetv1"])
    assert cli.config_from_args(args).start_width == 4  # a preset with its own start width keeps it


@pytest.mark.parametrize("field,value", [("init", "xavier"), ("firefly_score_at", "half"),
                                         ("firefly_new_depthwise", "random"), ("firefly_keep_extra", -1)])
def test_firefly_switches_reject_unknown_values(field, value):
    with pytest.raises(ValueError, match=field):
        SMOKE.replace(**{field: value})


def test_every_committed_record_keeps_its_key():
    """Adding a config field must not orphan committed records: each record's stored config still hashes to its
    stored key (new fields at their default are left out of the key, config.KEY_OMITTED_AT_DEFAULT)."""
    import glob
    import json
    import os

    from replication.records import REPO_ROOT
    paths = sorted(glob.glob(os.path.join(REPO_ROOT, "results", "*", "runs", "*.json")))
    assert len(paths) >= 15
    for path in paths:
        rec = json.load(open(path))
        assert Config.from_dict(rec["config"]).key() == rec["config_key"], path


def test_every_committed_round0_state_keeps_its_key():
    """Runs fork from committed shared rounds 0 by `round0_key`: a new field must leave those keys unchanged too."""
    import glob
    import os

    import torch

    from replication.records import REPO_ROOT
    paths = sorted(glob.glob(os.path.join(REPO_ROOT, "results", "*", "round0", "*.pt")))
    assert paths, "the fulldata study commits its shared rounds 0"
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert Config.from_dict(state["record"]["config"]).round0_key() == state["round0_key"], path
        assert path.endswith(f"-{state['round0_key']}.pt")


def test_a_field_at_its_default_can_be_left_out_of_the_key(monkeypatch):
    from replication import config
    base = SMOKE.key()
    monkeypatch.setattr(config, "KEY_OMITTED_AT_DEFAULT", ("lr_milestone_shift",))
    assert SMOKE.key() != base  # the field left the hash...
    fields = {k: v for k, v in SMOKE.result_fields().items() if k != "lr_milestone_shift"}
    import hashlib
    import json
    assert SMOKE.key() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    assert SMOKE.replace(lr_milestone_shift=0).key() != SMOKE.key()  # ...and counts again when it differs
