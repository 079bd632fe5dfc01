"""Run an experiment's settings x seeds and write its report; by default the noise experiment.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/noise.py --seeds 1 2 3                  # benchmarks/noise.md, .png, .csv
    OMP_NUM_THREADS=1 python benchmarks/noise.py --models iflow ivae --noise 0 0.1 --seeds 1   # a subset
    OMP_NUM_THREADS=1 python benchmarks/noise.py --quick --out /tmp/noise                   # a smoke run
    OMP_NUM_THREADS=1 python benchmarks/noise.py --set per_segment=250 test_per_segment=50   # smaller data

Rows are cached in ``benchmarks/<experiment>_rows.json`` (one per setting and seed), so an interrupted
run resumes and a subset adds to the rest; ``--fresh`` discards the cache. Each row is one model
trained on one core (``--jobs`` rows at once with joblib; on a shared machine keep 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

HERE = Path(__file__).parent


def row_key(setting: dict, seed: int) -> str:
    return json.dumps({**setting, "seed": seed}, sort_keys=True)


def wanted(setting: dict, args: argparse.Namespace) -> bool:
    """Whether the command line's filters keep ``setting``."""
    return all(
        values is None or setting.get(name) in values
        for name, values in (("model", args.models), ("noise", args.noise), ("setting", args.settings))
    )


def save_rows(cache: Path, rows: dict) -> dict:
    """Add ``rows`` to the cache file (re-read first, so runs of other subsets at once keep theirs); the union."""
    union = {**(json.loads(cache.read_text()) if cache.exists() else {}), **rows}
    cache.write_text(json.dumps(union, indent=1) + "\n")
    return union


def main(experiment: str = "noise") -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--models", nargs="+", default=None, help="only these models")
    parser.add_argument("--noise", nargs="+", type=float, default=None, help="only these noise sds")
    parser.add_argument("--settings", nargs="+", default=None, help="only these settings (by name)")
    parser.add_argument("--quick", action="store_true", help="the experiment's quick settings (not cached)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override settings' values, e.g. per_segment=250 (JSON values)",
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="discard cached rows")
    parser.add_argument("--out", type=Path, default=HERE, help="where the report goes (default benchmarks/)")
    args = parser.parse_args()
    module = importlib.import_module(f"iflow.experiments.{experiment}")
    cache = HERE / f"{experiment}_rows.json"
    done = {} if args.fresh or args.quick or not cache.exists() else json.loads(cache.read_text())
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    settings = [{**s, **overrides} for s in module.settings(args.quick) if wanted(s, args)]
    todo = [(s, seed) for s in settings for seed in args.seeds]
    todo = [(s, seed) for s, seed in todo if row_key(s, seed) not in done]
    if args.jobs > 1:
        from joblib import Parallel, delayed

        rows = Parallel(n_jobs=args.jobs)(delayed(module.run)(s, seed) for s, seed in todo)
    else:
        rows = []
        for setting, seed in todo:
            rows.append(module.run(setting, seed))
            print(json.dumps(rows[-1]), flush=True)
            done[row_key(setting, seed)] = rows[-1]
            if not args.quick:
                save_rows(cache, done)
    for (setting, seed), row in zip(todo, rows, strict=False):
        done[row_key(setting, seed)] = row
    if not args.quick:
        done = save_rows(cache, done)
    args.out.mkdir(parents=True, exist_ok=True)
    module.report(list(done.values()) if not args.quick else rows, args.out)
    print(f"wrote the {experiment} report into {args.out}")


if __name__ == "__main__":
    main()
