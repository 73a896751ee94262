r"""Rendering a :class:`~forethought.probes.lens_view.LensView`: a self-contained HTML grid and a PNG heatmap.

The HTML is one ``<div class="fl-view">`` holding its own ``<style>`` and a table (depth down, position
across); a cell's top 5 appear on hover through CSS alone, so the page needs no script, no server and no
external file, and the same fragment displays inline in a notebook. Every token is HTML-escaped, and
whitespace is made visible (``␣`` space, ``↵`` newline, ``⇥`` tab, ``∅`` the empty string; other control
characters as ``\xNN``).
Each cell carries ``data-layer``, ``data-position``, ``data-top-id`` (``other`` for the pooled class) and
``data-hit`` (``1``, ``0``, or empty past the prompt's end) for scripts and tests.

Example:
    >>> visible(" the\n")
    '␣the↵'
    >>> visible("\x0f")
    '\\x0f'
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forethought.probes.lens_view import LensView

_VISIBLE = str.maketrans({**{chr(c): f"\\x{c:02x}" for c in [*range(32), 127]},
                          " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})
HIT_COLOUR = "#1a7f37"
TRUE_ROW = ' class="fl-true"'
OTHER_ID = -1
"""The token id recorded for a prediction of "other" in :attr:`~forethought.probes.lens_view.LensView.top_ids`."""
OTHER_NOTE = '"<other>" is the pooled class of the tokens outside the probes\' top-k label space; it is never a hit.'

STYLE = """
.fl-view { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 12px; color: #222; }
.fl-view h3 { font-size: 14px; margin: 4px 0 6px; }
.fl-view .fl-scroll { overflow-x: auto; padding-bottom: 11em; }
.fl-view table.fl-grid { border-collapse: separate; border-spacing: 2px; }
.fl-view .fl-grid th { font-weight: normal; color: #555; padding: 1px 4px; white-space: pre; }
.fl-view .fl-grid th.fl-rowhead { text-align: right; }
.fl-view .fl-grid th.fl-input { font-family: ui-monospace, Menlo, Consolas, monospace; color: #000; }
.fl-view .fl-grid th.fl-target { font-family: ui-monospace, Menlo, Consolas, monospace; color: #1a4f8a; }
.fl-view td.fl-cell { position: relative; min-width: 4em; padding: 2px 4px; text-align: center;
  border: 2px solid transparent; border-radius: 3px; cursor: default; }
.fl-view td.fl-cell.fl-hit { border-color: #1a7f37; }
.fl-view td.fl-cell.fl-beyond { border: 2px dashed #c4c4c4; }
.fl-view td.fl-cell.fl-dark { color: #fff; }
.fl-view .fl-tok { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre; }
.fl-view .fl-other { font-style: italic; opacity: 0.8; }
.fl-view .fl-prob { display: block; font-size: 10px; opacity: 0.85; }
.fl-view td.fl-count { color: #555; padding-left: 8px; white-space: nowrap; }
.fl-view .fl-pop { display: none; position: absolute; z-index: 10; left: 0; top: 100%; min-width: 12em;
  background: #fff; color: #222; border: 1px solid #999; border-radius: 4px; padding: 4px 6px;
  box-shadow: 0 2px 6px rgba(0, 0, 0, 0.25); text-align: left; white-space: nowrap; }
.fl-view td.fl-cell:hover .fl-pop { display: block; }
.fl-view .fl-pop table { border-collapse: collapse; }
.fl-view .fl-pop td { padding: 0 6px 0 0; }
.fl-view .fl-pop tr.fl-true td { font-weight: bold; color: #1a7f37; }
.fl-view .fl-legend { color: #555; max-width: 60em; margin-top: 4px; }
"""


def visible(text: str) -> str:
    """``text`` with whitespace made visible (``∅`` for the empty string)."""
    return text.translate(_VISIBLE) if text else "∅"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _token_span(view: LensView, token_id: int) -> str:
    other = " fl-other" if token_id == OTHER_ID else ""
    return f'<span class="fl-tok{other}">{_e(visible(view.token_text(token_id)))}</span>'


def render_html(view: LensView, full_page: bool = True) -> str:
    """The view as HTML: a whole document, or (``full_page=False``) a fragment for a notebook cell."""
    targets, hits, scored = view.target_ids, view.hits, view.scored
    counts = view.hit_counts()
    n = view.n_positions
    head = ['<tr><th class="fl-rowhead">position t</th>' + "".join(f"<th>{t}</th>" for t in range(n))
            + "<th></th></tr>",
            '<tr><th class="fl-rowhead">input token t</th>'
            + "".join(f'<th class="fl-input">{_e(visible(view.token_text(i)))}</th>' for i in view.prompt_ids)
            + "<th></th></tr>",
            f'<tr><th class="fl-rowhead">true token t+1+{view.offset}</th>'
            + "".join(f'<th class="fl-target">{_e(visible(view.token_text(i))) if i is not None else "—"}</th>'
                      for i in targets) + '<th class="fl-rowhead">hits</th></tr>']
    body = []
    for i in reversed(range(len(view.layers))):  # deepest depth on top, as in the probe heatmaps
        layer = view.layers[i]
        cells = []
        for t in range(n):
            ids = [int(x) for x in view.top_ids[i, t]]
            probs = [float(p) for p in view.top_probs[i, t]]
            classes = ["fl-cell"]
            if not scored[t]:
                classes.append("fl-beyond")
            elif hits[i, t]:
                classes.append("fl-hit")
            if probs[0] > 0.55:
                classes.append("fl-dark")
            hit = "" if not scored[t] else str(int(hits[i, t]))
            top = "other" if ids[0] == OTHER_ID else str(ids[0])
            truth = targets[t]
            rows = "".join(f"<tr{TRUE_ROW if x == truth else ''}><td>{_token_span(view, x)}</td><td>{p:.3f}</td></tr>"
                           for x, p in zip(ids, probs, strict=True))
            true_text = _e(visible(view.token_text(truth))) if truth is not None else "past the prompt"
            true_prob = float(view.true_probs[i, t])
            true_note = f" (p={true_prob:.3f})" if true_prob == true_prob else ""
            pop = (f'<div class="fl-pop"><div>depth {layer}, position {t} → token {t + 1 + view.offset}</div>'
                   f"<div>true: {true_text}{true_note}</div><table>{rows}</table></div>")
            cells.append(
                f'<td class="{" ".join(classes)}" data-layer="{layer}" data-position="{t}" data-top-id="{top}" '
                f'data-hit="{hit}" style="background-color: rgba(33, 102, 172, {probs[0]:.3f})">'
                f'{_token_span(view, ids[0])}<span class="fl-prob">{probs[0]:.2f}</span>{pop}</td>')
        hits_text, n_scored = counts[layer]
        body.append(f'<tr><th class="fl-rowhead">depth {layer}</th>{"".join(cells)}'
                    f'<td class="fl-count">{hits_text}/{n_scored}</td></tr>')
    legend = ("Each cell: the top-1 guess, by the probe reading depth ℓ at position t, of token t+1+N, shaded by "
              "its probability. Green frame: a hit; dashed: past the prompt's end (no true token). "
              f"{_e(OTHER_NOTE)} Hover a cell for its top {view.top_ids.shape[-1]}. Depth 0 = embeddings.")
    space = view.label_space
    details = (f"label space: {_e(space.name)}" + (f", model: {_e(view.meta['model_name'])}"
                                                   if view.meta.get("model_name") else ""))
    fragment = (f'<div class="fl-view"><style>{STYLE}</style><h3>{_e(view.title)}</h3>'
                f'<div class="fl-legend">{details}</div><div class="fl-scroll"><table class="fl-grid">'
                f'<thead>{"".join(head)}</thead><tbody>{"".join(body)}</tbody></table>'
                f'<div class="fl-legend">{legend}</div></div></div>')
    if not full_page:
        return fragment
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(view.title)}</title>\n'
            f"</head>\n<body>\n{fragment}\n</body>\n</html>\n")


def _tex_safe(text: str) -> str:
    """Matplotlib reads ``$...$`` as mathtext; escape the dollars of token text."""
    return text.replace("$", r"\$")


def _short(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def plot_view(view: LensView, max_chars: int = 8) -> Any:
    """A heatmap of the top-1 probability (depth down, deepest on top; position across) annotated with the top-1 token.

    Hits are outlined in green and positions past the prompt are hatched; the input tokens label the bottom
    axis and the true tokens ``t + 1 + N`` the top one.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.patches import Rectangle

    n_layers, n = len(view.layers), view.n_positions
    order = list(reversed(range(n_layers)))

    def label(token_id: int | None) -> str:
        return "" if token_id is None else _tex_safe(_short(visible(view.token_text(token_id)), max_chars))

    probs = view.top_probs[order, :, 0].numpy()
    annot = np.array([[label(int(view.top_ids[i, t, 0])) for t in range(n)] for i in order], dtype=object)
    fig, ax = plt.subplots(figsize=(min(3.0 + 0.62 * n, 48.0), 2.2 + 0.42 * n_layers))
    sns.heatmap(probs, vmin=0.0, vmax=1.0, cmap="Blues", annot=annot, fmt="", annot_kws={"size": 7},
                linewidths=0.5, linecolor="white", cbar_kws={"label": "top-1 probability", "shrink": 0.8}, ax=ax)
    hits, scored = view.hits, view.scored
    for row, i in enumerate(order):
        for t in range(n):
            if hits[i, t]:
                ax.add_patch(Rectangle((t + 0.05, row + 0.05), 0.9, 0.9, fill=False, edgecolor=HIT_COLOUR, lw=1.8))
    for t in range(n):
        if not scored[t]:
            ax.add_patch(Rectangle((t, 0), 1, n_layers, fill=False, hatch="//", edgecolor="0.7", lw=0))
    ticks = np.arange(n) + 0.5
    ax.set_xticks(ticks, [f"{label(token)} ({t})" for t, token in enumerate(view.prompt_ids)], rotation=90,
                  fontsize=7)
    ax.set_yticks(np.arange(n_layers) + 0.5, [str(view.layers[i]) for i in order], rotation=0)
    ax.set(xlabel="input token (position t)", ylabel="depth (resid; 0 = embeddings)")
    top = ax.secondary_xaxis("top")
    top.set_xticks(ticks, [label(token) if token is not None else "—" for token in view.target_ids], rotation=90,
                   fontsize=7)
    top.set_xlabel(f"true token t+1+{view.offset}", fontsize=8)
    ax.set_title(_tex_safe(view.title), fontsize=10)
    fig.tight_layout()
    return fig
