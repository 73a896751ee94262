"""Activation capture overhead: `collect_activations` (resid_post at every layer) vs a plain forward pass.

Both run over the same sequences with the same batch size, interleaved and repeated; the table reports the
median of each and their ratio (goal: <= 1.15 on CPU).

    python benchmarks/capture.py [--layers 6] [--d-model 256] [--sequences 256] [--seq-len 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from forethought.activations import collect_activations
from forethought.models import tiny_model


def plain_forward(model, tokens, batch_size):
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            model(tokens[start : start + batch_size], return_type=None)


def capture(model, tokens, batch_size):
    collect_activations(model, tokens, hooks=["hook_resid_post"], batch_size=batch_size, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = tiny_model(n_layers=args.layers, d_model=args.d_model, n_heads=8, d_vocab=8192, n_ctx=args.seq_len)
    model.eval()
    tokens = torch.randint(0, 8192, (args.sequences, args.seq_len), generator=torch.Generator().manual_seed(0))
    timings = {"plain forward": [], "collect_activations": []}
    plain_forward(model, tokens[: args.batch_size], args.batch_size)  # warm-up
    for _ in range(args.repeats):
        for name, run in (("plain forward", plain_forward), ("collect_activations", capture)):
            start = time.perf_counter()
            run(model, tokens, args.batch_size)
            timings[name].append(time.perf_counter() - start)
    plain = statistics.median(timings["plain forward"])
    ours = statistics.median(timings["collect_activations"])
    size_mb = args.layers * args.sequences * args.seq_len * args.d_model * 4 / 2**20
    print(f"model: {args.layers} layers, d_model {args.d_model}; {args.sequences} x {args.seq_len} tokens; "
          f"captured {size_mb:.0f} MiB; torch threads {torch.get_num_threads()}")
    print(f"{'run':<22}{'median s':>10}")
    print(f"{'plain forward':<22}{plain:>10.3f}")
    print(f"{'collect_activations':<22}{ours:>10.3f}")
    print(f"{'ratio (ours / plain)':<22}{ours / plain:>10.3f}")


if __name__ == "__main__":
    main()
