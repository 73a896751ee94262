"""Probe scores under a top-k label space beside the whole vocabulary's, on a run's own model and split.

    python benchmarks/top_k_scores.py RUN_DIR [--model vanilla] [--layer 2] [--top-k 255 64] [--max-epochs 10]

Prints one row per label space: coverage, the probes' top-1 at every offset (at ``--layer``), the unigram top-1 and
the bigram top-1 at offset 0. Under a top-k space "other" is never a prediction, so a top-k row should read about
what the whole vocabulary reads on the targets it keeps (at most its coverage), and the unigram baseline the same
whenever the most frequent token is kept.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

import forethought
from forethought.probes import ProbeSweepConfig, probe_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--model", default="vanilla")
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--offsets", default="0,1,2")
    parser.add_argument("--top-k", type=int, nargs="+", default=[255, 64])
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args()
    run = forethought.load_run(args.run)
    model = run.models[args.model]
    offsets = [int(o) for o in args.offsets.split(",")]
    rows = []
    for top_k in [None, *args.top_k]:
        start = time.perf_counter()
        config = ProbeSweepConfig(control=False).with_max_epochs(args.max_epochs)
        table = probe_sweep({args.model: model}, run.splits, layers=[args.layer], offsets=offsets, top_k=top_k,
                            config=config, progress=False).to_frame()
        row = {"label space": "whole vocabulary" if top_k is None else f"top-{top_k} + other",
               "coverage": table["coverage"].iloc[0]}
        for _, line in table.iterrows():
            row[f"top1 offset {line['offset']}"] = line["top1"]
        first = table[table["offset"] == offsets[0]].iloc[0]
        row["unigram top1"], row["bigram top1 (offset 0)"] = first["unigram_top1"], first["bigram_top1"]
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
