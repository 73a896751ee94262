import pytest
import torch
from devices import DEVICE

from forethought.activations import Activations, collect_activations
from forethought.errors import ContextLengthError, InvalidArgumentError, OutOfRangeError, UnknownHookError
from forethought.hook_names import hook_name

HOOKS = ["resid", "hook_resid_mid", "attn.hook_z", "ln1.hook_out", "mlp.hook_post"]


def _cache(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return cache


@pytest.mark.parametrize("in_memory", [True, False])
def test_matches_run_with_cache(any_model, tmp_path, in_memory):
    tokens = torch.randint(0, any_model.cfg.d_vocab, (7, 16), generator=torch.Generator().manual_seed(0))
    hooks = [h for h in HOOKS if f"blocks.0.{h}" in any_model.hook_dict or h == "resid"]
    acts = collect_activations(any_model, tokens, hooks=hooks, batch_size=3, progress=False,
                               out_dir=None if in_memory else tmp_path / "acts")
    cache = _cache(any_model, tokens)
    assert torch.equal(acts.tokens, tokens)
    for template in hooks:
        for index, layer in enumerate(acts.layers_by_hook[template]):
            expected = cache[hook_name(any_model, template, layer)].cpu()  # activations are kept on the CPU
            torch.testing.assert_close(acts[template][index], expected, rtol=1e-5, atol=1e-5)


def test_reopen_without_model(native_model, tmp_path):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (5, 8))
    written = collect_activations(native_model, tokens, hooks="resid", layers=[0, 2], batch_size=2,
                                  out_dir=tmp_path / "a", progress=False)
    reopened = Activations.load(tmp_path / "a")
    assert reopened.layers == [0, 2]
    assert torch.equal(reopened.layer(2), written.layer(2))
    assert reopened["resid"].shape == (2, 5, 8, native_model.cfg.d_model)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_selected_layers_and_dtype(native_model):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (3, 8))
    acts = collect_activations(native_model, tokens, hooks=["hook_resid_post"], layers=[1], dtype=torch.float16,
                               progress=False)
    assert acts.layers == [1] and acts[0].dtype == torch.float16
    torch.testing.assert_close(acts.layer(1).float(), _cache(native_model, tokens)["blocks.1.hook_resid_post"].cpu(),
                               atol=1e-2, rtol=1e-2)


def test_bad_inputs(native_model):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (3, 8))
    with pytest.raises(UnknownHookError, match="hook_resid_pst"):
        collect_activations(native_model, tokens, hooks=["hook_resid_pst"], progress=False)
    with pytest.raises(OutOfRangeError, match="layers 0..1"):
        collect_activations(native_model, tokens, hooks=["hook_resid_post"], layers=[5], progress=False)
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        collect_activations(native_model, tokens, batch_size=0, progress=False)
    with pytest.raises(ContextLengthError):
        collect_activations(native_model, torch.zeros(1, 200, dtype=torch.long), progress=False)


def test_non_finite_activations_are_refused(tmp_path):
    from forethought.errors import NumericalError
    from forethought.models import tiny_model

    model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, device=DEVICE)
    with torch.no_grad():
        model.blocks[1].attn.o._original_component.bias.fill_(float("nan"))
    tokens = torch.randint(0, 20, (4, 8))
    with pytest.raises(NumericalError, match="blocks.1"):
        collect_activations(model, tokens, hooks="resid", batch_size=2, out_dir=tmp_path / "acts", progress=False)
    assert list(tmp_path.iterdir()) == []


TWO_PROCESS_SCRIPT = """
import json, os, sys, torch
from safetensors.torch import save_file
from forethought.activations import collect_activations
from forethought.errors import ForethoughtError
from forethought.models import tiny_model
torch.set_num_threads(1)
out = sys.argv[1]
rank = int(os.environ.get("RANK", 0))
model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=40, n_ctx=8, seed=0)
tokens = torch.randint(0, 40, (9, 8), generator=torch.Generator().manual_seed(0))
# 5 batches (3 + 2 per process), 3 batches of a 8 in bfloat16, one batch (the second process gets none)
CASES = {"uneven": (9, 2, torch.float32), "bf16": (8, 3, torch.bfloat16), "one": (3, 4, torch.float32)}

def dump(acts, name):
    save_file({"tokens": acts.tokens, **acts.tensors}, os.path.join(out, name + ".safetensors"))
    json.dump(acts.meta.get("sequences"), open(os.path.join(out, name + ".json"), "w"))

for case, (n, batch_size, dtype) in CASES.items():
    kwargs = dict(hooks=["resid", "attn.hook_z"], batch_size=batch_size, dtype=dtype, progress=False)
    dump(collect_activations(model, tokens[:n], **kwargs), f"{case}_memory_{rank}")
    dump(collect_activations(model, tokens[:n], out_dir=os.path.join(out, case), **kwargs), f"{case}_disk_{rank}")
if os.environ.get("WORLD_SIZE"):
    errors = {}
    try:  # the processes disagree on the tokens
        collect_activations(model, tokens[rank:], out_dir=os.path.join(out, "refused"), progress=False)
    except ForethoughtError as error:
        errors["tokens"] = type(error).__name__
    if rank == 1:  # one process fails half-way: nothing is written, every process raises
        with torch.no_grad():
            model.blocks[1].attn.o._original_component.bias.fill_(float("nan"))
    try:
        collect_activations(model, tokens, batch_size=2, out_dir=os.path.join(out, "failed"), progress=False)
    except ForethoughtError as error:
        errors["nan"] = type(error).__name__
    json.dump(errors, open(os.path.join(out, f"errors_{rank}.json"), "w"))
"""


@pytest.mark.slow
@pytest.mark.cpu_only
def test_two_processes_capture_what_one_process_does(tmp_path):
    """Under torchrun (gloo, CPU) the batches are split between 2 processes: the shard directory is byte for byte
    the one a single process writes, process 0 returns the whole in-memory result, process 1 its share."""
    import json

    from safetensors.torch import load_file
    from two_processes import run_alone_and_in_two_processes

    single, double = run_alone_and_in_two_processes(TWO_PROCESS_SCRIPT, tmp_path)
    # 5 batches over 2 processes: 3 + 2 (6 + 3 sequences); 3 batches: 2 + 1 (6 + 2); 1 batch: 1 + 0
    shares = {"uneven": [0, 6, 9], "bf16": [0, 6, 8], "one": [0, 3, 3]}
    for case, (_, middle, end) in shares.items():
        files = sorted(p.name for p in (single / case).iterdir())
        assert files == sorted(p.name for p in (double / case).iterdir())
        assert all((single / case / f).read_bytes() == (double / case / f).read_bytes() for f in files)
        reference, split = Activations.load(single / case), Activations.load(double / case)
        assert split.meta == reference.meta and torch.equal(split.tokens, reference.tokens)
        for hook in ("resid", "attn.hook_z"):
            assert torch.equal(split[hook], reference[hook])
        whole = load_file(single / f"{case}_memory_0.safetensors")
        for kind in ("memory", "disk"):
            assert json.loads((double / f"{case}_{kind}_1.json").read_text()) == [middle, end]
            main, other = (load_file(double / f"{case}_{kind}_{rank}.safetensors") for rank in (0, 1))
            assert main.keys() == whole.keys()
            for name, tensor in whole.items():
                assert torch.equal(main[name], tensor), (case, kind, name)
                if middle < end:
                    assert torch.equal(other[name], tensor[middle:end] if name == "tokens" else tensor[:, middle:end])
            assert middle < end or other.keys() == {"tokens"}  # no batch, no activations
    assert json.loads((double / "errors_0.json").read_text()) == {"tokens": "DistributedError",
                                                                  "nan": "DistributedError"}
    assert json.loads((double / "errors_1.json").read_text()) == {"tokens": "DistributedError",
                                                                  "nan": "NumericalError"}
    assert not (double / "refused").exists() and not (double / "failed").exists()
    assert not [p.name for p in double.iterdir() if p.name.startswith(".")]  # no temporaries left behind
