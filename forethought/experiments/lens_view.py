r"""``forethought lens-view``: a Future Lens view of one prompt, from probes saved by ``probe-sweep --save-probes``.

The model (``--model``, a directory or hub name) cuts ``--prompt`` with its tokenizer; the probes in
``--probes`` (one probe directory, or a ``--save-probes`` tree holding exactly one non-control probe set)
read its residual stream at every depth and position, and :func:`forethought.probes.lens_view` keeps their
top predictions of token ``t + 1 + N`` for ``--offset N``.

Outputs in ``--out`` (all written atomically):

* ``lens_view.html``: the depth × position grid, self-contained (opens offline; hover a cell for its top 5);
* ``lens_view.png``: the same grid as a heatmap for papers;
* ``lens_view.csv``: one row per (depth, position): top token and probability, true token, hit, top 5;
* ``report.json``: the configuration, the probes, the prompt's tokens, hits per depth, and provenance.

Example:
    forethought lens-view --model runs/vanilla/model --probes results/probes/probes/vanilla/vocab \
        --prompt "The cat sat on the mat." --offset 1 --out results/lens_view
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from forethought.devices import resolve_device
from forethought.errors import InvalidArgumentError
from forethought.experiments.commands import LensView
from forethought.experiments.common import parse_ints
from forethought.models import load_model
from forethought.probes.io import CONFIG
from forethought.probes.lens_view import lens_view
from forethought.reporting import check_out_dir, prepare_out_dir, provenance, write_json

FILES = ["lens_view.html", "lens_view.png", "lens_view.csv", "report.json"]


def find_probe_dir(path: str | Path) -> Path:
    """``path`` itself if it holds probes, else the one non-control probe directory below it."""
    root = Path(path)
    if (root / CONFIG).is_file():
        return root
    if not root.is_dir():
        raise InvalidArgumentError(f"--probes {str(path)!r} is not a directory")
    found = sorted(p.parent for p in root.rglob(CONFIG) if not p.parent.name.endswith("_control"))
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(root)) for p in found[:8]) + (" ..." if len(found) > 8 else "")
        raise InvalidArgumentError(f"--probes {str(path)!r} holds no probes ({CONFIG})" if not found else
                                   f"--probes {str(path)!r} holds {len(found)} probe sets ({listed}); pass one")
    return found[0]


def run(args: LensView) -> int:
    """``forethought lens-view``: read ``--prompt`` with the probes of ``--probes`` and write the view to ``--out``."""
    layers = parse_ints(args.layers, "layers") if args.layers else None
    probe_dir = find_probe_dir(args.probes)
    check_out_dir(args.out)
    model = load_model(args.model, device=resolve_device(args.device))
    view = lens_view(model, probe_dir, args.prompt, offset=args.offset, layers=layers)

    out = prepare_out_dir(args.out)  # every input is checked by now: bad input leaves no directory behind
    for name in FILES[:3]:
        view.save(out / name)
    write_json(out / "report.json", {
        "config": asdict(args),
        "probes": {"directory": str(probe_dir), **view.meta, "layers": view.layers, "offset": view.offset},
        "model": {"source": args.model, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
                  "d_vocab": model.cfg.d_vocab},
        "prompt": {"text": args.prompt, "token_ids": view.prompt_ids,
                   "tokens": [view.token_text(i) for i in view.prompt_ids]},
        "hits": {str(layer): {"hits": hits, "scored": n, "accuracy": hits / n if n else None}
                 for layer, (hits, n) in view.hit_counts().items()},
        "files": FILES,
        "provenance": provenance(),
    })
    hits = ", ".join(f"{hits}/{n}" for hits, n in view.hit_counts().values())
    print(f"lens view of {len(view.prompt_ids)} tokens at depths {view.layers}, offset {view.offset} (hits by depth: "
          f"{hits}); wrote {', '.join(FILES)} to {out}")
    return 0
