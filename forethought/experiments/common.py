"""What several runners share: the parsers of their list options and the data they load.

Runners import from here, never from one another, so that each stays config -> library call -> results.

Example:
    >>> parse_ints("0,1,3", "offsets")
    [0, 1, 3]
    >>> parse_models(["vanilla=runs/vanilla/model"])
    {'vanilla': 'runs/vanilla/model'}
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from forethought.errors import InvalidArgumentError, ModelNotAvailableError, VocabularyMismatchError
from forethought.reporting import save_figure

if TYPE_CHECKING:
    from forethought.data import TokenSplits
    from forethought.experiments.commands import ScoringData
    from forethought.experiments.presets import Data


def parse_models(specs: list[str]) -> dict[str, str]:
    """``["a=dir", ...]`` → ``{"a": "dir"}``, with one-line errors for malformed or repeated names."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise InvalidArgumentError(f"--model {spec!r} is not NAME=DIR_OR_HUB_NAME (e.g. vanilla=runs/vanilla)")
        if name in models:
            raise InvalidArgumentError(f"--model name {name!r} is used twice; give every model its own name")
        models[name.strip()] = source.strip()
    return models


def parse_ints(text: str, what: str) -> list[int]:
    """``"0,1,3"`` → ``[0, 1, 3]``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--{what} {text!r} is not a comma-separated list of integers") from None
    if not values:
        raise InvalidArgumentError(f"--{what} is empty; pass comma-separated integers")
    return values


def shared_tokenizer(models: dict[str, Any]) -> Any:
    """The first model's tokenizer, after checking every model has one with the same vocabulary."""
    names = list(models)
    tokenizer = models[names[0]].tokenizer
    if tokenizer is None:
        raise ModelNotAvailableError(f"model {names[0]!r} has no tokenizer to cut --dataset with; save one "
                                     "beside its weights")
    vocab = tokenizer.get_vocab()
    for name in names[1:]:
        other = models[name].tokenizer
        if other is None or other.get_vocab() != vocab:
            raise VocabularyMismatchError(f"models {names[0]!r} and {name!r} use different tokenizers; pass "
                                          "models that share one (they are compared on the same tokens), or run "
                                          "them separately")
    return tokenizer


def load_option_model(option: str, source: str, **keywords: Any) -> Any:
    """:func:`~forethought.models.load_model` for a command-line option: a refusal names the option first."""
    from forethought.errors import ForethoughtError
    from forethought.models import load_model

    try:
        return load_model(source, **keywords)
    except ForethoughtError as error:
        if option in str(error):
            raise
        raise type(error)(f"{option}: {error}") from error


def nan_cause(message: str, settings: dict[str, tuple[float, float]]) -> str:
    """A training NaN's message, naming the likely cause when a setting is far outside the presets'.

    ``settings`` maps an option (``"--lr"``) to its value and the largest value any preset uses; one more than ten
    times that is named as the likely cause in place of the generic advice.

    Example:
        >>> nan_cause("the training loss is nan at step 1; stopped. Lower the learning rate and start again",
        ...           {"--lr": (1e30, 3e-3)})  # doctest: +NORMALIZE_WHITESPACE
        "the training loss is nan at step 1; stopped. Likely cause: --lr 1e+30, far above the presets' (at most
        0.003); pass a value nearer theirs and start a new run"
    """
    unusual = [f"{option} {value:g}" for option, (value, ordinary) in settings.items() if abs(value) > 10 * ordinary]
    if not unusual:
        return message
    ordinary = ", ".join(f"{settings[option.split()[0]][1]:g}" for option in unusual)
    head = message.split(". Lower the learning rate")[0]
    return (f"{head}. Likely cause: {' and '.join(unusual)}, far above the presets' (at most {ordinary}); pass "
            f"{'a value' if len(unusual) == 1 else 'values'} nearer theirs and start a new run")


def check_probe_inputs(models: dict[str, Any], layers: Any, offsets: list[int], seq_len: int | None = None,
                       splits: TokenSplits | None = None) -> None:
    """Refuse layers, offsets and a sequence length that some model or the data cannot take, before any work.

    ``layers`` (``"all"`` or depths) must exist in every model, every offset must fit ``seq_len`` tokens, and
    ``seq_len`` must fit every model's context (both skipped without ``seq_len``); with ``splits``, their tokens
    must fit every model's vocabulary.
    """
    from forethought.data import check_tokens_fit
    from forethought.errors import ContextLengthError
    from forethought.hook_names import RESID, resolve_layers
    from forethought.probes.targets import check_offsets

    if seq_len is not None:
        check_offsets(offsets, seq_len)
    for name, model in models.items():
        resolve_layers(model, layers, RESID)
        if seq_len is not None and seq_len > model.cfg.n_ctx:
            raise ContextLengthError(f"--seq-len {seq_len} exceeds the context of model {name!r} "
                                     f"(n_ctx={model.cfg.n_ctx}); pass --seq-len {model.cfg.n_ctx} or less")
        if splits is not None:
            for tokens in (splits.train, splits.validation):
                check_tokens_fit(model, tokens)


def save_gradient_split_plot(history: list[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Plot the gradient split recorded in a training log over the steps, if the run recorded one."""
    from forethought.myopic_training.gradient_split import plot_gradient_split_over_training, split_history

    frame = split_history(history)
    if not frame.empty:
        save_figure(plot_gradient_split_over_training(frame, title=f"Pre-caching share of the gradient: {title}"),
                    path)


def load_splits(data: Data, seed: int, tokenizer: Any = None, vocab_size: int | None = None) -> TokenSplits:
    """The texts of ``data``, tokenised, cut into sequences and split into train and validation.

    ``data`` is a :class:`~forethought.experiments.presets.Data` (a :class:`~forethought.experiments.presets.Preset`
    is one). Its texts are tokenised with ``tokenizer`` (or a BPE of ``vocab_size`` trained on them), cut into
    ``seq_len`` sequences and split into train and validation with ``seed``; the splits carry their data manifest
    (:func:`forethought.data.load_token_splits`).
    """
    from forethought.data import load_token_splits, train_tokenizer

    if tokenizer is None:
        def tokenizer(texts: list[str]) -> Any:
            return train_tokenizer(texts, vocab_size=vocab_size)
    return load_token_splits(data.dataset, tokenizer, data.seq_len, text_field=data.text_field,
                             max_documents=data.max_documents, min_doc_tokens=data.min_doc_tokens,
                             max_sequences=data.max_sequences, val_fraction=data.val_fraction, seed=seed)


def model_data(sources: dict[str, str], models: dict[str, Any], data: ScoringData, seed: int
               ) -> tuple[Any, dict[str, Any]]:
    """The data to score ``--model`` models on, never their training text, and where each model came from.

    A model directory that belongs to a run (:func:`forethought.runs.find_run`) is scored on that run's own split
    when no data option is given; when data are cut afresh (split with ``seed``), test sequences from any such
    model's training split are refused. Returns the splits and, per model, ``{"run": DIR, "name": NAME_IN_RUN,
    **run.json entry}`` or None.
    """
    from forethought.runs import check_not_trained_on, find_run, load_run

    found = {name: find_run(source) for name, source in sources.items()}
    runs = {where[0]: load_run(where[0], models=False) for where in found.values() if where is not None}
    trained = {name: None if where is None else {"run": str(where[0]), "name": where[1],
                                                 **runs[where[0]].trained.get(where[1], {})}
               for name, where in found.items()}
    if runs and not data.given():
        splits = next(iter(runs.values())).splits  # the first run's own split
    else:
        splits = load_splits(data.data(), seed, tokenizer=shared_tokenizer(models))
        splits.manifest["models"] = sources
    checked = {where[0]: where[1] for where in found.values() if where is not None}  # one check per run
    for directory, model_name in checked.items():
        if splits is not runs[directory].splits:
            check_not_trained_on(splits.validation, runs[directory], model_name)
    return splits, trained
