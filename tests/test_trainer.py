"""The trainer: settings, schedule, data order, resume, numerical guard, untrusted checkpoints, every regime."""

import json
import math
import os
import signal

import pytest
import torch
from devices import DEVICE

from forethought.data import load_texts, make_token_splits
from forethought.errors import CheckpointError, DataError, InvalidArgumentError, NumericalError
from forethought.models import load_model, tiny_model
from forethought.myopic_training import TrainConfig, TrainingInterrupted, train
from forethought.myopic_training.trainer import BatchOrder, read_checkpoint, warmup_cosine_schedule

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def splits(tokenizer):
    return make_token_splits(load_texts("builtin")[:12], tokenizer, seq_len=16, val_fraction=0.1, seed=0)


def _model(tokenizer, seed=0):
    return tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, seed=seed,
                      tokenizer=tokenizer, device=DEVICE)


def _config(**overrides):
    settings = dict(steps=8, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=4, checkpoint_every=4, progress=False)
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("overrides, match", [
    ({"steps": 0}, "steps=0"),
    ({"steps": -3}, "steps=-3"),
    ({"steps": 2.5}, "steps=2.5"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": -8}, "batch_size=-8"),
    ({"lr": 0.0}, "lr=0.0"),
    ({"lr": -1e-3}, "lr=-0.001"),
    ({"lr": math.inf}, "lr=inf"),
    ({"regime": "lazy"}, "regime='lazy'"),
    ({"mode": "soft"}, "mode='soft'"),
    ({"beta": 1.5}, "beta=1.5"),
    ({"warmup_steps": 8}, "warmup_steps=8"),
    ({"eval_every": 0}, "eval_every=0"),
    ({"grad_clip": -1.0}, "grad_clip=-1.0"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"mixed_precision": "fp8"}, "mixed_precision='fp8'"),
])
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(InvalidArgumentError, match=match):
        _config(**overrides)


def test_default_warmup_is_a_tenth_of_the_steps_up_to_100():
    assert TrainConfig(steps=50).warmup_steps == 5
    assert TrainConfig(steps=5000).warmup_steps == 100


def test_schedule_is_linear_warmup_then_cosine():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    steps, warmup, floor = 12, 3, 0.1
    schedule = warmup_cosine_schedule(optimizer, steps, warmup, floor)
    ours = []
    for _ in range(steps):
        ours.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    expected = [2.0 * (s + 1) / warmup if s < warmup else
                2.0 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
                for s in range(steps)]
    assert ours == pytest.approx(expected, rel=1e-12)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    order = BatchOrder(n_sequences=11, batch_size=3, seed=5)
    epoch = torch.cat([order.batch(step) for step in range(3)])
    assert len(set(epoch.tolist())) == 9  # three disjoint batches per epoch, the incomplete one dropped
    assert torch.equal(order.batch(4), BatchOrder(11, 3, 5).batch(4))
    assert not torch.equal(order.batch(0), order.batch(3))  # a new permutation each epoch
    assert not torch.equal(order.batch(0), BatchOrder(11, 3, 6).batch(0))


def test_training_lowers_the_loss_and_writes_a_loadable_run(tokenizer, splits, tmp_path):
    model = _model(tokenizer)
    result = train(_config(steps=30, eval_every=10, checkpoint_every=10, out_dir=tmp_path), model, splits)
    assert [r["step"] for r in result.history] == list(range(1, 31))
    assert [r["step"] for r in result.history if "eval_loss" in r] == [10, 20, 30]
    assert sum(result.losses[-5:]) < sum(result.losses[:5]) - 0.5
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == result.history
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 30
    reloaded = load_model(tmp_path / "model", device=DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(splits.validation), model(splits.validation))
    assert not model.training, "dropout stays off: the trainer keeps the model in eval mode"
    frame = result.to_frame()
    assert list(frame["step"]) == list(range(1, 31)) and frame["eval_loss"].notna().sum() == 3
    assert result.plot().axes[0].get_xlabel() == "step"
    assert repr(result).startswith("TrainResult(vanilla, 30 steps from step 0, final loss ")
    assert "\n" not in repr(result) and "Parameter" not in repr(result)


@pytest.mark.parametrize("regime", ["vanilla", "myopic", "local-myopic", "bigram"])
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tokenizer, splits, tmp_path, regime):
    config = dict(regime=regime, mode="cutgrad", beta=0.25) if regime == "myopic" else dict(regime=regime)
    full = train(_config(**config), _model(tokenizer), splits)

    def crash(record):
        if record["step"] == 6:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_config(**config, out_dir=tmp_path), _model(tokenizer), splits, on_step=crash)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    resumed = train(_config(**config, out_dir=tmp_path, resume=True), _model(tokenizer), splits)
    assert [r["step"] for r in resumed.history] == list(range(1, 9))
    for ours, reference in zip(resumed.history, full.history, strict=True):
        for key in reference:
            assert ours[key] == pytest.approx(reference[key], abs=1e-6, rel=1e-6), (key, ours, reference)
    for (name, a), b in zip(resumed.model.state_dict().items(), full.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=name)


def test_resuming_a_finished_run_is_a_no_op(tokenizer, splits, tmp_path):
    first = train(_config(out_dir=tmp_path), _model(tokenizer), splits)
    again = train(_config(out_dir=tmp_path, resume=True), _model(tokenizer), splits)
    assert again.history == first.history


def test_signal_writes_a_checkpoint_before_stopping(tokenizer, splits, tmp_path):
    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN in a background job

    def interrupt(record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="after step 3"):
        train(_config(out_dir=tmp_path), _model(tokenizer), splits, on_step=interrupt)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the trainer's handler is gone again


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tokenizer, splits, tmp_path):
    model = _model(tokenizer)
    poisoned = {"on": False}
    model.embed.register_forward_hook(lambda module, args, output: output * math.nan if poisoned["on"] else output)

    def poison_after_step_4(record):
        poisoned["on"] = record["step"] == 4

    with pytest.raises(NumericalError, match=r"loss is nan at step 5.*last good checkpoint \(step 4\)"):
        train(_config(out_dir=tmp_path), model, splits, on_step=poison_after_step_4)
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters()), "no update with a NaN loss"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_payload_in_a_checkpoint_is_refused(tokenizer, splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "forethought-train-checkpoint-v1", "step": 1, "payload": _Payload()},
               tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="pickled objects"):
        read_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="pickled objects"):
        train(_config(out_dir=tmp_path, resume=True), _model(tokenizer), splits)
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_checkpoint_is_refused(tokenizer, splits, tmp_path):
    train(_config(steps=4, out_dir=tmp_path), _model(tokenizer), splits)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(_config(steps=4, out_dir=tmp_path, resume=True), _model(tokenizer), splits)


def test_resume_refuses_other_settings_and_existing_runs_need_resume(tokenizer, splits, tmp_path):
    train(_config(steps=4, out_dir=tmp_path), _model(tokenizer), splits)
    with pytest.raises(CheckpointError, match=r"lr=0.003 \(now 0.001\)"):
        train(_config(steps=4, lr=1e-3, out_dir=tmp_path, resume=True), _model(tokenizer), splits)
    with pytest.raises(InvalidArgumentError, match="already holds a training run"):
        train(_config(steps=4, out_dir=tmp_path), _model(tokenizer), splits)


def test_bad_data_is_refused(tokenizer, splits):
    with pytest.raises(DataError, match="10 training sequences are fewer than batch_size=16"):
        train(_config(batch_size=16), _model(tokenizer), (splits.train[:10], splits.validation))
    with pytest.raises(Exception, match="outside the model's vocabulary"):
        train(_config(), tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=50, n_ctx=16, device=DEVICE), splits)


@pytest.mark.parametrize("regime", ["vanilla", "myopic", "local-myopic", "bigram"])
@pytest.mark.parametrize("backend", ["native", "gpt2", "neox", "llama"])
def test_every_regime_trains_every_backend(backend, checkpoint_dirs, tokenizer, splits, regime):
    # a fresh model per case: HF GPT-2 checkpoints have dropout 0.1, which the trainer must switch off
    model = _model(tokenizer) if backend == "native" else load_model(checkpoint_dirs[backend], device=DEVICE)
    model.train()
    before = {name: t.clone() for name, t in model.state_dict().items()}  # TransformerLens names on every backend
    result = train(_config(regime=regime, steps=2, warmup_steps=0, eval_every=2), model, splits)
    assert all(math.isfinite(loss) for loss in result.losses) and math.isfinite(result.eval_loss)
    changed = {name for name, t in model.state_dict().items() if not torch.equal(t.cpu(), before[name].cpu())}
    assert any(".attn.v." in name for name in changed)
    assert any(".attn.k." in name for name in changed) != (regime == "bigram"), "bigram never uses keys"


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_fine_tuned_weights_survive_save_and_load(checkpoint_dirs, splits, tmp_path, family):
    model = load_model(checkpoint_dirs[family], device=DEVICE)
    result = train(_config(steps=3, lr=1e-2, out_dir=tmp_path), model, splits)
    paths = (checkpoint_dirs[family], tmp_path / "model")
    original, reloaded = (load_model(path, device=DEVICE).eval() for path in paths)
    with torch.no_grad():
        tuned, before, after = result.model(splits.validation), original(splits.validation), reloaded(
            splits.validation)
    assert not torch.allclose(tuned, before, atol=1e-3), "fine-tuning must change the model"
    torch.testing.assert_close(after, tuned, atol=1e-5, rtol=1e-5)


def test_each_run_trains_on_its_own_device_whatever_ran_before_in_this_process(tokenizer, splits):
    """accelerate keeps one process state: a CPU run must not pin the runs after it to the CPU, nor the reverse."""
    for device in ("cpu", DEVICE.type, "cpu"):
        model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, tokenizer=tokenizer,
                           device=device)
        result = train(_config(steps=1, warmup_steps=0, eval_every=1, device=device), model, splits)
        assert next(result.model.parameters()).device.type == device


def test_runs_with_other_precision_settings_in_one_process(tokenizer, splits):
    first = train(_config(steps=2, warmup_steps=0, mixed_precision="bf16", device="cpu"), _model(tokenizer), splits)
    second = train(_config(steps=2, warmup_steps=0, mixed_precision="no"), _model(tokenizer), splits)
    assert all(math.isfinite(loss) for loss in first.losses + second.losses)
    assert first.losses[0] != second.losses[0], "bf16 autocast changes the numbers"


def test_a_model_trained_in_mixed_precision_computes_in_its_own_precision_afterwards(tokenizer, splits, tmp_path):
    """Steps run under bf16 autocast, but the model a run returns is no longer wrapped in it: its logits are those
    of the same weights saved and loaded (on a GPU the default mixed precision is bf16, and a run's own report and a
    later `compare` must score the same model the same way)."""
    model = _model(tokenizer)
    result = train(_config(steps=2, warmup_steps=0, mixed_precision="bf16", out_dir=tmp_path), model, splits)
    assert "_original_forward" not in vars(result.model)
    reloaded = load_model(tmp_path / "model", device=DEVICE)
    with torch.no_grad():
        ours, theirs = result.model(splits.validation[:4]), reloaded(splits.validation[:4])
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
