"""A regime is one object: a toy regime defined here is trained, scored, reported and plotted with no other change."""

import json
from dataclasses import replace

import pytest
import torch
from devices import DEVICE

from forethought.attention import ablate_past
from forethought.errors import InvalidArgumentError
from forethought.regimes import REGIMES, Regime, get_regime, is_probed, register_regime, registered_gaps

pytestmark = pytest.mark.usefixtures("single_thread")

TOY_COLOR = "#17becf"


@pytest.fixture
def toy():
    """A regime whose past keys and values are zero, in training and in scoring; it counts its contexts."""
    calls = {"training": 0, "forward": 0}

    def training(model, config, past_model):
        calls["training"] += 1
        return ablate_past(model, method="zero")

    def forward(model, past_model):
        calls["forward"] += 1
        return ablate_past(model, method="zero")

    regime = register_regime(Regime("zero-past", color=TOY_COLOR, forward=forward, training=training,
                                    gaps={"zero_past_gap": "vanilla"}))
    yield regime, calls
    del REGIMES["zero-past"]


def test_the_built_in_regimes_are_registered():
    assert list(REGIMES) == ["vanilla", "myopic", "local-myopic", "bigram"]
    assert registered_gaps() == {"myopia_gap": ("myopic", "vanilla"), "local_myopia_gap": ("local-myopic", "vanilla"),
                                 "bigram_gap": ("bigram", "vanilla")}
    assert [name for name in REGIMES if is_probed(name)] == ["vanilla", "myopic"] and is_probed(None)
    assert REGIMES["local-myopic"].needs_past_model and REGIMES["myopic"].settings == ("mode", "beta")


def test_registration_refuses_duplicates_and_unknown_names(toy):
    with pytest.raises(InvalidArgumentError, match="regime 'zero-past' is already registered"):
        register_regime(Regime("zero-past", color="k"))
    with pytest.raises(InvalidArgumentError, match="gap 'myopia_gap' is already defined by regime 'myopic'"):
        register_regime(Regime("other", color="k", gaps={"myopia_gap": "vanilla"}))
    with pytest.raises(InvalidArgumentError, match="register_regime takes a Regime"):
        register_regime("other")
    with pytest.raises(InvalidArgumentError, match="regime='other' is unknown; choose one of .*zero-past"):
        get_regime("other")
    assert "other" not in REGIMES


def test_a_toy_regime_trains_in_its_context(toy, tokenizer):
    from forethought.config import TrainConfig
    from forethought.models import tiny_model
    from forethought.myopic_training import train

    regime, calls = toy
    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, device=DEVICE)
    tokens = torch.randint(0, len(tokenizer), (24, 16), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(regime="zero-past", steps=3, batch_size=8, warmup_steps=0, eval_every=3, progress=False)
    reference = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, device=DEVICE)
    train(replace(config, regime="vanilla"), reference, (tokens[:16], tokens[16:]))
    result = train(config, model, (tokens[:16], tokens[16:]))
    assert calls == {"training": 3, "forward": 1}  # every step trains in its training context; evaluation scores it
    trained, vanilla = model.state_dict(), reference.state_dict()
    assert any(not torch.equal(trained[name], vanilla[name]) for name in trained), "another regime, other weights"
    with torch.no_grad(), ablate_past(model, method="zero"):
        expected = model(tokens[16:], return_type="loss").item()
    assert result.eval_loss == pytest.approx(expected, rel=1e-5)


def test_a_toy_regime_is_trained_scored_reported_and_plotted(toy, tmp_path):
    from forethought.experiments.myopia_gap import Preset, run_myopia_gap
    from forethought.experiments.size_sweep import sweep_row
    from forethought.losses import loss_by_position
    from forethought.myopic_training import TrainConfig
    from forethought.plots import plot_gap_by_size, plot_loss_by_position, regime_palette
    from forethought.runs import load_run

    regime, calls = toy
    preset = Preset(description="toy", max_documents=12, seq_len=16, val_fraction=0.05, tokenizer=300,
                    architecture={"family": "native", "n_layers": 1, "d_model": 16, "n_heads": 2},
                    regimes=("vanilla", "myopic", "zero-past"))
    config = TrainConfig(steps=2, batch_size=8, warmup_steps=0, eval_every=2, checkpoint_every=2, progress=False,
                         device=DEVICE.type)
    report = run_myopia_gap(preset, tmp_path, config)
    assert calls["training"] == 2

    # scored: in its own forward, on the run's validation split, against vanilla with a paired interval
    run = load_run(tmp_path, device=DEVICE)
    assert run.trained_as["zero-past"] == "zero-past"
    with ablate_past(run.models["zero-past"], method="zero"):
        toy_losses = loss_by_position(run.models["zero-past"], run.splits.validation)
    vanilla_losses = loss_by_position(run.models["vanilla"], run.splits.validation)
    entry = report["regimes"]["zero-past"]
    assert entry["forward"] == "zero-past" and entry["trained_as"] == "zero-past"
    assert entry["eval_loss"] == pytest.approx(toy_losses.mean().item(), rel=1e-5)
    assert report["zero_past_gap"] == pytest.approx((toy_losses.mean() - vanilla_losses.mean()).item(), abs=1e-5)
    assert report["zero_past_gap_ci_low"] <= report["zero_past_gap"] <= report["zero_past_gap_ci_high"]
    assert report["definitions"]["zero_past_gap"] == "eval_loss(zero-past) - eval_loss(vanilla)"
    assert report["myopia_gap"] is not None and report["bigram_gap"] is None  # untrained regimes keep their columns
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["zero_past_gap"] == report["zero_past_gap"]
    assert saved["training"]["zero-past"]["mode"] is None and saved["training"]["myopic"]["mode"] == "strict"

    # plotted: its colour in every figure, its own line, and its gap by size
    assert regime_palette(["mine", "zero-past"])["zero-past"] == TOY_COLOR
    assert {"loss_by_position.png", "loss_difference.png", "training_curves.png"} <= {p.name for p in
                                                                                      tmp_path.iterdir()}
    import pandas as pd

    frame = pd.read_csv(tmp_path / "loss_by_position.csv")
    assert set(frame["regime"]) == {"vanilla", "myopic", "zero-past"}
    figure = plot_loss_by_position(frame)
    colors = {line.get_label(): line.get_color() for line in figure.axes[0].get_legend().get_lines()}
    assert colors["zero-past"] == TOY_COLOR
    row = sweep_row("tiny", "tiny", 1000, report)
    assert row["zero_past_gap"] == report["zero_past_gap"] and "zero_past_gap_ci_high" in row
    figure = plot_gap_by_size(pd.DataFrame([row]), gap="zero_past_gap")
    assert figure.axes[0].lines[0].get_color() == TOY_COLOR

    # not probed: its forward is not the one a probe reads
    assert not is_probed("zero-past")


def test_a_toy_regime_trains_in_the_synthetic_study(toy):
    from forethought.synthetic import PRESETS, train_regime

    regime, calls = toy
    run = train_regime(replace(PRESETS["smoke"], steps=2, warmup_steps=1), "zero-past", progress=False)
    assert run.losses.shape == (2,) and calls["training"] == 2
    with pytest.raises(InvalidArgumentError, match="regime='local-myopic' needs a frozen past model"):
        train_regime(PRESETS["smoke"], "local-myopic", progress=False)
