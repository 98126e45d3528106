"""Spectral models: analytic vs numeric jacobians (table-driven), kernels, registry, guesses."""

from __future__ import annotations

import functools
import textwrap

import numpy as np
import pytest

from conftest import KERNEL_FIT
from specfit.kernels import models as M
from specfit.kernels.fitting import fit_block as kernel_fit_block

fit_block = functools.partial(kernel_fit_block, **KERNEL_FIT)

F = np.arange(1, 151) / 7200.0  # 149-ish bins of a 2-hour segment, in Hz

# model name -> a few parameter vectors (natural units) spanning typical and awkward values
CASES = {
    "powerlaw_tail": [
        [1e-6, 2.0, 1.0],
        [3e-3, 0.7, 0.05],
        [1e-9, 3.5, 10.0],
    ],
    "powerlaw_tail_lorentzian": [
        [1e-6, 2.0, 1.0, 3.0, np.log(1 / 300), 0.2],
        [3e-3, 1.2, 0.1, 0.5, np.log(1 / 900), 0.8],
        [1e-8, 2.8, 2.0, 1e-3, np.log(1 / 120), 0.06],
    ],
    "powerlaw_tail_lognormal": [
        [1e-6, 2.0, 1.0, 3.0, np.log(1 / 300), 0.2],
        [3e-3, 1.2, 0.1, 0.5, np.log(1 / 900), 0.8],
        [1e-8, 2.8, 2.0, 1e-3, np.log(1 / 120), 0.06],
    ],
}


def _numeric_jacobian(model: M.Model, f: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Independent reference: 5-point central differences on model.evaluate."""
    out = np.empty((p.shape[0], f.size, p.shape[1]))
    for j in range(p.shape[1]):
        h = 1e-4 * np.maximum(np.abs(p[:, j]), 1e-3)
        terms = []
        for k in (-2, -1, 1, 2):
            q = p.copy()
            q[:, j] += k * h
            terms.append(model.evaluate(f, q))
        out[:, :, j] = (terms[0] - 8 * terms[1] + 8 * terms[2] - terms[3]) / (12 * h[:, None])
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_analytic_jacobian_matches_numeric(name):
    model = M.get_model(name)
    p = np.array(CASES[name], dtype=float)
    ana = model.jacobian(F, p)
    num = _numeric_jacobian(model, F, p)
    scale = np.abs(num).max(axis=1, keepdims=True) + 1e-300
    np.testing.assert_allclose(ana / scale, num / scale, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_numba_kernel_matches_function_and_jacobian(name):
    model = M.get_model(name)
    kernel = M.numba_kernel(model)
    x = model.abscissa(F)
    for p in np.array(CASES[name], dtype=float):
        m = np.empty(F.size)
        J = np.empty((F.size, model.npar))
        kernel(x, p, m, J, True)
        np.testing.assert_allclose(m, model.evaluate(F, p)[0], rtol=1e-13)
        np.testing.assert_allclose(J, model.jacobian(F, p)[0], rtol=1e-12, atol=1e-300)


def test_components_add_up_to_the_model():
    for name, cases in CASES.items():
        model = M.get_model(name)
        p = np.array(cases)
        parts = model.components(F, p)
        assert set(parts) >= {"power law", "tail"}
        np.testing.assert_allclose(sum(parts.values()), model.evaluate(F, p), rtol=1e-12)


def test_metadata_and_formula():
    m2 = M.get_model("powerlaw_tail_lorentzian")
    assert m2.param_names == (
        "amplitude",
        "index",
        "tail",
        "bump_amplitude",
        "bump_center",
        "bump_width",
    )
    assert m2.units == ("power", "1", "power", "power", "ln(Hz)", "ln(Hz)")
    assert m2.base == "powerlaw_tail"
    assert "alpha" in m2.formula and "1 +" in m2.formula
    lo, hi = m2.bounds_for(F)
    # the bump centre is kept inside the fitted frequency range
    assert lo[4] == pytest.approx(np.log(F[0])) and hi[4] == pytest.approx(np.log(F[-1]))
    assert set(M.available_models()) >= set(CASES)


def test_unknown_model_and_bad_bounds_are_clear_errors():
    with pytest.raises(KeyError, match="available: .*powerlaw_tail"):
        M.get_model("powerlaw")
    m1 = M.get_model("powerlaw_tail")
    with pytest.raises(ValueError, match="parameters are amplitude, index, tail"):
        m1.with_bounds({"slope": (0, 1)})
    with pytest.raises(ValueError, match="low < high"):
        m1.with_bounds({"index": (3, 1)})
    tight = m1.with_bounds({"index": (0.5, 4.0)})
    assert tight.bounds[1] == (0.5, 4.0) and m1.bounds[1] == (-1.0, 10.0)
    with pytest.raises(ValueError, match="first argument must be named"):
        M.define_model(lambda t, a: a * t, units={"a": "1"})


def test_m1_guess_is_close_on_noise_free_spectra_and_data_driven():
    m1 = M.get_model("powerlaw_tail")
    truth = np.array([[1e-6, 2.0, 1.0], [1e-4, 1.3, 0.2], [1e-10, 2.6, 1e-3]])
    g = m1.guess(F, m1.evaluate(F, truth), dof=1e6)  # huge dof: essentially no noise
    np.testing.assert_allclose(g[:, 1], truth[:, 1], atol=0.15)
    np.testing.assert_allclose(g[:, 2], truth[:, 2], rtol=0.3)
    np.testing.assert_allclose(np.log(g[:, 0]), np.log(truth[:, 0]), atol=1.5)


def test_bump_guess_finds_the_bump():
    m2 = M.get_model("powerlaw_tail_lorentzian")
    truth = np.array([[1e-6, 2.0, 1.0, 4.0, np.log(1 / 300), 0.2]])
    power = m2.evaluate(F, truth)
    g = m2.guess(F, power, dof=1e6)
    assert abs(g[0, 4] - truth[0, 4]) < 0.3
    assert g[0, 3] > 0


USER_MODULE = '''
import numpy as np
from specfit.kernels.models import define_model, register_model

def broken_tail(f, amplitude, index, knee, tail=1.0):
    """P(f) = A / (1 + (f/fk)^n) + C"""
    return amplitude / (1.0 + (f / knee) ** index) + tail

def _guess(f, power, dof, base):
    p = np.empty((power.shape[0], 4))
    p[:, 0] = power[:, :5].mean(axis=1)
    p[:, 1] = 2.0
    p[:, 2] = f[f.size // 10]
    p[:, 3] = power[:, -10:].mean(axis=1)
    return p

register_model(define_model(
    broken_tail,
    name="test_broken_tail",
    units={"amplitude": "power", "index": "1", "knee": "Hz", "tail": "power"},
    bounds={"amplitude": (0, np.inf), "index": (0.1, 8), "knee": (1e-5, 1.0), "tail": (0, np.inf)},
    guess=_guess,
))
'''


def test_user_model_from_file_numeric_jacobian_fits_truth(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(USER_MODULE))
    names = M.load_user_models([str(path)])
    assert names == ["test_broken_tail"]
    model = M.get_model("test_broken_tail")
    assert model.jac is None and model.formula.startswith("P(f) = A / (1 +")
    rng = np.random.default_rng(5)
    truth = np.tile([50.0, 2.5, 3e-3, 1.0], (200, 1))
    power = model.evaluate(F, truth) * rng.gamma(9.0, 1 / 9.0, size=(200, F.size))
    out = fit_block(F, power, {"u": "test_broken_tail"}, dof=18.0)
    ok = out["u_status"] == 0
    assert ok.mean() > 0.95
    for j, pname in enumerate(model.param_names):
        est = out[f"u_{pname}"][ok]
        err = out[f"u_{pname}_err"][ok]
        # unbiased within 4 standard errors of the mean, errors about right
        assert (
            abs(np.mean(est) - truth[0, j])
            < 4 * np.std(est) / np.sqrt(ok.sum()) + 1e-3 * truth[0, j]
        )
        assert 0.7 < np.std(est) / np.median(err) < 1.4


def test_user_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="fit.user_models"):
        M.load_user_models([str(tmp_path / "nope.py")])
    with pytest.raises(ImportError, match="fit.user_models"):
        M.load_user_models(["no_such_module_anywhere_xyz"])
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no model"):
        M.load_user_models([str(empty)])
    with pytest.raises(ValueError, match="shipped model"):
        M.register_model(
            M.define_model(M.powerlaw_tail, units=M._M1_UNITS, guess=M.guess_powerlaw_tail)
        )
