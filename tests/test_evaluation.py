"""Loss by position against a per-position cross-entropy reference; regimes, gaps and figures."""


import numpy as np
import pytest
import torch
from devices import DEVICE
from torch.nn import functional as F

from forethought.attention import ablate_past
from forethought.errors import InvalidArgumentError, NumericalError
from forethought.models import copy_model
from forethought.myopic_training import RegimeModel, evaluate_regimes, local_myopic, loss_by_position
from forethought.myopic_training.evaluation import plot_report

pytestmark = pytest.mark.usefixtures("single_thread")


def _tokens(model, n=5, seq=9, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def _reference(model, tokens):
    """Cross-entropy of each next token from the full logits, averaged over sequences, one position at a time."""
    with torch.no_grad():
        logits = model(tokens).double()
    tokens = tokens.to(logits.device)
    losses = torch.stack([F.cross_entropy(logits[:, t], tokens[:, t + 1]) for t in range(tokens.shape[1] - 1)])
    return losses.cpu()  # where forethought's losses are


def test_loss_by_position_equals_per_position_cross_entropy(any_model):
    any_model.eval()
    tokens = _tokens(any_model)
    ours = loss_by_position(any_model, tokens, batch_size=2)  # batches of 2, 2 and 1 sequences
    torch.testing.assert_close(ours, _reference(any_model, tokens), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        mean = any_model(tokens, return_type="loss").item()
    assert ours.mean().item() == pytest.approx(mean, rel=1e-5)


def test_evaluation_switches_dropout_off_and_restores_the_mode(checkpoint_dirs):
    from forethought.models import load_model

    model = load_model(checkpoint_dirs["gpt2"], device=DEVICE)  # HF GPT-2 defaults to dropout 0.1
    model.train()
    tokens = _tokens(model)
    first, second = loss_by_position(model, tokens), loss_by_position(model, tokens)
    assert torch.equal(first, second) and model.training


def test_regimes_run_in_their_own_forward(native_model):
    tokens = _tokens(native_model)
    past = copy_model(native_model)
    with torch.no_grad():
        for p in past.parameters():
            p.mul_(0.9)
    models = {"vanilla": native_model, "myopic": native_model, "bigram": native_model,
              "local-myopic": RegimeModel(native_model, "local-myopic", past)}
    report = evaluate_regimes(models, tokens, batch_size=3)
    with ablate_past(native_model):
        bigram = _reference(native_model, tokens)
    with local_myopic(native_model, past):
        local = _reference(native_model, tokens)
    vanilla = _reference(native_model, tokens)
    losses = {name: torch.tensor(result.loss_by_position, dtype=torch.float64) for name, result in
              report.regimes.items()}
    for name, reference in {"vanilla": vanilla, "myopic": vanilla, "bigram": bigram, "local-myopic": local}.items():
        torch.testing.assert_close(losses[name], reference, atol=1e-5, rtol=1e-5)
    assert report.regimes["bigram"].forward == "bigram"
    assert report.regimes["myopic"].trained_as == "myopic" and report.regimes["myopic"].forward == "vanilla"
    myopia, bigram_gap = report.gaps["myopia_gap"], report.gaps["bigram_gap"]
    assert myopia.value == 0.0
    assert myopia.ci_low == myopia.ci_high == 0.0  # paired: the same model gives no spread
    assert bigram_gap.ci_low < bigram_gap.value < bigram_gap.ci_high
    by_position = report.gaps_by_position["bigram"]
    torch.testing.assert_close(torch.tensor(by_position.gap, dtype=torch.float64), bigram - vanilla, atol=1e-5,
                               rtol=1e-5)
    assert all(low <= gap <= high for low, gap, high in zip(by_position.ci_low, by_position.gap,
                                                            by_position.ci_high, strict=True))
    assert bigram_gap.value == pytest.approx((bigram.mean() - vanilla.mean()).item(), abs=1e-5)
    assert report.gaps["local_myopia_gap"].value == pytest.approx((local.mean() - vanilla.mean()).item(), abs=1e-5)
    assert report.myopia_gap_fraction == 0.0
    frame = report.to_frame()
    assert list(frame.columns) == ["regime", "position", "loss", "gap", "gap_ci_low", "gap_ci_high"]
    assert len(frame) == 4 * 8 and frame[frame.regime == "vanilla"]["gap"].isna().all()
    as_dict = report.to_dict()
    assert set(as_dict["regimes"]["vanilla"]) >= {"eval_loss", "loss_by_position"}
    assert "myopia_gap" in as_dict and "extra" not in as_dict
    for name, gap in report.gaps.items():  # the JSON keeps a flat column per gap and bound
        assert (as_dict[name], as_dict[f"{name}_ci_low"], as_dict[f"{name}_ci_high"]) == (gap.value, gap.ci_low,
                                                                                          gap.ci_high)
    assert as_dict["myopia_gap_fraction"] == 0.0


def test_gaps_are_none_without_their_regimes(native_model):
    report = evaluate_regimes({"myopic": native_model}, _tokens(native_model))
    assert report.gaps == {} and report.myopia_gap_fraction is None
    as_dict = report.to_dict()  # every registered gap keeps its columns
    assert as_dict["myopia_gap"] is None and as_dict["bigram_gap"] is None and as_dict["myopia_gap_fraction"] is None


def test_bad_inputs(native_model):
    with pytest.raises(InvalidArgumentError, match="models is empty"):
        evaluate_regimes({}, _tokens(native_model))
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        loss_by_position(native_model, _tokens(native_model, seq=1))
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        loss_by_position(native_model, _tokens(native_model), batch_size=0)
    broken = copy_model(native_model)
    with torch.no_grad():
        broken.embed.W_E.fill_(float("nan"))
    with pytest.raises(NumericalError, match="NaN"):
        loss_by_position(broken, _tokens(native_model))


def test_figures_show_each_regime_and_its_difference(native_model, tmp_path):
    from forethought.reporting import save_figure

    report = evaluate_regimes({"vanilla": native_model, "bigram": native_model}, _tokens(native_model))
    figures = plot_report(report)
    assert set(figures) == {"loss_by_position", "loss_difference"}
    difference = figures["loss_difference"].axes[0].lines[0].get_ydata()
    losses = {name: np.array(result.loss_by_position) for name, result in report.regimes.items()}
    expected = losses["bigram"] - losses["vanilla"]
    np.testing.assert_allclose(difference, expected, atol=1e-9)
    for name, figure in figures.items():
        assert save_figure(figure, tmp_path / f"{name}.png").stat().st_size > 1000


def test_report_frame_plot_and_repr(native_model):
    from matplotlib.figure import Figure

    tokens = _tokens(native_model)
    report = evaluate_regimes({"vanilla": native_model, "myopic": native_model, "bigram": native_model}, tokens)
    frame = report.to_frame()
    assert list(frame.columns) == ["regime", "position", "loss", "gap", "gap_ci_low", "gap_ci_high"]
    assert len(frame) == 3 * (tokens.shape[1] - 1)
    by_position = report.plot()
    assert isinstance(by_position, Figure) and by_position.axes[0].get_xlabel().startswith("position")
    difference = report.plot("loss_difference")
    np.testing.assert_allclose(difference.axes[0].lines[0].get_ydata(), report.gaps_by_position["myopic"].gap,
                               atol=1e-9)
    with pytest.raises(InvalidArgumentError, match="kind="):
        report.plot("histogram")
    with pytest.raises(InvalidArgumentError, match="baseline 'local-myopic'"):
        report.plot("loss_difference", baseline="local-myopic")
    text = repr(report)
    assert text.startswith("MyopiaReport(eval_loss: vanilla ") and "myopia_gap +0.0000" in text
    assert "\n" not in text and len(text) < 250 and "[3." not in text  # no per-position lists
