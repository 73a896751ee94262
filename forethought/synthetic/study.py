"""The synthetic pre-caching study (Wu, Morris & Levine 2024, §4), behind ``forethought synthetic``.

A vanilla and a myopic transformer are trained on D_p (:mod:`forethought.synthetic.task`) from the same
initialisation on the same data stream, evaluated on a fixed held-out set against the loss of always predicting
0, and probed: a ridge probe on every layer's residual stream (0 = embedding output) reads ``sin(F x_{n-i})`` for
``i = 0 … K+2`` and the K-term sum. At ``p = 1`` the target at ``n`` depends only on earlier inputs, so a model
that beats the zero predictor must compute ``sin(F x_m)`` at position ``m`` for later use (pre-caching); the
myopic model, whose gradients never reward that, stays at the zero-predictor loss.

Both are trained by the shared training loop (:func:`~forethought.myopic_training.loop.run_training`), with its
checkpoints, resume, NaN guard and schedule. Outputs of :func:`run_experiment` in ``out_dir`` (all written
atomically):

* ``report.json``: ``{"config", "regimes": {"vanilla": {...}, "myopic": {...}}, "probes": [...], "summary",
  "provenance"}``; each regime has ``eval_loss``, ``zero_baseline_loss``, ``loss_ratio`` (their quotient) and
  ``steps``; each probe row has ``regime``, ``layer``, ``lag`` (``None`` for the sum), ``target`` (``"sin"`` or
  ``"sum"``) and the held-out ``r2``;
* ``probes.csv``: one row per (regime, layer, target) with the chosen penalty and the unfloored R²;
* ``losses.csv`` and ``losses.png``: training curves of both regimes, with the zero-predictor loss;
* ``probe_r2.png``: held-out R² by layer × lag, one panel per regime;
* ``checkpoints/vanilla.pt``, ``checkpoints/myopic.pt``: training checkpoints (the training loop's format), written
  every ``checkpoint_every`` steps; ``resume`` continues an interrupted run from them, and the final ones hold the
  trained models (:func:`load_trained_model`).

:func:`run_sweep` runs several ``p`` values, each in ``out_dir/p=<p>/``; ``out_dir`` then holds a ``report.json``
and ``sweep.csv`` with one row per (p, regime) and ``loss_vs_p.png``.

Example:
    >>> config = replace(PRESETS["smoke"], steps=3, warmup_steps=1)
    >>> run = train_regime(config, "myopic", progress=False)
    >>> run.losses.shape
    (3,)
    >>> sorted(evaluate(run.model, held_out(config, "eval", 8), config.huber_delta))
    ['eval_loss', 'loss_ratio', 'zero_baseline_loss']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn import functional as F

from forethought import plots
from forethought.config import SYNTHETIC_PRESETS as PRESETS  # noqa: F401 - PRESETS: in the examples
from forethought.config import SyntheticConfig, TrainConfig
from forethought.devices import resolve_device
from forethought.errors import CheckpointError, InvalidArgumentError, check_positive
from forethought.myopic_training.checkpoints import read_checkpoint
from forethought.myopic_training.loop import run_training
from forethought.probes.regression import fit_ridge_probe
from forethought.regimes import get_regime
from forethought.reporting import prepare_out_dir, provenance, save_figure, write_csv, write_json
from forethought.synthetic.model import RegressionTransformer
from forethought.synthetic.task import PrecacheBatch, PrecacheTask, derive_seed, probe_targets

#: The regimes the study compares by default (the paper's); any registered regime without a past model trains too.
STUDY_REGIMES = ("vanilla", "myopic")
LOG_EVERY = 25  # the final training loss is the mean of the last LOG_EVERY steps
CHECKPOINTS = "checkpoints"  # the folder of a run's training checkpoints, one file per regime


@dataclass
class TrainingRun:
    """A trained model and its per-step training losses."""

    regime: str
    model: RegressionTransformer
    losses: np.ndarray
    seconds: float

    def to_frame(self) -> pd.DataFrame:
        """The training losses as a DataFrame: one row per step (``regime``, ``step``, ``loss``)."""
        return pd.DataFrame({"regime": self.regime, "step": np.arange(1, len(self.losses) + 1), "loss": self.losses})

    def plot(self, baseline: float | None = None) -> Any:
        """The loss curve (:func:`forethought.plots.plot_regime_losses`), with the zero predictor's loss if given."""
        from forethought.plots import plot_regime_losses

        return plot_regime_losses(self.to_frame(), baseline=baseline)

    def __repr__(self) -> str:
        final = f"{self.losses[-1]:.4f}" if len(self.losses) else "n/a"
        return f"TrainingRun({self.regime}, {len(self.losses)} steps, final loss {final}, {self.seconds:.1f} s)"


def train_regime(config: SyntheticConfig, regime: str, device: str | torch.device = "cpu", progress: bool = True,
                 checkpoint: str | Path | None = None, checkpoint_every: int = 1000,
                 on_step: Callable[[int, RegressionTransformer], None] | None = None) -> TrainingRun:
    """Train one model on the D_p stream in ``regime`` (vanilla, myopic, ...), in the shared training loop.

    Every regime (:mod:`forethought.regimes`) but one that needs a frozen past model trains; all start from the same
    weights (``config.seed``) and see the same batches (a generator seeded from ``config.seed`` on ``device``); only the
    gradient differs. The optimizer is AdamW with ``torch``'s defaults (betas ``(0.9, 0.999)``, weight decay on every
    parameter) and no gradient clipping.

    With ``checkpoint`` (a file path), the training loop's checkpoint is written there atomically every
    ``checkpoint_every`` steps and after the last one. If the file exists, training continues from it (a finished
    run is returned at once); the result equals an uninterrupted run's. A checkpoint written with other settings
    raises :class:`~forethought.errors.CheckpointError`.

    ``on_step(steps_done, model)``, if given, is called after every optimizer step (outside the myopic-gradient
    context), e.g. to measure the model along the way.
    """
    _check_regime(regime)
    check_positive("checkpoint_every", checkpoint_every, integer=True)
    device = resolve_device(device)
    model = RegressionTransformer(config.model_config(), device=device)
    generator = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "train"))
    delta = config.huber_delta

    def huber(model: RegressionTransformer, batch: PrecacheBatch) -> Tensor:
        return F.huber_loss(model(batch.inputs), batch.targets, delta=delta)

    result = run_training(
        training_config(config, regime, device=device.type, checkpoint_every=checkpoint_every, progress=progress),
        model, SampledBatches(config.task(), config.batch_size, generator), huber, bridge=model.bridge,
        settings=training_settings(config, regime), checkpoint=checkpoint,
        on_step=None if on_step is None else lambda record: on_step(record["step"], model),
    )
    return TrainingRun(regime, model, np.asarray(result.losses, dtype=np.float32), result.seconds)


def _check_regime(name: str) -> None:
    if get_regime(name).needs_past_model:
        raise InvalidArgumentError(f"regime={name!r} needs a frozen past model, which the synthetic study has not")


def training_config(config: SyntheticConfig, regime: str, device: str = "cpu", checkpoint_every: int = 1000,
                    progress: bool = True) -> TrainConfig:
    """The training loop's settings for one regime of the study (full precision; resumes from its checkpoint).

    Example:
        >>> training_config(PRESETS["smoke"], "myopic").adam_betas
        (0.9, 0.999)
    """
    return TrainConfig(regime=regime, mode=config.mode, steps=config.steps, batch_size=config.batch_size,
                       lr=config.lr, warmup_steps=config.warmup_steps, min_lr_ratio=config.min_lr_ratio,
                       weight_decay=config.weight_decay, weight_decay_all=True, adam_betas=(0.9, 0.999),
                       grad_clip=None, eval_every=config.steps, checkpoint_every=checkpoint_every, seed=config.seed,
                       resume=True, mixed_precision="no", device=device, progress=progress)


def training_settings(config: SyntheticConfig, regime: str) -> dict[str, Any]:
    """What a checkpoint of one regime records and a resumed run must share: the regime and the whole config."""
    return {"regime": regime, **asdict(config)}


def saved_config(checkpoint: str | Path, state: dict[str, Any] | None = None) -> SyntheticConfig:
    """The study settings a synthetic training checkpoint was written with (``state``: the file, already read)."""
    state = read_checkpoint(checkpoint) if state is None else state
    settings = {key: value for key, value in state["config"].items() if key != "regime"}
    try:
        return SyntheticConfig(**settings)
    except TypeError as error:
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} does not hold a synthetic model of this version: "
                              f"{error}") from error


class SampledBatches:
    """Fresh D_p sequences every step from one generator, whose state a checkpoint keeps (``data_order``).

    Every process draws the whole batch from the same stream and keeps every ``world``-th sequence.
    """

    def __init__(self, task: PrecacheTask, batch_size: int, generator: torch.Generator):
        self.task, self.batch_size, self.generator = task, batch_size, generator

    def batch(self, step: int, device: torch.device | str, rank: int = 0, world: int = 1) -> PrecacheBatch:
        """The next batch from the generator (``step`` is not used), process ``rank``'s share on ``device``."""
        batch = self.task.sample(self.batch_size, self.generator)
        if world == 1 and batch.x.device == torch.device(device):
            return batch
        return PrecacheBatch(*(tensor[rank::world].to(device) for tensor in (batch.x, batch.z, batch.targets)))

    def state_dict(self) -> dict[str, Any]:
        """The generator's state, for the checkpoint."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator's state from :meth:`state_dict`."""
        self.generator.set_state(state["generator"])


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
    state = read_checkpoint(checkpoint)
    try:
        model = RegressionTransformer(saved_config(checkpoint, state).model_config(), device=device)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} does not hold a synthetic model of this version: "
                              f"{str(error).splitlines()[0]}") from error
    return model


def held_out(config: SyntheticConfig, purpose: str, n_sequences: int) -> PrecacheBatch:
    """A fixed set of sequences drawn on the CPU (the same on every device) from the seed for ``purpose``."""
    generator = torch.Generator(device="cpu").manual_seed(derive_seed(config.seed, purpose))
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
    groups = torch.arange(len(batch.x), device=residuals.device).repeat_interleave(residuals.shape[2])
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
                   checkpoint_every: int = 1000, regimes: Sequence[str] = STUDY_REGIMES) -> dict[str, Any]:
    """Train, evaluate and probe each of ``regimes`` for one ``p``; write the outputs to ``out_dir``; return the report.

    Each model is evaluated and probed in its regime's forward. Training checkpoints go to
    ``out_dir/checkpoints/<regime>.pt`` (see :func:`train_regime`); the final ones hold
    the trained models. With ``resume`` an interrupted or finished run continues from them; without it, a directory
    that already holds checkpoints is refused.
    """
    for regime in regimes:
        _check_regime(regime)
    out = prepare_out_dir(out_dir)
    checkpoints = {regime: out / CHECKPOINTS / f"{regime}.pt" for regime in regimes}
    if not resume and any(path.exists() for path in checkpoints.values()):
        raise InvalidArgumentError(f"{str(out)!r} already holds a synthetic run ({CHECKPOINTS}/); continue it with "
                                   "--resume or choose another --out")
    evaluation = held_out(config, "eval", config.eval_sequences)
    probing = held_out(config, "probe", config.probe_sequences)
    results: dict[str, dict[str, Any]] = {}
    curves, probes = [], []
    for regime in regimes:
        run = train_regime(config, regime, device=device, progress=progress, checkpoint=checkpoints[regime],
                           checkpoint_every=checkpoint_every)
        with get_regime(regime).forward_context(run.model.bridge):
            scores, layer_probes = (evaluate(run.model, evaluation, config.huber_delta),
                                   probe_layers(run.model, probing, config, regime))
        results[regime] = {
            "trained_as": regime,
            **scores,
            "steps": config.steps,
            "sequences": config.steps * config.batch_size,
            "final_train_loss": float(run.losses[-LOG_EVERY:].mean()),
            "train_seconds": run.seconds,
        }
        curves.append(pd.DataFrame({"regime": regime, "step": np.arange(1, config.steps + 1), "loss": run.losses}))
        probes.append(layer_probes)
    curves_frame, probe_frame = pd.concat(curves, ignore_index=True), pd.concat(probes, ignore_index=True)
    report = {
        "config": {**asdict(config), **(extra_config or {}), "device": str(device)},
        "regimes": results,
        "data": synthetic_manifest(config, {"eval": evaluation, "probe": probing}),
        "probes": [
            {"regime": row.regime, "layer": int(row.layer), "lag": None if pd.isna(row.lag) else int(row.lag),
             "target": row.target, "r2": float(row.r2)}
            for row in probe_frame.itertuples()
        ],
        "summary": summary(results, probe_frame),
        "provenance": provenance(config.seed),
    }
    baseline = next(iter(results.values()))["zero_baseline_loss"]  # the same held-out set for every regime
    save_figure(plots.plot_regime_losses(curves_frame, baseline=baseline), out / "losses.png")
    save_figure(plots.plot_probe_r2_by_lag(probe_frame), out / "probe_r2.png")
    write_csv(out / "losses.csv", curves_frame)
    write_csv(out / "probes.csv", probe_frame)
    write_json(out / "report.json", report)
    return report


def synthetic_manifest(config: SyntheticConfig, held: dict[str, PrecacheBatch]) -> dict[str, Any]:
    """How the synthetic data is drawn, with a SHA-256 of each held-out set so that a rebuild can be checked.

    All of it is a function of the config and ``config.seed``.
    """
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
              checkpoint_every: int = 1000, regimes: Sequence[str] = STUDY_REGIMES) -> dict[str, Any]:
    """Run :func:`run_experiment` for each ``p`` in ``out_dir/p=<p>/``; summarise them in ``out_dir``."""
    out = prepare_out_dir(out_dir)
    rows, runs = [], {}
    for p in ps:
        folder = f"p={p:g}"
        report = run_experiment(replace(config, p=p), out / folder, device=device, progress=progress,
                                extra_config=extra_config, resume=resume, checkpoint_every=checkpoint_every,
                                regimes=regimes)
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
