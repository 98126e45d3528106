"""A model declared in this file in ONE line goes through ``specfit.fit``, ``specfit run``,
``specfit plot`` and the explorer's spectrum view with no other edit anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from specfit.models import LOGNORMAL_BUMP, POWER_LAW, TAIL, register_model

# the one declaration
register_model((POWER_LAW + TAIL + LOGNORMAL_BUMP).named("test_one_declaration"))

NAME = "test_one_declaration"
PARAMS = ["amplitude", "index", "tail", "bump_amplitude", "bump_center", "bump_width"]


def _power() -> xr.DataArray:
    rng = np.random.default_rng(11)
    f = np.arange(1, 121) / (120 * 24.0)
    lnf = np.log(f)
    spec = 1e-6 * np.exp(-2.0 * lnf) + 1.0 + 2.0 * np.exp(-0.5 * ((lnf + 5.7) / 0.3) ** 2)
    p = spec[:, None, None] * rng.gamma(9.0, 1 / 9.0, size=(f.size, 4, 5))
    return xr.DataArray(p, dims=("freq", "y", "x"), coords={"freq": f}, attrs={"dof": 18.0})


def test_specfit_fit_and_the_spectrum_view():
    import specfit
    from specfit.viz.data import map_catalog, pixel_spectrum

    ds = specfit.fit(_power(), models={"u": NAME}).compute()
    for p in PARAMS:
        assert f"u_{p}" in ds and f"u_{p}_err" in ds
    assert "u_bump_period" in ds  # the bump's derived output came with the component
    assert (ds["u_status"].values == 0).mean() > 0.5
    ok = ds["u_status"].values == 0
    assert abs(np.median(ds["u_index"].values[ok]) - 2.0) < 0.3
    ds = ds.assign(power=_power())
    names = {s.name for s in map_catalog(ds)}
    assert {"u_index", "u_bump_period"} <= names
    spec = pixel_spectrum(ds, 1, 2)
    curves = spec.models["u"]
    assert curves.error is None and curves.model.shape == (120,)
    assert list(curves.components) == ["power law", "tail", "bump"]
    np.testing.assert_allclose(sum(curves.components.values()), curves.model, rtol=1e-6)


@pytest.mark.slow
def test_specfit_run_plot_and_explore(tmp_path):
    import yaml

    from conftest import tiny_config
    from specfit.cli import main
    from specfit.store import open_results
    from specfit.viz.data import load_models, pixel_spectrum

    cfg = tiny_config(tmp_path, input={"synthetic": {"shape": [8, 8], "n_frames": 200}})
    cfg["fit"] = {"models": {"m1": "powerlaw_tail", "u": NAME}, "user_models": [__file__]}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    store = Path(cfg["output"]["path"])
    ds = open_results(store)
    assert ds["u_index"].dims == ("y", "x") and np.isfinite(ds["u_index"].values).any()
    assert "u_bump_period" in ds
    out = tmp_path / "plots"
    assert main(["plot", str(store), "--out", str(out)]) == 0
    assert (out / "u_index.png").is_file()
    # the explorer loads the model file only when asked to (models=...), then draws it
    assert NAME in load_models([__file__])
    spec = pixel_spectrum(ds, 3, 4)
    assert spec.models["u"].error is None
    assert list(spec.models["u"].components) == ["power law", "tail", "bump"]
