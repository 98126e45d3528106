"""Pure numpy/numba kernels on (npix, n) blocks: no dask, no xarray, no I/O."""
