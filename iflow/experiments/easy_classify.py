"""iVAE paper Fig. 3b: 2-D "easy to classify" data, where TCL fails and the likelihood methods do not."""

from __future__ import annotations

from pathlib import Path

from . import common
from .report import standard_report, write_text

DESCRIPTION = "iVAE Fig. 3b: easy-to-classify 2-D data (second source's mean 2 x a permuted segment index): TCL fails"
PUBLISHED = {
    "source": "iVAE paper, Fig. 3b (App. H.2)",
    "protocol": "2 sources, the second source's segment mean 2 x a permutation of the segment index; values read "
    "off the figure as ranges",
    "values": {"ivae": {"all": "0.86 -> 0.995"}, "tcl": {"all": "about 0.40 to 0.50"}},
}


def settings(quick: bool) -> list[dict]:
    rows = []
    for m in (10, 20) if quick else (10, 20, 40):
        data = {"sources": 2, "means": "easy", "segments": m, "per_segment": 300 if quick else 1000}
        epochs = 10 if quick else 30
        rows += common.tcl_comparison(data, epochs, x=m)
    return rows


run = common.run


def report(rows: list[dict], out: Path) -> None:
    published = {**PUBLISHED, "values": {}}  # ranges, not points: shown in the table's note only
    standard_report(rows, out, published, "segments", "number of segments", extra=("mcc_abs",),
                    model_keys={"tcl": "mcc_abs"})  # fmt: skip
    ranges = "; ".join(f"{model}: {v['all']}" for model, v in PUBLISHED["values"].items())
    write_text(out / "table.md", (out / "table.md").read_text() + f"\nPublished ranges over the figure: {ranges}.\n")
