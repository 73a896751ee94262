"""Future-token probes: does the hidden state at position ``t`` already hold the token at ``t + 1 + N``?

* :func:`probe_sweep`: every model × layer × offset × method from one activation pass → a :class:`ProbeSweep`
  whose ``.to_frame()`` is a tidy table of accuracy, cross-entropy, agreement with the model's own predictions,
  baselines and control task, with ``.plot()``, ``.probes`` and ``.save()``.
* Probe methods are objects (:class:`ProbeMethod`), registered by name (:func:`register`, :func:`get_method`,
  :func:`method_names`); each fits its probes from one model's :class:`SweepPlan`.
* Direct probes: :func:`fit_vocab_probes` (all pairs at once, AdamW, early stopping) and
  :func:`fit_logistic_probes` (scikit-learn, one pair at a time); both return :class:`LinearProbes`.
* The Future-Lens linear model: :func:`fit_future_lens` (and :func:`fit_ridge_lens`, its least-squares
  stage fitted by :func:`fit_ridge_probe`) → :class:`FutureLens`, decoded by the model's own unembedding.
* Future Lens' learned prompt: :func:`fit_learned_prompt` → :class:`LearnedPrompts`, a soft prompt per (layer,
  offset) into which the state is transplanted; the model's own continuation is the prediction.
* Ridge regression probes for continuous targets: :func:`fit_ridge_probe` (held-out R²).
* Labels, baselines, metrics: :class:`LabelSpace` (whole vocabulary or top-k + "other"),
  :class:`UnigramBaseline`, :class:`BigramBaseline`, :func:`control_labels`, :class:`MetricAccumulator`.
* Fitted probes are ``torch.nn.Module`` stacks, one probe per (layer, task): ``probes(h, layer=ℓ, offset=N)``
  applies one to hidden states ``[..., d_model]`` (``control=True`` for its control task), ``probes.logits``
  scores them all; ``.to()``, ``.state_dict()``, ``.select(layers=, tasks=)`` as usual.
* :func:`save_probes` / :func:`load_probes`: safetensors + JSON.
* :func:`lens_view`: a Future Lens view of one prompt (depth × position grid of top predictions) as a
  :class:`LensView`: a tidy table, a self-contained HTML page, a notebook display and a PNG.

Memory of the label-space choice, for ``L`` layers, ``O`` offsets (``T = 2·O`` tasks with controls),
``d`` = d_model, ``V`` = d_vocab, ``k`` = top_k: direct probes hold ``L·T·d·V`` floats for the whole
vocabulary or ``L·T·d·(k+1)`` with top-k (about four times that while training with AdamW); the Future
Lens holds ``L·T·d²`` floats whatever the vocabulary, and decodes ``L·T·batch·V`` logits per minibatch.
The stored activations take ``(L+1)·n_tokens·d`` values in ``feature_dtype``.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16)
    >>> tokens = torch.randint(0, 12, (40, 16), generator=torch.Generator().manual_seed(0))
    >>> table = probe_sweep({"random": model}, tokens, offsets=[0, 1], top_k=5, progress=False).to_frame()
    >>> sorted(table.label_space.unique())
    ['top5+other']
"""

from forethought.probes.baselines import BigramBaseline, UnigramBaseline, control_labels
from forethought.probes.future_lens import (
    FutureLens,
    FutureLensConfig,
    decode,
    fit_future_lens,
    fit_label_lens,
    fit_ridge_lens,
    least_squares,
)
from forethought.probes.io import load_probes, save_probes
from forethought.probes.learned_prompt import LearnedPromptConfig, LearnedPrompts, fit_learned_prompt
from forethought.probes.lens_view import LensView, lens_view
from forethought.probes.linear import LinearProbes, Task, feature_stats
from forethought.probes.logistic import LogisticProbeConfig, fit_logistic_probes
from forethought.probes.methods import ProbeMethod, get_method, method_names, register
from forethought.probes.metrics import MetricAccumulator, cross_entropy, top_k_accuracy
from forethought.probes.plan import ProbeSweepConfig, SweepPlan, TrainingExamples
from forethought.probes.regression import RidgeProbeResult, fit_ridge_probe
from forethought.probes.result import ProbeSweep
from forethought.probes.sweep import METHODS, add_gains, probe_sweep, seed_spread
from forethought.probes.targets import LabelSpace, future_labels, model_predictions
from forethought.probes.vocabulary import VocabProbeConfig, describe_memory, fit_vocab_probes

__all__ = [
    "METHODS",
    "BigramBaseline",
    "FutureLens",
    "FutureLensConfig",
    "LabelSpace",
    "LearnedPromptConfig",
    "LearnedPrompts",
    "LensView",
    "LinearProbes",
    "LogisticProbeConfig",
    "MetricAccumulator",
    "ProbeMethod",
    "ProbeSweep",
    "ProbeSweepConfig",
    "RidgeProbeResult",
    "SweepPlan",
    "Task",
    "TrainingExamples",
    "UnigramBaseline",
    "VocabProbeConfig",
    "add_gains",
    "control_labels",
    "cross_entropy",
    "decode",
    "describe_memory",
    "feature_stats",
    "fit_future_lens",
    "fit_label_lens",
    "fit_learned_prompt",
    "fit_logistic_probes",
    "fit_ridge_lens",
    "fit_ridge_probe",
    "fit_vocab_probes",
    "future_labels",
    "get_method",
    "least_squares",
    "lens_view",
    "load_probes",
    "method_names",
    "model_predictions",
    "probe_sweep",
    "register",
    "save_probes",
    "seed_spread",
    "top_k_accuracy",
]
