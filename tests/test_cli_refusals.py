"""Every refusal of every command: exit 2, one stderr line naming the option as typed, no traceback, no ``--out``.

Also the faults a run meets after it starts: a NaN that names its likely cause, a checkpoint write that fails (a full
disk) ending in one line with the previous checkpoint intact, and the modes of the files a run writes.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch
from devices import main, one_error_line

from forethought.models import save_random_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--max-documents", "12", "--seq-len", "16", "--vocab-size", "300", "--n-layers", "1", "--d-model", "16",
        "--n-heads", "2", "--batch-size", "4", "--steps", "2", "--no-progress"]
SMOKE = ["--preset", "smoke", "--no-progress"]


def _refused(capsys, argv: list[str], out, option: str) -> str:
    line = one_error_line(capsys, argv)
    assert option in line, (option, line)
    assert not out.exists(), sorted(out.rglob("*"))
    return line


# (extra arguments, the option the one line must name)
TRAIN = [
    (["--steps", "0"], "--steps"), (["--steps", "-3"], "--steps"), (["--steps", "2.5"], "--steps"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "100000"], "--batch-size"),
    (["--lr", "inf"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "0"], "--lr"), (["--lr", "-1"], "--lr"),
    (["--beta", "1.5"], "--beta"), (["--beta", "nan"], "--beta"),
    (["--warmup-steps", "5"], "--warmup-steps"), (["--warmup-steps", "-1"], "--warmup-steps"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio"), (["--min-lr-ratio", "inf"], "--min-lr-ratio"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--weight-decay", "inf"], "--weight-decay"),
    (["--adam-betas", "0.9", "1.0"], "--adam-betas"), (["--adam-betas", "0.9", "nan"], "--adam-betas"),
    (["--grad-clip", "0"], "--grad-clip"), (["--grad-clip", "inf"], "--grad-clip"),
    (["--eval-every", "0"], "--eval-every"), (["--eval-batches", "0"], "--eval-batches"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2**40)], "--seed"),
    (["--gradient-split-every", "3"], "--gradient-split-every"),
    (["--gradient-split-batches", "0"], "--gradient-split-batches"),
    (["--regime", "lazy"], "--regime"), (["--regime", "local-myopic"], "--regime"), (["--mode", "soft"], "--mode"),
    (["--mixed-precision", "fp8"], "--mixed-precision"), (["--device", "tpu"], "--device"),
    (["--n-layers", "0"], "--n-layers"), (["--d-model", "-16"], "--d-model"), (["--n-heads", "0"], "--n-heads"),
    (["--vocab-size", "100"], "--vocab-size"),
    (["--seq-len", "1"], "--seq-len"), (["--max-documents", "0"], "--max-documents"),
    (["--min-doc-tokens", "0"], "--min-doc-tokens"), (["--max-sequences", "1"], "--max-sequences"),
    (["--max-sequences", "-1"], "--max-sequences"),
    (["--val-fraction", "1.5"], "--val-fraction"), (["--val-fraction", "0"], "--val-fraction"),
    (["--val-fraction", "nan"], "--val-fraction"),
    (["--dataset", ""], "--dataset"), (["--dataset", "  "], "--dataset"), (["--text-field", ""], "--text-field"),
    (["--model", "no/such/dir"], "--model"),
]


@pytest.mark.parametrize("extra, option", TRAIN, ids=[" ".join(extra) for extra, _ in TRAIN])
def test_train_refusals(tmp_path, capsys, extra, option):
    out = tmp_path / "out"
    _refused(capsys, ["train", "--out", str(out), *TINY, *extra], out, option)


def test_train_shows_the_dataset_given(tmp_path, capsys):
    line = _refused(capsys, ["train", "--out", str(tmp_path / "out"), *TINY, "--dataset", "  "], tmp_path / "out",
                    "--dataset")
    assert "'  '" in line and "text source is empty" in line


def test_train_refuses_a_sequence_longer_than_a_models_context(tmp_path, capsys, tokenizer):
    model = save_random_checkpoint("gpt2", tmp_path / "gpt2", d_model=16, n_layers=1, n_heads=2, n_ctx=8,
                                   tokenizer=tokenizer)
    out = tmp_path / "out"
    _refused(capsys, ["train", "--out", str(out), *TINY, "--model", str(model)], out, "--seq-len")


MYOPIA_GAP = [
    (["--steps", "-5"], "--steps"), (["--lr", "inf"], "--lr"), (["--batch-size", "100000"], "--batch-size"),
    (["--regimes", "lazy"], "--regimes"), (["--regimes", "local-myopic"], "--regimes"),
    (["--seed", "-1"], "--seed"), (["--val-fraction", "1.5"], "--val-fraction"), (["--seq-len", "0"], "--seq-len"),
    (["--warmup-steps", "100"], "--warmup-steps"), (["--beta", "2"], "--beta"), (["--preset", "huge"], "--preset"),
    (["--dataset", ""], "--dataset"),
]


@pytest.mark.parametrize("extra, option", MYOPIA_GAP, ids=[" ".join(extra) for extra, _ in MYOPIA_GAP])
def test_myopia_gap_refusals(tmp_path, capsys, extra, option):
    out = tmp_path / "out"
    _refused(capsys, ["myopia-gap", "--out", str(out), *SMOKE, *extra], out, option)


SYNTHETIC = [
    (["--frequency", "inf"], "--frequency"), (["-F", "nan"], "--frequency"), (["--frequency", "0"], "--frequency"),
    (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"), (["--p", "0"], "--p"), (["--p", "1", "1.5"], "--p"),
    (["--p", "nan"], "--p"), (["--k", "0"], "--k"), (["--seq-len", "3"], "--seq-len"),
    (["--n-heads", "4", "--d-model", "30"], "--d-model"), (["--n-layers", "0"], "--n-layers"),
    (["--d-mlp", "0"], "--d-mlp"), (["--normalization", "BN"], "--normalization"),
    (["--mlp-init-scale", "inf"], "--mlp-init-scale"), (["--batch-size", "0"], "--batch-size"),
    (["--steps", "0"], "--steps"), (["--warmup-steps", "30"], "--warmup-steps"),
    (["--min-lr-ratio", "0"], "--min-lr-ratio"), (["--min-lr-ratio", "2"], "--min-lr-ratio"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--huber-delta", "0"], "--huber-delta"),
    (["--eval-sequences", "0"], "--eval-sequences"), (["--probe-sequences", "0"], "--probe-sequences"),
    (["--seed", "-1"], "--seed"), (["--mode", "soft"], "--mode"), (["--threads", "0"], "--threads"),
    (["--checkpoint-every", "0"], "--checkpoint-every"), (["--device", "tpu"], "--device"),
]


@pytest.mark.parametrize("extra, option", SYNTHETIC, ids=[" ".join(extra) for extra, _ in SYNTHETIC])
def test_synthetic_refusals(tmp_path, capsys, extra, option):
    out = tmp_path / "out"
    _refused(capsys, ["synthetic", "--out", str(out), *SMOKE, *extra], out, option)


@pytest.fixture(scope="module")
def small_gpt2(tmp_path_factory, tokenizer):
    return save_random_checkpoint("gpt2", tmp_path_factory.mktemp("models") / "gpt2", d_model=16, n_layers=1,
                                  n_heads=2, n_ctx=16, tokenizer=tokenizer)


def _scoring(command: str, model, out) -> list[str]:
    return [command, "--model", f"vanilla={model}", "--out", str(out), "--max-sequences", "20", "--seq-len", "8",
            "--offsets", "0", "--no-progress"]


PROBE_SWEEP = [
    (["--max-sequences", "-1"], "--max-sequences"), (["--max-sequences", "0"], "--max-sequences"),
    (["--max-sequences", "1"], "--max-sequences"), (["--seed", "-1"], "--seed"), (["--seeds", "0,-1"], "--seeds"),
    (["--seeds", "0,x"], "--seeds"), (["--val-fraction", "1.5"], "--val-fraction"),
    (["--layers", "99"], "--layers"), (["--layers", "x"], "--layers"), (["--offsets", "100"], "--offsets"),
    (["--offsets", "-1"], "--offsets"), (["--offsets", ""], "--offsets"), (["--seq-len", "64"], "--seq-len"),
    (["--seq-len", "1"], "--seq-len"), (["--top-k", "0"], "--top-k"), (["--max-epochs", "0"], "--max-epochs"),
    (["--batch-size", "0"], "--batch-size"), (["--stream-above-gib", "-1"], "--stream-above-gib"),
    (["--stream-above-gib", "inf"], "--stream-above-gib"), (["--method", "bogus"], "--method"),
    (["--stream", "--method", "ridge"], "--stream"), (["--stream", "--stream-dir", "/no/such/dir"], "--stream-dir"),
    (["--dataset", ""], "--dataset"), (["--device", "tpu"], "--device"), (["--model", "novalue"], "--model"),
]


@pytest.mark.parametrize("extra, option", PROBE_SWEEP, ids=[" ".join(extra) for extra, _ in PROBE_SWEEP])
def test_probe_sweep_refusals(tmp_path, capsys, small_gpt2, extra, option):
    out = tmp_path / "out"
    _refused(capsys, [*_scoring("probe-sweep", small_gpt2, out), *extra], out, option)


COMPARE = [
    (["--seed", "-1"], "--seed"), (["--top-k", "0"], "--top-k"), (["--max-epochs", "0"], "--max-epochs"),
    (["--val-fraction", "2"], "--val-fraction"), (["--layers", "99"], "--layers"), (["--offsets", "100"], "--offsets"),
    (["--seq-len", "64"], "--seq-len"), (["--baseline", "myopic"], "--baseline"), (["--method", "bogus"], "--method"),
    (["--max-sequences", "0"], "--max-sequences"),
]


@pytest.mark.parametrize("extra, option", COMPARE, ids=[" ".join(extra) for extra, _ in COMPARE])
def test_compare_refusals(tmp_path, capsys, small_gpt2, extra, option):
    out = tmp_path / "out"
    _refused(capsys, [*_scoring("compare", small_gpt2, out), *extra], out, option)


def test_lens_view_refusals(tmp_path, capsys, small_gpt2):
    out = tmp_path / "out"
    base = ["lens-view", "--model", str(small_gpt2), "--probes", str(tmp_path), "--prompt", "x", "--out", str(out)]
    _refused(capsys, [*base, "--offset", "-1"], out, "--offset")
    _refused(capsys, [*base[:-2], "--prompt", "", "--out", str(out)], out, "--prompt")
    _refused(capsys, [*base, "--layers", "x"], out, "--layers")
    _refused(capsys, base, out, "--probes")  # holds no probes


GRADIENT_SPLIT = [
    (["--batches", "0"], "--batches"), (["--batch-size", "0"], "--batch-size"), (["--every", "0"], "--every"),
    (["--steps", "0"], "--steps"), (["--threads", "0"], "--threads"), (["--seed", "-1"], "--seed"),
    (["--val-fraction", "1.5"], "--val-fraction"), (["--seq-len", "1"], "--seq-len"), (["--modes", "soft"], "--modes"),
]


@pytest.mark.parametrize("extra, option", GRADIENT_SPLIT, ids=[" ".join(extra) for extra, _ in GRADIENT_SPLIT])
def test_gradient_split_refusals(tmp_path, capsys, extra, option):
    out = tmp_path / "out"
    _refused(capsys, ["gradient-split", "--synthetic-preset", "smoke", "--out", str(out), "--no-progress", *extra],
             out, option)


def test_a_nan_names_its_likely_cause_and_leaves_no_out(tmp_path, capsys):
    out = tmp_path / "out"
    line = _refused(capsys, ["synthetic", "--out", str(out), *SMOKE, "--steps", "3", "--warmup-steps", "0",
                             "--lr", "1e30"], out, "--lr")
    assert "Likely cause" in line and "learning rate" not in line.lower()


# --- a checkpoint write that fails: one line, exit 1, the previous checkpoint intact, no partial file --------------


def _failing_torch_save(monkeypatch, error: Exception, after: int) -> list[int]:
    """Make every ``torch.save`` after the first ``after`` write a partial file and raise ``error``."""
    real = torch.save
    calls = []

    def save(obj, path, *args, **kwargs):
        calls.append(1)
        if len(calls) <= after:
            return real(obj, path, *args, **kwargs)
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 partial")
        raise error

    monkeypatch.setattr(torch, "save", save)
    return calls


FULL_DISK = [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4416 vs 4310"),
    OSError(errno.ENOSPC, "No space left on device"),
]


def _one_failure_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _no_temporaries(folder) -> None:
    assert not [path.name for path in folder.rglob("*") if ".tmp-" in path.name]


@pytest.mark.parametrize("error", FULL_DISK, ids=["torch-unexpected-pos", "ENOSPC"])
def test_train_checkpoint_on_a_full_disk(tmp_path, capsys, monkeypatch, error):
    from forethought.myopic_training.checkpoints import read_checkpoint

    out = tmp_path / "out"
    _failing_torch_save(monkeypatch, error, after=1)
    line = _one_failure_line(capsys, ["train", "--out", str(out), *TINY, "--steps", "4", "--checkpoint-every", "2"])
    assert "checkpoint.pt" in line and ".tmp-" not in line
    _no_temporaries(out)
    monkeypatch.undo()
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 2  # the previous good checkpoint


@pytest.mark.parametrize("error", FULL_DISK, ids=["torch-unexpected-pos", "ENOSPC"])
def test_synthetic_checkpoint_on_a_full_disk(tmp_path, capsys, monkeypatch, error):
    from forethought.myopic_training.checkpoints import read_checkpoint

    out = tmp_path / "out"
    _failing_torch_save(monkeypatch, error, after=1)
    line = _one_failure_line(capsys, ["synthetic", "--out", str(out), *SMOKE, "--steps", "6", "--warmup-steps", "1",
                                      "--checkpoint-every", "3"])
    assert "vanilla.pt" in line
    _no_temporaries(out)
    monkeypatch.undo()
    assert read_checkpoint(out / "checkpoints" / "vanilla.pt")["step"] == 3


# --- file modes -------------------------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(folder) -> dict[str, int]:
    return {str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode) for path in folder.rglob("*")}


def test_every_file_of_a_train_run_gets_the_umasks_mode(tmp_path, umask_022):
    out = tmp_path / "out"
    assert main(["train", "--out", str(out), *TINY]) == 0
    modes = _modes(out)
    assert "model/model.safetensors" in modes
    assert {name: mode for name, mode in modes.items() if mode != (0o755 if (out / name).is_dir() else 0o644)} == {}


def test_every_file_of_a_synthetic_run_gets_the_umasks_mode(tmp_path, umask_022):
    out = tmp_path / "out"
    assert main(["synthetic", "--out", str(out), *SMOKE, "--steps", "4", "--warmup-steps", "1"]) == 0
    modes = _modes(out)
    assert any(name.endswith(".pt") for name in modes)
    assert {name: mode for name, mode in modes.items() if mode != (0o755 if (out / name).is_dir() else 0o644)} == {}


# --- the library's own checks ----------------------------------------------------------------------------------


def test_collect_activations_refuses_an_out_dir_that_is_a_file(tmp_path, native_model):
    from forethought.activations import collect_activations
    from forethought.errors import ForethoughtError

    target = tmp_path / "taken"
    target.write_text("a file")
    tokens = torch.zeros(2, 4, dtype=torch.long)
    for out_dir in (target, target / "below"):
        with pytest.raises(ForethoughtError, match="not a directory") as raised:
            collect_activations(native_model, tokens, hooks="resid", out_dir=out_dir, progress=False)
        assert len(str(raised.value).splitlines()) == 1 and "taken" in str(raised.value)
    assert target.read_text() == "a file"


@pytest.mark.parametrize("source", ["", "   "])
def test_load_texts_shows_an_empty_source(source):
    from forethought.data import load_texts
    from forethought.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="text source is empty") as raised:
        load_texts(source)
    assert repr(source) in str(raised.value)


def test_number_checks_refuse_non_finite_values():
    from forethought.errors import InvalidArgumentError, check_number, check_positive, check_seed

    for value in (float("inf"), float("nan"), -float("inf")):
        with pytest.raises(InvalidArgumentError, match="finite"):
            check_number("x", value)
        with pytest.raises(InvalidArgumentError):
            check_positive("x", value)
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\)"):
        check_number("x", 1.0, low=0, high=1, high_open=True)
    with pytest.raises(InvalidArgumentError, match="seed=-1"):
        check_seed("seed", -1)
    check_number("x", 1, low=0, high=1)
    check_seed("seed", 2**32 - 1)


def test_config_errors_name_the_options():
    from forethought.errors import InvalidArgumentError, as_options, name_options

    assert name_options("warmup_steps=5 is not allowed; expected < steps=3", {"warmup_steps": "--warmup-steps",
                                                                             "steps": "--steps"}) == (
        "--warmup-steps, --steps: warmup_steps=5 is not allowed; expected < steps=3")
    assert name_options("nothing here", {"steps": "--steps"}) == "nothing here"
    assert name_options("max_steps=3", {"steps": "--steps"}) == "max_steps=3"  # whole names only
    with pytest.raises(InvalidArgumentError, match="^--lr: lr=inf"), as_options({"lr": "--lr"}):
        raise InvalidArgumentError("lr=inf is not allowed")
