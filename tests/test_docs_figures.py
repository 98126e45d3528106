"""The tables in docs/ that scripts regenerate quote those scripts' JSON (issue 12 item 5).

docs/recovery.py writes docs/recovery.json (docs/models.md's recovery table) and
docs/lrt_calibration.py writes docs/lrt_calibration.json (docs/significance.md's calibration
table), docs/box_dof_aia.py writes docs/box_dof_aia.json (docs/spectra.md's AIA box-3 table),
docs/spectra_simulations.py writes docs/spectra_simulations.json (docs/spectra.md's
interpolation, box-3 and window simulations), docs/fitting_simulations.py writes
docs/fitting_simulations.json (docs/fitting.md's bias, model-choice and broken + bump figures).
Only the cheapest parts are re-run here (interpolation, bias, selection: ~15 s); the others
take minutes to an hour, and these tests check that a re-run's JSON and the prose that quotes
it tell the same story, figure by figure, as rounded in the docs.
"""

from __future__ import annotations

import json
import re

from conftest import ROOT, assert_docs_quote, docs_script, page_text

DOCS = ROOT / "docs"

# How docs/models.md's recovery table names a parameter.
PARAM_NAMES = {"kappa": "κ", "index_high": "n₂", "bump_amplitude": "bump amplitude"}


def _plain(text: str) -> str:
    """Markdown cell text without emphasis, with ASCII minus signs and thousands separators."""
    return text.replace("**", "").replace("−", "-").replace(",", "").strip()


def _pct(share: float) -> str:
    return f"{100 * share:.1f}".removesuffix(".0")


def test_models_md_recovery_tables_quote_docs_recovery_json():
    cases = json.loads((DOCS / "recovery.json").read_text())["cases"]
    doc = (DOCS / "models.md").read_text()
    head = "| model | dof | pixels | bump S/N |"
    # two tables with that header: the tested cases (RECOVERY) and the measured ones (EXTRA)
    tables = [part.split("\n\n", 1)[0] for part in doc.split(head)[1:]]
    script = docs_script("recovery")
    want = [
        {(m, dof, n) for (m, dof), n in script.RECOVERY.items()},
        {(m, dof, n) for m, dof, n in script.EXTRA},
    ]
    assert len(tables) == len(want), "docs/models.md's recovery tables (tested, measured)"
    rows = []
    for table, cases_here in zip(tables, want, strict=True):
        got = [[_plain(c) for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
        named = {(re.match(r"`(\w+)`", r[0]).group(1), float(r[1]), int(r[2])) for r in got}
        assert named == cases_here, named ^ cases_here
        rows += got
    for row in rows:
        model, dof = re.match(r"`(\w+)`", row[0]).group(1), float(row[1])
        (case,) = [
            c for c in cases if c["model"] == model and c["dof"] == dof and str(c["n"]) == row[2]
        ]
        params = case["params"]
        assert row[3] == (f"{case['bump_snr']:.1f}" if "bump_snr" in case else "—"), row
        assert row[4] == f"{_pct(case['fitted_ok'])} %", row
        worst = max(params, key=lambda p: abs(params[p]["offset_se"]))
        name = PARAM_NAMES.get(worst, worst)
        assert row[5] == f"{params[worst]['offset_se']:+.2f} ({name})", row
        corrected = max((v["corrected_se"] for v in params.values()), key=abs)
        assert row[6] == f"{corrected:+.2f}", row
        spread = [v["pull_std"] for v in params.values()]
        assert row[7] == f"{min(spread):.2f}–{max(spread):.2f}", row


def test_models_md_broken_power_law_below_dof_32_quotes_docs_recovery_json():
    cases = json.loads((DOCS / "recovery.json").read_text())["cases"]
    broken = {c["dof"]: c for c in cases if c["model"] == "broken_tail"}
    low = [broken[d]["params"] for d in (4.0, 8.0, 16.0)]
    text = page_text("docs/models.md")

    def each(p, key, fmt="{:.2f}", scale=1.0):
        return " / ".join(fmt.format(scale * v[p][key]) for v in low)

    spread = [f"{each(p, 'pull_std')} for {n}" for p, n in
              (("index_high", "n₂"), ("break_freq", "the break"), ("amplitude", "the amplitude"))]  # fmt: skip
    assert f"pulls spread up to {spread[0]}, {spread[1]} and {spread[2]} at the break" in text
    top = [v["pull_std"] for v in broken[32.0]["params"].values()]
    assert f"against {min(top):.2f}–{max(top):.2f} at dof 32" in text
    cover = each("break_freq", "coverage", "{:.1f}", 100)
    assert f"covers the break on {cover} % of the fits" in text
    err = each("break_freq", "error_at_truth")
    at32 = broken[32.0]["params"]["break_freq"]["error_at_truth"]
    assert f"error of the break at the truth is {err} in ln f ({at32:.2f} at dof 32)" in text
    at16, at4 = low[2], low[0]
    assert at16["break_freq"]["profile_pull_std"] < 1.1 < at4["break_freq"]["profile_pull_std"]
    for v, say in (
        (at16, "dof 16 (pulls {b:.2f} for both, coverage {cb:.1f} % / {cn:.1f} %)"),
        (at4, "at dof 4 ({b:.2f} / {n:.2f}, coverage {cb:.1f} % / {cn:.1f} %)"),
    ):
        b, n = v["break_freq"], v["index_high"]
        assert say.format(b=b["profile_pull_std"], n=n["profile_pull_std"],
                          cb=100 * b["profile_coverage"], cn=100 * n["profile_coverage"]) in text  # fmt: skip
    assert (
        f"{at16['break_freq']['profile_pull_std']:.2f}"
        == f"{at16['index_high']['profile_pull_std']:.2f}"
    )
    assert f"where {100 * at4['break_freq']['profile_beyond_3']:.1f} % of the breaks lie" in text
    excess = [
        v[p]["pull_std"] - 1 for v in low[:2] for p in ("index_high", "break_freq", "amplitude")
    ]
    at_16 = [low[2][p]["pull_std"] - 1 for p in ("index_high", "break_freq", "amplitude")]
    lo, hi, lo16, hi16 = (
        f"{100 * x:.0f}" for x in (min(excess), max(excess), min(at_16), max(at_16))
    )
    assert f"scatter {lo}–{hi} % more than their errors say ({lo16}–{hi16} % at dof 16" in text
    fitting = page_text("docs/fitting.md")
    assert (
        f"scatter {lo}–{hi} % more than their errors at dof 4 and 8 ({lo16}–{hi16} % at 16"
        in fitting
    )
    assert f"scatter {lo}–{hi} % more than their stored errors say" in page_text("README.md")
    calibrated = max(v[p]["pull_std"] for v in low for p in ("index", "tail"))
    assert f"calibrated (≤ {calibrated:.2f})" in text
    missed = " / ".join(str(broken[d]["missed_truth_optimum"]) for d in (4.0, 8.0, 16.0))
    assert f"truth on {missed} of the 1,500 fits" in text


def test_significance_md_calibration_table_quotes_docs_lrt_calibration_json():
    fig = json.loads((DOCS / "lrt_calibration.json").read_text())
    doc = page_text("docs/significance.md")
    rows = {
        "prior": "truths from the declared null",
        "field": "synthetic-field truths (the test's",
        "field_fresh": "synthetic-field truths (",
    }
    for truths, label in rows.items():
        cells = []
        for ref in ("ref_null", "ref_field"):
            mean = fig["rates"][f"{truths}|{ref}"]["mean"]
            cells.append(" / ".join(f"{100 * r:.2f}" for r in mean))
        row = f"| {cells[0]} % | {cells[1]} % |"
        at = doc.find(row)
        assert at >= 0, f"docs/significance.md does not quote {truths}: {row}"
        label_cell = doc[doc.rindex("| ", 0, at) : at]  # the row's first cell
        assert label in label_cell and f"{fig['n'][truths]:,}" in label_cell, (truths, label_cell)
    strata = fig["stratified"]["field"]["strata"]
    quoted = " / ".join(f"{100 * r:.2f}" for r in strata[1:])
    assert f"nulls to {quoted} % at 0.05 / 0.2 / 0.5" in doc
    stats = fig["statistics"]
    assert f"smallest of the {stats['n']:,} computed is {stats['min']:.2f}" in doc
    lo, hi = fig["field_crossover"]
    assert f"crossovers lie at {lo:.2f}–{hi:.2f}" in doc


def test_spectra_md_box3_table_quotes_docs_box_dof_aia_json():
    runs = json.loads((DOCS / "box_dof_aia.json").read_text())["runs"]
    doc = (DOCS / "spectra.md").read_text()
    rows = _table(doc, "| | box 1 | box 3, nominal | box 3, auto |")
    order = ("box 1", "box 3, nominal", "box 3, auto")
    for label, key, fmt in (
        ("`m1_chi2red` median", "m1_chi2red_median", "{:.2f}"),
        ("`m2_chi2red` median", "m2_chi2red_median", "{:.2f}"),
        ("`m1_index_err` median", "m1_index_err_median", "{:.3f}"),
        ("`m2` preferred (LRT)", "m2_preferred_percent", "{:.1f} %"),
    ):
        assert rows[label] == [fmt.format(runs[r][key]) for r in order], label
    gof = [
        f"{runs[r]['m1_gof_below_5_percent']:.1f} / {runs[r]['m2_gof_below_5_percent']:.1f} %"
        for r in order
    ]
    assert rows["goodness of fit rejects M1 / M2 at 5 %"] == gof
    auto = runs["box 3, auto"]
    lo, hi = auto["neff_p5_p95"]
    assert rows["N_eff (median; 5–95 %)"][2] == f"{auto['neff_median']:.1f} ({lo:.2f}–{hi:.2f})"
    assert f"take {auto['neff_values']} values on this field" in " ".join(doc.split())
    readme = page_text("README.md")
    assert f"on AIA 1600 box 3: a median of {auto['neff_median']:.1f} of 9" in readme


def test_fitting_md_interval_table_quotes_docs_recovery_json():
    cases = json.loads((DOCS / "recovery.json").read_text())["cases"]
    doc = (DOCS / "fitting.md").read_text()
    table = doc[doc.index("| model, dof | parameter | ± error: pulls' spread |") :]
    table = table.split("\n\n", 1)[0]
    names = {"bump centre": "bump_center", "bump width": "bump_width"}
    case = None
    rows = [[_plain(c) for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert len(rows) == 8, "docs/fitting.md's interval table"
    for row in rows:
        if row[0]:  # a new model: "`name`, dof" and, for a larger sample, "(n px)"
            m = re.match(r"`(\w+)` (\d+)(?: \((\d+) px\))?", row[0])
            n = int(m.group(3) or 1000)
            (case,) = [
                c
                for c in cases
                if c["model"] == m.group(1) and c["dof"] == float(m.group(2)) and c["n"] == n
            ]
        v = case["params"][names[row[1]]]
        spread = f"{v['pull_std']:.3f}"
        if row[1] == "bump width":
            spread += f" (ln: {v['ln_pull_std']:.3f})"
        assert row[2] == spread, row
        assert row[3] == f"{v['coverage']:.3f}", row
        assert row[4] == f"{v['profile_pull_std']:.3f}", row
        assert row[5] == f"{v['profile_coverage']:.3f}", row
        beyond = f"{100 * v['beyond_3']:.1f} % / {100 * v['profile_beyond_3']:.1f} %"
        assert row[6] == beyond, row


def _table(doc: str, header: str) -> dict[str, list[str]]:
    """A Markdown table's rows by their first cell (the header line starts it)."""
    table = doc[doc.index(header) :].split("\n\n", 1)[0]
    return {
        line.split("|")[1].strip(): [_plain(c) for c in line.strip().strip("|").split("|")[1:]]
        for line in table.splitlines()[2:]
    }


def test_spectra_md_simulated_tables_quote_docs_spectra_simulations_json():
    sims = json.loads((DOCS / "spectra_simulations.json").read_text())
    doc = (DOCS / "spectra.md").read_text()
    text = " ".join(doc.split())
    # the windows table
    rows = _table(doc, "| window, detrend | index bias |")
    for label, key in (
        ("none, mean (default)", "none, mean"),
        ("hann, mean (dof / vif)", "hann, mean"),
        ("hann, linear (dof / vif)", "hann, linear"),
        ("hann, linear (no correction)", "hann, linear, uncorrected"),
    ):
        w = sims["windows"][key]
        want = [
            f"{w['index_bias']:+.3f}",
            f"{w['index_scatter']:.3f}",
            f"{w['pull_std']:.2f}",
            f"{100 * w['lrt_size']:.1f} %",
        ]
        assert rows[label] == want, label
    # the box-3 table (600 boxes) and the 1,000-box sentence
    box = sims["box3"]["600x256"]
    rows = _table(doc, "| `box_dof` | stored N_eff |")
    for label, key in (
        ("auto", "auto"),
        ("nominal", "nominal"),
        ("(independent Gamma noise of the true dof)", "gamma_true_dof"),
    ):
        b = box[key]
        assert rows[label][1:] == [f"{b['pull_std']:.2f}", f"{100 * b['lrt_size']:.1f} %"], label
    assert rows["auto"][0] == f"{box['auto']['neff_median']:.2f} (median)"
    big = sims["box3"]["1000x512"]

    def pair(case):
        return f"{big[case]['pull_std']:.2f} / {100 * big[case]['lrt_size']:.1f} %"

    assert (
        f"On {big['boxes']:,} boxes with {big['frequencies']} frequencies: auto {pair('auto')}, "
        f"nominal {pair('nominal')}, independent Gamma noise of the true dof "
        f"{pair('gamma_true_dof')}, one pixel's own periodogram (box 1, exact χ²₂) {pair('box1')}"
    ) in text
    # the table of what moves box 3's LRT size (box3_causes)
    causes = sims["box3_causes"]
    rows = _table(doc, "| spectra, dof used | 127 frequencies")
    for label, key in (
        ("box means, `box_dof: auto` (one estimate per box)", "box means, auto (per box)"),
        ("box means, the true N_eff rounded (2.38)", "box means, true N_eff quantised"),
        ("box means, the true N_eff (2.50)", "box means, true N_eff exact"),
        (
            "box means, one N_eff pooled over 7 × 7 boxes (not in specfit), rounded",
            "box means, N_eff pooled over 7x7 boxes",
        ),
        ("Gamma noise, the true dof", "Gamma noise, exact dof"),
        ("Gamma noise, the rounded dof", "Gamma noise, quantised dof"),
        ("a box mean's exact distribution, the true dof", "box-mean distribution, exact dof"),
    ):
        want = [
            f"{c[key]['pull_std']:.2f} / {100 * c[key]['lrt_size']:.1f} %"
            for c in (causes["256"], causes["512"])
        ]
        assert rows[label] == want, label
    assert [causes[n]["frequencies"] for n in ("256", "512")] == [127, 255]
    assert f"{causes['256']['boxes']} box-3 means" in text
    pooled = causes["256"]["box means, N_eff pooled over 7x7 boxes"]["neff_share_off"]
    assert f"where {100 * pooled:.0f} % of the pooled values still round to another step" in text
    # the interpolation sentences
    aia, iris = sims["interpolation"]["aia"], sims["interpolation"]["iris"]
    assert f"white noise keeps {100 * aia['variance_kept']:.1f} % of its variance" in text
    assert f"white noise keeps {100 * iris['variance_kept']:.0f} % of its variance" in text
    assert (
        f"its density is {iris['density_lowest_tenth']:.2f} of the expected level in the lowest "
        f"tenth of the frequencies and {iris['density_highest_tenth']:.2f} in the highest"
    ) in text


def test_fitting_md_taper_table_quotes_docs_spectra_simulations_json():
    """docs/fitting.md's table of LRT rates under a Hann taper (spectra_simulations lrt_taper):
    each cell is the run's reference / 16,000 statistics / the reference used before."""
    sims = json.loads((DOCS / "spectra_simulations.json").read_text())["lrt_taper"]
    rows = _table((DOCS / "fitting.md").read_text(), "| spectra, method | p < 0.01 |")
    for label, key in (
        ("Hann, 1 segment, mean removed, whittle", "whittle, hann, 1 segment(s), mean"),
        ("Hann, 2 segments, mean removed, whittle", "whittle, hann, 2 segment(s), mean"),
        ("Hann, 2 segments, line removed, whittle", "whittle, hann, 2 segment(s), linear"),
        ("Hann, 2 segments, mean removed, lsq_log", "lsq_log, hann, 2 segment(s), mean"),
        ("no window, 2 segments, whittle (control)", "whittle, none, 2 segment(s), mean"),
    ):
        refs = [
            sims[key][r] for r in ("correlated", "correlated_big", "independent") if r in sims[key]
        ]
        want = [
            " / ".join(f"{100 * r['rates'][i]:.{2 if i == 0 else 1}f}" for r in refs) + " %"
            for i in range(4)
        ]
        want.append(" / ".join(f"{r['ks_pvalue']:.1g}" for r in refs))
        assert rows[label] == want, label
    assert sims["levels"] == [0.01, 0.05, 0.2, 0.5]
    assert (sims["pixels"], sims["big"]) == (6000, 16000)
    # the index pulls of the same fits
    cases = {k: v for k, v in sims.items() if isinstance(v, dict) and "method" in v}
    pulls = {k: v["m1_index_pull_std"] for k, v in cases.items()}
    hann_w = [v for k, v in pulls.items() if k.startswith("whittle, hann")]
    text = page_text("docs/fitting.md")
    assert (
        f"M1's index pulls spread {min(hann_w):.2f}–{max(hann_w):.2f} under the taper with "
        f"`whittle` (whose dof / vif corrects them; no-window control "
        f"{pulls['whittle, none, 2 segment(s), mean']:.2f}) and "
        f"{pulls['lsq_log, hann, 2 segment(s), mean']:.2f} with `lsq_log`"
    ) in text


def test_fitting_md_welch_overlap_table_quotes_docs_spectra_simulations_json():
    """docs/fitting.md's Welch-overlap table (spectra_simulations welch_overlap): per layout,
    the correlations the run uses and the one-segment ones specfit used before; each LRT
    cell is the run's reference / 16,000 statistics. docs/spectra.md quotes the lag-1 values."""
    sims = json.loads((DOCS / "spectra_simulations.json").read_text())["welch_overlap"]
    assert (sims["pixels"], sims["big"]) == (6000, 16000)
    rows = _table((DOCS / "fitting.md").read_text(), "| layout, bin correlations | ρ at lags")
    cases = {k: v for k, v in sims.items() if isinstance(v, dict) and "one_segment" in v}
    assert set(cases) == {"none, 0.5, 5", "hann, 0.5, 5", "hann, 0.75, 9"}
    assert len(rows) == 2 * len(cases)
    for key, row in cases.items():
        window, overlap, segments = key.split(", ")
        assert int(segments) == row["segments"]
        layout = (
            f"{'no window' if window == 'none' else 'Hann'}, {100 * float(overlap):.0f} %, "
            f"{segments} segments"
        )
        for which, label in (
            ("overlap", "the overlap's"),
            ("one_segment", "one segment's (before)"),
        ):
            case = row[which]
            refs = [case[r] for r in ("run", "big") if r in case]
            # _plain drops the commas (thousands separators) of every cell
            want = [" ".join(f"{r:.3f}" for r in case["rho"]), f"{case['vif']:.2f}"]
            want.append(f"{case['m1_index_pull_std']:.2f}")
            want += [
                " / ".join(f"{100 * r['rates'][i]:.{2 if i == 0 else 1}f}" for r in refs) + " %"
                for i in range(4)
            ]
            want.append(" / ".join(f"{r['ks_pvalue']:.1g}" for r in refs))
            assert rows[f"{layout}, {label}"] == want, (key, which)
    lag1 = {k: v["overlap"]["rho"][0] for k, v in cases.items()}
    assert (
        f"(50 % overlap, 5 segments: {lag1['none, 0.5, 5']:.3f} at lag 1 without a window, "
        f"{lag1['hann, 0.5, 5']:.3f} with Hann)"
    ) in " ".join((DOCS / "spectra.md").read_text().split())


def test_docs_spectra_simulations_interpolation_is_what_a_run_gives():
    """The interpolation part is cheap (< 1 s): re-run it and compare with the stored JSON."""
    module = docs_script("spectra_simulations")
    stored = json.loads((DOCS / "spectra_simulations.json").read_text())["interpolation"]
    fresh = module.interpolation()
    for grid in ("aia", "iris"):
        for key, value in fresh[grid].items():
            assert abs(stored[grid][key] - value) <= 1e-6 * max(1.0, abs(value)), (grid, key)


def test_fitting_md_simulations_quote_docs_fitting_simulations_json():
    sims = json.loads((DOCS / "fitting_simulations.json").read_text())
    text = page_text("docs/fitting.md")
    b = {k: sims["bias"][f"dof {k}"] for k in (2, 18, 72)}
    assert (
        f"the mean index is low by {-b[2]['bias_in_scatter']:.3f} σ at dof 2 "
        f"({-b[2]['bias_in_standard_errors']:.1f} standard errors of the mean), "
        f"{-b[18]['bias_in_scatter']:.3f} σ at dof 18 ({-b[18]['bias_in_standard_errors']:.1f}) "
        f"and {-b[72]['bias_in_scatter']:.3f} σ at dof 72 "
        f"({-b[72]['bias_in_standard_errors']:.1f})"
    ) in text
    s2, s18 = sims["selection"]["dof 2"], sims["selection"]["dof 18"]

    def pct(key, fmt):
        return f"{fmt.format(100 * s2[key])} % / {fmt.format(100 * s18[key])} %"

    assert (
        f"the fraction where M2 is chosen: `lrt` {pct('lrt', '{:.1f}')}; naive χ²₃ LRT "
        f"{pct('naive_chi2_3', '{:.1f}')}; `ftest` at 5 % {pct('ftest', '{:.0f}')}"
    ) in text
    assert f"`aic` {pct('aic', '{:.0f}')}; `chi2` {pct('chi2', '{:.0f}')}" in text
    naive = f"{100 * s2['naive_chi2_3']:.0f}–{100 * s18['naive_chi2_3']:.0f} %"
    assert f"naive χ²₃ reference rejects M1 in {naive} of pure-M1 pixels" in text
    bb = sims["broken_bump"]
    above, below = bb["bump above the break"], bb["bump below the break"]
    assert (
        f"{100 * above['at_bound_and_above_truth']:.0f} % (bump above the break) and "
        f"{100 * below['at_bound_and_above_truth']:.0f} % (below) of fits ended with a parameter "
        "on a bound at a likelihood better than the truth's"
    ) in text
    on = [bb[t]["parameter_on_a_bound"] for t in ("bump above the break", "bump below the break")]
    assert (
        f"mostly the bump width ({100 * on[0]['bump_width']:.0f} % and "
        f"{100 * on[1]['bump_width']:.0f} % of those fits) and the upper index "
        f"({100 * on[0]['index_high']:.0f} %, {100 * on[1]['index_high']:.0f} %)"
    ) in text


def test_docs_fitting_simulations_bias_and_selection_are_what_a_run_gives():
    """The bias and selection parts are cheap (~15 s): re-run them and compare with the JSON
    (the broken + bump part takes minutes and is not re-run here)."""
    module = docs_script("fitting_simulations")
    stored = json.loads((DOCS / "fitting_simulations.json").read_text())
    for part in ("bias", "selection"):
        fresh = getattr(module, part)()
        for case, values in fresh.items():
            for key, value in values.items():
                assert abs(stored[part][case][key] - value) <= 1e-9, (part, case, key)


def test_fitting_md_raised_calls_quote_docs_legacy_m2_choice_json():
    choice = json.loads((DOCS / "legacy_m2_choice.json").read_text())
    text = page_text("docs/fitting.md")
    m1, m2, m2_again = choice["failed"]
    n = choice["pixels"]
    assert (
        f"had {m1} of the {n:,} M1 calls raise ({100 * m1 / n:.2f} %) and {m2} of the M2 calls "
        f"({100 * m2 / n:.2f} %; then {m2_again} of its second attempts)"
    ) in text


def test_models_md_tested_recovery_fits_never_missed_quotes_docs_recovery_json():
    tested = docs_script("recovery").RECOVERY
    cases = json.loads((DOCS / "recovery.json").read_text())["cases"]
    mine = [c for c in cases if tested.get((c["model"], c["dof"])) == c["n"]]
    assert len(mine) == len(tested)
    n = sum(c["n"] for c in mine)
    missed = sum(c["missed_truth_optimum"] for c in mine)
    text = page_text("docs/models.md")
    assert f"cases this never happens ({missed} of their {n:,} fits, `docs/recovery.json`)" in text


def _times_ten(x: float) -> str:
    """2.7e-08 as the docs write it: 2.7 × 10⁻⁸."""
    mant, exp = f"{x:.1e}".split("e")
    sup = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
    return f"{mant} × 10{str(int(exp)).translate(sup)}"


def test_significance_md_aia_figures_quote_realdata_and_box_dof_aia_json():
    aia = json.loads((DOCS / "realdata.json").read_text())["aia1600"]
    box1 = json.loads((DOCS / "box_dof_aia.json").read_text())["runs"]["box 1"]
    text = page_text("docs/significance.md")
    n = int(re.search(r"([\d,]+) pixels tested", text).group(1).replace(",", ""))
    counts = {}
    for key in ("pixel", "fdr", "global"):
        pct = aia[f"lrt_{key}_percent"]
        counts[key] = round(pct * n / 100)
        assert abs(100 * counts[key] / n - pct) < 1e-9, key  # the percent is a count of n
    c, threshold = counts, aia["lrt_global_threshold"]
    pct = {k: f"{100 * v / n:.1f}" for k, v in c.items()}
    assert f"| per pixel, LRT p < 0.05 (`best_model`) | {c['pixel']:,} ({pct['pixel']} %) |" in text
    assert f"| BH q ≤ 0.05 (`best_model_fdr`) | {c['fdr']:,} ({pct['fdr']} %) |" in text
    assert (
        f"| global level 0.999 (p ≤ {_times_ten(threshold)}) | {c['global']:,} "
        f"({pct['global']} %) |"
    ) in text
    # the `specfit info` printout of the same run
    assert (
        f"lrt_pvalue: {n} tested; per pixel p < 0.05: {c['pixel']} ({pct['pixel']}%); BH q <= "
        f"0.05: {c['fdr']} ({pct['fdr']}%); global 0.999: {c['global']} ({pct['global']}%) "
        f"(p <= {threshold:.1e})"
    ) in text
    m1 = f"{100 - 100 * c['fdr'] / n:.1f}"
    assert f"best_model_fdr (lrt at FDR 0.05): m1 {m1}%, m2 {pct['fdr']}%" in text
    assert f"(median {_times_ten(box1['lrt_pvalue_median'])};" in text


def test_hf_steepening_md_fmax_run_quotes_docs_box_dof_aia_json():
    runs = json.loads((DOCS / "box_dof_aia.json").read_text())["runs"]
    cut, full = runs["box 1, fmax 8.3 mHz"], runs["box 1"]
    text = page_text("docs/hf_steepening.md")
    assert (
        f"still has M1 at a bound in {cut['m1_at_bound_percent']:.1f} % of pixels (tail median "
        f"{cut['m1_tail_median']:g}) and M2 in {cut['m2_at_bound_percent']:.1f} %. The LRT then "
        f"prefers M2 in {cut['m2_preferred_percent']:.1f} % instead of "
        f"{full['m2_preferred_percent']:.1f} % over the whole band, and M1's median index is "
        f"{cut['m1_index_median']:.2f}"
    ) in text


def test_hf_steepening_md_reads_of_the_data_quote_docs_hf_steepening_json():
    """What the page once read off the figure, now measured by the script."""
    hf = json.loads((DOCS / "hf_steepening.json").read_text())
    times, spec = hf["frame_times"], hf["raw_median_spectrum"]
    text = page_text("docs/hf_steepening.md")
    assert times["max_neighbour_weight"] <= 0.001
    assert (
        f"The frame times (`T_OBS`) lie within {times['max_offset_from_grid_s']:.2f} s of that "
        "grid, so a neighbouring frame's interpolation weight is ≤ 0.001"
    ) in text
    assert (
        f"falls by {spec['decades_from_bump_peak_to_top_bins']:.1f} decades from the bump's peak "
        "to the top bins (120–149)"
    ) in text
    assert (
        "the raw median spectrum peaks above a straight line over bins 14–60 at "
        f"{spec['bump_peak_mhz']:.1f} mHz, bin {spec['bump_peak_bin']})"
    ) in text


def test_hf_steepening_noise_bound_quotes_docs_hf_steepening_json():
    """The upper bound on the photon noise and its share of the top bins' power, as the
    script derives them (a review found them worked out by hand, with 0.80 for the white
    noise's 5th percentile where the window's correlated bins give 0.72)."""
    hf = json.loads((DOCS / "hf_steepening.json").read_text())
    bound = hf["envelope_bound"]
    over = hf["results"]["raw"]["top_bins_over_floor_median"]
    text = page_text("docs/hf_steepening.md")
    assert (
        f"is {bound['white_top_p5_over_mean']:.2f} of its mean, so the noise is at most "
        f"{bound['dn_per_photon_max']:.3f} DN per photon, ≤ "
        f"{bound['electrons_per_photon_max']:.2f} e⁻/photon"
    ) in text
    assert (
        f"at that bound the top bins hold a median {over['envelope_bound']:.2f}× the floor" in text
    )
    assert (
        f"photon noise is at most {1 / over['envelope_bound']:.2f} of the power in the last "
        f"bins (the bound above; {1 / over['yield1_1e']:.2f} at 1 e⁻/photon)"
    ) in text


def test_hf_steepening_index_changes_quote_docs_hf_steepening_json():
    res = json.loads((DOCS / "hf_steepening.json").read_text())["results"]
    top = {k: res[k]["index_by_bins"]["60-149"] for k in ("raw", "order0", "order1", "order3")}
    d = {k: top[k] - top["raw"] for k in ("order0", "order1", "order3")}
    text = page_text("docs/hf_steepening.md")
    assert f"+{d['order1']:.2f} for linear, +{d['order3']:.2f} for cubic" in text
    assert f"(+{d['order3']:.2f} for the default cubic)" in text
    assert f"the index drops by {-d['order0']:.2f}" in text
    readme = page_text("README.md")
    assert f"by +{d['order3']:.2f} (cubic) or +{d['order1']:.2f} (linear)" in readme


def test_fitting_md_interval_cost_quotes_benchmarks_intervals_cost_json():
    rows = json.loads((ROOT / "benchmarks" / "intervals_cost.json").read_text())["rows"]
    x = {(r["bins"], len(r["intervals"])): r["x_without"] for r in rows}
    assert_docs_quote(
        "fitting.md",
        f"bump_width]` makes the fit {x[300, 2]:.2f}x as slow at 300 bins and {x[1800, 2]:.2f}x "
        f"at 1800, adding `index` and `tail` {x[300, 4]:.2f}x and {x[1800, 4]:.2f}x.",
    )
    # the benchmarks' table holds every row of the JSON
    table = (ROOT / "benchmarks" / "README.md").read_text()
    for r in rows:
        row = (f"| {r['bins']} | {', '.join(r['intervals']) or 'none'} | "
               f"{1e3 * r['cpu_s_per_px']:.2f} | {r['x_without']:.2f} | "
               f"{r['interval_nfev_per_px']:.0f} |")  # fmt: skip
        assert row in table, row


def test_fitting_md_bootstrap_table_quotes_docs_recovery_json():
    boot = json.loads((DOCS / "recovery.json").read_text())["bootstrap"]
    doc = (DOCS / "fitting.md").read_text()
    table = doc[doc.index("| model, dof | parameter | ± error: pulls' spread, coverage |") :]
    lines = table.split("\n\n", 1)[0].splitlines()[2:]
    names = {"amplitude at the break": "amplitude", "n₂": "index_high", "break": "break_freq",
             "bump centre": "bump_center", "bump width": "bump_width", "κ": "kappa"}  # fmt: skip
    assert len(lines) == 11, "docs/fitting.md's bootstrap table"
    case = None
    for line in lines:
        cells = [_plain(c) for c in line.strip().strip("|").split("|")]
        if cells[0]:
            m = re.match(r"`(\w+)` (\d+) \(([\d,]+) px\)", cells[0])
            (case,) = [
                c
                for c in boot
                if c["model"] == m.group(1)
                and c["dof"] == float(m.group(2))
                and c["n"] == int(m.group(3).replace(",", ""))
            ]
        v = case["params"][names[cells[1]]]
        assert cells[2:] == [
            f"{v['fisher_pull_std']:.3f} {v['fisher_coverage']:.3f}",
            f"{v['boot_pull_std']:.3f} {v['boot_coverage']:.3f}",
            f"{v['percentile_pull_std']:.3f} {v['percentile_coverage']:.3f}",
        ], line
    # the ranges the text quotes, over every parameter of every bootstrap case
    every = [v for c in boot for v in c["params"].values()]

    def span(key, scale=1.0, fmt="{:.2f}"):
        lo, hi = (fmt.format(scale * f(v[key] for v in every)) for f in (min, max))
        return f"{lo}–{hi}"

    text = page_text("docs/fitting.md")
    assert (
        f"pulls {span('boot_pull_std')}, ± SD covering {span('boot_coverage', 100, '{:.0f}')} %"
        in text
    )
    assert (f"The percentile interval covers {span('percentile_coverage', 100, '{:.0f}')} % "
            f"(± error {span('fisher_coverage', 100, '{:.0f}')} %)") in text  # fmt: skip
    b4 = next(c for c in boot if c["model"] == "broken_tail" and c["dof"] == 4.0)["params"]
    three = ("amplitude", "index_high", "break_freq")
    pct = sorted(b4[p]["percentile_pull_std"] for p in three)
    fis = sorted(b4[p]["fisher_pull_std"] for p in three)
    assert (f"come down to {pct[0]:.2f}–{pct[-1]:.2f} at dof 4 (from {fis[0]:.2f}–{fis[-1]:.2f})"
            in text)  # fmt: skip
    b8 = next(c for c in boot if c["model"] == "broken_tail" and c["dof"] == 8.0)["params"]
    pct8 = sorted(b8[p]["percentile_pull_std"] for p in three)
    assert_docs_quote(
        "models.md",
        f"brings those pulls to {pct[0]:.2f}–{pct[-1]:.2f} at dof 4 but leaves "
        f"{pct8[0]:.2f}–{pct8[-1]:.2f} at dof 8.",
    )


def test_the_1600_field_run_is_a_record_whose_figures_are_not_quoted():
    """The one 1600² run (2026-12-05) was not re-run with the day's figures: its row stays in
    benchmarks/headline_1600x1797.json, and neither the README nor benchmarks/README.md
    quotes its figures; benchmarks/README.md names the file and the command that re-runs it."""
    (row,) = json.loads((ROOT / "benchmarks" / "headline_1600x1797.json").read_text())
    figures = (f"{row['px_per_s']:,.0f} px/s", f"{row['pipeline_s']:.1f} s",
               f"{row['peak_rss_gib']:.2f} GiB", f"cube stage {row['cube_s']:.0f} s")  # fmt: skip
    for page in ("README.md", "benchmarks/README.md"):
        text = page_text(page)
        quoted = [f for f in figures if f in text]
        assert not quoted, f"{page} quotes the 1600² run's {quoted}"
        assert "headline_1600x1797.json" in text, page
    bench = page_text("benchmarks/README.md")
    assert "python benchmarks/headline.py --sizes 1600 --frames 1800 --cadence 24" in bench


def test_fitting_md_cluster_kinds_quotes_docs_cluster_kinds_json():
    """docs/fitting.md's "none of the N data variables ... differs" is what docs/cluster_kinds.py
    wrote: the variable count of that run's stores (it grows with the results contract), and no
    differing variable in any of its runs."""
    run = json.loads((DOCS / "cluster_kinds.json").read_text())
    compared = {k: v for k, v in run["runs"].items() if "differing" in v}
    assert len(compared) == 3, sorted(run["runs"])
    assert all(v["differing"] == [] for v in compared.values()), compared
    assert_docs_quote(
        "fitting.md",
        f"**none of the {run['variables']} data variables and {run['coordinates']} coordinates "
        "differs**",
    )


def test_spectra_md_box_eigenvalue_share_is_computed():
    """The share of a box-3 mean's variance carried by its largest eigenvalue, on the field
    of the box3_causes table (smoothing 1), as docs/spectra_simulations.py draws from it."""
    lam = docs_script("spectra_simulations").box_eigenvalues(1.0)
    share = 100 * lam.max() / lam.sum()
    assert_docs_quote("spectra.md", f"one eigenvalue carries {share:.0f} % of the sum")


def test_significance_md_null_field_table_quotes_its_json():
    """docs/significance.md's pure-noise table is docs/significance_null_field.json, as the
    script stores each field's line (before, the script only printed them)."""
    rows = json.loads((DOCS / "significance_null_field.json").read_text())
    text = page_text("docs/significance.md")
    for key, r in rows.items():
        seed = key.replace("@", ", `--cadence ") + ("`" if "@" in key else "")
        line = (
            f"| {seed} | {r['cadence']:g} | {100 * r['nyquist_kept']:.0f} % | "
            f"{r['n_pixel']:,} ({100 * r['n_pixel'] / r['n_tested']:.1f} %) | {r['n_fdr']} | "
            f"{r['n_global']} |"
        )
        assert line in text, line
    assert all(r["m1_stuck_at_constant"] == 0 for r in rows.values())
    pct = [100 * r["n_pixel"] / r["n_tested"] for k, r in rows.items() if "@" not in k]
    assert f"per pixel {min(pct):.1f}–{max(pct):.1f} % (nominal 5 %;" in text
    mean, n = sum(pct) / len(pct), sum(r["n_tested"] for k, r in rows.items() if "@" not in k)
    se = 100 * (0.05 * 0.95 / n) ** 0.5  # binomial, all fields' pixels
    assert f"the mean {mean:.1f} % is {(mean - 5) / se:.1f} standard errors high" in text
    secs = [r["seconds"] for r in rows.values()]
    assert f"{min(secs):.0f}–{max(secs):.0f} s per field" in text


def test_fitting_md_api_fit_table_quotes_benchmarks_api_fit_json():
    """docs/fitting.md's specfit.fit table is benchmarks/api_fit.json as the script stored it
    (before, the script only printed its figures)."""
    r = json.loads((ROOT / "benchmarks" / "api_fit.json").read_text())
    cold, warm = r["first_call"]["cold"], r["first_call"]["warm"]
    th = r["threaded"]
    one, two, chunk = th["1 thread"], th["2 threads"], th["2 threads, one chunk (before)"]
    n = r["size"] ** 2
    text = page_text("docs/fitting.md")
    rows = [
        f"| {cold['first']:.1f} s (a second call {cold['second']:.1f} s: "
        f"{cold['first'] - cold['second']:.1f} s start-up,",
        f"| {warm['first']:.1f} s (a second call {warm['second']:.1f} s: "
        f"{warm['first'] - warm['second']:.1f} s start-up) |",
        f"| {one['wall']:.1f} s ({n / one['wall']:,.0f} px/s) / {two['wall']:.1f} s "
        f"({n / two['wall']:,.0f} px/s): **{one['wall'] / two['wall']:.2f}×** (CPU / wall "
        f"{one['cpu'] / one['wall']:.2f} and {two['cpu'] / two['wall']:.2f} cores) |",
        f"| {chunk['wall']:.1f} s ({n / chunk['wall']:,.0f} px/s): one core |",
        f"| {r['control_2_over_1_threads']:.2f}× (the ceiling",
    ]
    for row in rows:
        assert row in text, row


def test_fitting_md_lrt_tail_check_quotes_docs_lrt_tail_json():
    """The LRT reference's tail against 1,200,000 pooled null statistics, as docs/lrt_tail.py
    stored it: specfit's exponential tail near the truth, the moment-fitted scaled chi2 it
    used before too small."""
    r = json.loads((DOCS / "lrt_tail.json").read_text())
    new = r["ratio_to_pooled"]["exponential (specfit)"]
    old = r["ratio_to_pooled"]["scaled chi2 by moments (before)"]
    levels = r["levels"]
    assert r["pooled"] == 1_200_000 and levels[2] == 1e-3 and levels[-1] == 3e-5
    text = page_text("docs/fitting.md")
    assert (
        f"references from 2,000 of them give median {min(new['median']):.2f}–"
        f"{max(new['median']):.2f}× the pooled p-value from 10⁻² to 3 × 10⁻⁵ (10–90 % of "
        f"samples: {min(new['p10']):.2f}–{max(new['p90']):.1f}×)"
    ) in text
    assert f"gave {old['median'][2]:.2f}× at 10⁻³ and {old['median'][-1]:.2f}× at 3 × 10⁻⁵" in text
    assert 0.8 < min(new["median"]) and max(new["median"]) < 1.25


def test_rerun_figures_runs_every_figure_script_in_docs():
    """docs/rerun_figures.py re-runs the figures the docs quote on the day they are quoted:
    a figure script added to docs/ without a step there would keep its old figures."""
    rerun = docs_script("rerun_figures")
    listed = {
        part.removeprefix("docs/")
        for chain in rerun.CHAINS
        for _, cmd in chain
        for part in cmd
        if part.startswith("docs/") and part.endswith(".py")
    }
    scripts = {p.name for p in DOCS.glob("*.py")} - {"figure_stamp.py", "rerun_figures.py"}
    assert scripts - listed == set(), f"no step in docs/rerun_figures.py for {scripts - listed}"
    assert listed - scripts == set(), f"steps for missing scripts {listed - scripts}"
