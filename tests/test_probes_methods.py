"""Probe methods as registered objects, the plan they fit from, and the ProbeSweep result."""

import importlib
import sys
from dataclasses import dataclass

import pytest
import torch
from devices import DEVICE

from forethought.errors import InvalidArgumentError
from forethought.models import tiny_model
from forethought.options import METHODS
from forethought.probes import ProbeSweep, ProbeSweepConfig, load_probes, probe_sweep
from forethought.probes.linear import AffineProbes, LinearProbes
from forethought.probes.methods import ProbeMethod, get_method, method_names, register, split_controls, unregister
from forethought.probes.plan import SweepPlan, TrainingExamples
from forethought.probes.sweep import COLUMNS
from forethought.probes.vocabulary import VocabProbeConfig

VOCAB, SEQ_LEN = 12, 12
pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass
class PriorConfig:
    smoothing: float = 1.0


class PriorMethod(ProbeMethod):
    """A toy method: every probe predicts its task's label frequencies (zero weights), whatever the features."""

    name = "toy_prior"
    config_type = PriorConfig

    def fit(self, plan: SweepPlan, examples: TrainingExamples):
        both = examples.fit.cat(examples.val)
        labels = examples.labels(both).to(plan.device)  # [task, n]
        tasks = plan.tasks + plan.control_tasks
        probes = LinearProbes.zeros(plan.layers, tasks, d_model=plan.model.cfg.d_model, label_space=plan.space,
                                    device=plan.device, meta={"method": self.name})
        n_classes = plan.space.n_classes
        smoothing = self.settings(plan.config).smoothing
        counts = torch.stack([torch.bincount(row, minlength=n_classes) for row in labels]).float() + smoothing
        with torch.no_grad():
            probes.bias.copy_(counts.log().expand(len(plan.layers), -1, -1))
        return split_controls(plan, probes)


@pytest.fixture
def toy_method():
    register(PriorMethod)
    yield get_method("toy_prior")
    unregister("toy_prior")


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=VOCAB, n_ctx=SEQ_LEN, device=DEVICE)


def tokens(n_seq=40, seed=0):
    return torch.randint(0, VOCAB, (n_seq, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


def test_the_registry_holds_the_builtin_methods_the_command_line_lists():
    assert method_names() == METHODS
    assert [get_method(name).needs_resid for name in METHODS] == [False, False, True, True, True]
    assert [name for name in METHODS if get_method(name).streams] == ["vocab"]
    with pytest.raises(InvalidArgumentError, match="unknown"):
        get_method("nope")
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register(type(get_method("vocab")))


def test_a_method_registered_in_a_test_sweeps_saves_and_loads(model, toy_method, tmp_path):
    """Adding a method is one class and its registration: the sweep fits, scores, controls and saves it."""
    config = ProbeSweepConfig(vocab=VocabProbeConfig(max_epochs=2), methods={"toy_prior": PriorConfig(0.5)})
    sweep = probe_sweep(model, tokens(), offsets=[0, 1], method=["vocab", "toy_prior"], top_k=4, config=config,
                        save_dir=tmp_path, progress=False)
    table = sweep.to_frame()
    assert list(table.columns) == COLUMNS and len(table) == 2 * 2 * 2
    toy = table[table["method"] == "toy_prior"]
    # a probe that ignores the features predicts the most frequent kept token: the unigram baseline's top-1
    assert (toy["top1"] - toy["unigram_top1"]).abs().max() < 1e-9
    assert toy["control_top1"].notna().all() and (toy["top1"] <= toy["coverage"]).all()
    assert sorted(sweep.probes["model"]) == ["toy_prior", "toy_prior_control", "vocab", "vocab_control"]
    loaded = load_probes(tmp_path / "model" / "toy_prior")
    assert loaded.meta["method"] == "toy_prior" and loaded.layers == [0, 1]
    with pytest.raises(InvalidArgumentError, match="stream=True"):
        probe_sweep(model, tokens(), method="toy_prior", stream=True, progress=False)


def test_probe_sweep_result_frame_plot_repr_save_and_load(model, tmp_path):
    other = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=VOCAB, n_ctx=SEQ_LEN, seed=1, device=DEVICE)
    config = ProbeSweepConfig(vocab=VocabProbeConfig(max_epochs=2))
    sweep = probe_sweep({"a": model, "b": other}, tokens(), offsets=[0, 1], method=["vocab", "future_lens"],
                        config=config.with_max_epochs(1), reference="a", progress=False)
    table = sweep.to_frame()
    assert {"minus_reference", "minus_reference_ci_low", "gain_over_depth0_ci_high"} <= set(table.columns)
    assert len(sweep) == len(table) == 2 * 2 * 2 * 2 and sweep["top1"].equals(table["top1"])  # the transition
    assert repr(sweep).startswith("ProbeSweep(16 rows: 2 models x 2 depths x 2 offsets x 2 methods, label space "
                                  "vocab; best top1 ")
    assert isinstance(sweep.probes["b"]["future_lens"], AffineProbes)
    fig = sweep.plot(method="vocab")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["a", "b", "b − a"]
    assert "best baseline" in fig._suptitle.get_text()
    sweep.save(tmp_path / "sweep")
    again = ProbeSweep.load(tmp_path / "sweep", models={"a": model, "b": other})
    assert again.to_frame().drop(columns="hook").round(12).equals(table.drop(columns="hook").round(12))
    assert again.settings["methods"] == ["vocab", "future_lens"] and again.settings["reference"] == "a"
    x = torch.randn(2, 5, 16, device=DEVICE)
    torch.testing.assert_close(again.probes["b"]["future_lens"](x, layer=1, offset=1),
                               sweep.probes["b"]["future_lens"](x, layer=1, offset=1))
    direct_only = ProbeSweep.load(tmp_path / "sweep")  # without the models: the lens cannot decode, so it is left out
    assert sorted(direct_only.probes["a"]) == ["vocab", "vocab_control"]


def test_affine_probes_is_abstract_and_the_modules_import_without_a_cycle():
    with pytest.raises(TypeError, match="abstract"):
        AffineProbes(*[torch.zeros(1)] * 4, layers=[0], tasks=[], label_space=None)
    for name in ("forethought.probes.methods", "forethought.probes.sweep", "forethought.probes.plan"):
        saved = {key: module for key, module in sys.modules.items() if key.startswith("forethought.probes")}
        try:
            for key in saved:
                del sys.modules[key]
            importlib.import_module(name)
        finally:
            sys.modules.update(saved)
