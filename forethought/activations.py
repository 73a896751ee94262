"""Collect activations over a token set in batches, in memory or as safetensors shards on disk.

Only the requested hooks are captured (a ``names_filter`` on the forward), the forward stops after the
deepest requested block, and every batch is moved to the CPU (in the requested dtype) before the next one
runs, so memory holds what was asked for and nothing else.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (6, 8))
    >>> acts = collect_activations(model, tokens, hooks=["resid"], batch_size=4, progress=False)
    >>> acts["resid"].shape  # [layer, sequence, position, d_model]; layer 0 = embeddings
    torch.Size([3, 6, 8, 16])
    >>> acts.layer(2).shape
    torch.Size([6, 8, 16])
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from forethought.data.tokens import check_tokens_fit
from forethought.errors import CheckpointError, InvalidArgumentError, NumericalError, check_positive
from forethought.hook_names import RESID, hook_name, resolve_layers
from forethought.reporting import atomic_directory

META = "activations.json"
SHARD = "shard_{:05d}.safetensors"


@dataclass
class Activations:
    """Activations of one or more hook templates over a token set.

    ``acts[template]`` is a tensor ``[layer, sequence, position, ...]`` whose first axis follows
    ``acts.layers``; with a single template ``acts[i]`` indexes that tensor directly.
    """

    tensors: dict[str, Tensor]
    tokens: Int[Tensor, "n_seq pos"]
    layers_by_hook: dict[str, list[int]]
    model_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, str):
            if key not in self.tensors:
                raise InvalidArgumentError(f"no activations for {key!r}; collected: {sorted(self.tensors)}")
            return self.tensors[key]
        return self._only()[key]

    def _only(self) -> Tensor:
        if len(self.tensors) != 1:
            raise InvalidArgumentError(f"several hooks were collected ({sorted(self.tensors)}); index by name first")
        return next(iter(self.tensors.values()))

    @property
    def layers(self) -> list[int]:
        """The layers collected (for a single hook, or shared by all hooks)."""
        unique = {tuple(layers) for layers in self.layers_by_hook.values()}
        if len(unique) != 1:
            raise InvalidArgumentError(f"hooks differ in layers ({self.layers_by_hook}); use layers_by_hook")
        return list(unique.pop())

    def layer(self, layer: int, hook: str | None = None) -> Float[Tensor, "n_seq pos ..."]:
        """Activations at model layer ``layer`` (not the position along the first axis)."""
        hook = hook if hook is not None else self._only_name()
        layers = self.layers_by_hook[hook]
        if layer not in layers:
            raise InvalidArgumentError(f"layer {layer} of {hook!r} was not collected; collected layers: {layers}")
        return self[hook][layers.index(layer)]

    def _only_name(self) -> str:
        self._only()
        return next(iter(self.tensors))

    @property
    def hooks(self) -> list[str]:
        return list(self.tensors)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Activations:
        """Reopen activations written by ``collect_activations(..., out_dir=...)``, without the model."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META).read_text())
            shards = [directory / SHARD.format(i) for i in range(meta["n_shards"])]
            parts: dict[str, list[Tensor]] = {name: [] for name in [*meta["hooks"], "tokens"]}
            for shard in shards:
                with safe_open(str(shard), framework="pt") as handle:
                    for name in parts:
                        parts[name].append(handle.get_tensor(name))
        except (OSError, KeyError, ValueError) as error:
            raise CheckpointError(f"cannot reopen activations in {str(directory)!r}: {error}") from error
        tokens = torch.cat(parts.pop("tokens"))
        tensors = {name: torch.cat(chunks, dim=1) for name, chunks in parts.items()}
        return cls(tensors=tensors, tokens=tokens, layers_by_hook=meta["layers_by_hook"],
                   model_name=meta.get("model_name", ""), meta=meta)


def collect_activations(
    model: Any,
    tokens: Int[Tensor, "n_seq pos"],
    hooks: Sequence[str] | str = ("resid",),
    layers: Sequence[int] | int | str = "all",
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Activations:
    """Run ``model`` over ``tokens`` in batches and keep the activations of ``hooks`` at ``layers``.

    Args:
        model: a ``TransformerBridge``.
        tokens: integer tokens ``[n_seq, pos]``.
        hooks: hook templates (``"resid"``, ``"hook_resid_post"``, ``"attn.hook_z"``, ...) or full layer-less
            names (``"ln_final.hook_normalized"``, which get a single layer axis of size 1).
        layers: ``"all"`` or layer indices (for ``"resid"``, 0 is the embedding output).
        batch_size: sequences per forward pass.
        device: where to run the model (default: where its parameters are; a different device moves the
            model there). Results always go to the CPU.
        dtype: dtype of the stored activations.
        out_dir: if given, write one safetensors shard per batch there (atomically, as a directory renamed
            into place) and return the activations reopened from disk.
        progress: show a progress bar.
    """
    check_positive("batch_size", batch_size, integer=True)
    check_tokens_fit(model, tokens)
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hooks:
        raise InvalidArgumentError("hooks is empty; pass at least one hook template such as 'resid'")
    plan = {template: _names_for(model, template, layers) for template in hooks}
    layers_by_hook = {template: layer_list for template, (layer_list, _) in plan.items()}
    wanted = {name: (template, i) for template, (_, names) in plan.items() for i, name in enumerate(names)}
    device = _place(model, device)
    stop_at = _stop_layer(model, wanted)

    buffers: dict[str, Tensor] = {}  # allocated on the first batch, once trailing shapes are known
    captured: dict[str, Tensor] = {}

    def capture_as(name: str) -> Any:
        def capture(activation: Tensor, hook: Any) -> None:  # hook.name may be an alias's canonical name
            if not torch.isfinite(activation).all():
                raise NumericalError(f"activations at {name!r} contain NaN or inf; check the model's weights "
                                     "and dtype (float16 overflows are common)")
            captured[name] = activation.detach().to("cpu", dtype)

        return capture

    fwd_hooks = [(name, capture_as(name)) for name in wanted]
    batches = range(0, len(tokens), batch_size)
    model_name = str(getattr(model.cfg, "model_name", ""))
    # shards go to a temporary directory beside out_dir, renamed into place only when every batch is written
    shard_dir = atomic_directory(out_dir) if out_dir is not None else nullcontext()
    with shard_dir as tmp, torch.inference_mode(), model.hooks(fwd_hooks=fwd_hooks):
        for index, start in enumerate(tqdm(batches, desc="activations", disable=not progress, unit="batch")):
            batch = tokens[start : start + batch_size]
            captured.clear()
            model(batch.to(device), return_type=None, stop_at_layer=stop_at)
            stacked = {
                template: torch.stack([captured[name] for name in names])
                for template, (_, names) in plan.items()
            }
            if tmp is not None:
                shard = {**stacked, "tokens": batch.cpu()}
                save_file({k: v.contiguous() for k, v in shard.items()}, str(tmp / SHARD.format(index)))
                continue
            for template, value in stacked.items():
                if template not in buffers:
                    buffers[template] = torch.empty((value.shape[0], len(tokens), *value.shape[2:]), dtype=dtype)
                buffers[template][:, start : start + len(batch)] = value
        if tmp is not None:
            meta = {"hooks": hooks, "layers_by_hook": layers_by_hook, "model_name": model_name, "dtype": str(dtype),
                    "n_seq": len(tokens), "n_shards": len(batches)}
            (tmp / META).write_text(json.dumps(meta, indent=1))

    if out_dir is not None:
        return Activations.load(out_dir)
    return Activations(tensors=buffers, tokens=tokens.cpu(), layers_by_hook=layers_by_hook, model_name=model_name)


def _place(model: Any, device: str | torch.device | None) -> torch.device:
    current = next(model.parameters()).device
    if device is None or torch.device(device) == current:
        return current
    model.to(device)
    return torch.device(device)


def _names_for(model: Any, template: str, layers: Any) -> tuple[list[int], list[str]]:
    if template != RESID and (template.startswith("blocks.") or template in model.hook_dict):
        return [0], [hook_name(model, template)]
    layer_list = resolve_layers(model, layers, template)
    return layer_list, [hook_name(model, template, layer) for layer in layer_list]


def _stop_layer(model: Any, names: Any) -> int | None:
    """The block index after the deepest requested hook, or None when a hook lies past the last block."""
    deepest = -1
    for name in names:
        match = re.match(r"blocks\.(\d+)\.", name)
        if match is None:
            if not name.startswith(("hook_embed", "hook_pos_embed", "embed.", "pos_embed.")):
                return None
            continue
        deepest = max(deepest, int(match.group(1)))
    stop = deepest + 1
    return None if stop >= model.cfg.n_layers else stop
