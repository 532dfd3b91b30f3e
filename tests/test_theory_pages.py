"""The quadratic and geometry pages, run headless with Streamlit's AppTest.

Each page runs standalone and under st.navigation; the figures carry the expected traces; a
step size at the stability limit shows a warning instead of plots; the URL holds the state,
and a bad URL value falls back to the default with a notice.
"""

import base64
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from covnoise.theory import covariance, quadratic

ROOT = Path(__file__).resolve().parents[1]
QUAD = str(ROOT / "pages" / "quadratic.py")
GEOM = str(ROOT / "pages" / "geometry.py")
TIMEOUT = 60  # the first run imports plotly, scipy and pandas
INVERSION = "diag noise gives a lower stationary loss than isotropic"


def _figures(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _array(value):
    """A trace's data array, whether plotly sent it as a list or as base64 ("bdata")."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def _trace_names(spec):
    return [d.get("name") for d in spec["data"]]


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture
def quad():
    at = AppTest.from_file(QUAD, default_timeout=TIMEOUT)
    at.query_params["T"] = "60"  # keep the test quick; the rest at defaults
    return at


def test_quadratic_page_draws_curves_sweep_and_table(quad):
    quad.run()
    _clean(quad)
    assert not quad.warning
    curves, stationary = _figures(quad)
    names = _trace_names(curves)
    assert len(names) == 3 * len(quadratic.METHODS)
    for label in ("SGD, batch M", "LB", "LB + isotropic", "LB + diag", "LB + full"):
        assert f"{label} · exact" in names
        assert f"{label} · MC ±2 s.e." in names
    exact = {d["name"]: d for d in curves["data"]}
    assert len(_array(exact["LB + full · exact"]["x"])) == 61
    # LB + full at s = 1 is small-batch SGD: the two exact curves coincide
    np.testing.assert_allclose(
        _array(exact["LB + full · exact"]["y"]), _array(exact["SGD, batch M · exact"]["y"])
    )
    assert _trace_names(stationary) == [
        "LB + isotropic",
        "LB + isotropic (tr Σ)",
        "LB + diag",
        "LB + diag (tr Σ)",
        "LB + full",
        "LB + full (tr Σ)",
    ]
    table = quad.dataframe[0].value.set_index("structure")
    assert list(table.index) == list(covariance.STRUCTURES)
    noisy = table.loc[list(covariance.NOISY_STRUCTURES)]
    assert noisy["tr(AΣ)"].to_numpy() == pytest.approx(noisy["‖Σ‖_F² / (cσ²)"].to_numpy())
    # at the defaults ‖Σ‖_F orders the stationary losses: no inversion notice
    assert not any(INVERSION in i.value for i in quad.info)
    # the page state is in the URL
    assert quad.query_params["page"] == "quadratic"
    assert quad.query_params["alpha"] == "1.5"
    assert quad.query_params["T"] == "60"


def test_inversion_of_the_frobenius_order_is_stated_next_to_the_stationary_figure(quad):
    # the audit's setting: P = 3, power spectrum p = 0.5, rotation 1, seed 56, α = 1.8
    quad.query_params.update(
        {"P": "3", "exponent": "0.5", "rotation": "1.0", "seed": "56", "alpha": "1.8"}
    )
    quad.query_params.update({"L": "1000", "M": "10", "chains": "0"})
    quad.run()
    _clean(quad)
    notes = [i.value for i in quad.info if INVERSION in i.value]
    assert len(notes) == 1
    assert "second order in α" in notes[0] and "α·λ_max = 1.8" in notes[0]
    table = quad.dataframe[0].value.set_index("structure")
    assert table.loc["diag", "E[L∞]"] < table.loc["isotropic", "E[L∞]"]
    assert table.loc["diag", "‖Σ‖_F"] > table.loc["isotropic", "‖Σ‖_F"]
    # the notice sits right after the stationary figure, before its caption
    kinds = [getattr(e, "type", "") for e in quad.main.children.values()]
    texts = [str(getattr(e, "value", "")) for e in quad.main.children.values()]
    at_notice = next(i for i, t in enumerate(texts) if INVERSION in t)
    assert kinds[at_notice - 1 : at_notice + 2] == ["plotly_chart", "info", "caption"]
    assert kinds[:at_notice].count("plotly_chart") == 2
    # a small step size restores the ‖Σ‖_F order and the notice goes
    quad.number_input(key="quadratic.alpha").set_value(0.5).run()
    _clean(quad)
    assert not any(INVERSION in i.value for i in quad.info)


def test_unstable_step_size_shows_a_warning_instead_of_plots(quad):
    quad.run()
    quad.number_input(key="quadratic.alpha").set_value(2.0).run()  # λ_max = 1: at the limit
    _clean(quad)
    assert len(quad.warning) == 1
    assert "unstable" in quad.warning[0].value.lower()
    assert not quad.get("plotly_chart")
    assert quad.query_params["alpha"] == "2.0"
    quad.number_input(key="quadratic.alpha").set_value(0.5).run()
    _clean(quad)
    assert not quad.warning
    assert len(quad.get("plotly_chart")) == 2


def test_url_values_are_used_and_bad_ones_fall_back(quad):
    quad.query_params.update({"P": "8", "spectrum": "two-cluster", "alpha": "abc", "M": "-3"})
    quad.run()
    _clean(quad)
    notices = " ".join(i.value for i in quad.info)
    assert "alpha='abc'" in notices and "M='-3'" in notices
    assert quad.slider(key="quadratic.P").value == 8
    assert quad.selectbox(key="quadratic.spectrum").value == "two-cluster"
    assert quad.number_input(key="quadratic.alpha").value == 1.5
    assert quad.number_input(key="quadratic.M").value == 10
    assert quad.query_params["alpha"] == "1.5"  # the link is repaired
    assert len(quad.get("plotly_chart")) == 2
    # the notice is shown once, not on later runs
    quad.slider(key="quadratic.P").set_value(9).run()
    assert not quad.info
    assert quad.query_params["P"] == "9"


def test_batch_sizes_in_the_wrong_order_give_a_message(quad):
    quad.query_params.update({"M": "500", "L": "100"})
    quad.run()
    assert not quad.exception
    assert len(quad.error) == 1 and "must not exceed" in quad.error[0].value


def _most_common_trace_count(at):
    """How many panels print the same tr Σ (the text before the " · ")."""
    traces = [m.value.split(" · ")[0] for m in at.markdown if m.value.startswith("tr Σ")]
    return Counter(traces).most_common(1)[0][1]


def test_geometry_page_draws_four_clouds_with_their_norms():
    at = AppTest.from_file(GEOM, default_timeout=TIMEOUT)
    at.query_params["samples"] = "300"
    at.run()
    _clean(at)
    figs = _figures(at)
    assert len(figs) == 4
    titles = sorted(f["layout"]["title"]["text"] for f in figs)
    assert titles == sorted(
        ["SGD, batch M", "LB + isotropic", "LB + full Fisher", "LB + diagonal Fisher"]
    )
    for spec in figs:
        assert _trace_names(spec) == ["loss", "updates", "target ellipse", "θ", "E[θ⁺]"]
        updates = spec["data"][1]
        assert len(_array(updates["x"])) == 300
    norms = [m.value for m in at.markdown if m.value.startswith("tr Σ")]
    assert len(norms) == 4 and all("‖Σ‖_F" in n for n in norms)
    # with σ = 0.1 only full and diag share tr Σ; with the same-trace choice isotropic joins
    assert _most_common_trace_count(at) == 2
    at.radio(key="geometry.iso").set_value("trace").run()
    _clean(at)
    assert _most_common_trace_count(at) == 3
    assert at.query_params["iso"] == "trace"
    assert at.slider(key="geometry.sigma").disabled


def test_geometry_bad_url_value_falls_back():
    at = AppTest.from_file(GEOM, default_timeout=TIMEOUT)
    at.query_params.update({"samples": "300", "rho": "1.5", "iso": "nope"})
    at.run()
    _clean(at)
    assert len(at.info) == 2
    assert at.slider(key="geometry.rho").value == 0.8
    assert at.radio(key="geometry.iso").value == "sigma"
    assert len(at.get("plotly_chart")) == 4


def test_pages_run_under_navigation(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "import streamlit as st\n"
        f"pg = st.navigation([st.Page({QUAD!r}), st.Page({GEOM!r})])\n"
        "pg.run()\n"
    )
    at = AppTest.from_file(str(app), default_timeout=TIMEOUT)
    at.query_params["T"] = "60"
    at.run()
    _clean(at)
    assert at.title[0].value == "Convex quadratic"
    assert len(at.get("plotly_chart")) == 2
    at.switch_page(GEOM).run()
    _clean(at)
    assert at.title[0].value == "Noise geometry in two dimensions"
    assert len(at.get("plotly_chart")) == 4
    # the quadratic's URL values (alpha, sigma, M, …) are not read as the geometry's
    assert at.slider(key="geometry.alpha").value == 0.5
    assert at.query_params["page"] == "geometry"
    assert "T" not in at.query_params
