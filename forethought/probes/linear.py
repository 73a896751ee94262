"""A stack of affine probes, one per (layer, task), scored together with one einsum.

:class:`LinearProbes` is what the direct probe trainers return (the batched AdamW trainer in
:mod:`forethought.probes.vocabulary` and the scikit-learn loop in :mod:`forethought.probes.logistic`): for
layer ``l`` and task ``j`` it maps a hidden state ``h`` to class logits
``((h - mean[l]) / scale[l]) @ weight[l, j] + bias[l, j]``. A *task* is an offset, or the control task of
an offset (:class:`Task`). Features are standardised per layer with the training split's statistics, so
the probes are insensitive to the residual stream's scale and outlier dimensions.

Memory: the weights hold ``L·T·d·C`` floats (``L`` layers, ``T`` tasks, ``d`` = d_model, ``C`` classes);
scoring ``n`` examples at once makes ``L·T·n·C`` logits. A GPT-2-small sweep over 13 depths, 4 offsets and
their 4 controls with the full 50 257-token vocabulary needs 13·8·768·50 257 ≈ 4.0 G floats (16 GB) of
weights, and about four times that to train (gradient and two AdamW moments); the top-1000 label space
needs 13·8·768·1001 ≈ 80 M floats (320 MB).

Example:
    >>> import torch
    >>> from forethought.probes.targets import LabelSpace
    >>> probes = LinearProbes.zeros(layers=[0, 1], tasks=[Task(0), Task(1)], d_model=4,
    ...                             label_space=LabelSpace.full(3))
    >>> probes.logits(torch.randn(2, 5, 4)).shape  # [layer, task, n, n_classes]
    torch.Size([2, 2, 5, 3])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from forethought.errors import InvalidArgumentError, OutOfRangeError
from forethought.probes.feature_store import FeatureStore, feature_chunks
from forethought.probes.targets import LabelSpace

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from typing_extensions import Self


@dataclass(frozen=True)
class Task:
    """What one probe predicts: the future token at ``offset``, or that offset's control task."""

    offset: int
    control: bool = False

    @property
    def name(self) -> str:
        """A readable name: ``"offset=N"`` or ``"control offset=N"``."""
        return f"{'control ' if self.control else ''}offset={self.offset}"

    def to_dict(self) -> dict[str, Any]:
        """The task as a JSON-ready dict (``offset``, ``control``)."""
        return {"offset": self.offset, "control": self.control}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """The task stored by :meth:`to_dict` (``control`` defaults to ``False``)."""
        return cls(offset=int(data["offset"]), control=bool(data.get("control", False)))


def feature_stats(
    features: Float[Tensor, "layer n d_model"] | FeatureStore, chunk: int | None = None
) -> tuple[Float[Tensor, "layer d_model"], Float[Tensor, "layer d_model"]]:
    """Per-layer mean and standard deviation over examples, accumulated in float64 chunk by chunk.

    The features come from memory or from a :class:`~forethought.probes.feature_store.FeatureStore`; a chunk
    holds ``chunk`` examples (by default as many as make 64 MiB of float64), so the extra memory does not grow
    with the examples.

    Dimensions with (near) zero variance get scale 1, so they stay zero instead of blowing up.
    """
    device = features.device if isinstance(features, Tensor) else "cpu"
    total = torch.zeros(features.shape[0], features.shape[2], dtype=torch.float64, device=device)
    square = torch.zeros_like(total)
    chunk = chunk or max(1, 2**23 // (features.shape[0] * features.shape[2]))
    for part in feature_chunks(features, chunk):
        part = part.double()
        total += part.sum(1)
        square += part.square().sum(1)
    n = max(features.shape[1], 1)
    mean = total / n
    return standard_scale(mean, (square / n - mean.square()).clamp(min=0))


def standard_scale(mean: Tensor, variance: Tensor) -> tuple[Tensor, Tensor]:
    """``mean`` and the standard deviation, float32; dimensions of (near) zero variance get scale 1."""
    std = variance.sqrt()
    std = torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))
    return mean.float(), std.float()


class AffineProbes(nn.Module, ABC):
    """Per-layer standardisation and one affine map per (layer, task): what every probe kind stores.

    A ``torch.nn.Module``: ``weight`` and ``bias`` are parameters (frozen when fitted; ``requires_grad_()``
    to train them further), ``mean`` and ``scale`` buffers, so ``.to()``, ``.state_dict()`` and
    ``.parameters()`` work as for any module. Called as ``probes(h, layer=, offset=)`` it applies one probe
    to hidden states ``[..., d_model]`` of that layer, like tuned-lens' ``lens(h, idx)`` (see :meth:`forward`).

    Attributes:
        weight: ``[layer, task, d_model, d_out]``.
        bias: ``[layer, task, d_out]``.
        mean, scale: per-layer standardisation ``[layer, d_model]``.
        layers: the model layers (``"resid"`` depths, 0 = embeddings) along the first axis.
        tasks: what each probe along the second axis predicts.
        label_space: how tokens map to classes.
        meta: free-form provenance (model name, hook, method, ...), saved with the probes.
    """

    kind: ClassVar[str] = "affine"
    #: whether loading needs the model the probes read (e.g. to decode with its unembedding)
    needs_model: ClassVar[bool] = False
    weight: Float[Tensor, "layer task d_model d_out"]
    bias: Float[Tensor, "layer task d_out"]
    mean: Float[Tensor, "layer d_model"]
    scale: Float[Tensor, "layer d_model"]

    def __init__(self, weight: Float[Tensor, "layer task d_model d_out"], bias: Float[Tensor, "layer task d_out"],
                 mean: Float[Tensor, "layer d_model"], scale: Float[Tensor, "layer d_model"], layers: Sequence[int],
                 tasks: Sequence[Task], label_space: LabelSpace, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False)
        self.register_buffer("mean", mean.detach().to(weight.device))  # one module, one device: the weights'
        self.register_buffer("scale", scale.detach().to(weight.device))
        self.layers, self.tasks, self.label_space = list(layers), list(tasks), label_space
        self.meta = dict(meta) if meta is not None else {}
        self._check_shapes()

    def _check_shapes(self) -> None:
        n_layers, n_tasks = self.weight.shape[:2]
        if len(self.layers) != n_layers or len(self.tasks) != n_tasks:
            raise InvalidArgumentError(f"{len(self.layers)} layers and {len(self.tasks)} tasks do not match "
                                       f"weights of shape {tuple(self.weight.shape)}")

    @property
    def d_model(self) -> int:
        """The width of the hidden states the probes read."""
        return self.weight.shape[2]

    @property
    def device(self) -> torch.device:
        """The device of the probes' weights."""
        return self.weight.device

    def _fields(self) -> dict[str, Any]:
        """The constructor arguments that rebuild these probes."""
        return {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale,
                "layers": self.layers, "tasks": self.tasks, "label_space": self.label_space, "meta": self.meta}

    def replace(self, **changes: Any) -> Self:
        """New probes of the same kind with some constructor arguments changed (as ``dataclasses.replace``).

        The tensors not changed are shared.
        """
        return type(self)(**{**self._fields(), **changes})

    def __repr__(self) -> str:
        space = self.label_space
        return (f"{type(self).__name__}(kind={self.kind!r}, layers={self.layers}, tasks={[t.name for t in self.tasks]}"
                f", d_model={self.d_model}, label_space={space.name!r}, n_classes={space.n_classes}"
                + ("" if self.device.type == "cpu" else f", device={str(self.device)!r}") + ")")

    def standardise(self, features: Float[Tensor, "layer n d_model"]) -> Float[Tensor, "layer n d_model"]:
        """``features`` in the probes' dtype and on their device, standardised per layer.

        Features that do not fit (one row of features per probed layer, width ``d_model``) are refused.
        """
        if features.ndim != 3 or features.shape[0] != len(self.layers) or features.shape[2] != self.d_model:
            raise InvalidArgumentError(f"features of shape {tuple(features.shape)} do not fit probes over "
                                       f"{len(self.layers)} layers with d_model={self.d_model}; expected "
                                       f"[{len(self.layers)}, n, {self.d_model}]")
        return (features.to(self.device, self.mean.dtype) - self.mean[:, None]) / self.scale[:, None]

    @abstractmethod
    def _head(self, x: Float[Tensor, "layer n d_model"], layers: slice, tasks: slice
              ) -> Float[Tensor, "layer task n n_classes"]:
        """Class logits of the probes ``[layers, tasks]`` for standardised features of those layers."""

    def logits(self, features: Float[Tensor, "layer n d_model"]) -> Float[Tensor, "layer task n n_classes"]:
        """Class logits of every probe for ``features`` (one row of features per probed layer)."""
        return self._head(self.standardise(features), slice(None), slice(None))

    def predict(self, features: Float[Tensor, "layer n d_model"]) -> Int[Tensor, "layer task n"]:
        """The most likely class of every probe."""
        return self.logits(features).argmax(-1)

    def forward(self, h: Float[Tensor, "..."], layer: int | None = None, offset: int | None = None, *,
                control: bool = False) -> Float[Tensor, "... n_classes"]:
        """Class logits of the probe of ``layer`` and ``offset`` (its control task with ``control=True``).

        The axes are those of :meth:`logits` less the ones pinned: with ``layer`` given, ``h`` holds hidden
        states ``[..., d_model]`` of that layer in any leading shape, which replaces ``n``.

        =====================  ===========================  ===============================
        layer, offset          ``h``                        returns
        =====================  ===========================  ===============================
        both given             ``[..., d_model]``           ``[..., n_classes]``
        ``layer`` only         ``[..., d_model]``           ``[task, ..., n_classes]``
        ``offset`` only        ``[layer, n, d_model]``      ``[layer, n, n_classes]``
        neither                ``[layer, n, d_model]``      ``[layer, task, n, n_classes]``
        =====================  ===========================  ===============================

        Args:
            h: hidden states (see the table).
            layer: the ``"resid"`` depth ``h`` was read at (one of ``self.layers``).
            offset: the future offset ``N`` of the probe (token ``t + 1 + N``).
            control: the probe of that offset's control task instead.

        Raises:
            OutOfRangeError: ``layer`` or the task of ``offset`` is not among the probes'.
            InvalidArgumentError: ``h`` does not fit (its last axis is not ``d_model``), ``layer`` or ``offset`` is
                not an integer, or ``control`` without ``offset``.
        """
        if not isinstance(h, Tensor):
            raise InvalidArgumentError(f"h must be a tensor of hidden states; got {type(h).__name__}")
        if control and offset is None:
            raise InvalidArgumentError("control=True picks the control task of an offset; pass offset= too")
        for name, value in (("layer", layer), ("offset", offset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected an integer")
        tasks = slice(None)
        if offset is not None:
            j = _index(self.tasks, Task(offset, control), "task")
            tasks = slice(j, j + 1)
        if layer is None:
            out = self._head(self.standardise(h), slice(None), tasks)  # [layer, task, n, C]
            return out if offset is None else out[:, 0]
        i = _index(self.layers, layer, "layer")
        if h.ndim == 0 or h.shape[-1] != self.d_model:
            raise InvalidArgumentError(f"hidden states of shape {tuple(h.shape)} do not fit probes with "
                                       f"d_model={self.d_model}; expected [..., {self.d_model}]")
        x = (h.reshape(1, -1, self.d_model).to(self.device, self.mean.dtype) - self.mean[i]) / self.scale[i]
        out = self._head(x, slice(i, i + 1), tasks)[0]  # [task, N, C]
        out = out.reshape(out.shape[0], *h.shape[:-1], out.shape[-1])
        return out if offset is None else out[0]

    def select(self, layers: Sequence[int] | None = None, tasks: Sequence[Task] | None = None) -> Self:
        """The probes of some layers and tasks only, in the order given (a copy of the same kind)."""
        li = [_index(self.layers, layer, "layer") for layer in (layers if layers is not None else self.layers)]
        ti = [_index(self.tasks, task, "task") for task in (tasks if tasks is not None else self.tasks)]
        lt = (torch.tensor(li, device=self.device)[:, None], torch.tensor(ti, device=self.device)[None, :])
        return self.replace(weight=self.weight[lt], bias=self.bias[lt], mean=self.mean[li], scale=self.scale[li],
                            layers=[self.layers[i] for i in li], tasks=[self.tasks[i] for i in ti],
                            meta=dict(self.meta))

    def tensors(self) -> dict[str, Tensor]:
        """The tensors to save (see :mod:`forethought.probes.io`)."""
        return {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale}

    @staticmethod
    def saved_fields(tensors: dict[str, Tensor], config: dict[str, Any],
                     device: torch.device | None = None) -> dict[str, Any]:
        """The constructor arguments stored by :func:`forethought.probes.io.save_probes`."""
        return {**{name: tensors[name].to(device) for name in ("weight", "bias", "mean", "scale")},
                "layers": [int(layer) for layer in config["layers"]],
                "tasks": [Task.from_dict(task) for task in config["tasks"]],
                "label_space": LabelSpace.from_dict(config["label_space"]), "meta": dict(config.get("meta", {}))}


class ModelProbes(AffineProbes):
    """Probes whose read-out runs through a model (the Future-Lens maps, learned prompts).

    Attributes:
        model: the model the read-out runs through. A reference only: it is not a submodule, so its weights are
            not among the probes' parameters or ``state_dict`` (nor saved), and ``probes.to(device)`` moves the
            probes, not the model.

    The other attributes are those of :class:`AffineProbes`; the logits are over the label space.
    """

    needs_model = True

    def __init__(self, weight: Float[Tensor, "layer task d_model d_out"], bias: Float[Tensor, "layer task d_out"],
                 mean: Float[Tensor, "layer d_model"], scale: Float[Tensor, "layer d_model"], layers: Sequence[int],
                 tasks: Sequence[Task], label_space: LabelSpace, meta: dict[str, Any] | None = None,
                 model: TransformerBridge | None = None) -> None:
        self.model = model
        super().__init__(weight, bias, mean, scale, layers, tasks, label_space, meta)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "model":  # a plain reference, not a registered submodule
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "model": self.model}

    @property
    def n_classes(self) -> int:
        """The number of classes of the label space the logits are projected to."""
        return self.label_space.n_classes

    @classmethod
    def from_saved(cls, tensors: dict[str, Tensor], config: dict[str, Any],
                   model: TransformerBridge | None = None) -> Self:
        """Probes rebuilt from what :func:`forethought.probes.io.save_probes` stored, read out through ``model``."""
        if model is None:
            raise InvalidArgumentError(f"a {cls.kind} probe reads out through its model; pass model=")
        return cls(**cls.saved_fields(tensors, config, device=next(model.parameters()).device), model=model)


def _index(items: list, item: Any, what: str) -> int:
    if item not in items:
        shown = [i.name for i in items] if what == "task" else items
        raise OutOfRangeError(f"{what} {item.name if what == 'task' else repr(item)} is not among the probes' "
                              f"{what}s {shown}")
    return items.index(item)


def concat_layers(parts: Sequence[AffineProbes]) -> AffineProbes:
    """Probes of disjoint layers (the same kind, tasks and label space) as one stack, in the order given.

    Per-layer lists in ``meta`` (one entry per layer, e.g. ``best_epoch``) are joined too; ``epochs`` becomes the
    largest; every other entry is the first part's.

    Example:
        >>> from forethought.probes.targets import LabelSpace
        >>> a, b = (LinearProbes.zeros(layers=[layer], tasks=[Task(0)], d_model=4, label_space=LabelSpace.full(3))
        ...         for layer in (0, 2))
        >>> concat_layers([a, b]).layers
        [0, 2]
    """
    first = parts[0]
    for other in parts[1:]:
        if type(other) is not type(first) or other.tasks != first.tasks or other.label_space != first.label_space:
            raise InvalidArgumentError("only probes of one kind, with the same tasks and label space, can be joined")
    if len({layer for part in parts for layer in part.layers}) != sum(len(part.layers) for part in parts):
        raise InvalidArgumentError(f"the parts' layers overlap: {[part.layers for part in parts]}")
    meta = dict(first.meta)
    for key, value in first.meta.items():
        values = [part.meta.get(key) for part in parts]
        if isinstance(value, list) and all(isinstance(v, list) and len(v) == len(part.layers)
                                           for v, part in zip(values, parts, strict=True)):
            meta[key] = [entry for v in values for entry in v]
    if all(isinstance(part.meta.get("epochs"), int) for part in parts):
        meta["epochs"] = max(part.meta["epochs"] for part in parts)
    joined = {name: torch.cat([getattr(part, name) for part in parts]) for name in ("weight", "bias", "mean", "scale")}
    return first.replace(**joined, layers=[layer for part in parts for layer in part.layers], meta=meta)


class LinearProbes(AffineProbes):
    """Affine probes for every (layer, task) pair, with per-layer feature standardisation.

    Attributes:
        weight: ``[layer, task, d_model, n_classes]``.
        bias: ``[layer, task, n_classes]`` (``-inf`` for a class a probe never saw in training).

    The other attributes, and calling the probes as ``probes(h, layer=, offset=)``, are those of
    :class:`AffineProbes`.

    Example:
        >>> import torch
        >>> from forethought.probes.targets import LabelSpace
        >>> probes = LinearProbes.zeros(layers=[0, 3], tasks=[Task(0), Task(0, control=True)], d_model=4,
        ...                             label_space=LabelSpace.full(5))
        >>> probes  # doctest: +NORMALIZE_WHITESPACE
        LinearProbes(kind='linear', layers=[0, 3], tasks=['offset=0', 'control offset=0'], d_model=4,
                     label_space='vocab', n_classes=5)
        >>> probes(torch.randn(2, 7, 4), layer=3, offset=0).shape  # hidden states [batch, pos, d_model] of depth 3
        torch.Size([2, 7, 5])
    """

    kind = "linear"

    def _check_shapes(self) -> None:
        n_layers, n_tasks, d_model, n_classes = self.weight.shape
        expected = {"bias": (n_layers, n_tasks, n_classes), "mean": (n_layers, d_model),
                    "scale": (n_layers, d_model)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise InvalidArgumentError(f"{name} has shape {tuple(getattr(self, name).shape)}; expected {shape}")
        super()._check_shapes()
        if n_classes != self.label_space.n_classes:
            raise InvalidArgumentError(f"weights have {n_classes} classes; the label space has "
                                       f"{self.label_space.n_classes}")

    @classmethod
    def zeros(cls, layers: Sequence[int], tasks: Sequence[Task], d_model: int, label_space: LabelSpace,
              device: torch.device | str = "cpu", **kwargs: Any) -> LinearProbes:
        """All-zero probes (uniform predictions) on ``device``, e.g. as a starting point."""
        n_layers, n_tasks, n_classes = len(layers), len(tasks), label_space.n_classes
        zeros = partial(torch.zeros, device=device)
        return cls(weight=zeros(n_layers, n_tasks, d_model, n_classes), bias=zeros(n_layers, n_tasks, n_classes),
                   mean=zeros(n_layers, d_model), scale=torch.ones(n_layers, d_model, device=device),
                   layers=list(layers), tasks=list(tasks), label_space=label_space, **kwargs)

    @property
    def n_classes(self) -> int:
        """The number of classes each probe scores."""
        return self.weight.shape[3]

    def _head(self, x: Float[Tensor, "layer n d_model"], layers: slice, tasks: slice
              ) -> Float[Tensor, "layer task n n_classes"]:
        weight, bias = self.weight[layers, tasks], self.bias[layers, tasks]
        return torch.einsum("lnd,ltdc->ltnc", x, weight) + bias[:, :, None]

    @classmethod
    def from_saved(cls, tensors: dict[str, Tensor], config: dict[str, Any],
                   model: TransformerBridge | None = None) -> LinearProbes:
        """Probes rebuilt from the tensors and config saved by :func:`forethought.probes.io.save_probes`."""
        return cls(**cls.saved_fields(tensors, config))
