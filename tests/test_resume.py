"""A run killed with SIGKILL in the middle of the fit stage resumes to identical results."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest_cluster import (
    assert_same_results,
    cli,
    kill_group,
    pipeline_config,
    reference_run,
    write_config,
)


def _wait_for_partial(results, proc: subprocess.Popen, timeout: float) -> tuple[int, int]:
    """Poll the store's done-tile record until some but not all tiles are done."""
    from specfit.store import tile_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if (results / "zarr.json").exists():
            try:
                done, total = tile_status(results)
            except Exception:  # the store is being created right now
                done, total = 0, 1
            if 0 < done < total:
                return done, total
        time.sleep(0.05)
    return -1, -1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_mid_fit_then_resume_gives_identical_results(tmp_path, tmp_path_factory):
    from specfit.errors import StoreError
    from specfit.store import open_results, tile_status

    data_dir, reference = reference_run(tmp_path_factory)
    results = tmp_path / "killed.zarr"
    # One worker thread: tiles finish one by one, so the kill lands with some done.
    cfg = pipeline_config(data_dir, results, cluster={"n_workers": 1, "threads_per_worker": 1})
    config = write_config(tmp_path / "run.yaml", cfg)

    proc = subprocess.Popen(
        [sys.executable, "-m", "specfit.cli", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        done, total = _wait_for_partial(results, proc, timeout=240)
    finally:
        kill_group(proc)  # SIGKILL the CLI, its LocalCluster nanny and worker processes
    if done < 0:
        pytest.fail(
            "the run ended (or never reached the fit stage) before it could be killed half way:"
            f"\n{proc.stderr.read().decode()[-3000:]}"
        )
    done_after_kill, total_after_kill = tile_status(results)
    assert total_after_kill == total and done_after_kill < total

    # An interrupted store is refused as a result, and a plain re-run says to --resume.
    with pytest.raises(StoreError, match="incomplete"):
        open_results(results)
    res = cli(["run", str(config)], timeout=120)
    assert res.returncode == 2 and "--resume" in res.stderr

    report = tmp_path / "report.html"
    res = cli(["run", str(config), "--resume", "--report", str(report)], timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert f"({done_after_kill} already done)" in res.stderr or "already done" in res.stderr
    assert tile_status(results) == (total, total)
    assert report.exists() and report.stat().st_size > 1000
    assert_same_results(results, reference)


@pytest.mark.timeout(300)
def test_resume_refuses_a_different_science_config(tmp_path, tmp_path_factory):
    data_dir, _ = reference_run(tmp_path_factory)
    results = tmp_path / "partial.zarr"
    cfg = pipeline_config(data_dir, results)
    config = write_config(tmp_path / "run.yaml", cfg)
    from specfit.pipeline import run

    run(cfg, cluster="synchronous")
    # Finished store + different fit settings: --resume must refuse, naming the key.
    changed = write_config(
        tmp_path / "changed.yaml", pipeline_config(data_dir, results, fit={"method": "lsq_log"})
    )
    res = cli(["run", str(changed), "--resume", "--cluster", "synchronous"], timeout=120)
    assert res.returncode == 2
    assert "fit.method" in res.stderr
    # The same config on a finished store is a no-op, not a recomputation.
    res = cli(["run", str(config), "--resume", "--cluster", "synchronous"], timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nothing to do" in res.stderr


def test_a_mistyped_model_is_named_before_the_store_is_compared(tmp_path):
    """A typo in a model name on an existing finished store: the error is the unknown model
    (found by a first-time-user review: it was 'already holds a finished run; pass
    --overwrite ... its config differs', and only --overwrite showed the typo)."""
    from conftest import tiny_config
    from specfit.errors import ConfigError
    from specfit.pipeline import run

    cfg = tiny_config(tmp_path)
    run(cfg)
    typo = ["fit.models.m2=powerlaw_tail_lorenzian"]
    for kw in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(ConfigError, match="fit.models.m2: unknown model 'powerlaw_tail_lorenz"):
            run(cfg, typo, **kw)
    from specfit.store import is_complete

    assert is_complete(tmp_path / "results.zarr")  # the store is still the finished one


def test_a_user_model_file_edited_since_the_store_was_written_is_a_config_change(tmp_path):
    """The code of fit.user_models files is part of a run's identity: after an edit, a resume
    (or a rerun over the finished store) is refused naming the file, instead of finishing
    the store with tiles fitted by two versions of the model (a review found it mixed)."""
    import re

    from conftest import tiny_config
    from specfit.errors import StoreError
    from specfit.pipeline import run

    docs = (Path(__file__).resolve().parents[1] / "docs" / "fitting.md").read_text()
    example = re.search(r"```python\n(.*?)```", docs[docs.index("## Adding a model") :], re.S)
    src = tmp_path / "my_models.py"
    src.write_text(example.group(1))
    cfg = tiny_config(tmp_path, fit={"user_models": [str(src)], "models": {"k": "my_knee"}})
    run(cfg)
    src.write_text(example.group(1).replace("(0.1, 8), 2.0", "(0.1, 1.5), 1.0"))
    for kw in ({}, {"resume": True}):
        with pytest.raises(StoreError, match=r"fit\.user_models_sha256\..*my_models\.py: '"):
            run(cfg, **kw)
    assert float(run(cfg, overwrite=True)["k_index"].max()) <= 1.5  # the edited model, everywhere


def test_a_tile_larger_than_the_field_is_the_field_and_a_resume_keeps_its_tiles(tmp_path, caplog):
    """output.tile beyond the image: the store's tiles are the field (it asked numpy for
    37 GiB before: one chunk of power is nf x tile x tile). A resume asked for another tile
    says that it keeps the store's (it did so silently)."""
    import zarr

    from conftest import tiny_config
    from specfit.pipeline import run
    from specfit.store import is_complete

    cfg = tiny_config(tmp_path, output={"tile": 100000})
    ds = run(cfg)
    assert ds.attrs["tile_size"] == 24  # the field is 20 x 24 px
    root = zarr.open_group(str(tmp_path / "results.zarr"), mode="r+")
    root["tiles_done"][0, 0] = 0  # as an interrupted run leaves it
    root.attrs["complete"] = False
    with caplog.at_level("WARNING", logger="specfit"):
        run(cfg, ["output.tile=8"], resume=True)
    said = [r.getMessage() for r in caplog.records if "output.tile=8 is not used" in r.getMessage()]
    assert len(said) == 1 and "(24 px)" in said[0], said
    assert is_complete(tmp_path / "results.zarr")


def test_resume_refuses_a_store_started_by_other_specfit_code(tmp_path):
    """The run key is the config and the inputs; the version string does not change with
    every edit of a development install, so an unfinished store begun by other code was
    finished by this one, with tiles made two ways (found when the LRT's tail changed). The
    store records a sha256 of specfit's sources; a resume by other code is refused."""
    import json

    from conftest import tiny_config
    from specfit.errors import StoreError
    from specfit.pipeline import run
    from specfit.store import code_sha256, is_complete

    cfg = tiny_config(tmp_path)
    results = tmp_path / "results.zarr"
    run(cfg)
    meta_path = results / "zarr.json"
    meta = json.loads(meta_path.read_text())
    assert meta["attributes"]["specfit_code_sha256"] == code_sha256()
    # made unfinished, as if cut off: the same code finishes it
    meta["attributes"]["complete"] = False
    meta_path.write_text(json.dumps(meta))
    assert is_complete(run(cfg, resume=True) and results)
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["complete"] = False
    meta["attributes"]["specfit_code_sha256"] = "0" * 64  # begun by other code
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"started by other specfit code .*sources 000000000000"):
        run(cfg, resume=True)
    assert not is_complete(results)
