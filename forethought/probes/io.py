"""Save and load probes: a safetensors file of tensors and a JSON file describing them.

A probe directory holds ``probes.safetensors`` (weights, biases, standardisation) and ``probes.json`` (the
kind of probe, the layers and tasks, the hook they read, the label space, ``d_model`` and ``d_vocab``, the
model name, and the fitting metadata). Loading reads tensors with safetensors only (no pickle) and refuses
a model whose width or vocabulary differ from the ones the probes were fitted on. Directories are written
to a temporary name and renamed into place, so an interrupted save leaves nothing half-written.

Example:
    >>> import tempfile, torch
    >>> from forethought.probes.linear import LinearProbes, Task
    >>> from forethought.probes.targets import LabelSpace
    >>> probes = LinearProbes.zeros([0], [Task(1)], d_model=4, label_space=LabelSpace.full(3))
    >>> folder = save_probes(probes, tempfile.mkdtemp() + "/probes")
    >>> load_probes(folder).tasks
    [Task(offset=1, control=False)]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from forethought.devices import resolve_device
from forethought.errors import CheckpointError, InvalidArgumentError, VocabularyMismatchError
from forethought.hook_names import RESID, hook_name, n_depths
from forethought.probes.linear import AffineProbes
from forethought.probes.methods import probe_types
from forethought.reporting import atomic_directory

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

CONFIG = "probes.json"
WEIGHTS = "probes.safetensors"
FORMAT = "forethought-probes"
VERSION = 1


def save_probes(probes: AffineProbes, directory: str | os.PathLike,
                model: TransformerBridge | None = None) -> Path:
    """Write ``probes`` to ``directory`` (replacing it); ``model`` fills in the model name and hook names.

    Returns:
        The directory written.
    """
    kinds = probe_types()
    if not isinstance(probes, tuple(kinds.values())):
        raise InvalidArgumentError(f"cannot save {type(probes).__name__}; expected the probes of a registered "
                                   f"method ({', '.join(t.__name__ for t in kinds.values())})")
    meta = dict(probes.meta)
    if model is not None:
        meta.setdefault("model_name", str(getattr(model.cfg, "model_name", "")))
        meta.setdefault("hook_names", [hook_name(model, RESID, layer) for layer in probes.layers])
    config = {
        "format": FORMAT,
        "version": VERSION,
        "kind": probes.kind,
        "model_name": meta.get("model_name", ""),
        "hook": meta.get("hook", RESID),
        "hook_names": meta.get("hook_names"),
        "layers": list(probes.layers),
        "tasks": [task.to_dict() for task in probes.tasks],
        "offsets": sorted({task.offset for task in probes.tasks}),
        "d_model": probes.d_model,
        "d_vocab": probes.label_space.d_vocab,
        "n_classes": probes.n_classes,
        "label_space": probes.label_space.to_dict(),
        "meta": meta,
    }
    text = json.dumps(config, indent=1, default=str)
    with atomic_directory(directory) as tmp:
        tensors = {name: tensor.detach().float().contiguous().cpu() for name, tensor in probes.tensors().items()}
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(text + "\n")
    return Path(directory)


def load_probes(directory: str | os.PathLike, model: TransformerBridge | None = None,
                device: str | torch.device | None = None) -> AffineProbes:
    """Read probes written by :func:`save_probes`.

    Args:
        directory: the probe directory.
        model: the model the probes will read (required for a Future-Lens probe, which decodes with it);
            its ``d_model`` and ``d_vocab`` must match the saved ones.
        device: where to put the probes (default: the model's device, else the CPU).

    Raises:
        CheckpointError: the directory is missing, incomplete, corrupt or of another format.
        VocabularyMismatchError: ``model`` has another width or vocabulary than the probes.
    """
    path = Path(directory)
    kinds = probe_types()
    try:
        config = json.loads((path / CONFIG).read_text())
        tensors = load_file(str(path / WEIGHTS))
    except Exception as error:  # noqa: BLE001 - OSError, JSON's ValueError, safetensors' own error types
        raise CheckpointError(f"cannot read probes in {str(directory)!r}: {error}") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("kind") not in kinds:
        raise CheckpointError(f"{str(path / CONFIG)!r} is not a forethought probe file (kinds: {sorted(kinds)})")
    if model is not None and (model.cfg.d_model != config["d_model"] or model.cfg.d_vocab != config["d_vocab"]):
        raise VocabularyMismatchError(
            f"probes in {str(directory)!r} were fitted on d_model={config['d_model']}, d_vocab={config['d_vocab']}"
            f"; this model has d_model={model.cfg.d_model}, d_vocab={model.cfg.d_vocab}")
    if model is not None:
        _check_fits_model(directory, config, model)
    if kinds[config["kind"]].needs_model and model is None:
        raise InvalidArgumentError(f"a {config['kind']} probe decodes with its model's unembedding; pass model=")
    try:
        probes = kinds[config["kind"]].from_saved(tensors, config, model=model)
    except KeyError as error:
        raise CheckpointError(f"probes in {str(directory)!r} lack {error}; the files are incomplete") from error
    except InvalidArgumentError as error:
        raise CheckpointError(f"probes in {str(directory)!r} are inconsistent: {error}") from error
    device = resolve_device(device) or (next(model.parameters()).device if model is not None else None)
    return probes if device is None else probes.to(device)


def _check_fits_model(directory: str | os.PathLike, config: dict[str, Any], model: TransformerBridge) -> None:
    """Refuse probes whose layers or hook names the model does not have."""
    template = config.get("hook", RESID)
    depths = n_depths(model, template)
    outside = [layer for layer in config.get("layers", []) if not 0 <= int(layer) < depths]
    if outside:
        raise VocabularyMismatchError(f"probes in {str(directory)!r} read layers {outside} of {template!r}; this "
                                      f"model has depths 0..{depths - 1}")
    missing = [name for name in config.get("hook_names") or [] if name not in model.hook_dict]
    if missing:
        raise VocabularyMismatchError(f"probes in {str(directory)!r} read hooks {missing[:3]} that this model does "
                                      "not have; load them with the model they were fitted on")
