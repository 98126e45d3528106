"""Config values the code cannot use are refused when the config is read, with a message that
names the key and the fix, never a traceback from deep inside a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from specfit.config import MIN_WORKER_MEMORY, load_config, memory_limit_bytes
from specfit.errors import ConfigError

# --------------------------------------------------------------------------- numbers

# Each of these numbers reached a kernel that raised a raw error when infinite (resample's
# ValueError for max_gap, OverflowError for segment_length and coalign_max_shift, an
# IndexError or numpy's "lam value too large" from the synthetic frames' generator).
FINITE_POSITIVE = [
    "resample.max_gap",
    "spectra.segment_length",
    "prep.coalign_max_shift",
    "prep.despike_sigma",
    "fit.tol",
    "input.synthetic.cadence",
]


@pytest.mark.parametrize("key", FINITE_POSITIVE)
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "-1", "0"])
def test_numbers_must_be_finite_and_positive(key, value):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value}"])
    assert key in str(e.value)
    # the pydantic errors, each on its own line under the file's name
    assert all(line.startswith("  ") for line in str(e.value).splitlines()[1:])


def test_synthetic_cadence_has_an_upper_bound():
    # 1e300 s made numpy's Poisson draw fail ("lam value too large"); a day still works
    with pytest.raises(ConfigError, match=r"input\.synthetic\.cadence"):
        load_config(None, ["input.synthetic.cadence=1e300"])
    assert load_config(None, ["input.synthetic.cadence=86400"]).input.synthetic.cadence == 86400


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("resample.max_gap", 2.5),
        ("spectra.segment_length", 600.0),
        ("prep.coalign_max_shift", 3.0),
        ("prep.despike_sigma", 4.0),
        ("fit.tol", 1e-10),
        ("input.synthetic.cadence", 0.5),
    ],
)
def test_finite_positive_numbers_are_kept(key, value):
    section, _, name = key.rpartition(".")
    node = load_config(None, [f"{key}={value}"])
    for part in section.split("."):
        node = getattr(node, part)
    assert getattr(node, name) == value


# --------------------------------------------------------------------------- memory limit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", None),
        ("4GB", 4 * 10**9),
        ("4 GiB", 4 * 2**30),
        ("4gib", 4 * 2**30),
        ("1GB", 10**9),
        ("1e9", 10**9),
        ("6000MiB", 6000 * 2**20),
        ("0.5", None),  # a fraction of the machine's memory
        ("0", None),  # no limit
    ],
)
def test_memory_limit_values_dask_reads(value, expected):
    assert memory_limit_bytes(value) == expected
    assert load_config(None, [f"cluster.memory_limit={value}"]).cluster.memory_limit == value


def test_memory_limit_as_a_yaml_number_or_null():
    # YAML reads 4000000000 and 0.5 as numbers: kept as the text dask reads the same way
    assert load_config(None, ["cluster.memory_limit=4000000000"]).cluster.memory_limit == (
        "4000000000"
    )
    assert load_config({"cluster": {"memory_limit": 0.5}}).cluster.memory_limit == "0.5"
    assert load_config(None, ["cluster.memory_limit=null"]).cluster.memory_limit is None


@pytest.mark.parametrize(
    "value", ["4 gigs", "lots", "4XB", "-4GB", "-1", ".inf", ".nan", "1e400", "true", "[4GB]"]
)
def test_memory_limit_that_is_no_size_is_a_config_error(value):
    # "4 gigs" gave KeyError: 'gigs' then "Could not interpret 'gigs' as a byte unit"
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"cluster.memory_limit={value}"])
    msg = str(e.value)
    assert "cluster.memory_limit" in msg
    if value not in ("true", "[4GB]"):  # those: pydantic's own "should be a valid string"
        assert "4GB" in msg and "auto" in msg  # an example of what is allowed


@pytest.mark.parametrize("value", ["300MB", "150MB", "999MB", "512MiB", "1.5", "MB"])
def test_memory_limit_below_a_workers_need_is_refused(value):
    # 300MB: the worker paused at 81 % after its imports and the run hung; 150MB: restarted
    # for ever ("exceeded 95% memory budget")
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"cluster.memory_limit={value}"])
    msg = str(e.value)
    assert "cluster.memory_limit" in msg and repr(value) in msg
    assert "1 GB" in msg and "at least 1GB" in msg


def test_the_floor_is_what_a_worker_was_measured_to_need():
    # ~0.5 GB RSS while numba compiles (see the comment at MIN_WORKER_MEMORY), below dask's
    # pause at 80 % of the limit with room for a task's data
    assert 0.49e9 / 0.8 < MIN_WORKER_MEMORY <= 2**30
    assert load_config(None, [f"cluster.memory_limit={MIN_WORKER_MEMORY}"])


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("cluster.memory_limit=4 gigs", "cluster.memory_limit"),
        ("cluster.memory_limit=300MB", "cluster.memory_limit"),
        ("resample.max_gap=.inf", "resample.max_gap"),
    ],
)
def test_the_command_line_prints_one_error_not_a_traceback(tmp_path, override, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, cluster={"kind": "local"})))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(
        [sys.executable, "-m", "specfit.cli", "run", str(cfg), "--set", override],
        capture_output=True,
        text=True,
        timeout=120,  # a refused value is refused in seconds (300MB used to hang the run)
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("specfit: error: ") and key in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "results.zarr").exists()  # refused before anything was written
