"""The run-store commands start without torch: subcommand modules import heavy packages
inside their command functions and the results face imports its modules on first use."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runs_ls_does_not_import_torch(tmp_path):
    store = tmp_path / "runs.sqlite"
    out = _python(
        "import sys; from covnoise.cli.main import main; "
        f"main(['runs','ls','--store',{str(store)!r}]); print('torch' in sys.modules)"
    )
    assert out.strip().splitlines()[-1] == "False"


def test_runs_cancel_does_not_import_torch_or_pandas(tmp_path):
    store = tmp_path / "runs.sqlite"
    out = _python(
        "import sys; from covnoise.cli.main import main; "
        f"code = main(['runs','cancel','nosuchrun','--store',{str(store)!r}]); "
        "print(code, 'torch' in sys.modules, 'pandas' in sys.modules)"
    )
    code, torch_loaded, pandas_loaded = out.strip().splitlines()[-1].split()
    assert int(code) != 0  # an unknown run is an error …
    assert (torch_loaded, pandas_loaded) == ("False", "False")  # … found without either


def test_the_results_face_is_lazy_and_keeps_its_names():
    out = _python(
        "import sys; import covnoise.results as r; before = 'torch' in sys.modules; "
        "names = [getattr(r, n) for n in r.__all__]; "
        "from covnoise.results.trajectories import curves; "
        "from covnoise.results import curves as c2, Study; "
        "print(before, set(r.__all__) == set(r._WHERE), len(names), c2 is curves, "
        "Study.__module__, r.study.Study is Study, set(dir(r)) >= set(r.__all__))"
    )
    before, same, count, same_curves, module, same_study, listed = out.split()
    assert before == "False"
    assert same == "True" and int(count) == 111
    assert same_curves == "True" and same_study == "True" and module == "covnoise.results.study"
    assert listed == "True"


def test_unknown_name_is_an_attribute_error():
    import covnoise.results as r

    try:
        r.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_data_download_default_folder_is_resolved_when_it_runs():
    from covnoise.cli.main import build_parser

    args = build_parser().parse_args(["data", "download", "mnist"])
    assert args.data_dir is None  # default_data_dir() is asked only by the command


def _start_seconds(*argv: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "covnoise", *argv], cwd=ROOT, capture_output=True)
    return time.perf_counter() - t


def test_report_start_up_times(tmp_path):
    """Measured, not asserted (shared machines): shown with ``pytest -s``."""
    store = str(tmp_path / "runs.sqlite")
    ls = min(_start_seconds("runs", "ls", "--store", store) for _ in range(2))
    cancel = min(_start_seconds("runs", "cancel", "x", "--store", store) for _ in range(2))
    help_ = min(_start_seconds("train", "--help") for _ in range(2))
    print(f"\nruns ls {ls:.2f} s, runs cancel {cancel:.2f} s, train --help {help_:.2f} s")
