"""Activation-patching speed: batched `patch_positions` vs `transformer_lens.patching` (one forward per cell).

Both sweep the residual stream before every block at every position (``hook_resid_pre``, ``[layer, pos]``) with the
same logit-difference metric; their results are checked to agree before timing. The sweeps run interleaved and
repeated; the table reports the median of each and the ratio to TransformerLens (lower is faster).

    python benchmarks/patching.py [--layers 4] [--d-model 64] [--batch 4] [--seq-len 24] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformer_lens.patching as tl_patching

from forethought.interventions import LogitDiff, patch_positions
from forethought.models import tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = tiny_model(n_layers=args.layers, d_model=args.d_model, n_heads=4, d_vocab=2048, n_ctx=args.seq_len)
    model.eval()
    clean = torch.randint(0, 2048, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0))
    corrupt = clean.clone()
    corrupt[:, args.seq_len // 2] = (corrupt[:, args.seq_len // 2] + 1) % 2048

    def transformer_lens_sweep():
        with torch.no_grad():
            _, cache = model.run_with_cache(clean)
            metric = lambda logits: (logits[:, -1, 3] - logits[:, -1, 5]).mean()
            return tl_patching.get_act_patch_resid_pre(model, corrupt, cache, metric)

    def ours(batch_size):
        return lambda: patch_positions(model, clean, corrupt, LogitDiff(3, 5), hook="hook_resid_pre",
                                       batch_size=batch_size, progress=False).values

    runs = {
        "transformer_lens.patching": transformer_lens_sweep,
        "ours, 1 cell per forward": ours(args.batch),
        "ours, batch_size=64": ours(64),
        "ours, batch_size=256": ours(256),
    }
    reference = runs["transformer_lens.patching"]()
    for name, run in runs.items():
        torch.testing.assert_close(run(), reference, rtol=1e-4, atol=1e-4, msg=f"{name} disagrees")
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    base = statistics.median(timings["transformer_lens.patching"])
    print(f"model: {args.layers} layers, d_model {args.d_model}; batch {args.batch} x {args.seq_len} tokens; "
          f"{args.layers * args.seq_len} cells; torch threads {torch.get_num_threads()}")
    print(f"{'sweep':<28}{'median s':>10}{'ratio to TL':>13}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:<28}{median:>10.3f}{median / base:>13.3f}")


if __name__ == "__main__":
    main()
