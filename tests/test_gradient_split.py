"""The gradient split g = g_m + g_p: exactness, the slow references, the null cases and a closed form."""

from __future__ import annotations

import math

import pytest
import torch
from devices import DEVICE
from torch.nn import functional as F

from forethought.attention import ablate_past
from forethought.errors import InvalidArgumentError
from forethought.models import tiny_model
from forethought.myopic_training.gradient_split import (
    METRICS,
    PROJECTIONS,
    TOTAL,
    gradient_split,
    lm_loss,
    parameter_groups,
    split_gradient,
    split_history,
)
from forethought.myopic_training.reference import accumulate_per_position_gradients
from forethought.synthetic.model import RegressionModelConfig, RegressionTransformer

pytestmark = pytest.mark.usefixtures("single_thread")

MODES = ("strict", "cutgrad")


def _tokens(model, n=4, pos=8, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (n, pos), generator=torch.Generator().manual_seed(seed))


def _relative(parts, names):
    """‖g_p‖ / ‖g‖ over the parameters ``names``."""
    precaching = parts.precaching
    num = sum(float(precaching[n].square().sum()) for n in names)
    den = sum(float(parts.vanilla[n].square().sum()) for n in names)
    return math.sqrt(num / den)


def _names(model, group):
    return [name for name, _ in parameter_groups(model)[group]]


# -- exactness and the slow references ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_parts_add_up_exactly_and_match_the_references(any_model, mode):
    tokens = _tokens(any_model)
    parts = split_gradient(any_model, tokens, mode=mode)
    for name in parts.vanilla:
        assert torch.equal(parts.myopic[name] + parts.precaching[name], parts.vanilla[name]), name

    any_model.zero_grad(set_to_none=True)
    any_model(tokens, return_type="loss").backward()
    vanilla = {name: p.grad for name, p in any_model.named_parameters() if p.grad is not None}
    any_model.zero_grad(set_to_none=True)
    accumulate_per_position_gradients(any_model, tokens, mode=mode)
    reference = {name: p.grad for name, p in any_model.named_parameters() if p.grad is not None}
    any_model.zero_grad(set_to_none=True)
    for name, grad in parts.vanilla.items():
        assert torch.allclose(grad.float(), vanilla.get(name, torch.zeros_like(grad.float())), atol=1e-6), name
        expected = reference.get(name, torch.zeros_like(grad.float()))
        assert torch.allclose(parts.myopic[name].float(), expected, atol=1e-5, rtol=1e-4), name
    assert _relative(parts, list(parts.vanilla)) > 1e-3  # the past matters: g_p is not zero on this batch


def test_parameter_groups_cover_every_trainable_parameter_once(any_model):
    groups = parameter_groups(any_model)
    members = [p for group in groups.values() for _, p in group]
    trainable = {id(p) for p in any_model.parameters() if p.requires_grad}
    assert len(members) == len({id(p) for p in members}) == len(trainable)
    assert "embed" in groups and "unembed" in groups  # a tied GPT-2 unembedding weight sits in embed
    for layer in range(any_model.cfg.n_layers):
        for group in (*(f"blocks.{layer}.attn.{name}" for name in PROJECTIONS.values()), f"blocks.{layer}.mlp",
                      f"blocks.{layer}.ln"):
            assert group in groups, group
    assert "other" not in groups


@pytest.mark.parametrize("mode", MODES)
def test_what_acts_only_at_the_present_gets_no_precaching_gradient(any_model, mode):
    """The last layer's W_Q, W_O, MLP and the unembedding act on position t for the loss at t alone: g_p = 0 there.
    Its W_K, W_V get g_p in strict mode (past keys and values are constants), none in cutgrad mode."""
    parts = split_gradient(any_model, _tokens(any_model), mode=mode)
    last = any_model.cfg.n_layers - 1
    groups = parameter_groups(any_model)
    for group in (f"blocks.{last}.attn.W_Q", f"blocks.{last}.attn.W_O", f"blocks.{last}.mlp", "unembed"):
        if group in groups:
            assert _relative(parts, _names(any_model, group)) < 1e-4, group
    kv = _relative(parts, _names(any_model, f"blocks.{last}.attn.W_K") + _names(any_model, f"blocks.{last}.attn.W_V"))
    assert kv > 1e-3 if mode == "strict" else kv < 1e-4


def test_expected_gradient_is_the_sum_over_batches(native_model):
    tokens = _tokens(native_model, n=6)
    split = gradient_split(native_model, tokens, batch_size=2, modes="strict")
    assert split.n_batches == 3
    parts = [split_gradient(native_model, tokens[i : i + 2], mode="strict") for i in range(0, 6, 2)]
    g = torch.cat([sum(p.vanilla[n] for p in parts).flatten() for n in parts[0].vanilla])
    g_m = torch.cat([sum(p.myopic[n] for p in parts).flatten() for n in parts[0].vanilla])
    g_p = g - g_m
    assert split.share("strict") == pytest.approx(float(g_p @ g / (g @ g)), rel=1e-9)
    frame = split.to_frame().set_index(["group", "mode"])
    total = frame.loc[(TOTAL, "strict")]
    assert total["norm_ratio"] == pytest.approx(float(g_p.norm() / g.norm()), rel=1e-9)
    assert total["cos_precaching_myopic"] == pytest.approx(float(g_p @ g_m / (g_p.norm() * g_m.norm())), rel=1e-9)
    first = parts[0]
    g0 = torch.cat([first.vanilla[n].flatten() for n in first.vanilla])
    p0 = torch.cat([first.precaching[n].flatten() for n in first.vanilla])
    batch0 = split.per_batch.query("batch == 0 and group == @TOTAL")["precaching_share"].item()
    assert batch0 == pytest.approx(float(p0 @ g0 / (g0 @ g0)), rel=1e-9)
    assert total["share_batch_mean"] == pytest.approx(
        split.per_batch.query("group == @TOTAL")["precaching_share"].mean())


# -- the null cases ----------------------------------------------------------------------------------------------


def test_share_is_zero_when_attention_sees_no_past(native_model):
    def bigram_loss(model, tokens):
        with ablate_past(model):
            return lm_loss(model, tokens)

    split = gradient_split(native_model, _tokens(native_model), loss_fn=bigram_loss, batch_size=2)
    frame = split.to_frame()
    assert (frame["precaching_share"] == 0).all() and (frame["norm_ratio"] == 0).all()
    assert frame["cos_precaching_myopic"].isna().all()  # g_p = 0 has no direction
    assert split.per_batch["precaching_share"].abs().max() == 0


def test_share_is_zero_with_a_single_position():
    model = RegressionTransformer(RegressionModelConfig(n_layers=2, d_model=16, n_heads=2, n_ctx=4))
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 2, generator=generator), torch.randn(8, 1, generator=generator))
               for _ in range(2)]
    split = gradient_split(model, batches, loss_fn=lambda m, b: F.huber_loss(m(b[0]), b[1]))
    assert "input_map" in split.groups
    frame = split.to_frame()  # zero up to rounding, against the gradient's scale (W_Q and W_K get none at all)
    assert frame["precaching_norm"].max() < 1e-5 * frame["grad_norm"].max()
    for mode in MODES:
        assert abs(split.share(mode)) < 1e-6


def test_share_is_zero_for_a_language_model_with_one_target(native_model):
    split = gradient_split(native_model, _tokens(native_model, pos=2), batch_size=2)
    frame = split.to_frame()
    # zero up to rounding, against the gradient's scale: W_Q and W_K get no gradient at all from a query that sees
    # only itself, so their own norm ratio compares two rounding errors of the fused kernel's backward
    assert frame["precaching_norm"].max() < 1e-5 * frame["grad_norm"].max()


# -- a closed form -----------------------------------------------------------------------------------------------


def _scalar_model(values):
    """One attention-only layer, d_model = d_head = 1, no norms, two positions; weights from ``values``."""
    model = tiny_model(n_layers=1, d_model=1, n_heads=1, d_vocab=1, n_ctx=2, attn_only=True, normalization_type=None,
                       device=DEVICE)
    attn = model.blocks[0].attn
    with torch.no_grad():
        for short in "qkvo":
            for name, parameter in getattr(attn, short).named_parameters():
                parameter.fill_(values[f"w{short}" if name.endswith("weight") else f"b{short}"])
        next(model.unembed.parameters()).fill_(values["wu"])
        next(model.pos_embed.parameters()).copy_(torch.tensor([[values["p0"]], [values["p1"]]]))
    return model


def test_two_position_model_matches_the_closed_form():
    v = {"wq": 0.9, "bq": 0.1, "wk": -1.1, "bk": 0.3, "wv": 1.5, "bv": -0.2, "wo": 0.8, "bo": 0.05, "wu": 1.2,
         "p0": 0.2, "p1": -0.4}
    e, target = (0.7, -1.3), (0.3, -0.6)
    model = _scalar_model(v)
    batch = (torch.tensor([[[e[0]], [e[1]]]], device=DEVICE), torch.tensor([target], device=DEVICE))

    def loss_fn(m, b):
        return 0.5 * (m(b[0], return_type="logits")[..., 0] - b[1]).square().sum()

    # By hand: h_t = e_t + p_t; q, k, v = w h + b; position 1 attends with a_0 = σ(q_1 k_0 − q_1 k_1);
    # y_t = w_U (h_t + w_O z_t + b_O); δ_t = ∂L/∂z_t = r_t w_U w_O; c = ∂z_1/∂s_0 = a_0 a_1 (v_0 − v_1).
    h = [e[t] + v[f"p{t}"] for t in (0, 1)]
    q, k, val = ([v[f"w{x}"] * h[t] + v[f"b{x}"] for t in (0, 1)] for x in "qkv")
    a0 = 1 / (1 + math.exp(-(q[1] * k[0] - q[1] * k[1])))
    a1 = 1 - a0
    z = [val[0], a0 * val[0] + a1 * val[1]]
    r = [v["wu"] * (h[t] + v["wo"] * z[t] + v["bo"]) - target[t] for t in (0, 1)]
    delta = [r[t] * v["wu"] * v["wo"] for t in (0, 1)]
    c = a0 * a1 * (val[0] - val[1])
    vanilla = {"wv": delta[0] * h[0] + delta[1] * (a0 * h[0] + a1 * h[1]), "bv": delta[0] + delta[1],
               "wk": delta[1] * c * q[1] * (h[0] - h[1]), "bk": 0.0, "wq": delta[1] * c * (k[0] - k[1]) * h[1],
               "wo": sum(r[t] * v["wu"] * z[t] for t in (0, 1)), "wu": sum(r[t] * (h[t] + v["wo"] * z[t] + v["bo"])
                                                                         for t in (0, 1))}
    past_to_p0 = delta[1] * (a0 * v["wv"] + c * q[1] * v["wk"])  # what ℓ_1 sends into position 0's residual
    precaching = {
        "strict": {"wv": delta[1] * a0 * h[0], "bv": delta[1] * a0, "wk": delta[1] * c * q[1] * h[0],
                   "bk": delta[1] * c * q[1], "wq": 0.0, "bq": 0.0, "wo": 0.0, "bo": 0.0, "wu": 0.0,
                   "p0": past_to_p0, "p1": 0.0},
        "cutgrad": {"wv": 0.0, "bv": 0.0, "wk": 0.0, "bk": 0.0, "wq": 0.0, "bq": 0.0, "wo": 0.0, "bo": 0.0,
                    "wu": 0.0, "p0": past_to_p0, "p1": 0.0},
    }

    attn = model.blocks[0].attn
    param_key = {id(p): f"w{s}" if n.endswith("weight") else f"b{s}" for s in "qkvo"
                 for n, p in getattr(attn, s).named_parameters()}
    param_key[id(next(model.unembed.parameters()))] = "wu"
    names = {}
    for name, parameter in model.named_parameters():
        if id(parameter) in param_key:
            names[param_key[id(parameter)]] = name
        elif id(parameter) == id(next(model.pos_embed.parameters())):
            names["pos"] = name
    for mode, expected in precaching.items():
        parts = split_gradient(model, batch, loss_fn=loss_fn, mode=mode)
        got = {key: parts.precaching[name].item() for key, name in names.items() if key != "pos"}
        got["p0"], got["p1"] = parts.precaching[names["pos"]].flatten().tolist()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-6, rel=1e-5), (mode, key)
        for key, value in vanilla.items():
            assert parts.vanilla[names[key]].item() == pytest.approx(value, abs=1e-6, rel=1e-5), key
    assert precaching["strict"]["wv"] != 0 and precaching["strict"]["wk"] != 0 and past_to_p0 != 0


# -- the result object and bad input -----------------------------------------------------------------------------


def test_result_frame_repr_plot_and_records(native_model):
    split = gradient_split(native_model, _tokens(native_model), batch_size=2)
    frame = split.to_frame()
    assert len(frame) == len(split.groups) * 2 and not frame.duplicated(["group", "mode"]).any()
    assert {*METRICS, "share_batch_mean", "share_batch_std", "layer", "component"} <= set(frame.columns)
    assert frame.query("component == 'W_K'")["layer"].tolist() == [0, 1, 0, 1]
    assert "GradientSplit(2 batches" in repr(split) and "strict" in repr(split)
    assert split.plot().axes
    records = split.records()
    assert all(value is None or not (isinstance(value, float) and math.isnan(value))
               for row in records for value in row.values())
    history = [{"step": 5, "gradient_split": records}, {"step": 6, "loss": 1.0}]
    assert split_history(history)["step"].unique().tolist() == [5]


def test_bad_input_raises_one_clear_error(native_model):
    tokens = _tokens(native_model)
    with pytest.raises(InvalidArgumentError, match="mode='sideways' is unknown"):
        gradient_split(native_model, tokens, modes="sideways")
    with pytest.raises(InvalidArgumentError, match="batches is empty"):
        gradient_split(native_model, [])
    with pytest.raises(InvalidArgumentError, match="deterministic"):
        gradient_split(native_model, tokens, loss_fn=lambda m, b: lm_loss(m, b) + torch.rand(()))
    with pytest.raises(InvalidArgumentError, match="scalar tensor"):
        gradient_split(native_model, tokens, loss_fn=lambda m, b: m(b, return_type="loss", loss_per_token=True))
    with pytest.raises(InvalidArgumentError, match="no gradient split for group='nope'"):
        gradient_split(native_model, tokens[:1], modes="strict").share(group="nope")


# -- in training -------------------------------------------------------------------------------------------------


def test_trainer_records_the_split_at_evaluation_steps(tmp_path):
    import json

    from forethought.myopic_training import TrainConfig, train
    from forethought.myopic_training.gradient_split import plot_gradient_split_over_training

    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, device=DEVICE)
    tokens = torch.randint(0, 20, (40, 8), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=6, batch_size=8, eval_every=2, gradient_split_every=4, gradient_split_batches=1,
                         checkpoint_every=6, progress=False, out_dir=tmp_path / "run")
    result = train(config, model, (tokens[:32], tokens[32:]))
    assert [r["step"] for r in result.history if "gradient_split" in r] == [4, 6]
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged == json.loads(json.dumps(result.history))
    frame = split_history(logged)
    assert set(frame["mode"]) == set(MODES) and (frame.query("group == @TOTAL")["precaching_share"] != 0).all()
    assert plot_gradient_split_over_training(logged).axes
    with pytest.raises(InvalidArgumentError, match="not a multiple of eval_every=2"):
        TrainConfig(steps=6, eval_every=2, gradient_split_every=3)


@pytest.mark.parametrize("regime", ["bigram", "local-myopic"])
def test_trainer_split_is_zero_where_the_forward_gives_no_path_into_the_past(regime):
    """The bigram sees no past; the local-myopic model reads a frozen model's past."""
    from forethought.myopic_training import TrainConfig, train

    model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, device=DEVICE)
    tokens = torch.randint(0, 20, (24, 8), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(regime=regime, steps=2, batch_size=8, eval_every=2, gradient_split_every=2,
                         gradient_split_batches=1, progress=False)
    rows = train(config, model, (tokens[:16], tokens[16:])).history[-1]["gradient_split"]
    assert all(row["precaching_share"] == 0 for row in rows)


def test_result_repr_is_one_short_line_and_plot_is_a_figure(native_model):
    import pandas as pd
    from matplotlib.figure import Figure

    split = gradient_split(native_model, _tokens(native_model), batch_size=2)
    assert isinstance(split.to_frame(), pd.DataFrame) and isinstance(split.plot(), Figure)
    text = repr(split)
    assert text.startswith("GradientSplit(") and "\n" not in text and len(text) < 250 and "tensor" not in text
