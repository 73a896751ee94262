"""Cost of a myopic training step: vs a vanilla step on the same model and batch (goal <= 1.3x), and vs the slow
per-position reference (goal >= 20x faster at T = 64).

A step is forward + backward + AdamW update. The reference back-propagates each position's loss on its own, with
the tensors the mode detaches cut at earlier positions in every layer (T forward/backward passes). Vanilla and
myopic steps are interleaved and repeated; the table reports medians and ratios measured in the same run.

With a CUDA GPU it then runs the ``gpt2-paper`` preset's training settings (GPT-2 124M from scratch, batch 512 of
64 tokens, lr 6e-4, bf16 autocast) for a few hundred steps on random tokens, through :func:`train`, and prints
steps/s for vanilla and myopic.

    python benchmarks/myopic_step.py [--layers 4] [--d-model 256] [--seq-len 64] [--batch-size 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from forethought.models import load_model, save_random_checkpoint, tiny_model
from forethought.myopic_training import myopic
from forethought.myopic_training.reference import accumulate_per_position_gradients

VOCAB = 4096


def vanilla_step(model, optimizer, tokens, mode):
    loss = model(tokens, return_type="loss")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def myopic_step(model, optimizer, tokens, mode):
    with myopic(model, mode=mode):
        loss = model(tokens, return_type="loss")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def reference_step(model, optimizer, tokens, mode):
    """The myopic gradient one target position at a time (the definition, written out)."""
    accumulate_per_position_gradients(model, tokens, mode)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def median_seconds(step, model, optimizer, tokens, mode, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(model, optimizer, tokens, mode)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_ratios(args) -> None:
    models = {"native": tiny_model(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_vocab=VOCAB,
                                   n_ctx=args.seq_len)}
    folder = tempfile.mkdtemp()
    models["gpt2 (HF)"] = load_model(save_random_checkpoint("gpt2", folder, d_model=args.d_model,
                                                            n_layers=args.layers, n_heads=args.heads,
                                                            n_ctx=args.seq_len, d_vocab=VOCAB))
    tokens = torch.randint(0, VOCAB, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))
    print(f"{args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab {VOCAB}; batch {args.batch_size} "
          f"x T={args.seq_len}; torch threads {torch.get_num_threads()}; medians of {args.repeats} steps")
    header = (f"{'backend':<11}{'mode':<9}{'vanilla ms':>11}{'myopic ms':>11}{'myopic/vanilla':>16}"
              f"{'reference ms':>14}{'reference/myopic':>18}")
    print(header)
    for backend, model in models.items():
        model.eval()  # dropout off, as the trainer does
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for mode in ("strict", "cutgrad"):
            for step in (vanilla_step, myopic_step):  # warm-up
                step(model, optimizer, tokens, mode)
            vanilla, ours = [], []
            for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
                vanilla.append(median_seconds(vanilla_step, model, optimizer, tokens, mode, 1))
                ours.append(median_seconds(myopic_step, model, optimizer, tokens, mode, 1))
            vanilla_s, ours_s = statistics.median(vanilla), statistics.median(ours)
            reference_s = median_seconds(reference_step, model, optimizer, tokens, mode, args.reference_repeats)
            print(f"{backend:<11}{mode:<9}{1e3 * vanilla_s:>11.1f}{1e3 * ours_s:>11.1f}{ours_s / vanilla_s:>16.2f}"
                  f"{1e3 * reference_s:>14.0f}{reference_s / ours_s:>18.1f}")


def paper_throughput(steps: int, scale: str) -> None:
    """Steps/s of the gpt2-paper preset's training settings on random tokens, vanilla and myopic."""
    from forethought.experiments.myopia_gap import PRESETS
    from forethought.myopic_training import TrainConfig, train

    preset = PRESETS["gpt2-paper"]
    sizes = dict(preset.architecture)
    sizes.pop("family")
    settings = dict(preset.train)
    if scale == "tiny":  # the same code path at toy size, to check it runs on any machine
        sizes.update(n_layers=2, d_model=64, n_heads=4, n_ctx=64)
        settings.update(batch_size=16)
    vocab = 50257 if scale == "full" else 1024
    folder = save_random_checkpoint("gpt2", tempfile.mkdtemp(), d_vocab=vocab, **sizes)
    generator = torch.Generator().manual_seed(0)
    train_tokens = torch.randint(0, vocab, (8 * settings["batch_size"], preset.seq_len), generator=generator)
    val_tokens = torch.randint(0, vocab, (settings["batch_size"], preset.seq_len), generator=generator)
    warm = min(10, steps // 4)
    print(f"\ngpt2-paper settings ({scale}): {sizes}, batch {settings['batch_size']} x T={preset.seq_len}, "
          f"lr {settings['lr']}, {steps} steps (timed after {warm})")
    print(f"{'regime':<9}{'steps/s':>9}{'tokens/s':>12}")
    for regime in ("vanilla", "myopic"):
        config = TrainConfig(**{**settings, "steps": steps, "warmup_steps": min(settings["warmup_steps"], steps // 2),
                                "eval_every": steps, "checkpoint_every": steps, "eval_batches": 1},
                             regime=regime, progress=False)
        stamps = {}

        def on_step(record, stamps=stamps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps[record["step"]] = time.perf_counter()

        train(config, load_model(folder), (train_tokens, val_tokens), on_step=on_step)
        rate = (steps - 1 - warm) / (stamps[steps - 1] - stamps[warm])
        print(f"{regime:<9}{rate:>9.2f}{rate * settings['batch_size'] * preset.seq_len:>12.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--paper-steps", type=int, default=300, help="steps of the gpt2-paper settings on CUDA")
    parser.add_argument("--paper-scale", choices=("full", "tiny", "skip"), default=None,
                        help="gpt2-paper run: full size (default with CUDA), tiny (any device), skip (default "
                             "without CUDA)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    step_ratios(args)
    scale = args.paper_scale or ("full" if torch.cuda.is_available() else "skip")
    if scale != "skip":
        paper_throughput(args.paper_steps, scale)


if __name__ == "__main__":
    main()
