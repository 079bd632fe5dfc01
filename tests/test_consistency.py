import json

import numpy as np
import pytest

from iflow.cli import main
from iflow.consistency import pairwise_mcc


def test_pairwise_mcc_ignores_permutation_sign_and_scale():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 3))
    same = -3.0 * z[:, [2, 0, 1]] + 1.0
    other = rng.standard_normal((2000, 3))
    table = pairwise_mcc([z, same, other])
    np.testing.assert_allclose(np.diag(table), 1.0)
    np.testing.assert_allclose(table, table.T)
    assert table[0, 1] == pytest.approx(1.0)
    assert table[0, 2] < 0.1 and table[1, 2] < 0.1


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("consistency")
    data = root / "d.npz"
    assert (
        main(["data", "synthetic", "--sources", "2", "--segments", "3", "--per-segment", "100", "--out", str(data)])
        == 0
    )
    runs = []
    for seed in (0, 1):
        run = root / f"run{seed}"
        args = ["train", "--data", str(data), "--epochs", "1", "--batch-size", "64", "--depth", "1", "--hidden", "8", "--prior",
                "gauss"]
        assert main([*args, "--seed", str(seed), "--out", str(run)]) == 0
        runs.append(run)
    return data, runs


def test_consistency_json_reports_pairs_and_true_mcc(two_runs, capsys, tmp_path):
    data, (a, b) = two_runs
    capsys.readouterr()
    assert main(["consistency", str(a), str(b), str(a), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    table = np.array(report["pairwise"])
    assert table.shape == (3, 3) and report["runs"] == [str(a), str(b), str(a)]
    assert table[0, 2] == pytest.approx(1.0)  # a run agrees with itself
    assert 0 < table[0, 1] <= 1 and report["min"] == pytest.approx(table[0, 1])
    assert report["mean"] == pytest.approx((2 * table[0, 1] + 1) / 3)
    assert len(report["true_mcc"]) == 3 and report["true_mcc"][0] == pytest.approx(report["true_mcc"][2])


def test_consistency_text_and_bad_input(two_runs, capsys):
    data, (a, b) = two_runs
    capsys.readouterr()
    assert main(["consistency", str(a), str(b), "--data", str(data)]) == 0
    assert "agreement between runs: mean MCC" in capsys.readouterr().out
    assert main(["consistency", str(a), "--data", str(data)]) == 2
    assert "at least two run directories" in capsys.readouterr().err


def test_consistency_says_agreement_is_not_recovery_and_names_short_runs(two_runs, capsys):
    data, (a, b) = two_runs
    capsys.readouterr()
    assert main(["consistency", str(a), str(b), "--data", str(data)]) == 0
    note = capsys.readouterr().out.strip().splitlines()[-1]
    assert note.startswith("note: agreement between runs is necessary for recovery, not sufficient")
    assert f"a fixed number of epochs, not to convergence: {a} (1), {b} (1)" in note


def test_runs_of_the_default_length_get_the_general_caveat_only():
    from types import SimpleNamespace

    from iflow.config import TrainConfig
    from iflow.consistency import caveat

    full = SimpleNamespace(directory="r", train_config=TrainConfig())
    assert "not sufficient" in caveat([full, full]) and "fixed number" not in caveat([full, full])
