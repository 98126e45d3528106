"""`specfit demo`: the whole pipeline on synthetic frames recovers the true parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

import specfit.demo
from conftest import page_text, tiny_config
from specfit.config import SCIENCE_SECTIONS, load_config
from specfit.demo import DEMO_CONFIG, format_table, recovery_table

ROOT = Path(__file__).resolve().parents[1]


def test_demo_reads_the_shipped_demo_yaml():
    """One source: configs/demo.yaml in the clone is the packaged file the demo reads."""
    shipped = Path(specfit.demo.__file__).resolve().parent / "configs" / "demo.yaml"
    assert (ROOT / "configs" / "demo.yaml").resolve() == shipped
    a = load_config(shipped).model_dump(mode="json")
    b = load_config(DEMO_CONFIG).model_dump(mode="json")
    for s in SCIENCE_SECTIONS:
        a[s].pop("path", None), b[s].pop("path", None)
        assert a[s] == b[s], s
    assert a["output"]["tile"] == b["output"]["tile"]


@pytest.mark.slow
def test_demo_recovers_truth(tmp_path, capsys):
    """Tolerances (per pixel: one hann periodogram, 299 bins, chi^2_2 noise):

    - index: the Cramer-Rao scatter for one pixel is ~0.05-0.1, so the *median* error over
      ~2,700 pixels must be < 0.05 (a bias of that size would be a bug) and the robust scatter
      < 0.2;
    - the tail (dex): median within 0.05 dex (12 %); the synthetic tail itself is known to
      ~1.5 % (interpolation of the jittered frames);
    - the power law at 1 mHz (dex): median within 0.1 dex: without a taper, leakage from the
      steepest spectra (index up to 2.3) lifts the low-frequency bins by a few per cent
      (measured +0.03 to +0.07 dex; a Hann taper removes it but costs index precision);
    - bump period where a bump exists: median error < 0.3 min (the truth is 3-5 min);
    - model choice (LRT at 5 %): M2 in > 80 % of bump pixels and < 15 % of no-bump pixels;
      with the field-wide FDR control (q <= 0.05): > 60 % and < 2 %.
    """
    from specfit.demo import demo
    from specfit.synthetic import open_truth

    ds = demo(tmp_path, cluster="local", plots=False)
    out = capsys.readouterr().out
    assert "recovered vs true" in out and "m1_index" in out
    rows = {
        r["parameter"]: r
        for r in recovery_table(ds, open_truth(tmp_path / "synthetic" / "truth.zarr"))
    }
    assert abs(rows["m1_index"]["median_error"]) < 0.05
    assert rows["m1_index"]["scatter"] < 0.2
    assert abs(rows["m1_tail"]["median_error"]) < 0.05
    assert abs(rows["m1_power_1mHz"]["median_error"]) < 0.1
    assert abs(rows["m2_bump_period"]["median_error"]) < 0.3
    assert rows["m2 preferred (bump pixels)"]["fraction"] > 0.8
    assert rows["m2 preferred (no-bump pixels)"]["fraction"] < 0.15
    # field-wide FDR control (docs/significance.md): far fewer
    # false bumps than per pixel, most real ones kept
    assert rows["m2 preferred, FDR (no-bump)"]["fraction"] < 0.02
    assert rows["m2 preferred, FDR (bump)"]["fraction"] > 0.6
    # The README shows the table this run prints, line for line
    lines = out.splitlines()
    head = next(
        i for i, line in enumerate(lines) if line.startswith("parameter") and "pixels" in line
    )
    printed = [lines[head]] + [line for line in lines[head + 1 :] if line[:32].strip() in rows]
    assert len(printed) == len(rows) + 1
    readme = (ROOT / "README.md").read_text().splitlines()
    for line in printed:
        assert line in readme, f"README.md's demo table should show {line!r}"
    # docs/significance.md's demo table counts the same rows
    text = page_text("docs/significance.md")

    def count(name):
        r = rows[name]
        return round(r["fraction"] * r["pixels"]), r["pixels"], 100 * r["fraction"]

    for label, bump, no_bump, fp in (
        (
            "per pixel, p < 0.05 (`best_model`)",
            "m2 preferred (bump pixels)",
            "m2 preferred (no-bump pixels)",
            "{:.0f} %",
        ),
        (
            "BH q ≤ 0.05 (`best_model_fdr`)",
            "m2 preferred, FDR (bump)",
            "m2 preferred, FDR (no-bump)",
            "{:.1f} % (nominal 5 %)",
        ),
        (
            "global 0.999 (`lrt_global`)",
            "m2 preferred, global (bump)",
            "m2 preferred, global (no-bump)",
            "{:.0f} %",
        ),
    ):
        (found, nb, pb), (false, nn, pn) = count(bump), count(no_bump)
        share = fp.format(100 * false / max(1, found + false))
        if label.startswith("per pixel"):
            cells = f"{found} of {nb} ({pb:.1f} %) | {false} of {nn:,} ({pn:.1f} %) | {share}"
        else:
            cells = f"{found} ({pb:.1f} %) | " + (f"{false} ({pn:.1f} %)" if false else "0")
            cells += f" | {share}"
        assert f"| {label} | {cells} |" in text, f"docs/significance.md: {label}"


def test_demo_replaces_only_its_own_results(tmp_path, capsys):
    """``specfit demo --out DIR`` reruns over its own earlier results, but a results store of
    another run in DIR (a real run's, copied there) is kept: replacing it needs --overwrite,
    as with ``specfit run``."""
    import shutil

    from specfit.demo import demo
    from specfit.errors import StoreError
    from specfit.pipeline import run

    small = ["input.synthetic.shape=[16,16]", "input.synthetic.n_frames=200", "output.tile=8"]
    cfg = {"cluster": "synchronous"}
    demo(tmp_path / "d", small, plots=False, **cfg)
    demo(tmp_path / "d", small, plots=False, **cfg)  # its own: starts again
    other = tmp_path / "other"
    run(tiny_config(other))
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.copytree(other / "results.zarr", victim / "results.zarr")
    before = sorted(p.relative_to(victim) for p in victim.rglob("*"))
    with pytest.raises(StoreError, match="pass --overwrite"):
        demo(victim, small, plots=False, **cfg)
    assert sorted(p.relative_to(victim) for p in victim.rglob("*") if "synthetic" not in p.parts
                  ) == before  # fmt: skip
    capsys.readouterr()


def test_demo_follows_output_and_input_paths_set_on_the_command_line(tmp_path, capsys):
    """`specfit demo --set output.path=...` ran the pipeline into that path, then headed its
    summary with DIR/results.zarr and failed ("does not exist") before the recovery table
    and plots; with `--set input.path=...` it failed reading DIR/synthetic/truth.zarr (the
    config reviewer). The demo reads what the run wrote."""
    from specfit.demo import demo

    small = ["input.synthetic.shape=[16,16]", "input.synthetic.n_frames=200", "output.tile=8"]
    store, frames = tmp_path / "elsewhere.zarr", tmp_path / "frames"
    sets = [f"output.path={store}", f"input.path={frames}"]
    demo(tmp_path / "d", small + sets, cluster="synchronous", plots=False)
    out = capsys.readouterr().out
    assert f"results {store}:" in out and "recovered vs true" in out, out
    assert (frames / "truth.zarr").is_dir() and not (tmp_path / "d" / "results.zarr").exists()
    # run again over its own store elsewhere: starts again, as in DIR
    demo(tmp_path / "d", small + sets, cluster="synchronous", plots=False)
    capsys.readouterr()


def test_recovery_table_leaves_out_what_it_cannot_compare_and_says_so(demo_store):
    """`specfit demo --set fit.models=...` with a knee model ended in a KeyError traceback
    after the run; --set spectra.normalisation=variance compared 1/Hz fits with (DN/s)^2/Hz
    truths (-3 dex "errors")."""
    import json

    from specfit.store import open_results
    from specfit.synthetic import open_truth

    ds = open_results(demo_store)
    truth = open_truth(demo_store.parent / "synthetic" / "truth.zarr")
    plain = [r["parameter"] for r in recovery_table(ds, truth) if "parameter" in r]
    assert "m1_power_1mHz" in plain and "m1_index" in plain
    other = ds.copy()
    other.attrs = {**ds.attrs, "normalisation": "variance"}
    rows = recovery_table(other, truth)
    assert "m1_index" in [r.get("parameter") for r in rows]
    assert not [r for r in rows if r.get("units") == "dex"]
    assert "'variance', the truth as 'density'" in rows[-1]["note"]
    models = json.loads(ds.attrs["models"])
    models["m1"]["name"] = "knee_tail"  # the store's m1 maps read as a knee model's
    other.attrs = {**ds.attrs, "models": json.dumps(models)}
    rows = recovery_table(other, truth)
    assert "m1_power_1mHz" in rows[-1]["note"] and "truth does not" in rows[-1]["note"]
    assert "(not compared: m1_power_1mHz" in format_table(rows)


def test_the_finish_hint_of_a_demo_store_gives_its_set_options(demo_store):
    """An interrupted `specfit demo --set spectra.segments=2` store said "finish it with
    `specfit demo --out DIR --resume`", which is refused as another configuration: the hint
    now carries the run's --set options, and they give back its science settings."""
    import json
    import shlex

    from specfit.config import apply_overrides, config_diff
    from specfit.store import finish_hint, store_attrs

    hint = finish_hint(demo_store)
    command = hint.split("`")[1]
    assert command.startswith(f"specfit demo --out {demo_store.parent} --resume --set ")
    words = shlex.split(command)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    stored = json.loads(store_attrs(demo_store)["config_json"])
    cfg = dict(DEMO_CONFIG, input={**DEMO_CONFIG["input"], "path": stored["input"]["path"]})
    again = load_config(apply_overrides(cfg, sets)).model_dump(mode="json")
    assert config_diff(stored, again) == [], sets
