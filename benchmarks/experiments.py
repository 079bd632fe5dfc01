"""Run the papers' experiments and write docs/results.md from their outputs.

    OMP_NUM_THREADS=1 python benchmarks/experiments.py --quick            # every quick preset, then the page
    OMP_NUM_THREADS=1 python benchmarks/experiments.py --page-only        # the page from outputs already there

Outputs go to experiments/NAME-quick (or experiments/NAME); a rerun skips finished rows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from iflow.experiments import available
from iflow.experiments.results_page import results_page
from iflow.files import atomic_write

ROOT = Path("experiments")
PAGE = Path("docs/results.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--names", nargs="*", default=None, help="experiments to run (default: all)")
    parser.add_argument("--page-only", action="store_true")
    args = parser.parse_args()
    if not args.page_only:
        for name in args.names or available():
            out = ROOT / (f"{name}-quick" if args.quick else name)
            argv = ["iflow", "experiment", name, "--jobs", str(args.jobs), "--out", str(out)]
            subprocess.run(argv + (["--quick"] if args.quick else []), check=True)
    page = results_page(ROOT, PAGE.parent)
    atomic_write(PAGE, lambda f: f.write(page.encode()))
    print(f"wrote {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
