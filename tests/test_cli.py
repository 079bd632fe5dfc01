import json
import subprocess
import sys

import numpy as np
import pytest

from iflow.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny synthetic data set and a 2-epoch run on it."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "d.npz"
    assert main(["data", "synthetic", "--sources", "3", "--segments", "4", "--per-segment", "200", "--seed", "2", "--out", str(data)]) == 0
    run = root / "run"
    assert main(["train", "--data", str(data), "--epochs", "2", "--batch-size", "64", "--depth", "2", "--out", str(run)]) == 0
    return data, run


def test_data_file_holds_the_documented_arrays(trained):
    data, _ = trained
    with np.load(data) as f:
        assert f["x"].shape == (800, 3) and f["u"].shape == (800,) and f["s"].shape == (800, 3)
        assert f["true_log_likelihood"].shape == (800,)
        assert json.loads(str(f["config"]))["seed"] == 2


def test_run_directory_contents(trained):
    _, run = trained
    for name in ("config.json", "model.pt", "metrics.json", "history.json", "figures/training.png", "figures/sources.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model"] == "iflow" and config["model"]["aux"]["n_labels"] == 4
    assert len(json.loads((run / "history.json").read_text())["epochs"]) == 2


def test_train_to_convergence_says_why_it_stopped(trained, capsys, tmp_path):
    data, _ = trained
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--batch-size", "64", "--depth", "2", "--max-epochs", "3", "--prior", "gauss",
            "--out", str(run)]
    capsys.readouterr()
    assert main([*argv, "--patience", "50"]) == 0
    assert "stopped after 3 epochs (max_epochs:" in capsys.readouterr().out
    history = json.loads((run / "history.json").read_text())
    assert (history["stop_reason"], len(history["epochs"])) == ("max_epochs", 3)
    config = json.loads((run / "config.json").read_text())["train"]
    assert (config["task"], config["lr"], config["epochs"]) == ("recovery", 2e-2, None)
    assert main([*argv, "--overwrite", "--patience", "1", "--tolerance", "1e6", "--rate-cut", "0"]) == 0
    assert "stopped after 2 epochs (converged:" in capsys.readouterr().out  # epoch 1 sets the reference
    # the default rate cut: the plateau at epoch 2 comes at the full rate, so training goes back to epoch 1 at half
    assert main([*argv, "--overwrite", "--patience", "1", "--tolerance", "1e6"]) == 0
    out = capsys.readouterr().out
    assert "stopped after 3 epochs (max_epochs:" in out and "half the learning rate 1 time(s)" in out
    epochs = json.loads((run / "history.json").read_text())["epochs"]
    assert [e.get("returned_to_best") for e in epochs] == [None, "plateau", None]
    assert epochs[2]["lr"] < 0.55 * epochs[1]["lr"]


def test_eval_json_and_encode_agree(trained, capsys, tmp_path):
    data, run = trained
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"log_likelihood", "bits_per_dim", "mcc"} <= set(metrics)
    assert metrics["bits_per_dim"] == pytest.approx(-metrics["log_likelihood"] / (3 * np.log(2)))
    assert metrics["gap"] == pytest.approx(metrics["true_log_likelihood"] - metrics["log_likelihood"])
    z_file = tmp_path / "z.npz"
    assert main(["encode", "--run", str(run), "--data", str(data), "--out", str(z_file)]) == 0
    with np.load(z_file) as f, np.load(data) as d:
        from iflow.metrics import mcc

        assert f["z"].shape == (800, 3)
        assert mcc(f["z"], d["s"]).mcc == pytest.approx(metrics["mcc"], abs=1e-6)
        # rows in input order: encoding a reversed file gives the reversed latents
        reversed_file = tmp_path / "rev.npz"
        np.savez(reversed_file, x=d["x"][::-1], u=d["u"][::-1])
        main(["encode", "--run", str(run), "--data", str(reversed_file), "--out", str(tmp_path / "zr.npz")])
        with np.load(tmp_path / "zr.npz") as r:
            np.testing.assert_allclose(r["z"], f["z"][::-1], rtol=1e-5, atol=1e-5)


def test_eval_without_sources_reports_null_mcc(trained, capsys, tmp_path):
    data, run = trained
    no_s = tmp_path / "nos.npz"
    with np.load(data) as d:
        np.savez(no_s, x=d["x"], u=d["u"])
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(no_s), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mcc"] is None


def test_sample_writes_x_for_the_label(trained, tmp_path):
    _, run = trained
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(run), "--u", "1", "--n", "50", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["x"].shape == (50, 3) and np.isfinite(f["x"]).all() and set(f["u"]) == {1}


def test_user_errors_are_one_line_with_status_2(trained, capsys, tmp_path):
    data, run = trained
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--u", "9", "--n", "5", "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iflow: error: ") and "unknown label" in err and err.count("\n") == 1
    assert main(["train", "--data", str(data), "--out", str(run)]) == 2
    assert "exists" in capsys.readouterr().err


def test_help_is_instant_and_does_not_import_torch():
    code = "import sys; from iflow.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_version_prints_the_package_version(capsys):
    import iflow

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"iflow {iflow.__version__}"


def test_identical_runs_write_identical_result_files_and_keep_timings_apart(trained, tmp_path):
    data, run = trained
    again = tmp_path / "again"
    assert main(["train", "--data", str(data), "--epochs", "2", "--batch-size", "64", "--depth", "2", "--out", str(again)]) == 0
    for name in ("metrics.json", "config.json"):
        assert (again / name).read_bytes() == (run / name).read_bytes(), name
    assert "seconds" not in json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "timing.json").read_text())["seconds"] > 0


def test_training_prints_one_line_per_epoch_on_stdout_off_a_terminal(tmp_path, capsys) -> None:
    """Under nohup, SLURM or `> log` there is no bar; every epoch is a line beside the results."""
    data = tmp_path / "d.npz"
    assert main(["data", "synthetic", "--segments", "4", "--per-segment", "100", "--out", str(data)]) == 0
    capsys.readouterr()
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "3", "--batch-size", "64", "--prior", "gauss"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].strip() for line in out if line.startswith("iflow: epoch")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_train_eval_encode_and_sample_on_the_device(trained, device, capsys, tmp_path):
    """The whole command-line path with ``--device`` (cpu, and cuda when present); bf16 trains there too."""
    data, _ = trained
    run, where = tmp_path / "run", ["--device", device.type]
    argv = ["train", "--data", str(data), "--epochs", "2", "--batch-size", "64", "--depth", "2", "--out", str(run)]
    assert main([*argv, *where, "--precision", "bf16"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "bf16"
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(data), "--json", *where]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert np.isfinite(metrics["log_likelihood"]) and metrics["mcc"] > 0.5
    assert main(["encode", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "z.npz"), *where]) == 0
    with np.load(tmp_path / "z.npz") as f:
        assert f["z"].shape == (800, 3) and np.isfinite(f["z"]).all()
    assert main(["sample", "--run", str(run), "--u", "1", "--n", "5", "--out", str(tmp_path / "x.npz"), *where]) == 0
