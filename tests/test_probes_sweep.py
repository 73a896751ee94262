"""probe_sweep on tasks with known answers, its table, its plot and its errors."""

import json
import math
from dataclasses import replace
from unittest.mock import patch

import pytest
import torch
from devices import DEVICE

from forethought.data import TokenSplits
from forethought.errors import DataError, ForethoughtError, InvalidArgumentError, OutOfRangeError
from forethought.models import tiny_model
from forethought.plots import plot_probe_heatmap
from forethought.probes import load_probes
from forethought.probes.feature_store import FeatureStore
from forethought.probes.sweep import COLUMNS, ProbeSweepConfig, probe_sweep
from forethought.probes.vocabulary import VocabProbeConfig

VOCAB, SEQ_LEN = 16, 16
FAST = ProbeSweepConfig(vocab=VocabProbeConfig(max_epochs=30, patience=3))


pytestmark = pytest.mark.usefixtures("single_thread")


def skip_one_chain(n_seq, seed=0):
    """x_{t+2} = f(x_t) for a fixed permutation f that is one cycle over the vocabulary; x_0, x_1 random.

    The token two ahead (offset 1) is a function of the current token; the next token (offset 0) and the one
    three ahead (offset 2) depend on x_{t-1}, which the current token's embedding does not hold.
    """
    generator = torch.Generator().manual_seed(seed)
    cycle = torch.randperm(VOCAB, generator=generator)
    step = torch.empty(VOCAB, dtype=torch.long)
    step[cycle] = cycle.roll(-1)
    tokens = torch.empty(n_seq, SEQ_LEN, dtype=torch.long)
    tokens[:, :2] = torch.randint(0, VOCAB, (n_seq, 2), generator=generator)
    for t in range(2, SEQ_LEN):
        tokens[:, t] = step[tokens[:, t - 2]]
    return tokens


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=VOCAB, n_ctx=SEQ_LEN, device=DEVICE)


@pytest.fixture(scope="module")
def known_answer(model):
    sweep = probe_sweep({"random": model}, skip_one_chain(300), offsets=[0, 1, 2], config=FAST, progress=False)
    return sweep.to_frame()


def test_known_answer_offset_one_is_read_from_the_current_token(known_answer):
    table = known_answer.set_index(["layer", "offset"])
    embeddings = table.loc[0]
    assert embeddings.loc[1, "top1"] > 0.97  # the token two ahead is a function of the current one
    assert embeddings.loc[1, "unigram_top1"] < 0.15  # ... and not guessable without it
    assert embeddings.loc[1, "bigram_top1"] > 0.97  # the bigram baseline sees exactly that
    for offset in (0, 2):  # the embedding alone cannot know x_{t-1}
        assert embeddings.loc[offset, "top1"] < 0.2
    for layer in (1, 2):  # the random model's residual stream still carries the current token
        assert table.loc[(layer, 1), "top1"] > 0.9


def test_table_layout(known_answer):
    assert list(known_answer.columns) == COLUMNS
    assert len(known_answer) == 3 * 3  # 3 depths (embeddings + 2 blocks) × 3 offsets, one method
    row = known_answer.iloc[0]
    assert row["hook"] == "blocks.0.hook_resid_pre" and row["label_space"] == "vocab" and row["n_classes"] == VOCAB
    assert row["n_train"] == 240 * 13 and row["n_test"] == 60 * 13  # 13 shared positions per sequence
    assert (known_answer["selectivity"] == known_answer["top1"] - known_answer["control_top1"]).all()
    assert known_answer["r2"].isna().all() and not known_answer["greedy_top1"].isna().any()


def test_iid_tokens_every_offset_is_at_chance(model):
    tokens = torch.randint(0, 8, (300, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    table = probe_sweep(model, tokens, offsets=[1, 2, 3], config=FAST, progress=False).to_frame()
    assert table["model"].unique().tolist() == ["model"]
    assert ((table["top1"] - 1 / 8).abs() < 0.05).all(), table["top1"]
    assert ((table["bigram_top1"] - 1 / 8).abs() < 0.05).all()


def test_two_models_methods_top_k_and_saved_probes(model, tmp_path):
    tokens = skip_one_chain(80, seed=2)
    splits = TokenSplits(train=tokens[:60], validation=tokens[60:], tokenizer=None)
    other = tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=VOCAB, n_ctx=SEQ_LEN, seed=1, device=DEVICE)
    config = ProbeSweepConfig(vocab=VocabProbeConfig(max_epochs=3))
    table = probe_sweep({"a": model, "b": other}, splits, layers=[0, 2], offsets=[1], top_k=5,
                        method=["vocab", "future_lens"], config=config, save_dir=tmp_path, progress=False).to_frame()
    assert len(table) == 2 * 2 * 2 and set(table["label_space"]) == {"top5+other"} and set(table["n_classes"]) == {6}
    assert table["coverage"].between(0, 1).all()
    lens = table[table["method"] == "future_lens"]
    assert lens["r2"].notna().all() and lens["control_top1"].notna().all()
    probes = load_probes(tmp_path / "a" / "vocab")
    assert probes.layers == [0, 2] and probes.meta["model_name"] == "a"
    assert load_probes(tmp_path / "b" / "future_lens_control", model=other).tasks[0].control
    fig = plot_probe_heatmap(table, metric="top1")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["a", "b", "b − a"]


def test_logistic_and_ridge_methods(model):
    tokens = skip_one_chain(60, seed=3)
    table = probe_sweep(model, tokens, layers=[0], offsets=[1], method=["logistic", "ridge"], top_k=5,
                        progress=False).to_frame().set_index("method")
    logistic = table.loc["logistic"]  # offset 1 is readable, but only the in-space targets can be hit
    assert logistic["top1_in_space"] > 0.9 and logistic["control_top1"] > 0
    assert logistic["coverage"] - 0.05 < logistic["top1"] <= logistic["coverage"] < 0.5
    assert math.isnan(table.loc["ridge", "control_top1"]) and math.isnan(table.loc["ridge", "selectivity"])
    assert not math.isnan(table.loc["ridge", "r2"]) and math.isnan(table.loc["logistic", "r2"])


def test_lens_on_the_last_layer_agrees_with_the_model_in_any_label_space(model):
    """The least-squares lens from the final residual to itself is the model, so it predicts what the model
    predicts; in a top-k + "other" space it still reproduces the model's final residual."""
    from forethought.probes.future_lens import FutureLensConfig

    config = ProbeSweepConfig(control=False, future_lens=FutureLensConfig(ridge=0.0, max_epochs=0))
    for top_k in (None, 3):
        row = probe_sweep(model, skip_one_chain(40), layers=[2], offsets=[0], method="future_lens", top_k=top_k,
                          config=config, progress=False).to_frame().iloc[0]
        assert row["r2"] > 0.99
        assert row["greedy_top1"] > 0.99 if top_k is None else row["greedy_top1"] <= 1


@pytest.mark.parametrize("kwargs, error", [
    ({"offsets": [15]}, OutOfRangeError),  # offset + 1 must stay inside a 16-token sequence
    ({"offsets": [14, -1]}, InvalidArgumentError),
    ({"layers": [3]}, OutOfRangeError),  # depths 0..2 on a 2-layer model
    ({"method": "telepathy"}, InvalidArgumentError),
    ({"top_k": 0}, InvalidArgumentError),
])
def test_bad_arguments(model, kwargs, error):
    with pytest.raises(error):
        probe_sweep(model, skip_one_chain(20), progress=False, **kwargs)


@pytest.mark.usefixtures("unchecked_shapes")
def test_bad_data(model):
    with pytest.raises(DataError):
        probe_sweep(model, torch.zeros(0, SEQ_LEN, dtype=torch.long), progress=False)
    with pytest.raises(DataError):
        probe_sweep(model, skip_one_chain(2), progress=False)  # too few sequences to split three ways
    with pytest.raises(InvalidArgumentError):
        probe_sweep(model, torch.rand(4, SEQ_LEN), progress=False)
    with pytest.raises(ForethoughtError):  # ids outside the model's vocabulary
        probe_sweep(model, skip_one_chain(20) + VOCAB, progress=False)
    with pytest.raises(InvalidArgumentError):
        probe_sweep({}, skip_one_chain(20), progress=False)
    assert math.isclose(FAST.test_fraction, 0.2)


def test_an_iid_stream_with_a_small_top_k_gives_chance_top1():
    """i.i.d. tokens over 40 words hold nothing about the future; with --top-k 2 the old scoring read 0.95
    (predicting "other"). Every method and baseline must now stay near chance (1/40) and below coverage.
    (``greedy_top1`` is left out: agreeing with the model's own next-token prediction, which its hidden state
    determines, is no information about the future, so it has no chance level here.)"""
    tokens = torch.randint(0, 40, (160, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=40, n_ctx=SEQ_LEN, device=DEVICE)
    table = probe_sweep(model, tokens, offsets=[0, 1], top_k=2, config=FAST, progress=False).to_frame()
    for column in ("top1", "unigram_top1", "bigram_top1"):
        assert table[column].max() < 2 / 40, column
    assert (table["top1"] <= table["coverage"]).all() and (table["coverage"] < 0.1).all()
    assert (table["top1_ci_low"] <= table["top1"]).all() and (table["top1"] <= table["top1_ci_high"]).all()


@pytest.mark.parametrize("method", ["vocab", "future_lens", "ridge"])
@pytest.mark.parametrize("top_k", [None, 5])
def test_a_streamed_sweep_equals_the_in_memory_sweep(model, tmp_path, top_k, method):
    """Features (and future residuals) written to disk batch by batch and read back a chunk or minibatch at a time
    give the same table, for every method that streams. The pieces are the same values in the same (contiguous)
    layout and every sum runs in the same order, so on the CPU the tables are identical; on a GPU they agree to
    1e-5 relative, 1e-6 absolute (its kernels need not be deterministic from one call to the next)."""
    from forethought.probes.future_lens import FutureLensConfig

    tokens = skip_one_chain(120)
    config = ProbeSweepConfig(batch_size=7, eval_batch_size=300, stream_dir=str(tmp_path),
                              vocab=VocabProbeConfig(max_epochs=4, batch_size=128),
                              future_lens=FutureLensConfig(max_epochs=3, batch_size=128, eval_batch_size=300))
    kwargs = {"offsets": [0, 1, 2], "top_k": top_k, "config": config, "method": method, "progress": False}
    in_memory = probe_sweep({"random": model}, tokens, stream=False, **kwargs).to_frame()
    streamed = probe_sweep({"random": model}, tokens, stream=True, **kwargs).to_frame()
    assert list(streamed.columns) == list(in_memory.columns)
    numeric = [column for column in COLUMNS if in_memory[column].dtype.kind == "f"]
    assert (streamed.drop(columns=numeric) == in_memory.drop(columns=numeric)).all().all()
    torch.testing.assert_close(torch.tensor(streamed[numeric].to_numpy()), torch.tensor(in_memory[numeric].to_numpy()),
                               rtol=1e-5, atol=1e-6, equal_nan=True)
    if DEVICE.type == "cpu":
        assert streamed.equals(in_memory)
    assert not list(tmp_path.iterdir())  # the temporary feature files are gone


def test_streaming_chooses_itself_and_refuses_methods_it_cannot_run(model, tmp_path):
    tokens = skip_one_chain(30)
    tiny_budget = ProbeSweepConfig(stream_above_gib=1e-9, stream_dir=str(tmp_path / "missing"),
                                   vocab=VocabProbeConfig(max_epochs=1))
    with pytest.raises(InvalidArgumentError, match="stream_dir"):
        probe_sweep(model, tokens, offsets=[0], config=tiny_budget, progress=False)
    tiny_budget.stream_dir = str(tmp_path)
    seen = []
    create = FeatureStore.create
    with patch.object(FeatureStore, "create", side_effect=lambda *a, **k: seen.append(a) or create(*a, **k)):
        probe_sweep(model, tokens, offsets=[0], config=tiny_budget, progress=False)
        assert len(seen) == 3  # "auto" streamed fit, val and test: they exceed the budget
        probe_sweep(model, tokens, offsets=[0], config=replace(tiny_budget, stream_above_gib=1.0), progress=False)
        assert len(seen) == 3  # ... and keeps data within it in memory
        table = probe_sweep(model, tokens, offsets=[0], method="ridge", config=tiny_budget, progress=False).to_frame()
        assert len(table) == 3 and len(seen) == 3 + 6  # ridge streams too: each split's features and future residuals
        table = probe_sweep(model, tokens, offsets=[0], method="logistic", config=tiny_budget,
                            progress=False).to_frame()
        assert len(table) == 3 and len(seen) == 9  # logistic cannot stream, so "auto" keeps it in memory
    with pytest.raises(InvalidArgumentError, match="stream=True cannot fit method='logistic'.*L-BFGS"):
        probe_sweep(model, tokens, method=["vocab", "logistic"], stream=True, progress=False)
    with pytest.raises(InvalidArgumentError, match="stream="):
        probe_sweep(model, tokens, stream="yes", progress=False)


TWO_PROCESS_SWEEP = """
import os, sys
import torch
from forethought.models import tiny_model
from forethought.probes.sweep import ProbeSweepConfig, probe_sweep
from forethought.probes.vocabulary import VocabProbeConfig
from forethought.probes.future_lens import FutureLensConfig

torch.manual_seed(0)
out = sys.argv[1]
rank = int(os.environ.get("RANK", 0))
model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=12, n_ctx=12, seed=0)
tokens = torch.randint(0, 12, (60, 12), generator=torch.Generator().manual_seed(1))
tokens[:, 2::2] = (tokens[:, :-2:2] * 5 + 1) % 12  # something to read two tokens ahead
config = ProbeSweepConfig(vocab=VocabProbeConfig(max_epochs=3), future_lens=FutureLensConfig(max_epochs=1))
table = probe_sweep(model, tokens, offsets=[0, 1], method=["vocab", "future_lens"], config=config,
                    save_dir=os.path.join(out, "probes"), progress=False)
table.to_frame().to_csv(os.path.join(out, f"table_{rank}.csv"), index=False)
"""


@pytest.mark.slow
@pytest.mark.cpu_only
def test_two_processes_sweep_what_one_process_does(tmp_path):
    """Under torchrun (gloo, CPU) each process probes its own depths (3 over 2: 2 + 1); the gathered table and
    the saved probes, joined along the layers, equal a single process's."""
    import pandas as pd
    from safetensors.torch import load_file
    from two_processes import run_alone_and_in_two_processes

    single, double = run_alone_and_in_two_processes(TWO_PROCESS_SWEEP, tmp_path)
    reference = pd.read_csv(single / "table_0.csv")
    assert len(reference) == 3 * 2 * 2
    for rank in (0, 1):  # every process gets the whole table
        pd.testing.assert_frame_equal(pd.read_csv(double / f"table_{rank}.csv"), reference, rtol=1e-5)
    saved = sorted(str(p.relative_to(single)) for p in (single / "probes").rglob("*") if p.is_file())
    assert saved == sorted(str(p.relative_to(double)) for p in (double / "probes").rglob("*") if p.is_file())
    for path in saved:
        if path.endswith(".safetensors"):
            expected, joined = load_file(single / path), load_file(double / path)
            for name, tensor in expected.items():
                torch.testing.assert_close(joined[name], tensor, rtol=1e-5, atol=1e-6)
        else:
            layers = [json.loads((root / path).read_text())["layers"] for root in (single, double)]
            assert layers[0] == layers[1]


def test_paired_intervals_resample_both_sides_together():
    """Each difference's interval is the percentile bootstrap of the difference itself, the two predictors' hits of
    a test sequence resampled together (checked against a slow loop over the resamples)."""
    import numpy as np

    from forethought.bootstrap import bootstrap_weights
    from forethought.probes.sweep import SEQUENCE_HITS, SequenceHits, paired_intervals

    rng = np.random.default_rng(0)
    counts = rng.integers(5, 15, 30).astype(float)
    base = rng.binomial(counts.astype(int), 0.3).astype(float)
    rows = []
    for model, shift in (("vanilla", 0), ("myopic", 1)):
        for layer in (0, 1):
            probe = np.minimum(base + shift * (layer == 1), counts)
            rows.append({"model": model, "method": "vocab", "layer": layer, "offset": 0,
                         SEQUENCE_HITS: SequenceHits(probe, base * 0.5, counts)})
    out = paired_intervals(rows, "vanilla", n_resamples=200, seed=3)
    weights = bootstrap_weights(30, 200, seed=3).numpy()

    def slow(values):
        stats = sorted(float((w * values).sum() / (w * counts).sum()) for w in weights)
        return np.quantile(stats, [0.025, 0.975])

    for i, row in enumerate(rows):
        h = row[SEQUENCE_HITS]
        np.testing.assert_allclose([out["gain_over_baseline_ci_low"][i], out["gain_over_baseline_ci_high"][i]],
                                   slow(h.probe - h.best_baseline), rtol=1e-9)
        depth0 = rows[2 * (i // 2)][SEQUENCE_HITS].probe
        np.testing.assert_allclose([out["gain_over_depth0_ci_low"][i], out["gain_over_depth0_ci_high"][i]],
                                   slow(h.probe - depth0), rtol=1e-9, atol=1e-12)
    assert np.isnan(out["minus_reference"][0]) and out["minus_reference"][2] == 0 == out["minus_reference_ci_low"][2]
    expected = slow(rows[3][SEQUENCE_HITS].probe - rows[1][SEQUENCE_HITS].probe)
    np.testing.assert_allclose([out["minus_reference_ci_low"][3], out["minus_reference_ci_high"][3]], expected)
    assert out["minus_reference_ci_low"][3] > 0  # one more hit in every sequence: the interval excludes 0


def test_a_model_against_itself_differs_by_nothing(model):
    """The same model under two names: every paired difference is exactly 0 with the interval [0, 0]."""
    table = probe_sweep({"a": model, "b": model}, skip_one_chain(60), offsets=[0, 1], config=FAST, reference="a",
                        progress=False).to_frame()
    other = table[table["model"] == "b"]
    assert (other[["minus_reference", "minus_reference_ci_low", "minus_reference_ci_high"]] == 0).all().all()
    assert table[table["model"] == "a"]["minus_reference"].isna().all()
