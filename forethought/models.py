"""Models: every model in forethought is a TransformerLens 4 ``TransformerBridge``.

* :func:`load_model` boots a hub name or a local ``save_pretrained`` directory (GPT-2, GPT-NeoX/Pythia, Llama,
  Qwen2/3, Gemma-2/3, Mistral, OLMo-2, Phi-3 and the other families TransformerLens bridges), or a directory written
  by :func:`save_model` for a native model.
* :func:`save_random_checkpoint` writes small random-weight checkpoints of :data:`ALL_FAMILIES` offline.
* :func:`tiny_model` builds a randomly initialised ``boot_native`` model from a few sizes (no HF, no network).

Example:
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16)
    >>> model.cfg.n_layers, model.cfg.d_model
    (2, 32)
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from forethought.errors import CheckpointError, InvalidArgumentError, ModelNotAvailableError, check_choice
from forethought.reporting import atomic_directory

if TYPE_CHECKING:  # transformer_lens is imported when a model is made: `import forethought.models` stays light
    from transformer_lens import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

NATIVE_CONFIG = "forethought_native.json"
NATIVE_WEIGHTS = "model.safetensors"
#: Written beside every saved model: how its string prompts are tokenised (``{"prepend_bos": bool}``).
PROMPTS_FILE = "forethought_prompts.json"


def tiny_model(
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    d_vocab: int = 512,
    n_ctx: int = 128,
    d_mlp: int | None = None,
    act_fn: str = "gelu",
    positional_embedding_type: str = "standard",
    attn_only: bool = False,
    normalization_type: str | None = "LN",
    seed: int = 0,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    attention: str = "sdpa",
    prepend_bos: bool = False,
) -> TransformerBridge:
    """A randomly initialised TL-native transformer (``TransformerBridge.boot_native``).

    Args:
        n_layers: number of transformer blocks.
        d_model: residual stream width; must be divisible by ``n_heads``.
        n_heads: attention heads per block.
        d_vocab: vocabulary size (use ``len(tokenizer)`` when you pass a tokenizer).
        n_ctx: context length.
        d_mlp: MLP width, ``4 * d_model`` by default.
        act_fn: MLP activation ("gelu", "relu", ...).
        positional_embedding_type: "standard" (learned) or "rotary".
        attn_only: drop the MLPs.
        normalization_type: "LN" (GPT-2's pre-layer-norm), "LNPre", "RMS", "RMSPre" or None (no normalisation).
        seed: initialisation seed; the caller's RNG state is left untouched.
        tokenizer: optional tokenizer attached to the bridge.
        device: where to put it (default: left where it is built, the CPU).
        dtype: parameter dtype (default: torch's default dtype, float32).
        attention: ``"sdpa"`` (forethought's fused attention kernel, see :mod:`forethought.attention.sdpa`,
            eager whenever attention patterns are hooked, and norms run by the wrapped modules while their inner
            hooks are idle, :mod:`forethought.norms`) or ``"eager"`` (the bridge's own code throughout).
        prepend_bos: whether string prompts get a BOS token first (:func:`forethought.prompts.prepends_bos`).
            False, as forethought trains its models: on sequences cut from a stream, which start without one.

    Example:
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> model(torch.zeros(1, 4, dtype=torch.long)).shape
        torch.Size([1, 4, 20])
    """
    _check_attention(attention)
    for name, value in {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "d_vocab": d_vocab,
                        "n_ctx": n_ctx}.items():
        if not isinstance(value, int) or value <= 0:
            raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected a positive integer")
    if d_model % n_heads:
        raise InvalidArgumentError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}; choose d_model = n_heads * d_head"
        )
    if tokenizer is not None and len(tokenizer) > d_vocab:
        raise InvalidArgumentError(
            f"d_vocab={d_vocab} is smaller than the tokenizer's {len(tokenizer)} tokens; pass d_vocab=len(tokenizer)"
        )
    from transformer_lens import TransformerBridgeConfig

    cfg = TransformerBridgeConfig(
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        n_layers=n_layers,
        n_ctx=n_ctx,
        d_vocab=d_vocab,
        d_mlp=d_mlp if d_mlp is not None else 4 * d_model,
        act_fn=act_fn,
        positional_embedding_type=positional_embedding_type,
        attn_only=attn_only,
        normalization_type=normalization_type,
        seed=seed,
    )
    model = _boot_native(cfg, tokenizer=tokenizer, device=device, dtype=dtype)
    model.cfg.default_prepend_bos = bool(prepend_bos)
    return _with_attention(model, attention)


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards") for a moment.

    forethought shows its own progress where work is long; these per-file bars of tiny loads would only clutter a
    notebook or a log. The setting is restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def forward_on_model_device(self: TransformerBridge, input: Any, *args: Any, **kwargs: Any) -> Any:
    """The bridge's own ``forward``, after moving tensor arguments to the model's device.

    The tensors moved are ``input`` (tokens or embeddings) and tensor keyword arguments (an ``attention_mask``, say).
    Installed on every model :func:`load_model` and :func:`tiny_model` return (as the instance's ``forward``, which
    calling the model and TransformerLens' ``run_with_cache`` both reach), so that tokens kept on the CPU work with
    a model on a GPU everywhere a model is called.
    """
    device = next(self.parameters()).device

    def here(value: Any) -> Any:
        return value.to(device) if isinstance(value, torch.Tensor) and value.device != device else value

    return type(self).forward(self, here(input), *args, **{name: here(value) for name, value in kwargs.items()})


def _with_attention(model: TransformerBridge, attention: str) -> TransformerBridge:
    """The model, ready to use: inputs move to its device, and forethought's kernels when asked.

    :func:`forward_on_model_device` always; the fused attention kernel and native norms when ``attention == "sdpa"``.
    """
    from forethought.attention.sdpa import install_sdpa
    from forethought.norms import install_native_norms

    model.forward = types.MethodType(forward_on_model_device, model)

    if attention == "sdpa":
        install_sdpa(model)
        install_native_norms(model)
    return model


def _boot_native(cfg: TransformerBridgeConfig, tokenizer: Any, device: Any, dtype: Any) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer, device=device, dtype=dtype)
    return model


def _check_attention(attention: str) -> None:
    from forethought.attention.sdpa import check_attention

    check_attention(attention)


def is_native(model: TransformerBridge) -> bool:
    """True for models built by ``boot_native`` (as opposed to HF-backed bridges)."""
    return getattr(model.cfg, "architecture", None) == "TransformerLensNative"


def load_model(
    name_or_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: Any = None,
    require_tokenizer: bool = True,
    attention: str = "sdpa",
) -> TransformerBridge:
    """Load a model as a ``TransformerBridge``.

    Args:
        name_or_dir: a hub name ("gpt2", "EleutherAI/pythia-70m"), a local ``save_pretrained`` directory, or a
            directory written by :func:`save_model`.
        device: where to put it (default: TransformerLens' choice).
        dtype: parameter dtype (default float32).
        tokenizer: a tokenizer object or a path/name for ``AutoTokenizer``; needed for checkpoints saved
            without one (e.g. a randomly initialised Llama).
        require_tokenizer: refuse a local ``save_pretrained`` directory without tokenizer files (unless
            ``tokenizer`` is given); ``False`` for work on token ids alone, such as benchmarks.
        attention: ``"sdpa"`` (default: forethought's fused attention kernel under the bridge, which falls back to
            the bridge's eager attention whenever ``hook_pattern``/``hook_attn_scores`` are hooked, see
            :mod:`forethought.attention.sdpa`; and norms run by the wrapped modules while ``hook_scale`` and
            ``hook_normalized`` are idle, see :mod:`forethought.norms`) or ``"eager"`` (the bridge's own code
            throughout, the ``[T, T]`` softmax included).

    Raises:
        ModelNotAvailableError: the name is not a directory and cannot be fetched (e.g. offline).
            A local directory without tokenizer files (see ``require_tokenizer``) is refused too.
        CheckpointError: a local directory whose ``config.json`` is malformed or whose weights are pickled.

    Example:
        >>> import tempfile
        >>> from forethought.models import save_model, tiny_model
        >>> folder = tempfile.mkdtemp()
        >>> _ = save_model(tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8), folder)
        >>> load_model(folder).cfg.d_model
        16
    """
    if not str(name_or_dir).strip():
        raise InvalidArgumentError("the model name is empty; pass a hub name or a local model directory")
    _check_attention(attention)
    path = Path(name_or_dir).expanduser()
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _load_tokenizer(tokenizer)
    if path.is_dir() and (path / NATIVE_CONFIG).exists():
        return _with_attention(_prompt_convention(_load_native(path, tokenizer=tokenizer, device=device,
                                                               dtype=dtype), path), attention)
    if path.is_dir():
        _check_hf_directory(path, needs_tokenizer=require_tokenizer and tokenizer is None)
    if not path.is_dir() and _hub_offline():
        if not _in_local_cache(str(name_or_dir)):
            raise ModelNotAvailableError(_offline_message(name_or_dir))
    kwargs: dict[str, Any] = {"device": device, "tokenizer": tokenizer}
    if dtype is not None:
        kwargs["dtype"] = dtype
    from transformer_lens.model_bridge import TransformerBridge

    try:
        with quiet_hf_progress():
            model = TransformerBridge.boot_transformers(str(path) if path.is_dir() else str(name_or_dir), **kwargs)
        return _with_attention(_prompt_convention(model, path) if path.is_dir() else model, attention)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"the weights of {str(name_or_dir)!r} hold pickled objects beyond tensors; refusing to load them (they "
            "may run code). Convert them to safetensors with the tools of their author"
        ) from error
    except OSError as error:  # HF raises OSError (or subclasses) for missing files and failed downloads
        raise ModelNotAvailableError(f"{_offline_message(name_or_dir)} ({type(error).__name__})") from error
    except ValueError as error:
        if "tokenizer" in str(error).lower():
            raise ModelNotAvailableError(
                f"model {str(name_or_dir)!r} has no usable tokenizer; pass tokenizer=... to load_model"
            ) from error
        raise


#: Files of which at least one makes a ``save_pretrained`` directory's tokenizer loadable.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _prompt_convention(model: TransformerBridge, path: Path) -> TransformerBridge:
    """Adopt the prompt convention saved beside the model (:data:`PROMPTS_FILE`), if any."""
    record = path / PROMPTS_FILE
    if record.is_file():
        try:
            prepend_bos = json.loads(record.read_text())["prepend_bos"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{str(record)!r} is damaged ({type(error).__name__}); save the model again"
                                  ) from error
        model.cfg.default_prepend_bos = bool(prepend_bos)
    return model


def _check_hf_directory(path: Path, needs_tokenizer: bool) -> None:
    """Refuse a local directory that cannot be a usable ``save_pretrained`` model, naming what is wrong."""
    config = path / "config.json"
    if not config.exists():
        raise ModelNotAvailableError(
            f"directory {str(path)!r} holds no model: expected config.json (from save_pretrained) "
            f"or {NATIVE_CONFIG} (from forethought.models.save_model)"
        )
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{str(config)!r} is not valid JSON ({error}); write it again with save_pretrained"
                              ) from error
    if not isinstance(settings, dict) or "model_type" not in settings:
        raise CheckpointError(f"{str(config)!r} is not a model config: it has no 'model_type'")
    if needs_tokenizer and not any((path / name).exists() for name in TOKENIZER_FILES):
        raise ModelNotAvailableError(
            f"directory {str(path)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer "
            "beside the weights or pass tokenizer=... to load_model"
        )


def copy_model(model: TransformerBridge) -> TransformerBridge:
    """A deep copy of ``model`` (weights, config, tokenizer), e.g. the frozen past of a local-myopic run.

    Tensors that HF-backed bridges keep on their modules from the last forward (the attention pattern, part of
    an autograd graph, which ``copy.deepcopy`` refuses) are not copied.

    Example:
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> twin = copy_model(model)
        >>> twin is not model and torch.equal(twin.W_E, model.W_E)
        True
    """
    memo: dict[int, Any] = {id(value): None for module in model.modules() for value in vars(module).values()
                            if isinstance(value, torch.Tensor) and not value.is_leaf}
    return copy.deepcopy(model, memo)


def save_model(model: TransformerBridge, out_dir: str | os.PathLike) -> Path:
    """Save a model so that :func:`load_model` restores it, atomically (a temp dir renamed into place).

    Native models are written as safetensors weights and the bridge config; HF-backed bridges use the
    wrapped model's ``save_pretrained``. The tokenizer, if any, is saved beside them, and so is the model's prompt
    convention (:data:`PROMPTS_FILE`: whether string prompts start with a BOS token).
    """
    with atomic_directory(out_dir) as tmp:
        prepend_bos = bool(getattr(model.cfg, "default_prepend_bos", True))
        (tmp / PROMPTS_FILE).write_text(json.dumps({"prepend_bos": prepend_bos}))
        if is_native(model):
            config = {key: value for key, value in model.cfg.to_dict().items() if _json_safe(value)}
            (tmp / NATIVE_CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True))
            state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
            save_file(state, str(tmp / NATIVE_WEIGHTS))
        else:
            from forethought.attention.sdpa import sdpa_attention

            sync_fused_qkv(model)
            with sdpa_attention(model, enabled=False):  # the HF config as HF wrote it (eager, output_attentions)
                _save_hf_weights(model.original_model, tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def sync_fused_qkv(model: TransformerBridge) -> int:
    """Write each attention layer's split q/k/v projections back into the fused HF projection they came from.

    For fused-qkv architectures (GPT-2 ``c_attn``, GPT-NeoX ``query_key_value``) the bridge splits the fused
    weight into separate q, k, v ``Linear`` modules and runs those. On GPT-2 they are views of the fused tensor,
    but on GPT-NeoX they are copies: after fine-tuning, the fused weight that ``save_pretrained`` writes would
    be stale. The split layout is read from the bridge's own ``split_qkv_matrix`` applied to a tensor of
    indices, so the inverse is exact for any layout. Returns the number of layers synchronised.
    """
    synced = 0
    for block in getattr(model, "blocks", []):
        attn = block.attn
        split = getattr(attn, "split_qkv_matrix", None)
        submodules = getattr(attn, "submodules", {})
        if split is None or "qkv" not in submodules or not all(hasattr(attn, name) for name in "qkv"):
            continue
        fused = attn.qkv.original_component
        parts = [getattr(attn, name).original_component for name in "qkv"]
        probe = {attr: torch.arange(tensor.numel(), dtype=torch.float64, device="cpu").view(tensor.shape)
                 for attr in ("weight", "bias") if isinstance(tensor := getattr(fused, attr, None), torch.Tensor)}
        fake_fused = SimpleNamespace(**probe, **({} if "bias" in probe else {"bias": None}))
        index_parts = split(SimpleNamespace(**{submodules["qkv"].name: fake_fused}))
        with torch.no_grad():
            for attr in probe:
                target = getattr(fused, attr).view(-1)
                for part, index_part in zip(parts, index_parts, strict=True):
                    source, index = getattr(part, attr), getattr(index_part, attr)
                    if source is None or _same_storage(source, target):  # a view (GPT-2): already in sync
                        continue
                    target[index.detach().reshape(-1).long()] = source.detach().reshape(-1).to(target.dtype)
        synced += 1
    return synced


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _save_hf_weights(hf_model: Any, out: Path) -> None:
    """``save_pretrained`` with the HF parameter names (the bridge wraps each HF module it hooks)."""
    import transformers

    with torch.device("meta"):
        names = set(transformers.AutoModelForCausalLM.from_config(hf_model.config).state_dict())
    wrapped = {name.replace("._original_component", ""): tensor for name, tensor in hf_model.state_dict().items()}
    state = {name: wrapped[name].detach().contiguous() for name in names if name in wrapped}
    with quiet_hf_progress():
        hf_model.save_pretrained(out, state_dict=state)


def _load_native(path: Path, tokenizer: Any, device: Any, dtype: Any) -> TransformerBridge:
    try:
        config = json.loads((path / NATIVE_CONFIG).read_text())
        state = load_file(str(path / NATIVE_WEIGHTS))
    except Exception as error:  # noqa: BLE001 - any failure here means an unusable checkpoint
        raise CheckpointError(f"cannot read native model in {str(path)!r}: {error}") from error
    if tokenizer is None and (path / "tokenizer.json").exists():
        tokenizer = _load_tokenizer(path)
    from transformer_lens import TransformerBridgeConfig

    model = _boot_native(TransformerBridgeConfig.from_dict(config), tokenizer=tokenizer, device=device, dtype=dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"weights in {str(path)!r} do not fit its config: {error}") from error
    return model


def _load_tokenizer(name_or_dir: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name_or_dir))
    except OSError as error:
        raise ModelNotAvailableError(f"tokenizer {str(name_or_dir)!r} is not available: {error}") from error


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _in_local_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
        return False


def _offline_message(name: Any) -> str:
    return (
        f"model {str(name)!r} is not available offline: it is not a local directory and not in the HF cache; "
        "download it once with network access (e.g. `huggingface-cli download NAME`), or pass a local "
        "save_pretrained directory"
    )


#: The families the default test fixtures run on.
FAMILIES = ("gpt2", "neox", "llama")
#: Families of current planning studies (small random configs; see :func:`save_random_checkpoint`).
RECENT_FAMILIES = ("qwen2", "qwen3", "gemma2", "gemma3", "mistral", "olmo2", "phi3")
#: Every family :func:`save_random_checkpoint` writes.
ALL_FAMILIES = FAMILIES + RECENT_FAMILIES


def save_random_checkpoint(
    family: str,
    out_dir: str | os.PathLike,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_ctx: int = 128,
    tokenizer: Any = None,
    d_vocab: int | None = None,
    seed: int = 0,
    sliding_window: int = 8,
    config_overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a randomly initialised HF checkpoint with ``save_pretrained`` (offline stand-ins for hub models).

    ``family`` is one of :data:`ALL_FAMILIES`:

    * ``"gpt2"``; ``"neox"`` (Pythia: rotary on a quarter of each head, parallel attention); ``"llama"`` (rotary,
      grouped-query attention, RMSNorm, gated MLP);
    * ``"qwen2"`` (Llama-like with q/k/v biases); ``"qwen3"`` (per-head RMSNorm of queries and keys);
      ``"olmo2"`` (RMSNorm of the whole query and key projections, norms after attention and MLP);
      ``"phi3"`` (one fused q/k/v projection);
    * ``"mistral"`` (a sliding window of ``sliding_window`` positions in every layer);
      ``"gemma2"`` (sliding window in even layers, full attention in odd ones, soft-capped attention scores and
      logits, scores scaled by ``query_pre_attn_scalar = 2 * head_dim`` rather than ``head_dim``);
      ``"gemma3"`` (text only: sliding window in even layers with their own rotary base, per-head q/k RMSNorm, the
      same score scaling).

    Every family after GPT-2 and NeoX uses grouped-query attention with ``n_heads // 2`` key/value heads and
    ``head_dim = d_model // n_heads``. The default ``sliding_window`` is shorter than the sequences tests use, so
    that the window matters. ``config_overrides`` are set on the HF config last (e.g.
    ``{"attn_logit_softcapping": 1.0}``). The tokenizer, if given, is saved beside the weights and sets the
    vocabulary size.

    Example:
        >>> import tempfile
        >>> from forethought.data import train_tokenizer
        >>> tokenizer = train_tokenizer(["a few words of text"] * 4, vocab_size=300)
        >>> folder = save_random_checkpoint("neox", tempfile.mkdtemp(), d_model=32, tokenizer=tokenizer)
        >>> load_model(folder).cfg.d_model
        32
    """
    import transformers

    check_choice("family", family, ALL_FAMILIES)
    vocab = len(tokenizer) if tokenizer is not None else (d_vocab or 256)
    common = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0}
    head_dim = d_model // n_heads
    decoder = {"hidden_size": d_model, "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
               "num_key_value_heads": max(1, n_heads // 2), "intermediate_size": 4 * d_model,
               "max_position_embeddings": n_ctx, "pad_token_id": 0, **common}
    alternating = ["sliding_attention" if layer % 2 == 0 else "full_attention" for layer in range(n_layers)]
    gemma = {"head_dim": head_dim, "sliding_window": sliding_window, "query_pre_attn_scalar": 2 * head_dim,
             "layer_types": alternating}
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx,
                                         **common)
        model_class = transformers.GPT2LMHeadModel
    elif family == "neox":
        config = transformers.GPTNeoXConfig(hidden_size=d_model, num_hidden_layers=n_layers,
                                            num_attention_heads=n_heads, intermediate_size=4 * d_model,
                                            max_position_embeddings=n_ctx, rotary_pct=0.25,
                                            use_parallel_residual=True, **common)
        model_class = transformers.GPTNeoXForCausalLM
    elif family == "llama":
        config = transformers.LlamaConfig(hidden_size=d_model, num_hidden_layers=n_layers,
                                          num_attention_heads=n_heads, num_key_value_heads=max(1, n_heads // 2),
                                          intermediate_size=4 * d_model, max_position_embeddings=n_ctx, **common)
        model_class = transformers.LlamaForCausalLM
    elif family == "qwen2":
        config, model_class = transformers.Qwen2Config(**decoder), transformers.Qwen2ForCausalLM
    elif family == "qwen3":
        config, model_class = transformers.Qwen3Config(head_dim=head_dim, **decoder), transformers.Qwen3ForCausalLM
    elif family == "olmo2":
        config, model_class = transformers.Olmo2Config(**decoder), transformers.Olmo2ForCausalLM
    elif family == "phi3":
        config, model_class = transformers.Phi3Config(**decoder), transformers.Phi3ForCausalLM
    elif family == "mistral":
        config = transformers.MistralConfig(head_dim=head_dim, sliding_window=sliding_window, **decoder)
        model_class = transformers.MistralForCausalLM
    elif family == "gemma2":
        config = transformers.Gemma2Config(**gemma, **decoder)
        model_class = transformers.Gemma2ForCausalLM
    else:
        config = transformers.Gemma3TextConfig(**gemma, **decoder)
        model_class = transformers.Gemma3ForCausalLM
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    out = Path(out_dir)
    with quiet_hf_progress():
        model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
