"""Batched future-token probes vs one scikit-learn fit per (layer, offset), on the same activations.

Both fit softmax-regression probes on a top-k label space (k most frequent future tokens + "other") over
every residual depth × offsets 0..3 of a small random-init model on the builtin corpus, with the same
number of threads; the table reports each side's time, mean held-out top-1 accuracy, the largest per-pair
accuracy difference and the time ratio (goal: >= 10x at equal accuracy +- 1 point).

It also times applying one fitted probe to a batch of hidden states, ``probes(h, layer=, offset=)`` (views of
that probe's weights) against ``probes.select(...).logits(...)`` (which copies them first), and checks that both
give the same logits (CPU, 1 thread, the defaults: 39 vs 37 ms, ratio 1.0x, identical logits: the call adds
no cost; the matrix product dominates).

``--methods vocab,future_lens,ridge,logistic`` runs one sweep per method over the same data (the builtin corpus,
a random-init model) and reports, per method, the wall time split into activation pass, fitting and scoring (the
sweep's own ``settings["seconds"]``), examples/s of training, and the rate of the probe updates: their FLOPs (the
matrix products of the forward and backward passes of the pairs actually computed, frozen pairs skipped, or of the
sufficient statistics for ``ridge``) over the fitting time, as a fraction of a large float32 matmul's rate
measured in the same run; and each method's time against ``vocab``'s. On 2 shared CPU cores, 1 thread, 2 blocks,
d_model 128, 400 x 64 tokens, offsets 0,1, top-32: vocab 4.5-9.2 s, future_lens 2.7-3.7x that (its fine-tuning
decodes the whole 512-token vocabulary against vocab's 33 classes, at 40-60 % of the matmul rate), ridge 0.13-0.27x,
logistic 2.8x; with the whole vocabulary (top-512) future_lens takes 0.63x vocab's time.

With CUDA (or ``--big`` anywhere), it also times a whole ``probe_sweep`` (one activation pass, vocab probes
with controls, baselines, metrics) on a 12-layer d_model=768 random-init model over ~1M tokens and prints
tokens/s.

    python benchmarks/probes.py [--layers 6] [--d-model 128] [--sequences 2000] [--top-k 15] [--threads 1]
    python benchmarks/probes.py --no-compare [--apply-d-model 768] [--apply-classes 1001]
    python benchmarks/probes.py --no-compare --no-apply --methods vocab,future_lens,ridge,logistic [--stream]
    python benchmarks/probes.py --big [--big-tokens 1048576] [--big-layers 12] [--big-d-model 768] [--big-stream]
"""

from __future__ import annotations

import argparse
import time

import torch
from threadpoolctl import threadpool_limits

from forethought.activations import collect_activations
from forethought.data import load_texts, tokenize_and_chunk, train_tokenizer
from forethought.models import tiny_model
from forethought.probes import (
    LabelSpace,
    LinearProbes,
    LogisticProbeConfig,
    ProbeSweepConfig,
    Task,
    VocabProbeConfig,
    fit_logistic_probes,
    fit_vocab_probes,
    future_labels,
    probe_sweep,
)
from forethought.probes.targets import n_positions

OFFSETS = [0, 1, 2, 3]


def probe_data(args: argparse.Namespace):
    """Residual streams of a random-init model on the builtin corpus → train / held-out / test examples."""
    texts = load_texts("builtin")
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab_size)
    tokens = tokenize_and_chunk(texts, tokenizer, args.seq_len, max_sequences=args.sequences)
    model = tiny_model(n_layers=args.layers, d_model=args.d_model, n_heads=4, d_vocab=len(tokenizer),
                       n_ctx=args.seq_len, seed=0)
    acts = collect_activations(model, tokens, progress=False)["resid"]
    n_pos = n_positions(args.seq_len, OFFSETS)
    features = acts[:, :, :n_pos].reshape(acts.shape[0], -1, args.d_model)
    labels = future_labels(tokens, OFFSETS).reshape(len(OFFSETS), -1)
    n_seq = len(tokens)
    cut, test = int(0.7 * n_seq) * n_pos, int(0.8 * n_seq) * n_pos  # by whole sequences
    space = LabelSpace.top_k(labels[:, :cut], k=args.top_k, d_vocab=len(tokenizer))
    labels = space.encode(labels)
    return space, (features[:, :cut], labels[:, :cut]), (features[:, cut:test], labels[:, cut:test]), \
        (features[:, test:], labels[:, test:])


def compare(args: argparse.Namespace) -> None:
    space, (x, y), (vx, vy), (tx, ty) = probe_data(args)
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        start = time.perf_counter()
        ours = fit_vocab_probes(x, y, n_classes=space.n_classes, val_features=vx, val_labels=vy,
                                config=VocabProbeConfig(progress=False), label_space=space)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        # scikit-learn gets the held-out sequences as training data too: it has no use for early stopping
        reference = fit_logistic_probes(torch.cat([x, vx], 1), torch.cat([y, vy], 1), n_classes=space.n_classes,
                                        config=LogisticProbeConfig(progress=False), label_space=space)
        sklearn_s = time.perf_counter() - start
    ours_acc = (ours.predict(tx) == ty).float().mean(-1)
    sklearn_acc = (reference.predict(tx) == ty).float().mean(-1)
    pairs = ours_acc.numel()
    print(f"probes: {x.shape[0]} depths x {len(OFFSETS)} offsets = {pairs} pairs; d_model {x.shape[2]}; "
          f"{space.n_classes} classes ({space.name}); {x.shape[1] + vx.shape[1]} training / {tx.shape[1]} test "
          f"examples; {args.threads} thread(s); scikit-learn not converged in {reference.meta['not_converged']}")
    print(f"{'method':<34}{'seconds':>9}{'mean top1':>11}")
    print(f"{'batched AdamW (fit_vocab_probes)':<34}{ours_s:>9.2f}{ours_acc.mean():>11.4f}")
    print(f"{'scikit-learn loop (per pair)':<34}{sklearn_s:>9.2f}{sklearn_acc.mean():>11.4f}")
    print(f"{'max |top1 difference| over pairs':<34}{'':>9}{(ours_acc - sklearn_acc).abs().max():>11.4f}")
    print(f"{'time ratio (scikit-learn / ours)':<34}{sklearn_s / ours_s:>9.1f}x")


def apply_one(args: argparse.Namespace, repeats: int = 5) -> dict:
    """One probe of a GPT-2-small-sized stack (13 depths x 4 offsets and their controls) on ``[batch, pos, d]``."""
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    layers, tasks = list(range(13)), [Task(o) for o in OFFSETS] + [Task(o, control=True) for o in OFFSETS]
    d, n_classes = args.apply_d_model, args.apply_classes
    space = LabelSpace(d_vocab=n_classes * 2, token_ids=tuple(range(n_classes - 1)))
    probes = LinearProbes(weight=torch.randn(len(layers), len(tasks), d, n_classes, generator=generator),
                          bias=torch.randn(len(layers), len(tasks), n_classes, generator=generator),
                          mean=torch.zeros(len(layers), d), scale=torch.ones(len(layers), d), layers=layers,
                          tasks=tasks, label_space=space)
    h = torch.randn(8, 128, d, generator=generator)
    ways = {"probes(h, layer=, offset=)": lambda: probes(h, layer=6, offset=2),
            "select(...).logits(h)": lambda: probes.select(layers=[6], tasks=[Task(2)]).logits(
                h.reshape(1, -1, d))[0, 0].view(*h.shape[:-1], -1)}
    seconds, outputs = {}, {}
    with torch.no_grad():
        for name, way in ways.items():
            outputs[name] = way()  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                way()
            seconds[name] = (time.perf_counter() - start) / repeats
    first, second = ways
    difference = float((outputs[first] - outputs[second]).abs().max())
    print(f"one probe of {len(layers)} depths x {len(tasks)} tasks, d_model {d}, {n_classes} classes, "
          f"h {list(h.shape)}; {args.threads} thread(s)")
    for name, value in seconds.items():
        print(f"{name:<34}{value * 1e3:>9.2f} ms")
    print(f"{'time ratio (select / call)':<34}{seconds[second] / seconds[first]:>9.1f}x; "
          f"max |difference| {difference:.2e}")
    return {"seconds": seconds, "max_difference": difference}


def big_sweep(args: argparse.Namespace) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_seq = max(2, args.big_tokens // args.big_seq_len)
    model = tiny_model(n_layers=args.big_layers, d_model=args.big_d_model, n_heads=max(1, args.big_d_model // 64),
                       d_vocab=args.big_vocab, n_ctx=args.big_seq_len, seed=0, device=device)
    generator = torch.Generator().manual_seed(0)
    zipf = 1.0 / torch.arange(1, args.big_vocab + 1, dtype=torch.float64)  # a Zipfian unigram stream
    tokens = torch.multinomial(zipf, n_seq * args.big_seq_len, replacement=True, generator=generator)
    tokens = tokens.view(n_seq, args.big_seq_len)
    config = ProbeSweepConfig(top_k=args.big_top_k, batch_size=args.big_batch, feature_dtype=torch.bfloat16,
                              vocab=VocabProbeConfig(max_epochs=args.big_epochs, batch_size=4096))
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    table = probe_sweep({"random": model}, tokens, offsets=OFFSETS, method="vocab", config=config, device=device,
                        stream=args.big_stream, progress=False).to_frame()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n_tokens = tokens.numel()
    print(f"sweep on {device}: {args.big_layers} layers, d_model {args.big_d_model}, d_vocab {args.big_vocab}, "
          f"{n_tokens:,} tokens ({n_seq} x {args.big_seq_len}); {len(table)} (layer, offset) rows with controls, "
          f"top-{args.big_top_k} label space, {args.big_epochs} epochs at most")
    print(f"{'seconds':<12}{'tokens/s':>12}{'mean top1':>11}{'mean bigram_top1':>18}")
    print(f"{seconds:<12.1f}{n_tokens / seconds:>12,.0f}{table['top1'].mean():>11.4f}"
          f"{table['bigram_top1'].mean():>18.4f}")
    figures = {"device": device, "streamed": args.big_stream, "tokens": n_tokens, "seconds": seconds,
               "tokens_per_s": n_tokens / seconds,
               "rows": len(table), "mean_top1": float(table["top1"].mean()),
               "mean_bigram_top1": float(table["bigram_top1"].mean())}
    if device == "cuda":
        figures["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory: {figures['peak_gpu_gib']:.1f} GiB")
    return figures


def matmul_rate(device: str, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of the best of ``repeats`` float32 ``[size, size] @ [size, size]`` products on ``device``."""
    a, b = (torch.randn(size, size, device=device, generator=torch.Generator(device=device).manual_seed(i))
            for i in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def computed_epochs(probes, patience: int, per_task: bool) -> torch.Tensor:
    """Epochs each probe ``[layer, task]`` was computed: until it froze (best epoch + patience) or training ended.

    The vocab stack skips a task once every layer's probe of it is frozen (``per_task``); the lens skips each pair.
    """
    best = torch.tensor(probes.meta["best_epoch"], dtype=torch.float64, device="cpu")  # bookkeeping, on the host
    epochs = (best + patience).clamp(max=probes.meta["epochs"])
    return epochs.amax(0, keepdim=True).expand_as(epochs) if per_task else epochs


def update_flops(method: str, sweep, model, n_fit: int, n_val: int, config: ProbeSweepConfig) -> tuple[float, float]:
    """Training example-passes and FLOPs of the probe updates of one method's fit (matrix products only)."""
    fitted = sweep.probes["m"]
    d, vocab = model.cfg.d_model, model.cfg.d_vocab
    if method == "vocab":
        n_classes = fitted["vocab"].n_classes
        # one stack trained every task, controls included; its record covers them all
        epochs = computed_epochs(fitted["vocab"], config.vocab.patience, per_task=True)
        return n_fit * fitted["vocab"].meta["epochs"], 3 * 2 * d * n_classes * n_fit * float(epochs.sum())
    if method == "future_lens":
        passes = flops = 0.0
        for key in ("future_lens", "future_lens_control"):
            if key in fitted:
                epochs = computed_epochs(fitted[key], config.future_lens.patience, per_task=False)
                passes += n_fit * fitted[key].meta["epochs"]
                flops += 3 * 2 * (d * d + d * vocab) * n_fit * float(epochs.sum())
                if key == "future_lens":  # the targets' distributions, decoded once a minibatch per offset
                    flops += 2 * d * vocab * n_fit * fitted[key].meta["epochs"] * len(fitted[key].tasks)
        return passes, flops
    if method == "ridge":
        lens = fitted["ridge"]
        n_layers, n_offsets = len(lens.layers), len(lens.tasks)
        return n_fit + n_val, 2 * (n_layers * d * d + n_layers * n_offsets * d * d) * (n_fit + n_val)
    return n_fit + n_val, float("nan")  # scikit-learn's iterations are not counted


def method_sweeps(args: argparse.Namespace) -> list[dict]:
    """One sweep per method over the same data; see the module docstring."""
    from forethought.data.tokens import split_sequences
    from forethought.probes.examples import split_data

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    texts = load_texts("builtin")
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab_size)
    tokens = tokenize_and_chunk(texts, tokenizer, args.seq_len, max_sequences=args.sequences)
    model = tiny_model(n_layers=args.layers, d_model=args.d_model, n_heads=4, d_vocab=len(tokenizer),
                       n_ctx=args.seq_len, seed=0, device=device)
    offsets = [int(o) for o in args.method_offsets.split(",")]
    config = ProbeSweepConfig(top_k=args.top_k, stream_dir=args.stream_dir)
    train, _ = split_data(tokens, config.test_fraction, 0)
    fit, val = split_sequences(train, val_fraction=config.val_fraction, seed=1)
    n_pos = n_positions(args.seq_len, offsets)
    n_fit, n_val = len(fit) * n_pos, len(val) * n_pos
    with threadpool_limits(args.threads):
        peak = matmul_rate(device)
        rows = []
        for method in args.methods.split(","):
            start = time.perf_counter()
            sweep = probe_sweep({"m": model}, tokens, offsets=offsets, method=method, config=config, device=device,
                                stream=args.stream, progress=False)
            total = time.perf_counter() - start
            seconds = sweep.settings["seconds"]["m"]
            passes, flops = update_flops(method, sweep, model, n_fit, n_val, config)
            fit_s = seconds["fit"][method]
            rows.append({"method": method, "total_s": total, "activations_s": seconds["activations"], "fit_s": fit_s,
                         "score_s": seconds["score"][method], "examples_per_s": passes / fit_s,
                         "update_gflops": flops / fit_s / 1e9, "matmul_fraction": flops / fit_s / peak,
                         "mean_top1": float(sweep.to_frame()["top1"].mean())})
        peak = max(peak, matmul_rate(device))  # again after the sweeps: the best rate the machine gave this run
        for row in rows:
            row["matmul_fraction"] = row["update_gflops"] * 1e9 / peak
    print(f"one sweep per method: {args.layers} blocks, d_model {args.d_model}, d_vocab {len(tokenizer)}, "
          f"{len(tokens)} x {args.seq_len} tokens ({n_fit} training, {n_val} held-out examples), offsets {offsets} "
          f"(+ controls), top-{args.top_k}, stream={args.stream}, {args.threads} thread(s), {device}; float32 matmul "
          f"peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'method':<13}{'total s':>9}{'acts s':>8}{'fit s':>8}{'score s':>9}{'x vocab':>9}{'examples/s':>12}"
          f"{'GFLOP/s':>9}{'of matmul':>11}{'top1':>8}")
    vocab = next((row["total_s"] for row in rows if row["method"] == "vocab"), float("nan"))
    for row in rows:
        print(f"{row['method']:<13}{row['total_s']:>9.1f}{row['activations_s']:>8.1f}{row['fit_s']:>8.1f}"
              f"{row['score_s']:>9.1f}{row['total_s'] / vocab:>9.2f}{row['examples_per_s']:>12,.0f}"
              f"{row['update_gflops']:>9.2f}{row['matmul_fraction']:>11.1%}{row['mean_top1']:>8.3f}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6, help="model blocks (depths probed: layers + 1)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary trained on the builtin corpus")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--top-k", type=int, default=15, help="label space: top-k future tokens + 'other'")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads, the same for both sides")
    parser.add_argument("--apply-d-model", type=int, default=768, help="width of the probes applied one at a time")
    parser.add_argument("--apply-classes", type=int, default=1001, help="their classes (top-1000 + 'other')")
    parser.add_argument("--no-apply", action="store_true", help="skip timing one probe's application")
    parser.add_argument("--methods", help="comma-separated methods: one sweep each, timed and rated (see above)")
    parser.add_argument("--method-offsets", default="0,1", help="offsets of the --methods sweeps")
    parser.add_argument("--stream", action="store_true", help="stream the --methods sweeps from disk")
    parser.add_argument("--stream-dir", help="where streamed sweeps write their temporary files")
    parser.add_argument("--big", action="store_true", help="run the large sweep even without CUDA")
    parser.add_argument("--no-compare", action="store_true", help="skip the comparison with scikit-learn")
    parser.add_argument("--big-tokens", type=int, default=1 << 20)
    parser.add_argument("--big-layers", type=int, default=12)
    parser.add_argument("--big-d-model", type=int, default=768)
    parser.add_argument("--big-vocab", type=int, default=50257)
    parser.add_argument("--big-seq-len", type=int, default=128)
    parser.add_argument("--big-top-k", type=int, default=1000)
    parser.add_argument("--big-epochs", type=int, default=3)
    parser.add_argument("--big-batch", type=int, default=64, help="sequences per forward pass in the large sweep")
    parser.add_argument("--big-stream", action="store_true", help="stream the large sweep's activations from disk "
                        "(probe_sweep(stream=True)); host memory then stays flat in the number of tokens")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not args.no_compare:
        compare(args)
    if not args.no_apply:
        apply_one(args)
    if args.methods:
        method_sweeps(args)
    if torch.cuda.is_available() or args.big:
        big_sweep(args)


if __name__ == "__main__":
    main()
