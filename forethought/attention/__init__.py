"""Attention recomputed from its hooked q, k and v with a chosen view of the past.

The machinery shared by the myopic gradient (:func:`forethought.myopic_training.myopic`) and past ablation
(:func:`ablate_past`, used by the transformer-bigram regime and by :mod:`forethought.interventions.past`):

* :mod:`~forethought.attention.recompute`: capture q, k, v at every layer and recompute the attention output
  with each query's own key and value and a past chosen by the caller (the eager ``[T, T]`` reference);
* :mod:`~forethought.attention.fused`: the same recomputation through fused scaled-dot-product attention with
  an O(T) correction of the diagonal term;
* :mod:`~forethought.attention.ablation`: :func:`ablate_past`.
"""

from forethought.attention.ablation import ablate_past

__all__ = ["ablate_past"]
