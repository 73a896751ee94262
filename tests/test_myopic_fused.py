"""The fused myopic attention against the eager ``[T, T]`` one, on tensors and on every backend."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import forethought.attention.fused as fused_module
import forethought.myopic_training.hooks as hooks
from forethought.attention.fused import causal_logsumexp, fused_attend, fused_supported
from forethought.attention.recompute import attend, expand_kv
from forethought.errors import InvalidArgumentError, UnsupportedArchitectureError
from forethought.myopic_training import myopic

SEQ = 10
VIEWS = [("strict", 0.0), ("cutgrad", 0.0), ("strict", 0.5), ("cutgrad", 0.5), ("strict", 1.0)]


def _tokens(model, batch=2, seq=SEQ, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _step(model, tokens, **kwargs):
    model.zero_grad()
    with myopic(model, **kwargs):
        loss = model(tokens, return_type="loss")
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _max_relative_error(ours, reference):
    assert ours.keys() == reference.keys()
    scale = max(g.abs().max().item() for g in reference.values())
    return max((ours[name] - reference[name]).abs().max().item() for name in reference) / scale


@pytest.mark.parametrize(("mode", "beta"), VIEWS)
def test_fused_equals_eager_on_every_backend(any_model, mode, beta):
    any_model.eval()
    tokens = _tokens(any_model)
    vanilla_loss = any_model(tokens, return_type="loss").detach()
    fused_loss, fused = _step(any_model, tokens, mode=mode, beta=beta, attention="fused")
    eager_loss, eager = _step(any_model, tokens, mode=mode, beta=beta, attention="eager")
    assert torch.equal(fused_loss, vanilla_loss) and torch.equal(eager_loss, vanilla_loss)
    assert _max_relative_error(fused, eager) < 1e-5
    if beta < 1:
        _, vanilla = _step(any_model, tokens, mode=mode, beta=1.0, attention="eager")
        assert _max_relative_error(fused, vanilla) > 1e-3, "the comparison must see myopia"


def test_auto_is_fused(native_model, monkeypatch):
    calls = []
    original = fused_module.SplitDiagonal.apply
    monkeypatch.setattr(fused_module.SplitDiagonal, "apply", lambda *a: calls.append(1) or original(*a))
    native_model.eval()
    _step(native_model, _tokens(native_model), mode="strict")
    assert len(calls) == native_model.cfg.n_layers


def test_auto_falls_back_to_eager_where_fused_cannot_run(native_model, monkeypatch):
    native_model.eval()
    tokens = _tokens(native_model)
    _, eager = _step(native_model, tokens, mode="strict", attention="eager")
    monkeypatch.setattr(hooks, "fused_supported", lambda *tensors: False)
    _, auto = _step(native_model, tokens, mode="strict")
    assert _max_relative_error(auto, eager) == 0
    with pytest.raises(UnsupportedArchitectureError, match="attention='fused' cannot run"):
        _step(native_model, tokens, mode="strict", attention="fused")


def test_fused_supported_needs_one_dtype_and_whole_groups():
    q, k = torch.zeros(1, 3, 4, 2), torch.zeros(1, 3, 2, 2)
    assert fused_supported(q, k, k)
    assert not fused_supported(q, k.double(), k.double())
    assert not fused_supported(q, torch.zeros(1, 3, 3, 2), torch.zeros(1, 3, 3, 2))


def _views(generator, n_heads=4, n_kv=2, seq=7, d=5, dtype=torch.float32):
    shape = (2, seq, n_heads, d)
    q = torch.randn(*shape, generator=generator, dtype=dtype, requires_grad=True)
    k, v, k_in, v_in = (torch.randn(2, seq, n_kv, d, generator=generator, dtype=dtype, requires_grad=True)
                        for _ in range(4))
    return q, k, v, k_in, v_in


@pytest.mark.parametrize("n_kv", [4, 2, 1])
@pytest.mark.parametrize("past", ["detached", "recomputed", "mixed"])
@pytest.mark.parametrize("kernel", ["cpu-flash", "sdpa"])
def test_fused_attend_gradients_equal_attend(n_kv, past, kernel, monkeypatch):
    """Every input's gradient, for past keys/values that are detached, recomputed from another leaf with equal
    values (as cutgrad does), or mixed with the live ones (beta); grouped kv heads; both fused kernels."""
    if kernel == "sdpa":
        monkeypatch.setattr(fused_module, "_CPU_FLASH", None)
    generator = torch.Generator().manual_seed(n_kv)
    q, k, v, k_in, v_in = _views(generator, n_kv=n_kv)

    def view(live, other):
        if past == "detached":
            return live.detach()
        if past == "recomputed":  # equal values, gradient to another leaf
            return other + (live - other).detach()
        return 0.7 * live.detach() + 0.3 * live

    weights = torch.randn(2, 7, 4, 5, generator=generator, dtype=q.dtype)
    inputs = (q, k, v, k_in, v_in)
    ours = fused_attend(q, k, v, view(k, k_in), view(v, v_in), scale=0.4)
    reference = attend(q, *(expand_kv(x, 4) for x in (k, v, view(k, k_in), view(v, v_in))), scale=0.4)
    torch.testing.assert_close(ours, reference)
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs, allow_unused=True)
    reference_grads = torch.autograd.grad((reference * weights).sum(), inputs, allow_unused=True)
    for a, b in zip(ours_grads, reference_grads, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b)


def test_fused_attend_in_bfloat16_is_close():
    generator = torch.Generator().manual_seed(0)
    q, k, v, _, _ = _views(generator)
    low = [x.detach().bfloat16().requires_grad_() for x in (q, k, v)]
    ours = fused_attend(low[0], low[1], low[2], low[1].detach(), low[2].detach(), scale=0.4)
    reference = attend(q, expand_kv(k, 4), expand_kv(v, 4), expand_kv(k, 4).detach(), expand_kv(v, 4).detach(),
                       scale=0.4)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), reference, rtol=2e-2, atol=2e-2)
    ours_grads = torch.autograd.grad(ours.float().sum(), low)
    reference_grads = torch.autograd.grad(reference.sum(), (q, k, v))
    for a, b in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2)


def test_causal_logsumexp_blocks():
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 6, 13, 3, generator=generator), torch.randn(2, 3, 13, 3, generator=generator)
    scores = q @ expand_kv(k.transpose(1, 2), 6).transpose(1, 2).transpose(-1, -2) * 0.7
    expected = scores.masked_fill(torch.ones(13, 13, dtype=torch.bool).triu(1), float("-inf")).logsumexp(-1)
    for block in (1, 4, 13, 20):
        torch.testing.assert_close(causal_logsumexp(q, k, 0.7, block=block), expected)


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("kernel", ["cpu-flash", "sdpa"])
def test_fused_attend_creates_no_square_tensor(kernel, monkeypatch):
    """Forward and backward create nothing larger than a few query-sized tensors; attend creates [T, T] scores."""
    if kernel == "sdpa":
        monkeypatch.setattr(fused_module, "_CPU_FLASH", None)
    generator = torch.Generator().manual_seed(2)
    q, k, v, _, _ = _views(generator, seq=256, d=4)
    for fn, views in ((fused_attend, (k, v)), (attend, (expand_kv(k, 4), expand_kv(v, 4)))):
        with _LargestOutput() as recorder:
            out = fn(q, *views, *(x.detach() for x in views), 0.5)
            out.sum().backward()
        if fn is fused_attend:
            assert recorder.largest <= 4 * q.numel()
        else:
            assert recorder.largest >= 2 * 4 * 256 * 256  # the check sees a [batch, head, T, T] tensor


def test_bad_attention_argument(native_model):
    with pytest.raises(InvalidArgumentError, match="attention='flash'"):
        with myopic(native_model, attention="flash"):
            pass


@pytest.mark.parametrize("lse_error, trusted", [(0.0, True), (1e-2, False)])
def test_a_kernel_log_sum_exp_is_used_only_once_checked_against_the_reference(monkeypatch, lse_error, trusted):
    """The CUDA kernel's log-sum-exp enters the myopic backward only where a check on a small input found it equal
    to the reference: a kernel that is off by 0.01 nats, or has no kernel for a head size, is refused, and the
    reference path is kept."""
    import torch.nn.functional as F

    from forethought.attention import fused

    def kernel(q, k, v, bias, compute_lse, dropout, is_causal, scale):
        if q.shape[-1] == 1:
            raise RuntimeError("cutlassF: no kernel found to launch!")  # as CUDA's kernel says for head size 1
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return out, fused.causal_logsumexp(q, k, scale) + lse_error, None, None

    monkeypatch.setattr(fused, "_CUDA_EFFICIENT", kernel)
    monkeypatch.setattr(fused, "_CUDA_FLASH", None)
    monkeypatch.setattr(fused, "_CUDA_KERNELS", {})
    cpu = torch.device("cpu")
    assert fused._cuda_kernel(cpu, torch.float32, 16) is (fused._efficient if trusted else None)
    assert fused._cuda_kernel(cpu, torch.float64, 16) is None  # the kernel has no float64
    assert fused._cuda_kernel(cpu, torch.float32, 1) is None  # nor every head size


def test_flash_is_preferred_in_half_precision_with_kv_heads_expanded_where_it_wants_them(monkeypatch):
    import torch.nn.functional as F

    from forethought.attention import fused

    def flash(q, k, v, dropout, is_causal, debug_mask, scale):
        if k.shape[1] != q.shape[1]:
            raise RuntimeError("grouped heads are not supported")
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return out, fused.causal_logsumexp(q, k, scale)

    monkeypatch.setattr(fused, "_CUDA_FLASH", flash)
    monkeypatch.setattr(fused, "_CUDA_EFFICIENT", None)
    monkeypatch.setattr(fused, "_CUDA_KERNELS", {})
    cpu = torch.device("cpu")
    assert fused._cuda_kernel(cpu, torch.bfloat16, 16) is fused._flash_expanded
    assert fused._cuda_kernel(cpu, torch.float32, 16) is None, "flash has no float32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA kernels' own log-sum-exp")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cuda_kernel_agrees_with_the_reference(dtype):
    from forethought.attention import fused

    generator = torch.Generator(device="cpu").manual_seed(3)
    q, k, v = (torch.randn(2, 4, 50, 32, generator=generator).cuda().to(dtype) for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    kernel = fused._cuda_kernel(q.device, dtype, 32)
    assert kernel is not None
    out, lse = kernel(q, k, v, 0.2)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-3  # bfloat16 inputs, float32 sums in both
    torch.testing.assert_close(lse[..., :50].float(), fused.causal_logsumexp(q, k, 0.2), rtol=tolerance,
                               atol=tolerance)
