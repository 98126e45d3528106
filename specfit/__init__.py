"""specfit: fit spectral models to the power spectrum of every pixel of an image time series.

The public API (imported lazily so that ``import specfit`` stays fast)::

    run, open_results, load_config, ingest, resample, power_spectra, fit, models,
    make_synthetic, to_map
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "run": ("specfit.pipeline", "run"),
    "open_results": ("specfit.store", "open_results"),
    "load_config": ("specfit.config", "load_config"),
    "ingest": ("specfit.stages", "ingest"),
    "resample": ("specfit.stages", "resample"),
    "power_spectra": ("specfit.stages", "power_spectra"),
    "fit": ("specfit.stages", "fit"),
    "models": ("specfit.models", None),
    "make_synthetic": ("specfit.synthetic", "make_synthetic"),
    "to_map": ("specfit.export", "to_map"),
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'specfit' has no attribute {name!r}")
