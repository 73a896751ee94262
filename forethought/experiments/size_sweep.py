r"""Sweeps over model sizes: the myopia gap of every model of a list (``forethought myopia-gap --models ...``).

The paper's table of the myopia gap by Pythia size as one call: :func:`run_size_sweep` trains every model of a
list in every regime of a preset (vanilla, myopic, ...) with the same settings, on the same token sequences, and
summarises the runs in one table and one figure.

* **Each model is a starting point.** The listed model and its tokenizer replace the preset's ``model``,
  ``architecture`` and ``tokenizer``; the preset supplies the data and the training settings. With a fine-tuning
  preset (``pythia-finetune``) this is the paper's sweep. To sweep sizes trained from scratch, write random
  models of each size with :func:`forethought.models.save_random_checkpoint` and list their directories:
  training a random initialisation is training from scratch, except that a ``local-myopic`` regime's frozen past
  is then the random initialisation (as it is the pretrained model when fine-tuning), not a trained vanilla model.
* **The same tokens for every model.** The models must share a tokenizer (the same vocabulary); the sweep refuses
  otherwise before anything is written, and checks that every run's train and validation tokens hash alike.
* **One ordinary run per model.** Model ``NAME`` goes to ``out/models/NAME/``, a complete ``myopia-gap`` run
  directory (``report.json``, ``run.json``, ``runs/<regime>/``): ``forethought compare --run`` and
  :func:`forethought.load_run` work on it.
* **Resumable per model.** With ``resume``, a model whose run is finished (``report.json`` and ``run.json``
  written) is not trained again (its recorded settings must be the sweep's), and an interrupted one continues
  from its regimes' checkpoints.

Outputs in ``out`` besides ``models/``: ``size_sweep.csv`` and ``size_sweep.json`` (one row per model, smallest
first: its parameter count, the eval loss of every regime and every gap with its 95 % paired-bootstrap interval,
copied from the model's own ``report.json``) and ``myopia_gap_by_size.png`` (the myopia gap with its interval
against the parameter count, log scale).

Example:
    >>> parse_model_list(["small=runs/small", "EleutherAI/pythia-70m"])
    {'small': 'runs/small', 'pythia-70m': 'EleutherAI/pythia-70m'}

    $ forethought myopia-gap --preset pythia-finetune --device cuda --out results/pythia_sizes \
        --models EleutherAI/pythia-14m EleutherAI/pythia-70m EleutherAI/pythia-160m
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import torch

from forethought.config import TrainConfig
from forethought.errors import ContextLengthError, DataError, InvalidArgumentError, check_choice
from forethought.experiments.commands import MyopiaGap
from forethought.experiments.common import parse_models, shared_tokenizer
from forethought.experiments.myopia_gap import RUNS, chosen_preset, run_myopia_gap
from forethought.experiments.presets import PRESETS, Preset
from forethought.models import is_native, load_model
from forethought.myopic_training.trainer import CHECKPOINT, check_device
from forethought.regimes import gap_definitions, registered_gaps
from forethought.reporting import check_out_dir, prepare_out_dir, provenance, save_figure, write_csv, write_json
from forethought.runs import RUN_FILE

MODELS = "models"
TABLE = "size_sweep"
FIGURE = "myopia_gap_by_size.png"
REPORT = "report.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def parse_model_list(specs: Sequence[str]) -> dict[str, str]:
    """``["NAME=DIR_OR_HUB_NAME" | "DIR_OR_HUB_NAME", ...]`` → ``{name: source}``.

    A plain source is named after its last path component. Names become directory names, so they may hold
    letters, digits and ``._+-`` only.
    """
    named = []
    for spec in specs:
        if "=" not in spec:
            spec = f"{Path(spec.strip().rstrip('/')).name}={spec}"
        named.append(spec)
    try:
        models = parse_models(named)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(str(error).replace("--model", "--models")) from None
    if not models:
        raise InvalidArgumentError("--models is empty; pass NAME=DIR_OR_HUB_NAME (or DIR_OR_HUB_NAME) per model")
    for name in models:
        if not _NAME.fullmatch(name):
            raise InvalidArgumentError(f"--models name {name!r} is not allowed (it names the directory models/NAME); "
                                       "use letters, digits and ._+- (e.g. pythia-70m=EleutherAI/pythia-70m)")
    return models


def count_parameters(model: Any) -> int:
    """The parameters of ``model`` as its model card counts them: each tensor once.

    Tied embeddings are included once. An HF-backed bridge is counted on its HF architecture, so the bridge's
    split copies of a fused query/key/value projection (GPT-NeoX) are not counted twice.

    Example:
        >>> from forethought.models import tiny_model
        >>> count_parameters(tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8))
        4080
    """
    if is_native(model):
        return sum(parameter.numel() for parameter in model.parameters())
    import transformers

    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(model.original_model.config).num_parameters()


def run(command: MyopiaGap) -> int:
    """``forethought myopia-gap --models ...``: the sweep over model sizes, with the command's preset and settings."""
    config = command.train_config()
    check_device(config.device)
    run_size_sweep(parse_model_list(command.models or []), chosen_preset(command), command.out, config,
                   preset_name=command.preset)
    return 0


def run_size_sweep(
    models: Mapping[str, str] | Sequence[str],
    preset: Preset | str,
    out: str | Path,
    config: TrainConfig | None = None,
    preset_name: str | None = None,
) -> pd.DataFrame:
    """Train every model in every regime of ``preset`` into ``out/models/<name>`` and tabulate the gaps by size.

    Args:
        models: name → hub name or directory, or specs for :func:`parse_model_list`.
        preset: a :class:`~forethought.experiments.presets.Preset` or the name of one; its data and regimes
            are used, its model (or architecture) and tokenizer are replaced by each model and its tokenizer.
        out: the sweep's directory.
        config: training settings shared by every model and regime (default: the preset's); ``config.resume``
            skips finished models and continues interrupted ones.
        preset_name: recorded in the reports (default: ``preset`` when it is a name, else ``"custom"``).

    Returns:
        The table written to ``size_sweep.csv``: one row per model, smallest first (see the module docstring).

    Raises:
        VocabularyMismatchError: the models do not share a tokenizer.
        InvalidArgumentError: ``out`` already holds a sweep and ``config.resume`` is not set, or a finished model
            was trained with other settings.
    """
    if isinstance(preset, str):
        check_choice("preset", preset, PRESETS)
        preset_name, preset = preset_name or preset, PRESETS[preset]
    models = dict(models) if isinstance(models, Mapping) else parse_model_list(models)
    if not models:
        raise InvalidArgumentError("models is empty; pass at least one NAME=DIR_OR_HUB_NAME")
    config = config or TrainConfig(**preset.train)
    out = check_out_dir(out)
    if not config.resume and (any((out / MODELS).glob(f"*/{RUNS}/*/{CHECKPOINT}"))
                              or any((out / MODELS).glob(f"*/{REPORT}"))):
        raise InvalidArgumentError(f"{str(out)!r} already holds a size sweep; pass --resume to continue it or "
                                   "choose another --out")
    sizes = _inspect(models, preset)  # before anything is written: loadable, one tokenizer, long enough contexts
    out = prepare_out_dir(out)
    reports: dict[str, dict[str, Any]] = {}
    for name, source in models.items():
        model_preset, directory = replace(preset, model=source), out / MODELS / name
        if config.resume and _finished(directory):
            report = json.loads((directory / REPORT).read_text())
            _check_same_settings(name, report, model_preset, config)
            print(f"{name}: finished, not trained again ({MODELS}/{name})")
        else:
            report = run_myopia_gap(model_preset, directory, config, preset_name=preset_name or "custom")
        reports[name] = report
        _check_same_tokens(reports)
    table = pd.DataFrame([sweep_row(name, source, sizes[name], reports[name]) for name, source in models.items()])
    table = table.sort_values("n_parameters", kind="stable").reset_index(drop=True)
    _write(out, table, reports, preset, config, preset_name or "custom")
    for row in table.itertuples():
        gap = getattr(row, "myopia_gap", None)
        print(f"{row.model} ({row.n_parameters:,} parameters): myopia gap "
              + (f"{gap:+.4f} [95% CI {row.myopia_gap_ci_low:+.4f}, {row.myopia_gap_ci_high:+.4f}]"
                 if gap is not None and gap == gap else "n/a"))
    print(f"wrote {out / (TABLE + '.csv')} and {out / FIGURE}")
    return table


def sweep_row(name: str, source: str, n_parameters: int, report: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the table: the model, its size, and the numbers of its ``report.json``.

    Regime names with ``-`` are written with ``_``: ``eval_loss_local_myopic``.
    """
    row: dict[str, Any] = {"model": name, "source": source, "n_parameters": n_parameters}
    for regime, result in report["regimes"].items():
        key = f"eval_loss_{regime.replace('-', '_')}"
        row.update({key: result["eval_loss"], f"{key}_ci_low": result.get("eval_loss_ci_low"),
                    f"{key}_ci_high": result.get("eval_loss_ci_high")})
    for gap in registered_gaps():
        if report.get(gap) is not None:
            row.update({gap: report[gap], f"{gap}_ci_low": report[f"{gap}_ci_low"],
                        f"{gap}_ci_high": report[f"{gap}_ci_high"]})
            if gap == "bigram_gap" and report.get("myopia_gap_fraction") is not None:
                row["myopia_gap_fraction"] = report["myopia_gap_fraction"]
    row["run"] = f"{MODELS}/{name}"
    return row


def _inspect(models: Mapping[str, str], preset: Preset) -> dict[str, int]:
    """Load each model once (on the CPU) and return each model's parameter count.

    Refuses a model that cannot be loaded or is too short for the sequences, and models that do not share a
    tokenizer.
    """
    sizes, tokenizers = {}, {}
    for name, source in models.items():
        model = load_model(source, device="cpu")
        if preset.seq_len > model.cfg.n_ctx:
            raise ContextLengthError(f"model {name!r} has a context of {model.cfg.n_ctx} tokens, shorter than the "
                                     f"sequences (seq_len={preset.seq_len}); use --seq-len <= {model.cfg.n_ctx}")
        sizes[name], tokenizers[name] = count_parameters(model), SimpleNamespace(tokenizer=model.tokenizer)
        del model
    shared_tokenizer(tokenizers)
    return sizes


def _finished(directory: Path) -> bool:
    return (directory / REPORT).is_file() and (directory / RUN_FILE).is_file()


def _check_same_settings(name: str, report: Mapping[str, Any], preset: Preset, config: TrainConfig) -> None:
    """Refuse a finished model's run whose data, regimes or training settings are not the sweep's."""
    wanted = json.loads(json.dumps({"preset": asdict(preset), "train": config.curve_settings()}))
    saved = report.get("config", {})
    changed = [key for key, value in wanted["preset"].items()
               if key != "description" and saved.get("preset", {}).get(key) != value]
    changed += [key for key, value in wanted["train"].items()
                if key != "regime" and saved.get("train", {}).get(key) != value]
    if changed:
        raise InvalidArgumentError(f"{MODELS}/{name} was trained with other settings ({', '.join(changed)}); resume "
                                   "with the same options, or choose another --out")


def _check_same_tokens(reports: Mapping[str, Mapping[str, Any]]) -> None:
    """Every run so far was trained and scored on the first one's token sequences."""
    (first, reference), *others = reports.items()
    for name, report in others:
        for split in ("train", "validation"):
            key = f"{split}_sha256"
            if report["data"].get(key) != reference["data"].get(key):
                raise DataError(f"model {name!r} was trained on other {split} tokens than {first!r} (hash "
                                f"{str(report['data'].get(key))[:12]} vs {str(reference['data'].get(key))[:12]}); "
                                "their tokenizers share a vocabulary but cut the text differently")


def _write(out: Path, table: pd.DataFrame, reports: Mapping[str, Mapping[str, Any]], preset: Preset,
           config: TrainConfig, preset_name: str) -> None:
    from forethought.plots import plot_gap_by_size

    write_csv(out / f"{TABLE}.csv", table)
    if "myopia_gap" in table:
        save_figure(plot_gap_by_size(table), out / FIGURE)
    data = dict(next(iter(reports.values()))["data"])
    data.pop("models", None)
    write_json(out / f"{TABLE}.json", {
        "preset": preset_name,
        "models": table.to_dict(orient="records"),
        "definitions": {
            "n_parameters": "the model's parameters, each tensor once (tied embeddings once), on its HF architecture",
            "eval_loss_<regime>": "mean next-token cross-entropy (nats) over the validation sequences, the same "
                                  "sequences for every model",
            **gap_definitions(),
            "*_ci_low, *_ci_high": "95 % paired bootstrap interval over validation sequences",
            "myopia_gap_fraction": "myopia_gap / bigram_gap",
            "run": "the model's myopia-gap run directory (forethought compare --run, forethought.load_run)",
        },
        "data": data,
        "config": {"preset": {key: value for key, value in asdict(preset).items() if key != "model"},
                   "train": {key: value for key, value in asdict(config).items()
                             if key not in ("out_dir", "progress", "regime", "resume")}},
        "files": [f"{TABLE}.csv", f"{TABLE}.json", FIGURE, f"{MODELS}/<model>/"],
        "provenance": provenance(config.seed),
    })
