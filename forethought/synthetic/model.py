"""A TransformerLens transformer that regresses a scalar per position from continuous inputs.

:class:`RegressionTransformer` wraps a ``boot_native`` ``TransformerBridge`` (``.bridge``) and feeds it through
``inputs_embeds``: a learned linear map takes the ``n_inputs`` features of each position to ``d_model`` (the
bridge then adds its learned positional embedding, exactly as it does for token embeddings). The bridge is built
with a one-word vocabulary, so its own unembedding, which reads the final layer norm's output, *is* the scalar
regression head: ``bridge(embeds)[..., 0]`` is the prediction.

Because everything after the input map is the bridge itself, every tool written for language models applies
unchanged: ``myopic(model.bridge)``, hooks by name (``forethought.hook_names``), ``run_with_cache``, patching.

Example:
    >>> import torch
    >>> model = RegressionTransformer(RegressionModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=8))
    >>> inputs = torch.randn(3, 8, 2)
    >>> model(inputs).shape
    torch.Size([3, 8])
    >>> model.residuals(inputs).shape  # [layer, batch, pos, d_model]; layer 0 = embedding output
    torch.Size([2, 3, 8, 16])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from forethought.errors import ContextLengthError, InvalidArgumentError, check_choice, check_positive
from forethought.hook_names import RESID, hook_name, resolve_layers
from forethought.models import tiny_model

#: Normalisations a :class:`RegressionTransformer` can use (TransformerLens ``normalization_type``).
NORMALIZATIONS = ("LN", "LNPre", "RMS", "RMSPre", None)


@dataclass(frozen=True)
class RegressionModelConfig:
    """Sizes of a :class:`RegressionTransformer`.

    Args:
        n_inputs: features per position (2 for the pre-caching task: ``x_n`` and ``z_n``).
        n_layers, d_model, n_heads, n_ctx: the transformer's sizes (``n_ctx`` = longest sequence).
        d_mlp: MLP width, ``4 * d_model`` by default.
        act_fn: MLP activation.
        normalization: ``"LN"`` (GPT-2's pre-layer-norm, with ``ln_final``), another TransformerLens
            ``normalization_type``, or ``None`` for none at all (the residual stream keeps the scale of the inputs).
        mlp_init_scale: factor on the initial MLP input weights of every block. A freshly initialised MLP computes
            smooth functions of its input; a target such as ``sin(8 x)`` then takes tens of millions of sequences
            to emerge (spectral bias). Starting the MLP input weights a few times larger lets a short run resolve
            it; 1 keeps TransformerLens' initialisation.
        seed: initialisation seed of the input map and the bridge.
    """

    n_inputs: int = 2
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_ctx: int = 64
    d_mlp: int | None = None
    act_fn: str = "gelu"
    normalization: str | None = "LN"
    mlp_init_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("n_inputs", self.n_inputs, integer=True)
        for name in ("n_layers", "d_model", "n_heads", "n_ctx"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("mlp_init_scale", self.mlp_init_scale)
        if self.d_mlp is not None:
            check_positive("d_mlp", self.d_mlp, integer=True)
        if self.d_model % self.n_heads:
            raise InvalidArgumentError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        check_choice("normalization", self.normalization, NORMALIZATIONS)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (JSON-ready)."""
        return asdict(self)


class RegressionTransformer(nn.Module):
    """A ``boot_native`` ``TransformerBridge`` with a linear input map and a scalar output per position.

    Attributes:
        input_map: ``nn.Linear(n_inputs, d_model)``, the learned embedding of the continuous inputs.
        bridge: the transformer; its unembedding (``d_vocab = 1``) is the regression head.
    """

    def __init__(self, config: RegressionModelConfig | None = None, device: str | torch.device | None = None):
        super().__init__()
        self.config = config = config if config is not None else RegressionModelConfig()
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the caller's RNG alone
            torch.manual_seed(config.seed)
            self.input_map = nn.Linear(config.n_inputs, config.d_model)
        self.bridge = tiny_model(n_layers=config.n_layers, d_model=config.d_model, n_heads=config.n_heads, d_vocab=1,
                                 n_ctx=config.n_ctx, d_mlp=config.d_mlp, act_fn=config.act_fn,
                                 normalization_type=config.normalization, seed=config.seed)
        # The token embedding of the one-word vocabulary is never used: inputs arrive as embeddings.
        self.bridge.embed.requires_grad_(False)
        if config.mlp_init_scale != 1.0:
            with torch.no_grad():
                for block in self.bridge.blocks:
                    if hasattr(block, "mlp"):
                        block.mlp.W_in.mul_(config.mlp_init_scale)
        if device is not None:
            self.to(device)

    def embed(self, inputs: Float[Tensor, "batch pos n_inputs"]) -> Float[Tensor, "batch pos d_model"]:
        """The input map applied to every position (what the bridge receives as ``inputs_embeds``)."""
        self._check(inputs)
        return self.input_map(inputs)

    def forward(self, inputs: Float[Tensor, "batch pos n_inputs"]) -> Float[Tensor, "batch pos"]:
        """One scalar prediction per position."""
        return self.bridge(self.embed(inputs), return_type="logits")[..., 0]

    def residuals(
        self,
        inputs: Float[Tensor, "batch pos n_inputs"],
        layers: Sequence[int] | int | str = "all",
        batch_size: int = 256,
    ) -> Float[Tensor, "layer batch pos d_model"]:
        """The residual stream at ``layers`` (0 = embedding output, ``l`` = output of block ``l - 1``).

        Runs without gradients in batches of ``batch_size`` sequences and returns a CPU float32 tensor whose
        first axis follows ``resolve_layers(model.bridge, layers, "resid")``.
        """
        check_positive("batch_size", batch_size, integer=True)
        self._check(inputs)
        names = [hook_name(self.bridge, RESID, layer) for layer in resolve_layers(self.bridge, layers, RESID)]
        device = self.input_map.weight.device
        parts = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                embeds = self.embed(inputs[start : start + batch_size].to(device))
                _, cache = self.bridge.run_with_cache(embeds, names_filter=names, return_type=None)
                parts.append(torch.stack([cache[name] for name in names]).float().cpu())
        return torch.cat(parts, dim=1)

    def _check(self, inputs: Tensor) -> None:
        if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.ndim != 3:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise InvalidArgumentError(f"inputs must be a float tensor [batch, pos, n_inputs]; got {shape}")
        if inputs.shape[-1] != self.config.n_inputs:
            raise InvalidArgumentError(
                f"inputs have {inputs.shape[-1]} features per position; this model takes n_inputs="
                f"{self.config.n_inputs}"
            )
        if inputs.shape[1] > self.config.n_ctx:
            raise ContextLengthError(
                f"sequence length {inputs.shape[1]} exceeds the model's context n_ctx={self.config.n_ctx}; "
                f"use sequences of at most {self.config.n_ctx} positions"
            )
