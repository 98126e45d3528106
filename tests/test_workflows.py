"""Every script in workflows/ runs on tiny data through its main()."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import yaml

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "workflows" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stages_step_by_step(tmp_path):
    mod = _load("stages_step_by_step")
    results, truth = mod.main(str(tmp_path), cluster="synchronous", shape=(12, 12), n_frames=240)
    assert (tmp_path / "maps.zarr").exists()
    err = results["m1_index"].values - truth["index"].values
    # 3x3 boxes and 2 segments: dof 36 per bin -> a tight index (bump pixels excluded).
    ok = ~truth["has_bump"].values
    assert abs(np.nanmedian(err[ok])) < 0.1


def test_run_and_inspect(tmp_path, capsys):
    mod = _load("run_and_inspect")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    ds = mod.main(str(cfg), ["spectra.window=none"])
    assert "m1_index" in ds
    assert "m2 preferred in" in capsys.readouterr().out
