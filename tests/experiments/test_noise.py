import json
import pickle

import numpy as np
import pytest

from iflow.data.synthetic import SyntheticConfig, generate
from iflow.experiments import noise

TINY = {"segments": 4, "per_segment": 160, "test_per_segment": 25, "epochs": 1}


def test_settings_cover_every_model_and_noise_level_as_json():
    full = noise.settings(quick=False)
    assert {(s["model"], s["noise"]) for s in full} == {(m, sd) for m in noise.MODELS for sd in noise.NOISE_LEVELS}
    assert noise.NOISE_LEVELS == (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)
    quick = noise.settings(quick=True)
    assert len(quick) < len(full) and all(s["per_segment"] < full[0]["per_segment"] for s in quick)
    assert json.loads(json.dumps(full + quick)) == full + quick
    pickle.dumps(noise.run)  # module-level, so worker processes can call it


def test_held_out_points_are_the_last_of_every_segment():
    synthetic = generate(SyntheticConfig(segments=3, per_segment=10, noise=0.1, seed=1))
    train, test, test_rows = noise.split_data(synthetic, 7, 3)
    assert len(train) == 21 and len(test) == 9
    np.testing.assert_array_equal(test_rows, [7, 8, 9, 17, 18, 19, 27, 28, 29])
    np.testing.assert_array_equal(test.x, synthetic.x[test_rows])
    np.testing.assert_array_equal(np.bincount(test.u), [3, 3, 3])


@pytest.mark.parametrize("sd", [0.0, 0.1])
def test_run_trains_and_scores_on_held_out_points(sd):
    row = noise.run({"model": "iflow", "noise": sd, **TINY}, seed=3)
    assert row["seed"] == 3 and row["model"] == "iflow" and row["likelihood"] == "exact"
    assert 0 < row["mcc"] <= 1 and np.isfinite(row["log_likelihood"])
    if sd == 0:
        assert row["bayes_ceiling"] == 1.0
    else:
        assert row["mcc_x"] < row["bayes_ceiling"] < 1.0
    assert row["log_likelihood"] < row["true_log_likelihood"]  # a 1-epoch flow is far below the truth


def fake_rows() -> list[dict]:
    mccs = {"iflow": [0.99, 0.95, 0.6], "ivae": [0.6, 0.8, 0.7], "ivae-flow": [0.6, 0.85, 0.72], "vae": [0.5, 0.5, 0.5]}
    rows = []
    for name, values in mccs.items():
        for sd, value in zip((0.0, 0.1, 0.5), values, strict=False):
            for seed in (1, 2):
                rows.append({"model": name, "noise": sd, "seed": seed, "mcc": value + 0.01 * seed,
                             "log_likelihood": -sd, "likelihood": "exact", "mcc_x": 0.55, "cpu_seconds": 10.0,
                             "bayes_ceiling": 1 - sd / 5, "true_log_likelihood": 1 - sd})  # fmt: skip
    return rows


def test_report_writes_csv_figure_and_table_with_the_crossover(tmp_path):
    noise.report(fake_rows(), tmp_path)
    table = (tmp_path / "noise.md").read_text()
    assert "| 0.1 | identifiable flow | **0.965 +- 0.005** |" in table
    assert "| 0.5 | iVAE, flow posterior, random start | **0.735 +- 0.005** |" in table
    assert "The flow stops being the best choice at sd 0.5." in table
    assert "0.5: iVAE, flow posterior, random start." in table
    assert (tmp_path / "noise.png").stat().st_size > 10_000
    assert len((tmp_path / "noise.csv").read_text().splitlines()) == 1 + len(fake_rows())


def test_crossover_wording():
    assert noise.crossover({0.0: "iflow", 0.1: "iflow"}).endswith("best choice at every level.")
    assert noise.crossover({0.0: "vae", 0.1: "ivae"}).endswith("best choice at no level.")
    assert noise.crossover({0.0: "iflow", 0.5: None}) == (
        "0: identifiable flow, 0.5: no model above x itself. The flow stops being the best choice at sd 0.5."
    )


def test_no_model_is_marked_best_where_x_itself_beats_every_model(tmp_path):
    rows = [{**row, "mcc_x": 0.9} if row["noise"] == 0.5 else row for row in fake_rows()]
    noise.report(rows, tmp_path)
    table = (tmp_path / "noise.md").read_text()
    assert "| 0.5 | iVAE, flow posterior, random start | 0.735 +- 0.005 |" in table  # the best model, not bold
    assert not [line for line in table.splitlines() if line.startswith("| 0.5 ") and "**" in line]
    assert "0.5: no model above x itself." in table
