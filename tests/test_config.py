"""RunConfig validation, derived values and run ids."""

import math

import pytest

from covnoise.config import ConfigError, RunConfig


def test_noise_scale_and_lr_scaling_formulas():
    cfg = RunConfig(batch_size=1024, small_batch=32, noise="diag", noise_scale=2.0, lr=0.1)
    assert cfg.noise_c == pytest.approx(2.0 * (1 / 32 - 1 / 1024))
    assert RunConfig(noise="none").noise_c == 0.0
    assert cfg.replace(lr_scaling="linear").effective_lr == pytest.approx(0.1 * 32)
    assert cfg.replace(lr_scaling="sqrt").effective_lr == pytest.approx(0.1 * math.sqrt(32))


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"dataset": "imagenet"}, "dataset"),
        ({"noise": "fisher"}, "noise"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"noise": "diag", "small_batch": 1024, "batch_size": 1024}, "small_batch"),
        ({"momentum": 1.0}, "momentum"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"schedule": "step", "step_every_epochs": 0.0}, "step_every_epochs"),
        ({"steps": None, "epochs": None}, "epochs"),
        ({"ghost_bn": 100, "batch_size": 1024}, "ghost_bn"),
        ({"ghost_bn": 16, "noise": "diag"}, "ghost_bn"),
    ],
)
def test_bad_values_name_their_field(changes, field):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes).validate()
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_batch_larger_than_training_set_is_refused():
    with pytest.raises(ConfigError, match="batch_size: 2048 is larger than the training set"):
        RunConfig(batch_size=2048).validate(n_train=1347)


def test_unknown_field_is_named():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"batchsize": 3})
    assert err.value.field == "batchsize"


def test_run_id_is_a_content_hash():
    a = RunConfig(seed=1)
    assert a.run_id() == RunConfig.from_dict(a.to_dict()).run_id()
    assert a.run_id() != RunConfig(seed=2).run_id()
    # placement and labels do not change what is computed
    assert a.run_id() == a.replace(device="cpu", name="label").run_id()


def test_every_field_carries_its_help_label_and_allowed_values():
    """RunConfig's field metadata is the one source of CLI help and app labels."""
    from dataclasses import fields

    from covnoise.cli.main import build_parser
    from covnoise.config import field_info

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help for a in train._actions}
    for f in fields(RunConfig):
        info = field_info(f.name)
        assert info.help and info.label, f.name
        assert helps[f.name].startswith(info.help.replace("%", "%%")), f.name
        if info.choices:
            assert getattr(RunConfig(), f.name) in info.choices
            for choice in info.choices:
                assert choice in helps[f.name]
        if info.low is not None and getattr(RunConfig(), f.name) is not None:
            below = info.low - 1 if not info.strict else info.low
            bad = int(below) if "int" in str(f.type) else float(below)
            with pytest.raises(ConfigError) as err:
                RunConfig().replace(**{f.name: bad})
            assert err.value.field == f.name


def test_fields_added_later_keep_old_run_ids_and_read_back_as_what_old_runs_did():
    """A config at the legacy values hashes exactly as the same config did before the fields
    existed (the old hash recomputed here by hand), and a stored config without them reads
    back with those values."""
    import hashlib
    import json

    from covnoise.config import LEGACY_VALUES

    old = RunConfig(dataset="mnist1d", batch_size=1024, noise="diag", seed=3).replace(
        **LEGACY_VALUES
    )
    d = old.to_dict()
    for key in (*LEGACY_VALUES, "device", "data_dir", "name"):
        d.pop(key)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    assert old.run_id() == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert old.replace(drop_last=False).run_id() != old.run_id()
    assert old.replace(val_fraction=0.1).run_id() != old.run_id()
    stored = {k: v for k, v in old.to_dict().items() if k not in LEGACY_VALUES}
    back = RunConfig.from_stored(stored)
    assert back == old and back.run_id() == old.run_id()
    new = RunConfig()
    assert (new.drop_last, new.noise_source, new.val_fraction) == (False, "batch", 0.1)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"val_fraction": 0.7}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"noise_source": "oracle"}, "noise_source"),
        ({"drop_last": "yes"}, "drop_last"),
    ],
)
def test_the_new_fields_are_validated(changes, field):
    with pytest.raises(ConfigError) as err:
        RunConfig().replace(**changes)
    assert err.value.field == field
