"""Cost of a myopic training step against a vanilla step on the same model and batch, measured in the same run.

A step is forward + backward + AdamW update. Three tables:

* ``scaling`` (default): time and peak memory ratio myopic/vanilla at several context lengths on GPT-2- and
  Llama-shaped stand-ins (random weights; 2 layers, d_model 768, 12 heads, batch 2 by default; goal <= 1.10 for
  both). Peak memory is the peak of tensor bytes allocated and not yet freed during the step, above what was
  live before it: on CPU from the torch profiler's allocation/free events, on CUDA from
  ``torch.cuda.max_memory_allocated``. It counts activations, gradients and optimizer temporaries, not the
  weights and optimizer state that exist before the step. Memory is measured on one (also warm-up) step per
  regime; times are medians of interleaved unprofiled steps. ``--eager`` adds the eager ``[T, T]`` myopic
  recomputation (``myopic(..., attention="eager")``) for comparison.
* ``reference``: vs a vanilla step (goal <= 1.3x) and vs the slow per-position reference (goal >= 20x faster at
  T = 64) on small native and GPT-2 models. The reference back-propagates each position's loss on its own, with
  the tensors the mode detaches cut at earlier positions in every layer (T forward/backward passes).
* ``anchor`` (default): plain HF transformers with SDPA attention on the same weights and batch (the path a user
  would otherwise pick) beside forethought's vanilla and myopic steps, interleaved; every time as a ratio to HF
  SDPA, tokens/s, and model FLOPs utilisation (6 x parameters x tokens / time / the peak matmul rate measured in
  the same run: bf16 on CUDA, float32 on CPU).
* ``ops`` (default without a GPU): what a GPU pays for, counted on any machine: aten operations per training step
  and tensors of shape ``[..., T, T]`` created, for HF SDPA, forethought's eager bridge, its SDPA kernel
  (vanilla) and myopic steps, on GPT-2, GPT-NeoX and Llama (4 layers, d_model 128, T = 256, batch 2).
* ``paper`` (default with a CUDA GPU): the ``gpt2-paper`` preset's training settings (GPT-2 124M from scratch,
  batch 512 of 64 tokens, lr 6e-4, bf16 autocast) for a few hundred steps on random tokens, through
  :func:`train`; steps/s for vanilla and myopic.

    python benchmarks/myopic_step.py [--tables scaling reference] [--families gpt2 llama]
        [--seq-lens 64 256 1024 2048] [--modes strict] [--repeats 3] [--eager] [--threads 1]
    python benchmarks/myopic_step.py --tables reference --layers 4 --d-model 256 --heads 8 --batch-size 8

On a shared 2-core CPU one step at T = 2048 takes 25-50 s, so run that length with ``--repeats 1``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial

import torch

from forethought.data import load_texts, train_tokenizer
from forethought.models import load_model, save_random_checkpoint, tiny_model
from forethought.myopic_training import myopic
from forethought.myopic_training.reference import accumulate_per_position_gradients

VOCAB = 4096


def vanilla_step(model, optimizer, tokens, mode):
    loss = model(tokens, return_type="loss")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def myopic_step(model, optimizer, tokens, mode, attention="auto"):
    with myopic(model, mode=mode, attention=attention):
        loss = model(tokens, return_type="loss")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def hf_step(model, optimizer, tokens, mode):
    """A plain HF transformers training step (the anchor): ``model`` is an ``AutoModelForCausalLM``."""
    model(tokens, labels=tokens).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def load_hf_sdpa(folder, device):
    """The checkpoint in ``folder`` as plain HF transformers with SDPA attention, in eval mode (dropout off)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").to(device).eval()


def peak_matmul_flops(device: torch.device) -> tuple[float, str]:
    """The best FLOP/s of a large matmul on ``device`` (bf16 on CUDA, float32 on CPU), and its dtype's name."""
    dtype, n = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 1024)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best, str(dtype).removeprefix("torch.")


def reference_step(model, optimizer, tokens, mode):
    """The myopic gradient one target position at a time (the definition, written out)."""
    accumulate_per_position_gradients(model, tokens, mode)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def median_seconds(step, model, optimizer, tokens, mode, repeats, device=None):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(model, optimizer, tokens, mode)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def eager_myopic_step(model, optimizer, tokens, mode):
    myopic_step(model, optimizer, tokens, mode, attention="eager")


def peak_bytes(run: Callable[[], None], device: torch.device) -> int:
    """Peak of tensor bytes allocated on ``device`` and not yet freed while ``run()`` runs, above the start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # positive for an allocation, negative for a free
        peak = max(peak, live)
    return peak


def _paired_ratio(values: list[float], vanilla: list[float]) -> float:
    """Median over repeats of each step's time over the vanilla step beside it (they share the machine's load)."""
    return statistics.median(a / b for a, b in zip(values, vanilla, strict=True))


def scaling(args) -> None:
    """Time and peak-memory ratios myopic/vanilla at each context length, per family and mode."""
    device = torch.device(args.device)
    regimes = {"vanilla": vanilla_step, "myopic": myopic_step}
    if args.eager:
        regimes["eager"] = eager_myopic_step
    tokenizer = train_tokenizer(load_texts("builtin"), vocab_size=VOCAB)  # Llama checkpoints need one
    vocab = len(tokenizer)
    print(f"{args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab {vocab}, batch {args.batch_size}; "
          f"{device}, torch threads {torch.get_num_threads()}; time: medians of {args.repeats} interleaved steps, "
          "ratios: median of each repeat's ratio to the vanilla step beside it, in wall time and in process CPU "
          "time (which another process's load does not inflate); "
          "memory: peak tensor bytes allocated during one step")
    header = (f"{'family':<7}{'mode':<8}{'T':>6}{'vanilla ms':>12}{'myopic ms':>11}{'time ratio':>12}{'cpu ratio':>11}"
              f"{'vanilla MiB':>13}{'myopic MiB':>12}{'memory ratio':>14}")
    if args.eager:
        header += f"{'eager time':>12}{'eager memory':>14}"
    print(header, flush=True)
    for family in args.families:
        folder = save_random_checkpoint(family, tempfile.mkdtemp(), d_model=args.d_model, n_layers=args.layers,
                                        n_heads=args.heads, n_ctx=max(args.seq_lens), tokenizer=tokenizer)
        model = load_model(folder).to(device)
        model.eval()  # dropout off, as the trainer does
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        warm = torch.randint(0, vocab, (1, 8), device=device)
        for step in regimes.values():  # optimizer state and first-call costs outside every measurement
            step(model, optimizer, warm, args.modes[0])
        for mode in args.modes:
            for seq_len in args.seq_lens:
                tokens = torch.randint(0, vocab, (args.batch_size, seq_len),
                                       generator=torch.Generator().manual_seed(seq_len)).to(device)
                memory = {name: peak_bytes(partial(step, model, optimizer, tokens, mode), device)
                          for name, step in regimes.items()}
                times = {name: [] for name in regimes}
                cpu_times = {name: [] for name in regimes}
                for _ in range(args.repeats):  # interleaved, so that load changes hit every regime alike
                    for name, step in regimes.items():
                        cpu_start = time.process_time()
                        times[name].append(median_seconds(step, model, optimizer, tokens, mode, 1, device))
                        cpu_times[name].append(time.process_time() - cpu_start)
                ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
                ratio = {name: _paired_ratio(values, times["vanilla"]) for name, values in times.items()}
                cpu_ratio = _paired_ratio(cpu_times["myopic"], cpu_times["vanilla"])
                line = (f"{family:<7}{mode:<8}{seq_len:>6}{ms['vanilla']:>12.0f}{ms['myopic']:>11.0f}"
                        f"{ratio['myopic']:>12.2f}{cpu_ratio:>11.2f}{memory['vanilla'] / 2**20:>13.1f}"
                        f"{memory['myopic'] / 2**20:>12.1f}{memory['myopic'] / memory['vanilla']:>14.2f}")
                if args.eager:
                    line += f"{ratio['eager']:>12.2f}{memory['eager'] / memory['vanilla']:>14.2f}"
                print(line, flush=True)


def anchor(args) -> None:
    """HF SDPA, forethought vanilla and myopic steps on the same weights and batch: ratios to HF SDPA, tokens/s, MFU."""
    device = torch.device(args.device)
    peak, peak_dtype = peak_matmul_flops(device)
    tokenizer = train_tokenizer(load_texts("builtin"), vocab_size=VOCAB)
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=args.bf16)
    print(f"\nanchor: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, batch {args.batch_size}; "
          f"{device}{', bf16 autocast' if args.bf16 else ''}; medians of {args.repeats} interleaved steps; peak "
          f"{peak_dtype} matmul {peak / 1e12:.2f} TFLOP/s (this run)")
    print(f"{'family':<7}{'T':>6}  {'step':<14}{'ms':>10}{'/ HF SDPA':>11}{'tokens/s':>11}{'MFU':>8}", flush=True)
    for family in args.families:
        folder = save_random_checkpoint(family, tempfile.mkdtemp(), d_model=args.d_model, n_layers=args.layers,
                                        n_heads=args.heads, n_ctx=max(args.seq_lens), tokenizer=tokenizer)
        models = {"hf-sdpa": load_hf_sdpa(folder, device), "forethought": load_model(folder).to(device).eval()}
        parameters = sum(p.numel() for p in models["hf-sdpa"].parameters())
        optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}
        steps = {"HF SDPA": ("hf-sdpa", hf_step, None), "vanilla": ("forethought", vanilla_step, None)}
        steps.update({f"myopic {mode}": ("forethought", myopic_step, mode) for mode in args.modes})
        for seq_len in args.seq_lens:
            tokens = torch.randint(0, len(tokenizer), (args.batch_size, seq_len),
                                   generator=torch.Generator().manual_seed(seq_len)).to(device)
            times: dict[str, list[float]] = {name: [] for name in steps}
            for repeat in range(args.repeats + 1):  # the first round warms up (AdamW state, first calls)
                for name, (which, step, mode) in steps.items():
                    with autocast():
                        seconds = median_seconds(step, models[which], optimizers[which], tokens, mode, 1, device)
                    if repeat:
                        times[name].append(seconds)
            for name, values in times.items():
                ratio = _paired_ratio(values, times["HF SDPA"])
                seconds = statistics.median(values)
                rate = args.batch_size * seq_len / seconds
                print(f"{family:<7}{seq_len:>6}  {name:<14}{1e3 * seconds:>10.1f}{ratio:>11.2f}{rate:>11.0f}"
                      f"{6 * parameters * rate / peak:>8.1%}", flush=True)


def op_counts(args) -> None:
    """Aten operations and [..., T, T] tensors per training step, for HF SDPA and forethought, per family."""
    from forethought.attention.opcount import training_step_counts

    tokenizer = train_tokenizer(load_texts("builtin")[:30], vocab_size=300)
    seq_len, batch = 256, 2
    print(f"\nops: one training step (forward, backward, AdamW), 4 layers, d_model 128, 4 heads, T={seq_len}, "
          f"batch {batch}: aten ops (ratio to HF SDPA) and tensors of shape [..., T, T]")
    print(f"{'family':<7}{'step':<16}{'aten ops':>10}{'/ HF SDPA':>11}{'[T, T]':>8}")
    for family in ("gpt2", "neox", "llama"):
        folder = save_random_checkpoint(family, tempfile.mkdtemp(), d_model=128, n_layers=4, n_heads=4,
                                        n_ctx=seq_len, tokenizer=tokenizer)
        tokens = torch.randint(0, len(tokenizer), (batch, seq_len), generator=torch.Generator().manual_seed(0))
        counts = training_step_counts(str(folder), tokens, modes=tuple(args.modes), tokenizer=tokenizer)
        for name, (ops, square) in counts.items():
            print(f"{family:<7}{name:<16}{ops:>10}{ops / counts['hf-sdpa'][0]:>11.2f}{square:>8}", flush=True)


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
    from forethought.experiments.presets import PRESETS
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
    parser.add_argument("--tables", nargs="+", choices=("anchor", "ops", "scaling", "reference", "paper"),
                        default=None, help="which tables to print (default: anchor and scaling, with CUDA paper, "
                        "without CUDA ops)")
    parser.add_argument("--bf16", action="store_true", help="anchor: bf16 autocast")
    parser.add_argument("--families", nargs="+", choices=("gpt2", "llama", "neox"), default=["gpt2", "llama"])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--modes", nargs="+", choices=("strict", "cutgrad"), default=["strict"])
    parser.add_argument("--eager", action="store_true", help="scaling: also time the eager [T, T] recomputation")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=64, help="reference: context length")
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--paper-steps", type=int, default=300, help="steps of the gpt2-paper settings on CUDA")
    parser.add_argument("--paper-scale", choices=("full", "tiny"), default=None,
                        help="gpt2-paper run: full size (default with CUDA) or tiny (any device)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tables = args.tables or (["anchor", "scaling", "paper"] if torch.cuda.is_available() else ["ops", "anchor"])
    if "ops" in tables:
        op_counts(args)
    if "anchor" in tables:
        anchor(args)
    if "scaling" in tables:
        scaling(args)
    if "reference" in tables:
        step_ratios(args)
    if "paper" in tables:
        paper_throughput(args.paper_steps, args.paper_scale or ("full" if torch.cuda.is_available() else "tiny"))


if __name__ == "__main__":
    main()
