"""Explore and share results: holoviews heatmaps, PNG/HTML exports and the panel explorer.

Public functions (imported lazily, so ``import specfit.viz`` does not pull in bokeh)::

    plot_results(path_or_ds, out_dir, ...) -> list[Path]   # paramPlot: PNGs + one HTML page
    heatmap(ds, name, ...) -> holoviews Layout             # one map beside its histogram
    explorer(ds) -> panel layout                           # specVis in the browser/notebook
    serve(path, port=5006, address="127.0.0.1", show=False, models=())  # blocking server
    load_models(["my_models.py"])                          # user models a store's curves need
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "plot_results": "specfit.viz.maps",
    "heatmap": "specfit.viz.maps",
    "explorer": "specfit.viz.app",
    "build_explorer": "specfit.viz.app",
    "serve": "specfit.viz.app",
    "map_catalog": "specfit.viz.data",
    "pixel_spectrum": "specfit.viz.data",
    "load_models": "specfit.viz.data",
    "power_map": "specfit.viz.data",
    "spectral_density": "specfit.viz.data",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        # the explorer lives in specfit.viz.app: a submodule named `explorer` would become the
        # package's attribute of that name once imported, hiding the function
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'specfit.viz' has no attribute {name!r}")
