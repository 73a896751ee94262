"""Interventions on a ``TransformerBridge``.

Activation patching, future-token transplant, probe-direction edits and past ablation. Every intervention is
a TransformerLens hook, installed with ``model.hooks`` and removed on exit (also on error); none edits the
model.

* :mod:`~forethought.interventions.patching`: :func:`patch_positions`, :func:`patch_heads` (sweeps, with
  metrics from :mod:`~forethought.interventions.metrics`) and :func:`patch_activation` (one patch).
* :mod:`~forethought.interventions.transplant`: :func:`transplant` (Future Lens' causal test), into fixed (token) or
  soft (embedding) prompts; :func:`transplanted_logits`, the differentiable steps a learned prompt trains through.
* :mod:`~forethought.interventions.directions`: :func:`project_out`, :func:`add_direction`,
  :func:`direction_effect` (with norm-matched random placebos); :mod:`~forethought.interventions.subspaces`:
  :func:`as_directions` for trained probes, :func:`orthonormal_basis`, :func:`random_directions`.
* :mod:`~forethought.interventions.past`: :func:`ablate_past`, :func:`past_ablation_effect` and
  :func:`per_position_loss`.
* :mod:`~forethought.interventions.results`: the result objects, each with ``.to_frame()``, ``.plot()`` and a
  short ``repr``.

Wherever tokens are taken, strings (one, or a list of equal token length) are accepted too and tokenised with
``model.tokenizer`` (:func:`forethought.prompts.as_tokens`).
"""

from forethought.interventions.directions import add_direction, direction_effect, project_out
from forethought.interventions.metrics import (
    KLToClean,
    LogitDiff,
    LogProb,
    Metric,
    Readout,
    kl_divergence,
    resolve_metric,
)
from forethought.interventions.past import ablate_past, past_ablation_effect, per_position_loss
from forethought.interventions.patching import patch_activation, patch_heads, patch_positions
from forethought.interventions.results import DirectionEffect, PatchResult, TransplantResult
from forethought.interventions.subspaces import as_directions, orthonormal_basis, random_directions
from forethought.interventions.transplant import (
    NEUTRAL_PROMPTS,
    greedy,
    transplant,
    transplant_hooks,
    transplanted_logits,
)

__all__ = [
    "NEUTRAL_PROMPTS",
    "DirectionEffect",
    "KLToClean",
    "LogProb",
    "LogitDiff",
    "Metric",
    "PatchResult",
    "Readout",
    "TransplantResult",
    "ablate_past",
    "add_direction",
    "as_directions",
    "direction_effect",
    "greedy",
    "kl_divergence",
    "orthonormal_basis",
    "past_ablation_effect",
    "patch_activation",
    "patch_heads",
    "patch_positions",
    "per_position_loss",
    "project_out",
    "random_directions",
    "resolve_metric",
    "transplant",
    "transplant_hooks",
    "transplanted_logits",
]
