"""specfit: fit spectral models to the power spectrum of every pixel of an image time series.

The public API, one name per line. Heavy optional packages (sunpy for ``to_map``, the
plotting libraries of ``specfit.viz``, dask-mpi) are imported only where they are used.
"""

from specfit import models
from specfit._version import __version__
from specfit.config import load_config
from specfit.errors import (
    ClusterError,
    ConfigError,
    InputError,
    NotFoundError,
    RunError,
    SpecfitError,
    StoreError,
)
from specfit.export import to_map
from specfit.pipeline import run
from specfit.stages import (
    field_significance,
    fit,
    ingest,
    power_spectra,
    resample,
)
from specfit.store import open_results
from specfit.synthetic import make_synthetic

__all__ = [
    "__version__",
    # running
    "run",
    "load_config",
    "open_results",
    # the stages, one at a time on xarray objects
    "ingest",
    "resample",
    "power_spectra",
    "fit",
    "field_significance",
    # models and test data
    "models",
    "make_synthetic",
    # exports
    "to_map",
    # errors
    "SpecfitError",
    "ConfigError",
    "InputError",
    "StoreError",
    "RunError",
    "ClusterError",
    "NotFoundError",
]
