"""Peak host memory of a probe sweep in memory vs streamed, at two token counts (same run, same settings).

Each (token count, mode) runs in its own process, so its peak resident set size (``ru_maxrss``) is its own:
a random-init GPT-2-style stand-in (default 2 blocks, d_model 768) over a Zipfian token stream, probes of every
``--methods`` (default vocab) over every depth. In memory, the activations grow with the tokens; streamed, they
go to temporary files and the probes fit a chunk or minibatch at a time, so the peak should stay flat (goal: 4x
the tokens, at most 1.25x the peak). The table gives each run's peak RSS, seconds and tokens/s, the growth of the
peak from the smaller to the larger count, and the streamed/in-memory ratios; it checks that both modes give the
same table. Measured (2 shared CPU cores, 1 thread, d_model 256, d_vocab 1000, 16384 vs 65536 tokens, 2 epochs):
streamed peak RSS x1.05 (vocab), x1.13 (future_lens), x1.15 (ridge) for 4x the tokens, in memory x1.35-1.50;
streamed and in-memory tables identical.

    python benchmarks/probe_stream.py [--tokens 16384 65536] [--layers 2] [--d-model 768] [--threads 1]
        [--methods vocab,future_lens,ridge]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """One sweep; prints its figures as one JSON line (and saves its table for the comparison)."""
    import torch

    from forethought.models import tiny_model
    from forethought.probes import FutureLensConfig, ProbeSweepConfig, VocabProbeConfig, probe_sweep

    torch.set_num_threads(args.threads)
    n_seq = args.tokens // args.seq_len
    model = tiny_model(n_layers=args.layers, d_model=args.d_model, n_heads=max(1, args.d_model // 64),
                       d_vocab=args.vocab, n_ctx=args.seq_len, seed=0)
    zipf = 1.0 / torch.arange(1, args.vocab + 1, dtype=torch.float64)
    tokens = torch.multinomial(zipf, n_seq * args.seq_len, replacement=True,
                               generator=torch.Generator().manual_seed(0)).view(n_seq, args.seq_len)
    config = ProbeSweepConfig(top_k=args.top_k, batch_size=16, stream_dir=args.stream_dir,
                              vocab=VocabProbeConfig(max_epochs=args.epochs, batch_size=512),
                              future_lens=FutureLensConfig(max_epochs=args.epochs, batch_size=256))
    start = time.perf_counter()
    sweep = probe_sweep(model, tokens, offsets=[0, 1], config=config, method=args.method,
                        stream=args.mode == "stream", progress=False)
    table = sweep.to_frame()
    seconds = time.perf_counter() - start
    table.to_csv(Path(args.stream_dir) / f"table_{args.method}_{args.tokens}_{args.mode}.csv", index=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"method": args.method, "tokens": tokens.numel(), "mode": args.mode, "seconds": seconds,
                      "tokens_per_s": tokens.numel() / seconds, "peak_rss_mib": peak_kib / 1024,
                      "mean_top1": float(table["top1"].mean())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs=2, default=[16384, 65536])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default="vocab", help="comma-separated probe methods, one sweep each")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["memory", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--stream-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        args.tokens = args.tokens[0]
        child(args)
        return
    import pandas as pd

    results = []
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        shared = [f"--{name}={getattr(args, name.replace('-', '_'))}"
                  for name in ("layers", "d-model", "vocab", "seq-len", "top-k", "epochs", "threads")]
        for method in methods:
            for tokens in args.tokens:
                for mode in ("memory", "stream"):
                    command = [sys.executable, __file__, "--method", method, "--mode", mode, "--stream-dir", tmp,
                               "--tokens", str(tokens), str(tokens), *shared]
                    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                    results.append(json.loads(output.strip().splitlines()[-1]))
                    print(results[-1], flush=True)
        same = {method: all(pd.read_csv(f"{tmp}/table_{method}_{n}_memory.csv").equals(
                    pd.read_csv(f"{tmp}/table_{method}_{n}_stream.csv")) for n in args.tokens) for method in methods}
    print(f"\nprobe sweep: {args.layers} blocks, d_model {args.d_model}, d_vocab {args.vocab}, probes over "
          f"{args.layers + 1} depths x offsets 0,1 (+ controls), top-{args.top_k}, {args.epochs} epochs, "
          f"{args.threads} thread(s)")
    print(f"{'method':>12}{'tokens':>8}{'mode':>8}{'peak RSS MiB':>14}{'seconds':>9}{'tokens/s':>10}")
    for row in results:
        print(f"{row['method']:>12}{row['tokens']:>8}{row['mode']:>8}{row['peak_rss_mib']:>14.0f}"
              f"{row['seconds']:>9.1f}{row['tokens_per_s']:>10.0f}")
    by = {(row["method"], row["tokens"], row["mode"]): row for row in results}
    small, large = sorted({row["tokens"] for row in results})
    for method in methods:
        for mode in ("memory", "stream"):
            low, high = by[method, small, mode]["peak_rss_mib"], by[method, large, mode]["peak_rss_mib"]
            print(f"{method} {mode}: peak RSS grows {high - low:+.0f} MiB from {small} to {large} tokens "
                  f"({(high - low) / (large - small) * 1024:.1f} KiB per token; x{high / low:.2f})")
        for tokens in (small, large):
            stream, memory = by[method, tokens, "stream"], by[method, tokens, "memory"]
            print(f"{method}, {tokens} tokens, stream / memory: peak RSS "
                  f"{stream['peak_rss_mib'] / memory['peak_rss_mib']:.2f}, "
                  f"time {stream['seconds'] / memory['seconds']:.2f}")
        print(f"{method}: tables identical in both modes: {same[method]}")

if __name__ == "__main__":
    main()
