"""Collect activations over a token set in batches, in memory or as safetensors shards on disk.

Only the requested hooks are captured (a ``names_filter`` on the forward), the forward stops after the
deepest requested block, and every batch is moved to the CPU (in the requested dtype) before the next one
runs, so memory holds what was asked for and nothing else.

Several processes. Under ``torchrun`` or ``accelerate launch`` (or any initialised ``torch.distributed`` group),
every process calls ``collect_activations`` with the same arguments and runs the model over its own contiguous share
of the batches (accelerate's ``split_between_processes``: the first processes take one batch more when they do not
divide evenly); give each process its own device, e.g. ``model.to(PartialState().device)``. With ``out_dir``,
process 0 makes the temporary directory, every process writes its shards into it under their global batch index, and
after all have finished process 0 writes the meta file and renames the directory into place, once: the directory is
the one a single process writes, file for file. In memory, process 0 receives the other processes' rows and returns
the whole result; each other process returns only the sequences it computed (``acts.tokens`` and
``acts.meta["sequences"] == [start, stop)`` say which; no tensors when it had no batch), so no process holds more
than one copy. A failure on any process raises on every process and leaves ``out_dir`` untouched.
``split_between_processes=False`` makes every process compute everything, as a lone process does. In a single
process nothing of this runs.

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
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import broadcast_object_list, gather_object
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from forethought.distributed import current_world, receive_into, send_to_main
from forethought.errors import (
    CheckpointError,
    DistributedError,
    InvalidArgumentError,
    NumericalError,
    check_positive,
)
from forethought.hook_names import RESID, hook_name, resolve_layers
from forethought.prompts import Prompts, as_tokens
from forethought.reporting import atomic_directory

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

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
        """The names of the hooks held (the keys of ``tensors``)."""
        return list(self.tensors)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Activations:
        """Reopen activations written by ``collect_activations(..., out_dir=...)``, without the model."""
        return cls._read(directory)

    @classmethod
    def _read(cls, directory: str | os.PathLike, shards: range | None = None) -> Activations:
        """Reopen the given shards (default: all) of a directory written by ``collect_activations``."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META).read_text())
            shards = range(meta["n_shards"]) if shards is None else shards
            parts: dict[str, list[Tensor]] = {name: [] for name in [*meta["hooks"], "tokens"]}
            for index in shards:
                with safe_open(str(directory / SHARD.format(index)), framework="pt") as handle:
                    for name in parts:
                        parts[name].append(handle.get_tensor(name))
        except (OSError, KeyError, ValueError) as error:
            raise CheckpointError(f"cannot reopen activations in {str(directory)!r}: {error}") from error
        tokens = torch.cat(parts.pop("tokens"))
        tensors = {name: torch.cat(chunks, dim=1) for name, chunks in parts.items()}
        return cls(tensors=tensors, tokens=tokens, layers_by_hook=meta["layers_by_hook"],
                   model_name=meta.get("model_name", ""), meta=meta)


def collect_activations(
    model: TransformerBridge,
    tokens: Prompts,
    hooks: Sequence[str] | str = ("resid",),
    layers: Sequence[int] | int | str = "all",
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    split_between_processes: bool = True,
) -> Activations:
    """Run ``model`` over ``tokens`` in batches and keep the activations of ``hooks`` at ``layers``.

    Args:
        model: a ``TransformerBridge``.
        tokens: integer tokens ``[n_seq, pos]``, or a string or list of strings of equal token length
            (tokenised with ``model.tokenizer``, see :func:`forethought.prompts.as_tokens`).
        hooks: hook templates (``"resid"``, ``"hook_resid_post"``, ``"attn.hook_z"``, ...) or full layer-less
            names (``"ln_final.hook_normalized"``, which get a single layer axis of size 1).
        layers: ``"all"`` or layer indices (for ``"resid"``, 0 is the embedding output).
        batch_size: sequences per forward pass.
        device: where to run the model (default: where its parameters are; a different device moves the
            model there). Results always go to the CPU.
        dtype: dtype of the stored activations.
        out_dir: if given, write one safetensors shard per batch there (atomically, as a directory renamed
            into place) and return the activations reopened from disk.
        progress: show a progress bar (on the first process only, when there are several).
        split_between_processes: when several processes run this call (``torchrun``, ``accelerate launch``),
            each runs its own contiguous share of the batches and process 0 returns the whole result (see the
            module docstring). ``False``: every process computes everything on its own.
    """
    check_positive("batch_size", batch_size, integer=True)
    if out_dir is not None:
        _check_out_dir(out_dir)
    tokens = as_tokens(model, tokens)
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hooks:
        raise InvalidArgumentError("hooks is empty; pass at least one hook template such as 'resid'")
    plan = {template: _names_for(model, template, layers) for template in hooks}
    layers_by_hook = {template: layer_list for template, (layer_list, _) in plan.items()}
    wanted = {name: (template, i) for template, (_, names) in plan.items() for i, name in enumerate(names)}
    device = _place(model, device)
    stop_at = _stop_layer(model, wanted)
    world = current_world() if split_between_processes else None
    n_batches = -(-len(tokens) // batch_size)
    model_name = str(getattr(model.cfg, "model_name", ""))
    meta = {"hooks": hooks, "layers_by_hook": layers_by_hook, "model_name": model_name, "dtype": str(dtype),
            "n_seq": len(tokens), "n_shards": n_batches}

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

    def run(batches: range, tmp: Path | None, first_row: int = 0, n_rows: int = len(tokens)) -> None:
        """Capture ``batches`` (global indices) into shards in ``tmp``, or into rows ``first_row ...`` of buffers."""
        show = progress and (world is None or world.is_main_process)
        with torch.inference_mode(), model.hooks(fwd_hooks=fwd_hooks):
            for index in tqdm(batches, desc="activations", disable=not show, unit="batch"):
                start = index * batch_size
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
                        buffers[template] = torch.empty((value.shape[0], n_rows, *value.shape[2:]), dtype=dtype,
                                                        device="cpu")  # activations are returned on the host
                    buffers[template][:, start - first_row : start - first_row + len(batch)] = value

    if world is not None:
        return _collect_split(world, run, tokens, batch_size, plan, meta, buffers, out_dir)
    # shards go to a temporary directory beside out_dir, renamed into place only when every batch is written
    if out_dir is not None:
        with atomic_directory(out_dir) as tmp:
            run(range(n_batches), tmp)
            (tmp / META).write_text(json.dumps(meta, indent=1))
        return Activations.load(out_dir)
    run(range(n_batches), None)
    return Activations(tensors=buffers, tokens=tokens.cpu(), layers_by_hook=layers_by_hook, model_name=model_name)


def _collect_split(
    world: Any,
    run: Callable[..., None],
    tokens: Int[Tensor, "n_seq pos"],
    batch_size: int,
    plan: dict[str, tuple[list[int], list[str]]],
    meta: dict[str, Any],
    buffers: dict[str, Tensor],
    out_dir: str | os.PathLike | None,
) -> Activations:
    """``collect_activations`` with the batches split between the processes of ``world`` (a ``PartialState``)."""
    _check_same_call(tokens, batch_size, plan, meta, out_dir)
    with world.split_between_processes(list(range(meta["n_shards"]))) as batches:
        first = batches[0] if batches else meta["n_shards"]  # a process without batches starts past the end
        mine = range(first, first + len(batches))
    rows = range(min(mine.start * batch_size, len(tokens)), min(mine.stop * batch_size, len(tokens)))
    if out_dir is not None:
        _write_split(world, out_dir, lambda tmp: run(mine, tmp), meta)
        if world.is_main_process:
            return Activations.load(out_dir)
        acts = Activations._read(out_dir, mine) if len(mine) else _nothing(meta, tokens)
        acts.meta = {**acts.meta, "sequences": [rows.start, rows.stop]}
        return acts
    n_rows = len(tokens) if world.is_main_process else len(rows)
    _all_or_none(_attempt(lambda: run(mine, None, rows.start, n_rows)), "capturing its batches")
    row_shares = [range(start, stop) for start, stop in gather_object([(rows.start, rows.stop)])]
    if world.is_main_process:
        for source, source_rows in enumerate(row_shares[1:], start=1):
            for buffer in buffers.values() if len(source_rows) else ():  # a process without batches sends nothing
                for layer in range(buffer.shape[0]):
                    receive_into(buffer[layer, source_rows.start : source_rows.stop], source)
        return Activations(tensors=buffers, tokens=tokens.cpu(), layers_by_hook=meta["layers_by_hook"],
                           model_name=meta["model_name"])
    for buffer in buffers.values():  # empty when this process had no batch
        for layer in range(buffer.shape[0]):
            send_to_main(buffer[layer])
    acts = Activations(tensors=buffers, tokens=tokens[rows.start : rows.stop].cpu(),
                       layers_by_hook=meta["layers_by_hook"], model_name=meta["model_name"])
    acts.meta = {"sequences": [rows.start, rows.stop]}
    return acts


def _check_out_dir(out_dir: str | os.PathLike) -> None:
    """Refuse an ``out_dir`` that is a file, or lies under one, before any activation is computed."""
    if not str(out_dir).strip():
        raise InvalidArgumentError("out_dir is empty; pass the directory to write the activations in, or None")
    path = Path(out_dir).expanduser().absolute()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        where = "is a file" if ancestor == path else f"lies under the file {str(ancestor)!r}"
        raise InvalidArgumentError(f"out_dir={str(out_dir)!r} {where}, not a directory; pass a directory path")


def _write_split(world: Any, out_dir: str | os.PathLike, write: Callable[[Path], None], meta: dict) -> None:
    """Every process writes its shards into one temporary directory; process 0 adds the meta file and renames it.

    Process 0 creates the temporary directory and tells the others its path; after every process has
    written (a collective), process 0 writes the meta file and renames the directory into place, once; the
    others wait for that before returning. A failure anywhere leaves ``out_dir`` as it was on every process.
    """
    if not world.is_main_process:
        path = broadcast_object_list([None])[0]
        if path is None:
            raise DistributedError(f"process 0 could not prepare a temporary directory beside {str(out_dir)!r}")

        def write_there() -> None:
            if not Path(path).is_dir():
                raise DistributedError(f"{path!r} (made by process 0) is not visible from process "
                                       f"{world.process_index}; out_dir must be on a file system every process shares")
            write(Path(path))

        _all_or_none(_attempt(write_there), "writing its shards")
        _all_or_none(None, f"writing the meta file or renaming into {str(out_dir)!r}")
        return
    stage = "prepare"
    try:
        with atomic_directory(out_dir) as tmp:
            stage = "broadcast"
            broadcast_object_list([str(tmp)])
            stage = "write"
            _all_or_none(_attempt(lambda: write(tmp)), "writing its shards")
            stage = "finish"
            (tmp / META).write_text(json.dumps(meta, indent=1))
    except Exception:
        if stage == "prepare":
            broadcast_object_list([None])
        elif stage == "finish":  # the others wait for the rename
            _first_failure(failed=True)
        raise
    _first_failure(failed=False)  # the others return only once the directory is in place


def _attempt(work: Callable[[], None]) -> Exception | None:
    """Run ``work``; return what it raised instead of raising, so every process can be told first."""
    try:
        work()
    except Exception as error:
        return error
    return None


def _first_failure(failed: bool) -> int | None:
    """A collective: every process passes whether it ``failed``; the lowest rank that did, or None."""
    return next((rank for rank, flag in enumerate(gather_object([failed])) if flag), None)


def _all_or_none(error: Exception | None, doing: str) -> None:
    """A collective: raise this process's ``error``, or a DistributedError if another process failed."""
    failed = _first_failure(failed=error is not None)
    if error is not None:
        raise error
    if failed is not None:
        raise DistributedError(f"collect_activations failed on process {failed} ({doing}); see its error")


def _check_same_call(tokens: Tensor, batch_size: int, plan: dict, meta: dict, out_dir: Any) -> None:
    """Refuse (on every process) when processes pass different tokens, batch sizes or hooks."""
    flat = tokens.reshape(-1).long()
    checksum = int((flat * torch.arange(1, flat.numel() + 1, device=flat.device)).sum()) if flat.numel() else 0
    setup = zlib.crc32(json.dumps([plan, meta["dtype"], out_dir is None]).encode())
    every = gather_object([[len(tokens), flat.numel(), checksum, batch_size, setup]])
    what = ["tokens", "tokens", "tokens", "batch_size", "hooks, layers, dtype or out_dir"]
    for rank, values in enumerate(every[1:], start=1):
        if values != every[0]:
            differing = sorted({what[i] for i, (a, b) in enumerate(zip(values, every[0], strict=True)) if a != b})
            raise DistributedError(f"process {rank} called collect_activations with other {', '.join(differing)} "
                                   "than process 0; every process must pass the same arguments")


def _nothing(meta: dict, tokens: Tensor) -> Activations:
    """What a process with no batch (more processes than batches) returns."""
    return Activations(tensors={}, tokens=tokens[:0].cpu(), layers_by_hook=meta["layers_by_hook"],
                       model_name=meta["model_name"], meta=dict(meta))


def _place(model: TransformerBridge, device: str | torch.device | None) -> torch.device:
    current = next(model.parameters()).device
    if device is None or torch.device(device) == current:
        return current
    model.to(device)
    return torch.device(device)


def _names_for(model: TransformerBridge, template: str, layers: Any) -> tuple[list[int], list[str]]:
    if template != RESID and (template.startswith("blocks.") or template in model.hook_dict):
        return [0], [hook_name(model, template)]
    layer_list = resolve_layers(model, layers, template)
    return layer_list, [hook_name(model, template, layer) for layer in layer_list]


def _stop_layer(model: TransformerBridge, names: Any) -> int | None:
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
