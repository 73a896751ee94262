"""``forethought synthetic``: the synthetic pre-caching experiment (Wu, Morris & Levine 2024, §4).

A vanilla and a myopic transformer are trained on D_p (:mod:`forethought.data.synthetic`) from the same
initialisation on the same data stream, evaluated on a fixed held-out set against the loss of always predicting
0, and probed: a ridge probe on every layer's residual stream (0 = embedding output) reads ``sin(F x_{n-i})`` for
``i = 0 … K+2`` and the K-term sum. At ``p = 1`` the target at ``n`` depends only on earlier inputs, so a model
that beats the zero predictor must compute ``sin(F x_m)`` at position ``m`` for later use (pre-caching); the
myopic model, whose gradients never reward that, stays at the zero-predictor loss.

Outputs in ``--out`` (all written atomically):

* ``report.json``: ``{"config", "regimes": {"vanilla": {...}, "myopic": {...}}, "probes": [...], "summary",
  "provenance"}``; each regime has ``eval_loss``, ``zero_baseline_loss``, ``loss_ratio`` (their quotient) and
  ``steps``; each probe row has ``regime``, ``layer``, ``lag`` (``None`` for the sum), ``target`` (``"sin"`` or
  ``"sum"``) and the held-out ``r2``;
* ``probes.csv``: one row per (regime, layer, target) with the chosen penalty and the unfloored R²;
* ``losses.csv`` and ``losses.png``: training curves of both regimes, with the zero-predictor loss;
* ``probe_r2.png``: held-out R² by layer × lag, one panel per regime;
* ``checkpoints/vanilla.pt``, ``checkpoints/myopic.pt``: training checkpoints, written every ``--checkpoint-every``
  steps; ``--resume`` continues an interrupted run from them, and the final ones hold the trained models
  (:func:`load_trained_model`).

With several ``--p`` values each ``p`` gets the outputs above in ``--out/p=<p>/``, and ``--out`` holds a
``report.json`` and ``sweep.csv`` with one row per (p, regime) and ``loss_vs_p.png``.

Example:
    >>> config = replace(PRESETS["smoke"], steps=3, warmup_steps=1)
    >>> run = train_regime(config, "myopic", progress=False)
    >>> run.losses.shape
    (3,)
    >>> sorted(evaluate(run.model, held_out(config, "eval", 8), config.huber_delta))
    ['eval_loss', 'loss_ratio', 'zero_baseline_loss']
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm

from forethought import plots
from forethought.data.synthetic import PAPER_PS, PrecacheBatch, PrecacheTask, derive_seed, probe_targets
from forethought.devices import resolve_device
from forethought.errors import CheckpointError, InvalidArgumentError, NumericalError, check_positive
from forethought.myopic_training import myopic
from forethought.myopic_training.trainer import check_same_settings, read_checkpoint, warmup_cosine_schedule
from forethought.probes.regression import fit_ridge_probe
from forethought.regression_model import RegressionModelConfig, RegressionTransformer
from forethought.reporting import (
    atomic_write,
    check_out_dir,
    prepare_out_dir,
    provenance,
    save_figure,
    write_csv,
    write_json,
)

HELP = ("The synthetic pre-caching experiment: train a vanilla and a myopic transformer on D_p and probe "
        "their residual streams for sin(F x) of past inputs.")

REGIMES = ("vanilla", "myopic")
MYOPIC_MODES = ("strict", "cutgrad")
HISTORY_CHUNK = 65_536  # initial length of the loss buffer
LOG_EVERY = 25  # steps between loss read-outs (each read-out waits for the device)
CHECKPOINT_FORMAT = "forethought-synthetic-checkpoint-v1"
CHECKPOINTS = "checkpoints"  # the folder of a run's training checkpoints, one file per regime


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines one run of the experiment (see :data:`PRESETS`).

    Args:
        k, frequency, p, seq_len: the task D_p (:class:`~forethought.data.synthetic.PrecacheTask`).
        n_layers, d_model, n_heads, d_mlp, normalization, mlp_init_scale: the model
            (:class:`~forethought.regression_model.RegressionModelConfig`).
        batch_size, steps, lr, weight_decay, warmup_steps, min_lr_ratio: AdamW with a linear warm-up and a cosine
            decay to ``min_lr_ratio * lr``.
        huber_delta: the Huber loss threshold (training and evaluation).
        myopic_mode: ``"strict"`` or ``"cutgrad"`` (:func:`~forethought.myopic_training.myopic`).
        eval_sequences: size of the fixed held-out set for the losses.
        probe_sequences: sequences whose residual streams train and test the probes.
        seed: model initialisation (shared by both regimes) and data streams.
    """

    k: int = 3
    frequency: float = 8.0
    p: float = 1.0
    seq_len: int = 16
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int | None = 128
    normalization: str | None = None
    mlp_init_scale: float = 8.0
    batch_size: int = 128
    steps: int = 4000
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    huber_delta: float = 1.0
    myopic_mode: str = "strict"
    eval_sequences: int = 1024
    probe_sequences: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        self.task()  # validates k, frequency, p, seq_len
        for name in ("n_layers", "d_model", "n_heads", "batch_size", "steps", "eval_sequences", "probe_sequences"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("lr", "huber_delta", "min_lr_ratio"):
            check_positive(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise InvalidArgumentError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.seq_len <= self.max_lag:
            raise InvalidArgumentError(
                f"seq_len={self.seq_len} leaves no position to probe lags up to K+2={self.max_lag}; "
                f"use seq_len > {self.max_lag}"
            )
        if not 0 <= self.warmup_steps < self.steps:
            raise InvalidArgumentError(
                f"warmup_steps={self.warmup_steps} is not allowed; expected 0 <= warmup_steps < steps={self.steps}"
            )
        if self.myopic_mode not in MYOPIC_MODES:
            raise InvalidArgumentError(f"myopic_mode={self.myopic_mode!r} is unknown; choose one of {MYOPIC_MODES}")
        if self.weight_decay < 0:
            raise InvalidArgumentError(f"weight_decay={self.weight_decay!r} is not allowed; expected >= 0")

    @property
    def max_lag(self) -> int:
        """The largest probed lag, K + 2."""
        return self.k + 2

    def task(self) -> PrecacheTask:
        return PrecacheTask(k=self.k, frequency=self.frequency, p=self.p, seq_len=self.seq_len)

    def model_config(self) -> RegressionModelConfig:
        return RegressionModelConfig(n_inputs=2, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                                     n_ctx=self.seq_len, d_mlp=self.d_mlp, normalization=self.normalization,
                                     mlp_init_scale=self.mlp_init_scale, seed=self.seed)


#: ``cpu`` (the default, and the defaults of :class:`SyntheticConfig`): the main job, about 3.5 minutes of one CPU
#: core. Two choices make the pre-caching solution appear within a few thousand steps instead of the paper's tens of
#: millions of sequences: no layer norm (a layer norm squashes ``x`` before the MLP that must compute ``sin(F x)``)
#: and MLP input weights initialised 8 times larger (``sin(8 x)`` is far from the smooth functions a freshly
#: initialised MLP computes). With GPT-2's layer norm the vanilla model left the zero-predictor plateau after 1,100
#: to more than 3,000 steps depending on the seed; without it, after 500 to 900.
#: ``smoke``: the same recipe at toy size, seconds, for CI (it does not learn the task).
#: ``paper``: the paper's setting (K=10, F=10, T=64, 2-layer GPT-2 with layer norm and TransformerLens'
#: initialisation, d=128, 2 heads, batch 512, AdamW 1e-3, ~30M sequences), for a GPU.
PRESETS: dict[str, SyntheticConfig] = {
    "smoke": SyntheticConfig(k=2, seq_len=8, d_model=32, n_heads=2, d_mlp=64, batch_size=32, steps=30,
                             warmup_steps=5, eval_sequences=64, probe_sequences=64),
    "cpu": SyntheticConfig(),
    "paper": SyntheticConfig(k=10, frequency=10.0, seq_len=64, n_layers=2, d_model=128, n_heads=2, d_mlp=None,
                             normalization="LN", mlp_init_scale=1.0, batch_size=512, steps=60_000, warmup_steps=1000,
                             eval_sequences=4096, probe_sequences=2048),
}


@dataclass
class TrainingRun:
    """A trained model and its per-step training losses."""

    regime: str
    model: RegressionTransformer
    losses: np.ndarray
    seconds: float


def train_regime(config: SyntheticConfig, regime: str, device: str | torch.device = "cpu", progress: bool = True,
                 checkpoint: str | Path | None = None, checkpoint_every: int = 1000,
                 on_step: Callable[[int, RegressionTransformer], None] | None = None) -> TrainingRun:
    """Train one model on the D_p stream, with vanilla or myopic gradients.

    Both regimes start from the same weights (``config.seed``) and see the same batches (a generator seeded from
    ``config.seed`` on ``device``); only the gradient differs.

    With ``checkpoint`` (a file path), the weights, AdamW and schedule states, the data generator's state and the
    losses so far are written there atomically every ``checkpoint_every`` steps and after the last one. If the file
    exists, training continues from it (a finished run is returned at once); the result equals an uninterrupted
    run's. A checkpoint written with other settings raises :class:`~forethought.errors.CheckpointError`.

    ``on_step(steps_done, model)``, if given, is called after every optimizer step (for ``"myopic"``, inside the
    myopic-gradient context), e.g. to measure the model along the way.
    """
    if regime not in REGIMES:
        raise InvalidArgumentError(f"regime={regime!r} is unknown; choose one of {REGIMES}")
    check_positive("checkpoint_every", checkpoint_every, integer=True)
    model = RegressionTransformer(config.model_config(), device=device)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine_schedule(optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
    generator = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "train"))
    task = config.task()
    history = torch.zeros(min(config.steps, HISTORY_CHUNK), device=device)  # grows as training goes
    state = _TrainingState(config, regime, model, optimizer, scheduler, generator, history)
    first, seconds = state.load(Path(checkpoint)) if checkpoint is not None and Path(checkpoint).exists() else (0, 0.0)
    gradients = myopic(model.bridge, mode=config.myopic_mode) if regime == "myopic" else nullcontext()
    start = time.perf_counter()
    with gradients, tqdm(range(first, config.steps), desc=regime, disable=not progress, unit="step",
                         initial=first, total=config.steps) as bar:
        for step in bar:
            batch = task.sample(config.batch_size, generator, device)
            loss = F.huber_loss(model(batch.inputs), batch.targets, delta=config.huber_delta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            state.record(step, loss.detach())
            done = step + 1
            if done % LOG_EVERY == 0 or done == config.steps:
                recent = state.history[max(0, done - LOG_EVERY) : done].mean().item()
                if not math.isfinite(recent):
                    raise NumericalError(f"the {regime} training loss became {recent} at step {done}; lower --lr")
                bar.set_postfix(loss=f"{recent:.4f}")
            if checkpoint is not None and (done % checkpoint_every == 0 or done == config.steps):
                state.save(Path(checkpoint), done, seconds + time.perf_counter() - start)
            if on_step is not None:
                on_step(done, model)
    losses = state.history[: config.steps].cpu().numpy()
    return TrainingRun(regime, model, losses, seconds + time.perf_counter() - start)


@dataclass
class _TrainingState:
    """What a synthetic training checkpoint holds, and how it is written and restored."""

    config: SyntheticConfig
    regime: str
    model: RegressionTransformer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    history: Tensor

    def record(self, step: int, loss: Tensor) -> None:
        """Store the loss of ``step`` in the loss buffer."""
        self._reserve(step + 1)
        self.history[step] = loss

    def _reserve(self, size: int) -> None:
        """Grow the loss buffer to hold ``size`` steps, doubling it (never sized by ``steps`` up front)."""
        if size > len(self.history):
            grown = self.history.new_zeros(min(self.config.steps, max(size, 2 * len(self.history))))
            grown[: len(self.history)] = self.history
            self.history = grown

    def save(self, path: Path, step: int, seconds: float) -> None:
        bad = sum(int((~torch.isfinite(p)).sum()) for p in self.model.parameters())
        if bad:
            raise NumericalError(f"{bad} weights of the {self.regime} model are NaN or infinite at step {step}; "
                                 "stopped before saving them. Lower --lr")
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "regime": self.regime,
            "step": step,
            "seconds": seconds,
            "model": {name: value.cpu() for name, value in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "losses": self.history[:step].cpu(),
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: Path) -> tuple[int, float]:
        """Restore every state from ``path``; return the steps done and the training seconds spent."""
        state = read_checkpoint(path, CHECKPOINT_FORMAT)
        check_same_settings(path, {"regime": state["regime"], **state["config"]},
                            {"regime": self.regime, **asdict(self.config)})
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.generator.set_state(state["generator"])
            step = int(state["step"])
            self._reserve(step)
            self.history[:step] = state["losses"].to(self.history.device)
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run: {str(error).splitlines()[0]}; "
                                  "delete it to start over") from error
        return step, float(state["seconds"])


def load_trained_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> RegressionTransformer:
    """The model stored in a training checkpoint (``out/checkpoints/<regime>.pt``), for probing or interventions.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "myopic.pt"
        >>> run = train_regime(replace(PRESETS["smoke"], steps=2, warmup_steps=1), "myopic", progress=False,
        ...                    checkpoint=path)
        >>> model = load_trained_model(path)
        >>> all(torch.equal(a, b) for a, b in zip(model.parameters(), run.model.parameters()))
        True
    """
    state = read_checkpoint(checkpoint, CHECKPOINT_FORMAT)
    try:
        model = RegressionTransformer(SyntheticConfig(**state["config"]).model_config(), device=device)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} does not hold a synthetic model of this version: "
                              f"{str(error).splitlines()[0]}") from error
    return model


def held_out(config: SyntheticConfig, purpose: str, n_sequences: int) -> PrecacheBatch:
    """A fixed set of sequences drawn on the CPU (the same on every device) from the seed for ``purpose``."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, purpose))
    return config.task().sample(n_sequences, generator)


def evaluate(model: RegressionTransformer, batch: PrecacheBatch, huber_delta: float,
             batch_size: int = 512) -> dict[str, float]:
    """Mean Huber loss of ``model`` on ``batch`` and of the constant-zero predictor."""
    device = model.input_map.weight.device
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(batch.targets), batch_size):
            inputs = batch.inputs[start : start + batch_size].to(device)
            targets = batch.targets[start : start + batch_size].to(device)
            total += F.huber_loss(model(inputs), targets, delta=huber_delta, reduction="sum").item()
    zero = F.huber_loss(torch.zeros_like(batch.targets), batch.targets, delta=huber_delta).item()
    loss = total / batch.targets.numel()
    return {"eval_loss": loss, "zero_baseline_loss": zero, "loss_ratio": loss / zero}


def probe_layers(model: RegressionTransformer, batch: PrecacheBatch, config: SyntheticConfig,
                 regime: str) -> pd.DataFrame:
    """Ridge probes from every layer's residual stream to sin(F x_{n-i}), i = 0 … K+2, and to the K-term sum.

    Only positions ``n > K+2`` are used (every lagged target is then a real input, not padding), and all
    positions of a sequence stay in the same train / validation / test split.
    """
    lags = list(range(config.max_lag + 1))
    residuals = model.residuals(batch.inputs)[:, :, config.max_lag :]  # [layer, seq, pos, d_model]
    targets = probe_targets(batch.x, config.k, config.frequency, lags)
    names = list(targets)
    columns = torch.stack([targets[name][:, config.max_lag :] for name in names], dim=-1).reshape(-1, len(names))
    groups = torch.arange(len(batch.x)).repeat_interleave(residuals.shape[2])
    rows = []
    for layer, stream in enumerate(residuals):
        result = fit_ridge_probe(stream.reshape(-1, stream.shape[-1]), columns, groups=groups,
                                 seed=derive_seed(config.seed, "probe-split"))
        for index, name in enumerate(names):
            target, lag = ("sum", None) if name == "sum" else ("sin", int(name.split("@")[1]))
            rows.append({"regime": regime, "layer": layer, "lag": lag, "target": target,
                         "r2": float(result.r2[index]), "r2_raw": float(result.r2_raw[index]),
                         "alpha": float(result.alpha[index]), "n_test": result.n_test})
    return pd.DataFrame(rows)


def run_experiment(config: SyntheticConfig, out_dir: str | Path, device: str | torch.device = "cpu",
                   progress: bool = True, extra_config: dict[str, Any] | None = None, resume: bool = False,
                   checkpoint_every: int = 1000) -> dict[str, Any]:
    """Train, evaluate and probe both regimes for one ``p``; write the outputs to ``out_dir``; return the report.

    Training checkpoints go to ``out_dir/checkpoints/<regime>.pt`` (see :func:`train_regime`); the final ones hold
    the trained models. With ``resume`` an interrupted or finished run continues from them; without it, a directory
    that already holds checkpoints is refused.
    """
    out = prepare_out_dir(out_dir)
    checkpoints = {regime: out / CHECKPOINTS / f"{regime}.pt" for regime in REGIMES}
    if not resume and any(path.exists() for path in checkpoints.values()):
        raise InvalidArgumentError(f"{str(out)!r} already holds a synthetic run ({CHECKPOINTS}/); continue it with "
                                   "--resume or choose another --out")
    evaluation = held_out(config, "eval", config.eval_sequences)
    probing = held_out(config, "probe", config.probe_sequences)
    regimes: dict[str, dict[str, Any]] = {}
    curves, probes = [], []
    for regime in REGIMES:
        run = train_regime(config, regime, device=device, progress=progress, checkpoint=checkpoints[regime],
                           checkpoint_every=checkpoint_every)
        regimes[regime] = {
            "trained_as": regime,
            **evaluate(run.model, evaluation, config.huber_delta),
            "steps": config.steps,
            "sequences": config.steps * config.batch_size,
            "final_train_loss": float(run.losses[-LOG_EVERY:].mean()),
            "train_seconds": run.seconds,
        }
        curves.append(pd.DataFrame({"regime": regime, "step": np.arange(1, config.steps + 1), "loss": run.losses}))
        probes.append(probe_layers(run.model, probing, config, regime))
    curves_frame, probe_frame = pd.concat(curves, ignore_index=True), pd.concat(probes, ignore_index=True)
    report = {
        "config": {**asdict(config), **(extra_config or {}), "device": str(device)},
        "regimes": regimes,
        "data": synthetic_manifest(config, {"eval": evaluation, "probe": probing}),
        "probes": [
            {"regime": row.regime, "layer": int(row.layer), "lag": None if pd.isna(row.lag) else int(row.lag),
             "target": row.target, "r2": float(row.r2)}
            for row in probe_frame.itertuples()
        ],
        "summary": summary(regimes, probe_frame),
        "provenance": provenance(config.seed),
    }
    baseline = regimes["vanilla"]["zero_baseline_loss"]
    save_figure(plots.plot_regime_losses(curves_frame, baseline=baseline), out / "losses.png")
    save_figure(plots.plot_probe_r2_by_lag(probe_frame), out / "probe_r2.png")
    write_csv(out / "losses.csv", curves_frame)
    write_csv(out / "probes.csv", probe_frame)
    write_json(out / "report.json", report)
    return report


def synthetic_manifest(config: SyntheticConfig, held: dict[str, PrecacheBatch]) -> dict[str, Any]:
    """How the synthetic data is drawn (all of it is a function of the config and ``config.seed``), with a SHA-256
    of each held-out set so that a rebuild can be checked."""
    return {"source": "synthetic pre-caching task D_p", "task": asdict(config.task()), "seed": config.seed,
            "train": {"seed": derive_seed(config.seed, "train"), "sequences_per_step": config.batch_size,
                      "note": "fresh sequences every step from a generator seeded once"},
            **{purpose: {"seed": derive_seed(config.seed, purpose), "n_sequences": len(batch.x),
                         "sha256": _batch_sha256(batch)} for purpose, batch in held.items()}}


def _batch_sha256(batch: PrecacheBatch) -> str:
    """SHA-256 of a batch's inputs and targets (float32 bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in (batch.x, batch.z, batch.targets):
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def summary(regimes: dict[str, dict[str, Any]], probes: pd.DataFrame) -> dict[str, float]:
    """The headline numbers: loss ratios to the zero predictor, and layer-1 R² of sin(F x_n) per regime."""
    layer_one = probes[(probes.layer == 1) & (probes.target == "sin") & (probes.lag == 0)].set_index("regime").r2
    return {
        **{f"{regime}_loss_ratio": regimes[regime]["loss_ratio"] for regime in regimes},
        **{f"{regime}_layer1_sin_r2": float(layer_one[regime]) for regime in regimes},
    }


def run_sweep(config: SyntheticConfig, ps: list[float], out_dir: str | Path, device: str | torch.device = "cpu",
              progress: bool = True, extra_config: dict[str, Any] | None = None, resume: bool = False,
              checkpoint_every: int = 1000) -> dict[str, Any]:
    """Run :func:`run_experiment` for each ``p`` in ``out_dir/p=<p>/``; summarise them in ``out_dir``."""
    out = prepare_out_dir(out_dir)
    rows, runs = [], {}
    for p in ps:
        folder = f"p={p:g}"
        report = run_experiment(replace(config, p=p), out / folder, device=device, progress=progress,
                                extra_config=extra_config, resume=resume, checkpoint_every=checkpoint_every)
        runs[f"{p:g}"] = f"{folder}/report.json"
        for regime, values in report["regimes"].items():
            rows.append({"p": p, "regime": regime, **{key: values[key] for key in
                                                       ("eval_loss", "zero_baseline_loss", "loss_ratio")},
                         "layer1_sin_r2": report["summary"][f"{regime}_layer1_sin_r2"]})
    sweep = pd.DataFrame(rows)
    report = {
        "config": {**asdict(config), **(extra_config or {}), "p": list(ps), "device": str(device)},
        "sweep": sweep.to_dict("records"),
        "runs": runs,
        "provenance": provenance(config.seed),
    }
    save_figure(plots.plot_loss_vs_p(sweep), out / "loss_vs_p.png")
    write_csv(out / "sweep.csv", sweep)
    write_json(out / "report.json", report)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="smoke: seconds (CI); cpu: the default main job, minutes on a CPU; paper: the paper's "
                             "setting, for a GPU")
    parser.add_argument("--out", default="results/synthetic", help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and data seed")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--p", type=float, nargs="+", metavar="P",
                        help=f"probability of a past-sum target; several values run a sweep (the paper's: "
                             f"{' '.join(f'{p:g}' for p in PAPER_PS)})")
    overrides = parser.add_argument_group("overrides of the preset")
    overrides.add_argument("--k", type=int, help="terms in the past sum (K)")
    overrides.add_argument("--frequency", "-F", type=float, help="F in sin(F x); keep it >= 8")
    overrides.add_argument("--steps", type=int, help="training steps per regime")
    overrides.add_argument("--batch-size", type=int, help="sequences per step")
    overrides.add_argument("--lr", type=float, help="peak AdamW learning rate")
    overrides.add_argument("--myopic-mode", choices=MYOPIC_MODES, help="how myopic gradients treat the past")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default: %(default)s; the presets' models are so small that more "
                             "threads mostly wait for each other, and slow down badly on a busy machine)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted (or reuse a finished) run in --out from its checkpoints")
    parser.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                        help="write training checkpoints every N steps (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    """The preset with the command line's overrides applied (validated)."""
    overrides = {name: getattr(args, name) for name in ("k", "frequency", "steps", "batch_size", "lr", "myopic_mode")
                 if getattr(args, name, None) is not None}
    config = PRESETS[args.preset]
    if "steps" in overrides:
        check_positive("steps", overrides["steps"], integer=True)
        overrides["warmup_steps"] = min(config.warmup_steps, overrides["steps"] // 10)
    return replace(config, seed=args.seed, **overrides)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    ps = args.p or [config.p]
    for p in ps:
        replace(config, p=p)  # validate every p before any work
    device = resolve_device(args.device)
    check_positive("threads", args.threads, integer=True)
    check_positive("checkpoint-every", args.checkpoint_every, integer=True)
    checkpointing = {"resume": args.resume, "checkpoint_every": args.checkpoint_every}
    out = check_out_dir(args.out)  # run_experiment creates it once the arguments are all checked
    extra = {"preset": args.preset, **({"threads": args.threads} if device.type == "cpu" else {})}
    progress = not args.no_progress
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    try:
        if len(ps) == 1:
            report = run_experiment(replace(config, p=ps[0]), out, device=device, progress=progress,
                                    extra_config=extra, **checkpointing)
            print(_format_summary(report["summary"], report["regimes"]))
        else:
            report = run_sweep(config, ps, out, device=device, progress=progress, extra_config=extra,
                               **checkpointing)
            print(pd.DataFrame(report["sweep"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    finally:
        torch.set_num_threads(threads)
    print(f"wrote {out / 'report.json'}")
    return 0


def _format_summary(values: dict[str, float], regimes: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'regime':<8} {'eval loss':>10} {'zero loss':>10} {'ratio':>7} {'L1 R2 sin(F x_n)':>18} {'train s':>8}"]
    for regime, result in regimes.items():
        lines.append(f"{regime:<8} {result['eval_loss']:>10.4f} {result['zero_baseline_loss']:>10.4f} "
                     f"{result['loss_ratio']:>7.3f} {values[f'{regime}_layer1_sin_r2']:>18.3f} "
                     f"{result['train_seconds']:>8.1f}")
    return "\n".join(lines)
