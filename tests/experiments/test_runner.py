"""The experiment runner: rows computed once, identical for any launcher or number of jobs, resumed
after a crash; two of the papers' experiments at toy scale; sweep files; the command line."""

import csv
import json
from pathlib import Path

import pytest
import torch

from iflow.cli import main
from iflow.errors import UserError
from iflow.experiments import EXPERIMENTS, available, common, experiment, segments, sweep, visual_2d
from iflow.experiments.dim_select import knee
from iflow.experiments.runner import SlurmOptions, run_experiment

TINY = {**common.IVAE_DATA, "sources": 2, "per_segment": 80}


def tiny(model, segments_, epochs=2, options=None):
    setting = common.preset(model, {**TINY, "segments": segments_}, epochs, options, x=segments_)
    setting["train"]["batch_size"] = 64
    return setting


def results(rows):
    """Rows without their timings, for comparing runs."""
    drop = {"seconds", "train_seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


@pytest.fixture(scope="module")
def segments_run(tmp_path_factory):
    """The segments experiment at toy scale, two seeds."""
    out = tmp_path_factory.mktemp("segments")
    settings = [tiny("ivae", 10), tiny("tcl", 10, options={"tcl_ica": True}), tiny("identity", 10)]
    return out, settings, run_experiment(segments, out, seeds=2, settings=settings)


def test_segments_writes_rows_csv_figure_and_table_with_the_published_numbers(segments_run):
    out, settings, rows = segments_run
    assert len(rows) == 6 and len(list((out / "rows").glob("*.json"))) == 6
    assert {(r["setting"]["model"], r["seed"]) for r in rows} == {(m, s) for m in ("ivae", "tcl", "identity") for s in (1, 2)}
    assert all(0 <= r["mcc"] <= 1 for r in rows)
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and "setting.data.segments" in table[0] and "mcc" in table[0]
    text = (out / "table.md").read_text()
    assert "| iVAE | 10 |" in text and "0.692" in text and "0.678" in text and "protocol" in text
    assert (out / "figure.png").stat().st_size > 1000
    grid = json.loads((out / "grid.json").read_text())
    assert grid["settings"] == settings and grid["seeds"] == [1, 2]


def test_results_do_not_depend_on_the_number_of_jobs(segments_run, tmp_path):
    _, settings, sequential = segments_run
    parallel = run_experiment(segments, tmp_path, seeds=[2], jobs=2, settings=settings[1:])  # two joblib workers
    assert results(parallel) == [r for r in results(sequential) if r["seed"] == 2 and r["setting"]["model"] != "ivae"]


def test_a_rerun_skips_finished_rows_and_resumes_a_crashed_one(tmp_path):
    settings = [tiny("identity", 4), tiny("fastica", 4)]
    first = run_experiment(segments, tmp_path, seeds=2, settings=settings)
    files = sorted((tmp_path / "rows").glob("*.json"))
    stamps = [f.stat().st_mtime_ns for f in files]
    files[1].unlink()  # as if the job had died before this row was written
    again = run_experiment(segments, tmp_path, seeds=2, settings=settings)
    assert results(again) == results(first)
    assert [f.stat().st_mtime_ns for f in files if f != files[1]] == stamps[:1] + stamps[2:]
    assert json.loads((tmp_path / "timing.json").read_text())["rows_run"] == 1


def test_models_keeps_only_their_settings_and_names_them_on_the_results_page(tmp_path):
    from iflow.experiments.results_page import results_page

    settings = [tiny("identity", 4), tiny("fastica", 4)]
    rows = run_experiment(segments, tmp_path / "segments-fastica", seeds=2, settings=settings, models=["fastica"])
    assert [(r["setting"]["model"], r["seed"]) for r in rows] == [("fastica", 1), ("fastica", 2)]
    assert json.loads((tmp_path / "segments-fastica" / "grid.json").read_text())["models"] == ["fastica"]
    page = results_page(tmp_path, tmp_path)
    assert "--models fastica --seeds 2" in page and "models fastica only" in page
    with pytest.raises(UserError, match="^models tcl: not in this experiment, whose models are identity, fastica"):
        run_experiment(segments, tmp_path / "other", seeds=1, settings=settings, models=["tcl"])


def test_the_results_page_gives_a_resumed_run_its_wall_time_for_the_rows_it_ran():
    from iflow.experiments.results_page import measured

    timing = {"wall_seconds": 12.0, "jobs": 2, "rows_run": 4, "rows_skipped": 0, "row_seconds": 30.0}
    assert measured(timing).startswith("measured 12 s wall with 2 job(s), 30 s summed over rows")
    resumed = measured({**timing, "rows_skipped": 1})
    assert "12 s wall with 2 job(s) for the 4 rows of the last run (1 more from an earlier run), 30 s" in resumed


def test_submitit_job_array_gives_the_same_rows(tmp_path):
    settings = [tiny("tcl", 4, epochs=1)]  # one job: each starts a Python process
    local = run_experiment(segments, tmp_path / "local", seeds=1, settings=settings)
    array = run_experiment(segments, tmp_path / "array", seeds=1, launcher="slurm", settings=settings,
                           slurm=SlurmOptions(cluster="local", minutes=5))  # fmt: skip
    assert results(array) == results(local)
    assert json.loads((tmp_path / "array" / "timing.json").read_text())["launcher"] == "slurm"


def test_visual_2d_at_toy_scale_draws_sources_observations_and_latents(tmp_path):
    settings = [tiny("iflow", 3), tiny("identity", 3)]
    rows = run_experiment(visual_2d, tmp_path, seeds=1, settings=settings)
    assert len(rows[0]["z"]) == len(rows[0]["s"]) == len(rows[0]["u"]) == 240
    assert (tmp_path / "figure.png").is_file() and "x itself" in (tmp_path / "table.md").read_text()


def test_knee_is_where_the_bound_stops_rising():
    assert knee([2, 3, 5, 7, 9], [-10.0, -6.0, -1.0, -0.8, -0.7]) == 5
    assert knee([5, 10, 15, 20, 25], [-50.0, -30.0, -10.0, -9.5, -9.4]) == 15


OWN_SCHEMA = {"noise", "ivae-fig2a"}  # experiments whose settings name their own model variants, not common's


def test_every_registered_experiment_has_the_interface_and_quick_settings():
    names = available()
    assert set(names) >= set(EXPERIMENTS) - {"noise", "ivae-fig2a"}
    for name in names:
        module = experiment(name)
        assert module.DESCRIPTION and callable(module.run) and callable(module.report)
        for setting in module.settings(quick=True):
            json.dumps(setting)
            if name not in OWN_SCHEMA:
                common.check(setting)
    with pytest.raises(UserError, match="unknown experiment"):
        experiment("nope")


SWEEP = """
name = "mine"
seeds = 2
model = ["identity", "fastica"]
[data]
sources = 2
segments = [3, 4]
per_segment = 60
[train]
epochs = 1
batch_size = 32
"""


def test_sweep_file_is_the_grid_of_its_lists():
    settings, seeds = sweep.grid(sweep_spec(SWEEP))
    assert seeds == 2 and len(settings) == 4
    assert [s["x"] for s in settings] == ["segments=3", "segments=4"] * 2
    assert {s["model"] for s in settings} == {"identity", "fastica"} and settings[0]["train"]["batch_size"] == 32
    for bad, message in [("colour = 1", "unknown keys"), ("[data]\nsegmnts = 3", "segmnts"), ("[train]\nlr = -1", "lr")]:
        with pytest.raises(UserError, match=message):
            sweep.grid(sweep_spec(f'model = "iflow"\n{bad}'))


def sweep_spec(text):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sweep.toml"
        path.write_text(text)
        return sweep.read_toml(path)


def test_cli_runs_a_sweep_file_and_reports_errors(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    assert main(["experiment", "--config", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "FastICA(x)" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "out" / "grid.json").read_text())["settings"]) == 4
    assert len(list((tmp_path / "out" / "rows").glob("*.json"))) == 8
    assert main(["experiment", "--list"]) == 0
    assert "segments" in capsys.readouterr().out
    for argv in (["experiment"], ["experiment", "nope"], ["experiment", "--config", str(tmp_path / "missing.toml")],
                 ["experiment", "seeds", "--quick", "--models", "tcl", "--out", str(tmp_path / "none")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("iflow: error: ")
    assert "--models tcl: not in this experiment" in err  # the last one: the command line names the flag
    assert not (tmp_path / "none").exists()


def fake_rows(module, seeds=(1, 2)):
    """Rows shaped as ``run`` returns them, without training: for the reports alone."""
    rows = []
    for i, setting in enumerate(module.settings(quick=True)):
        for seed in seeds:
            value = 0.3 + 0.05 * i + 0.01 * seed
            row = {"setting": setting, "seed": seed, "mcc": value, "mcc_abs": value / 2, "mcc_sample": value - 0.05,
                   "log_likelihood": -10.0 / (1 + i), "epochs": [{"epoch": 1, "mcc": 0.2}, {"epoch": 2, "mcc": value}],
                   "seconds": 1.0}  # fmt: skip
            if module is visual_2d:
                row.update(s=[[0.0, 1.0], [1.0, 0.0]], x=[[0.5, 0.5], [1.0, 2.0]], z=[[1.0, 1.0], [0.0, 2.0]], u=[0, 1])
            rows.append(row)
    return rows


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n not in ("noise", "ivae-fig2a")])
def test_every_report_writes_its_figure_and_table_with_the_protocol(name, tmp_path):
    module = experiment(name)
    module.report(fake_rows(module), tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert (tmp_path / "figure.png").stat().st_size > 1000 and "protocol" in text
    shown = {s.get("x") for s in module.settings(quick=True)}
    numbers = [v for curve in module.PUBLISHED["values"].values() for x, v in curve.items()
               if isinstance(v, float) and x in shown]  # fmt: skip
    assert all(f"{v:.3f}" in text for v in numbers)  # each published number stands beside ours


def test_protocols_scores_a_posterior_sample_beside_the_mean():
    from iflow.experiments import protocols

    row = protocols.run(tiny("ivae", 4), seed=1)
    assert 0 <= row["mcc_sample"] <= 1 and row["mcc_sample"] != row["mcc"]
    _, data, _, trained = common.train_and_score(tiny("ivae", 4), seed=1)
    state = torch.random.get_rng_state()
    draws = [common.posterior_sample_mcc(trained, data, seed) for seed in (3, 3, 4)]
    assert draws[0] == draws[1] != draws[2]
    assert torch.equal(torch.random.get_rng_state(), state)  # its own generator: torch's global one untouched
    assert protocols.run(tiny("identity", 4), seed=1)["mcc_sample"] is None


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "benchmarks").glob("*.toml")), ids=lambda p: p.name)
def test_the_benchmarks_sweep_files_are_valid_grids(path):
    settings, seeds = sweep.grid(sweep.read_toml(path), str(path))
    assert settings and seeds
