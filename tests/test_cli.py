"""One command line: the `covnoise` console script and `python -m covnoise` are the same
parser, with every subcommand; bad input is one line and exit 2."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from covnoise.cli.main import SUBCOMMANDS, build_parser, main

NAMES = ("train", "data", "runs", "sweep", "study", "findings", "demo")


def test_one_parser_holds_every_subcommand():
    sub = build_parser()._subparsers._group_actions[0]
    assert tuple(sub.choices) == NAMES
    assert len(SUBCOMMANDS) == len(NAMES)


def test_python_dash_m_and_the_console_script_run_the_same_main():
    done = subprocess.run(
        [sys.executable, "-m", "covnoise", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    for name in NAMES:
        assert name in done.stdout
    scripts = importlib.metadata.entry_points(group="console_scripts")
    ours = [e for e in scripts if e.name == "covnoise"]
    if not ours:
        pytest.skip("the package is not installed (pip install -e .)")
    assert ours[0].value == "covnoise.cli.main:main" and ours[0].load() is main


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--noise", "loud"],
        ["train", "--batch-size", "0"],
        ["sweep", "--seeds", "a,b", "--dry-run"],
        ["study", "show", "imagenet"],
        ["runs", "ls", "--status", "sleeping", "--store", "STORE"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, tmp_path, capsys):
    argv = [str(tmp_path / "s.sqlite") if a == "STORE" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err, err


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["train", "--noise-source", "oracle"], "noise_source"),
        (["train", "--val-fraction", "0.6"], "val_fraction"),
        (["train", "--drop-last", "yes"], "unrecognized arguments: yes"),
    ],
)
def test_the_study_machinery_flags_refuse_bad_values(argv, field, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and field in err and "\n" not in err, err


def test_boolean_flags_switch_both_ways():
    from covnoise.cli.train import config_from_args

    parser = build_parser()
    on = config_from_args(parser.parse_args(["train", "--drop-last"]))
    off = config_from_args(parser.parse_args(["train", "--no-drop-last"]))
    assert on.drop_last is True and off.drop_last is False
    assert config_from_args(parser.parse_args(["train"])).drop_last is False


@pytest.mark.parametrize("name", NAMES)
def test_every_subcommand_prints_its_help(name, capsys):
    """Help texts are argparse format strings: a stray % in a field's help breaks --help."""
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0 and "usage: covnoise" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["findings", "--check", "MISSING"],
        ["findings", "--runs", "MISSING"],
        ["findings", "--write", "UNDER_A_FILE"],
        ["sweep", "--noise-scales", "-1", "--steps", "1", "--dry-run"],
    ],
)
def test_findings_and_sweep_refuse_bad_paths_and_values(argv, tmp_path, capsys):
    """Found by bench.reliability: these ended in a traceback, silence or an accepted run."""
    (tmp_path / "plain").write_text("not a folder")
    paths = {"MISSING": tmp_path / "missing", "UNDER_A_FILE": tmp_path / "plain" / "F.md"}
    argv = [str(paths.get(a, a)) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err, err


def test_train_records_its_run_in_the_store_like_an_engine(tmp_path, capsys):
    """`covnoise train` stores the run (status, every metric row it printed); the same config
    again is not trained twice unless --rerun; --no-store leaves the store alone."""
    import json

    from covnoise.runs import RunStore

    store_path = tmp_path / "runs.sqlite"
    argv = ["train", "--steps", "6", "--eval-every", "3", "--width", "16", "--depth", "2"]
    argv += ["--batch-size", "64", "--noise", "diag", "--small-batch", "16", "--json"]
    assert main([*argv, "--store", str(store_path)]) == 0
    out = capsys.readouterr()
    events = [json.loads(line) for line in out.out.splitlines()]
    printed = [
        (e["step"], k, v) for e in events if e["event"] == "metric" for k, v in e["metrics"].items()
    ]
    with RunStore(store_path) as store:
        runs = store.runs()
        assert runs["status"].tolist() == ["finished"] and runs["engine"].tolist() == ["cli"]
        rid = runs["run_id"].iloc[0]
        assert f"stored as run {rid}" in out.err
        got = store.metrics([rid])
        assert list(zip(got["step"], got["name"], got["value"], strict=True)) == printed
        rec = store.get_run(rid)
        assert rec["device"].startswith("cpu") and rec["steps"] == 6
    assert main([*argv, "--store", str(store_path)]) == 0  # already there: not trained again
    assert "already in the store (finished)" in capsys.readouterr().out
    assert main([*argv, "--store", str(store_path), "--rerun"]) == 0
    capsys.readouterr()
    assert main([*argv, "--no-store", "--seed", "5", "--store", str(store_path)]) == 0
    with RunStore(store_path) as store:
        assert store.runs()["run_id"].tolist() == [rid]
        assert len(store.metrics([rid])) == len(printed)  # the rerun replaced, not appended


def test_train_with_missing_data_files_is_one_line_and_stores_nothing(tmp_path, capsys):
    from covnoise.runs import RunStore

    store_path = tmp_path / "runs.sqlite"
    argv = ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")]
    argv += ["--batch-size", "4", "--small-batch", "2", "--probe-size", "4", "--steps", "1"]
    assert main([*argv, "--store", str(store_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    with RunStore(store_path) as store:
        assert store.runs().empty


def test_rerun_on_broken_data_keeps_the_stored_run(tmp_path, capsys):
    """--rerun of a finished run whose data files went bad: one line, exit 2, and the old
    record with its metrics is still in the store (nothing lost)."""
    import numpy as np

    from covnoise.runs import RunStore
    from tests.helpers import make_cifar

    make_cifar(tmp_path, np.random.default_rng(3), per_batch=8)
    store_path = tmp_path / "runs.sqlite"
    argv = ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--model", "mlp"]
    argv += ["--width", "8", "--depth", "1", "--steps", "2", "--batch-size", "8"]
    argv += ["--small-batch", "8", "--eval-every", "1", "--probe-size", "8"]
    argv += ["--store", str(store_path)]
    assert main(argv) == 0
    with RunStore(store_path) as store:
        (rid,) = store.runs()["run_id"].tolist()
        rows = len(store.metrics([rid]))
    assert rows > 0
    capsys.readouterr()
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    assert main([*argv, "--rerun"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "data_batch_2" in err and "\n" not in err, err
    with RunStore(store_path) as store:
        assert store.get_run(rid)["status"] == "finished"
        assert len(store.metrics([rid])) == rows
