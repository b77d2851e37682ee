"""Cohort statistics end to end on a synthetic cohort of known truth (files in, NRRD/CSV/PNG out)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from DiscAnalysisLib.cli.main import main
from DiscAnalysisLib.cohort import load_cohort
from DiscAnalysisLib.cohortstats import CohortStatsRequest, make_synthetic_cohort, run_cohort_stats
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.voxelstats import StatsSettings


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("cohort"), n_subjects=20, size_ijk=(16, 12, 4))


def test_partial_correlation_recovers_the_planted_age_effect(synthetic, tmp_path):
    cohort = load_cohort(synthetic.csv_path.with_name("cohort_baseline.csv"))
    req = CohortStatsRequest(StatsSettings("partial", "fdr"), variable="age", covariates=("sex", "bmi"), maps=("map_t2",))
    (out,) = run_cohort_stats(cohort, tmp_path, req)
    sig = out.result.significant.reshape(synthetic.effect_mask.shape)
    assert sig[synthetic.effect_mask].mean() > 0.9
    outside = synthetic.disc_mask & ~synthetic.effect_mask
    assert sig[outside].sum() / max(sig.sum(), 1) < 0.1
    assert not sig[~synthetic.disc_mask].any()
    assert out.summary["peak_r"] < 0  # T2 falls with age
    assert "sex: F=0, M=1" in out.summary["notes"]
    # outputs carry the atlas geometry
    ref = sitk.ReadImage(str(synthetic.csv_path.parent / cohort.rows[0].maps["map_t2"]))
    for key in ("r", "t", "p", "q", "n", "mask", "mean"):
        img = sitk.ReadImage(str(out.files[key]))
        assert img.GetSize() == ref.GetSize() and img.GetSpacing() == ref.GetSpacing() and img.GetOrigin() == ref.GetOrigin()
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out.files["mask"]))).astype(bool)
    assert (mask == synthetic.disc_mask).all()  # outside the disc: values 0 -> excluded by the T2 range
    assert out.files["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert rows[0]["n_voxels_tested"] == int(synthetic.disc_mask.sum())
    assert rows[0]["largest_cluster_voxels"] >= int(synthetic.effect_mask.sum()) * 0.9


def test_paired_test_finds_the_follow_up_decrease(synthetic, tmp_path):
    cohort = load_cohort(synthetic.csv_path)
    (out,) = run_cohort_stats(cohort, tmp_path, CohortStatsRequest(StatsSettings("paired", "maxt", permutations=200),
                                                                   maps=("map_t2",), figures=False))
    sig = out.result.significant.reshape(synthetic.effect_mask.shape)
    assert sig[synthetic.effect_mask].mean() > 0.8 and sig[synthetic.disc_mask & ~synthetic.effect_mask].sum() <= 2
    assert np.nanmean(out.result.effect.reshape(sig.shape)[synthetic.effect_mask]) == pytest.approx(-12, abs=1.5)


def test_a_cross_sectional_test_refuses_several_timepoints(synthetic, tmp_path):
    cohort = load_cohort(synthetic.csv_path)
    with pytest.raises(InputError, match="several timepoints"):
        run_cohort_stats(cohort, tmp_path, CohortStatsRequest(StatsSettings("pearson"), variable="age"))


def test_cli_stats_map_correlation_and_errors(synthetic, tmp_path, capsys):
    csv_path = str(synthetic.csv_path.with_name("cohort_baseline.csv"))
    rc = main(["--progress", "none", "stats", csv_path, "--out", str(tmp_path), "--test", "map-corr", "--no-figures"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "L4-L5 t2_vs_t1rho map-corr" in out and (tmp_path / "L4-L5" / "t2_vs_t1rho_map-corr_r.nrrd").is_file()
    rc = main(["stats", csv_path, "--out", str(tmp_path), "--test", "partial", "--variable", "age", "--covariates", "age,sex"])
    assert rc == 2
    assert "both the variable and a covariate" in capsys.readouterr().err
    rc = main(["stats", csv_path, "--out", str(tmp_path), "--test", "welch", "--group", "sex", "--maps", "map_dwi"])
    assert rc == 2 and "map_dwi" in capsys.readouterr().err


def test_demo_step_recovers_the_planted_effect(tmp_path):
    from DiscAnalysisLib.demo import DEMO_STEPS, DemoContext
    from DiscAnalysisLib.progress import Progress

    step = dict(DEMO_STEPS)["cohort statistics"]
    (line,) = step(DemoContext(out_dir=tmp_path), Progress())
    assert "planted age-effect region recovered" in line
    assert (tmp_path / "cohort" / "stats" / "summary.csv").is_file()


def test_cli_atlas_background_and_inclusion_range(synthetic, tmp_path, capsys):
    csv_path = synthetic.csv_path.with_name("cohort_baseline.csv")
    atlas = str(synthetic.csv_path.parent / "S00" / "L4-L5_tp0_t2.nrrd")  # any image on the maps' grid
    rc = main(["--progress", "none", "stats", str(csv_path), "--out", str(tmp_path), "--maps", "map_t2",
               "--variable", "age", "--atlas", atlas, "--range", "map_t2=90:"])
    assert rc == 0
    assert (tmp_path / "L4-L5" / "t2_pearson_figure.png").is_file()
    n = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "L4-L5" / "t2_pearson_n.nrrd")))
    assert n.max() == 20 and ((n > 0) & (n < 20)).any()  # values <= 90 ms excluded: subjects drop out
    wrong = tmp_path / "wrong.nrrd"
    sitk.WriteImage(sitk.Image(5, 5, 5, sitk.sitkFloat32), str(wrong))
    capsys.readouterr()
    rc = main(["stats", str(csv_path), "--out", str(tmp_path), "--maps", "map_t2", "--variable", "age", "--atlas", str(wrong)])
    assert rc == 2 and "not on the grid of the maps" in capsys.readouterr().err
    rc = main(["stats", str(csv_path), "--out", str(tmp_path), "--variable", "age", "--range", "map_t2"])
    assert rc == 2 and "MAP=LOW:HIGH" in capsys.readouterr().err
