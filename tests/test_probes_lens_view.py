"""The Future Lens view: its grid against probes applied by hand, hits, HTML escaping, the CLI, a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest
import torch
from devices import DEVICE, main

from forethought.errors import DataError, InvalidArgumentError, ModelNotAvailableError, VocabularyMismatchError
from forethought.hook_names import RESID, hook_name
from forethought.models import load_model, save_model, tiny_model
from forethought.probes import FutureLens, LabelSpace, LensView, LinearProbes, Task, lens_view, save_probes
from forethought.probes.lens_render import visible
from forethought.probes.lens_view import OTHER, OTHER_ID

pytestmark = pytest.mark.usefixtures("single_thread")

LAYERS = [0, 1, 2]
TASKS = [Task(0), Task(1), Task(2)]
PROMPT = "The cat sat on the mat, and then it ran away."


def random_linear(model, space: LabelSpace, seed: int = 0, other_bias: float = 0.0) -> LinearProbes:
    g = torch.Generator().manual_seed(seed)
    n_classes, d = space.n_classes, model.cfg.d_model
    bias = torch.randn(len(LAYERS), len(TASKS), n_classes, generator=g)
    if space.other is not None:
        bias[..., space.other] += other_bias
    return LinearProbes(weight=torch.randn(len(LAYERS), len(TASKS), d, n_classes, generator=g), bias=bias,
                        mean=torch.randn(len(LAYERS), d, generator=g) * 0.1,
                        scale=torch.rand(len(LAYERS), d, generator=g) + 0.5, layers=LAYERS, tasks=TASKS,
                        label_space=space, meta={"method": "vocab"})


def resid(model, tokens: torch.Tensor, layers=LAYERS) -> torch.Tensor:
    """``[layer, pos, d]`` residual stream from ``run_with_cache`` (not the activation collector), on the CPU."""
    _, cache = model.run_with_cache(tokens[None])
    return torch.stack([cache[hook_name(model, RESID, layer)][0] for layer in layers]).float().cpu()


def reference_top(probs: torch.Tensor, space: LabelSpace, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k kept token ids ("other" is never a prediction) and probabilities, one cell at a time by sorting."""
    ids = torch.empty(*probs.shape[:2], k, dtype=torch.long)
    top = torch.empty(*probs.shape[:2], k)
    kept = [c for c in range(probs.shape[2]) if c != space.other]
    for i in range(probs.shape[0]):
        for t in range(probs.shape[1]):
            order = sorted(kept, key=lambda c: -float(probs[i, t, c]))[:k]
            ids[i, t] = torch.tensor([space.token_ids[c] if space.restricted else c for c in order])
            top[i, t] = probs[i, t, order]
    return ids, top


def kept_space(model, k: int = 20) -> LabelSpace:
    ids = torch.randperm(model.cfg.d_vocab, generator=torch.Generator().manual_seed(5))[:k]
    return LabelSpace(d_vocab=model.cfg.d_vocab, token_ids=tuple(int(i) for i in ids))


@pytest.mark.parametrize("restricted", [False, True], ids=["vocab", "top20+other"])
def test_grid_is_the_linear_probes_own_prediction(native_model, restricted):
    model = native_model
    space = kept_space(model) if restricted else LabelSpace.full(model.cfg.d_vocab)
    probes = random_linear(model, space, other_bias=6.0)
    view = lens_view(model, probes, PROMPT, offset=1)
    tokens = torch.tensor(model.tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    assert view.prompt_ids == tokens.tolist()

    h = resid(model, tokens)
    j = TASKS.index(Task(1))
    logits = torch.stack([((h[i] - probes.mean[i]) / probes.scale[i]) @ probes.weight[i, j] + probes.bias[i, j]
                          for i in range(len(LAYERS))])
    ids, top = reference_top(logits.softmax(-1), space)
    assert torch.equal(view.top_ids, ids)
    torch.testing.assert_close(view.top_probs, top, atol=1e-5, rtol=1e-4)
    if restricted:  # "other" is the probes' most likely class somewhere, yet never shown
        assert (logits.argmax(-1) == space.other).any() and not (view.top_ids == OTHER_ID).any()

    frame = view.to_frame()
    assert len(frame) == len(LAYERS) * len(tokens)
    cell = frame.set_index(["layer", "position"])
    for i, layer in enumerate(LAYERS):
        for t in range(len(tokens)):
            row = cell.loc[(layer, t)]
            expected = int(ids[i, t, 0])
            assert (pd.isna(row["top_id"]) and expected == OTHER_ID) or row["top_id"] == expected
            assert row["top_token"] == (OTHER if expected == OTHER_ID else model.tokenizer.decode([expected]))


def test_grid_is_the_future_lens_own_prediction(any_model, tmp_path):
    """On every backend: the lens's predicted residual, decoded by the model's final norm and unembedding."""
    model = any_model
    g = torch.Generator().manual_seed(1)
    d = model.cfg.d_model
    lens = FutureLens(weight=torch.randn(len(LAYERS), len(TASKS), d, d, generator=g) * 0.5,
                      bias=torch.randn(len(LAYERS), len(TASKS), d, generator=g), mean=torch.zeros(len(LAYERS), d),
                      scale=torch.ones(len(LAYERS), d), layers=LAYERS, tasks=TASKS,
                      label_space=LabelSpace.full(model.cfg.d_vocab), meta={"method": "future_lens"}, model=model)
    view = lens_view(model, lens, PROMPT, offset=2, layers=[2, 0])
    assert view.layers == [2, 0]
    tokens = torch.tensor(view.prompt_ids)
    h = resid(model, tokens, layers=[2, 0])
    j = TASKS.index(Task(2))
    with torch.no_grad():
        predicted = torch.stack([h[n] @ lens.weight[i, j] + lens.bias[i, j] for n, i in enumerate([2, 0])])
        probs = model.unembed(model.ln_final(predicted.to(DEVICE))).softmax(-1).cpu()
    ids, top = reference_top(probs, lens.label_space)
    assert torch.equal(view.top_ids, ids)
    torch.testing.assert_close(view.top_probs, top, atol=1e-5, rtol=1e-4)

    saved = lens_view(model, save_probes(lens, tmp_path / "lens", model=model), PROMPT, offset=2, layers=[2, 0])
    assert torch.equal(saved.top_ids, view.top_ids)


def test_hits_are_exactly_where_the_top_token_is_the_true_token(native_model):
    """A bias-only probe always guesses token ``x``: it hits exactly at the positions whose target is ``x``."""
    model = native_model
    prompt = [7, 9, 7, 7, 3, 7, 9, 9, 7]
    probes = LinearProbes.zeros(LAYERS, TASKS, model.cfg.d_model, LabelSpace.full(model.cfg.d_vocab))
    probes.bias[:, :, 7] = 4.0
    for offset in (0, 2):
        view = lens_view(model, probes, prompt, offset=offset)
        targets = [prompt[t + 1 + offset] if t + 1 + offset < len(prompt) else None for t in range(len(prompt))]
        expected = [target == 7 for target in targets]
        assert view.target_ids == targets
        assert view.hits.tolist() == [expected] * len(LAYERS)
        assert view.hit_counts() == {layer: (sum(expected), len(prompt) - 1 - offset) for layer in LAYERS}
        frame = view.to_frame()
        assert frame["hit"].isna().sum() == len(LAYERS) * (offset + 1)  # past the prompt: neither hit nor miss
        scored = frame.dropna(subset=["hit"])
        assert (scored["hit"] == (scored["true_id"] == 7)).all()
        true_p = torch.softmax(probes.bias[0, 0], -1)[torch.tensor([t for t in targets if t is not None])]
        torch.testing.assert_close(torch.tensor(scored[scored.layer == 0]["true_prob"].to_list()), true_p)


def test_other_is_never_shown_and_never_a_hit(native_model):
    """The probes are certain of "other", and the true tokens lie outside the kept ones: every cell shows the best
    kept token instead (as scoring takes it), and none is a hit."""
    model = native_model
    space = LabelSpace(d_vocab=model.cfg.d_vocab, token_ids=(1, 2))
    probes = LinearProbes.zeros(LAYERS, TASKS, model.cfg.d_model, space)
    probes.bias[:, :, space.other] = 5.0
    probes.bias[:, :, 1] = 1.0  # the best kept token is token 2 (class 1)
    view = lens_view(model, probes, [7, 9, 7, 7, 3], offset=0)
    assert (view.top_ids[..., 0] == 2).all() and not (view.top_ids == OTHER_ID).any() and not view.hits.any()
    frame = view.to_frame()
    assert (frame["top_token"] != OTHER).all() and (frame["top_id"] == 2).all()
    assert frame["true_prob"].isna().all()  # no kept class stands for the true token
    assert (frame.dropna(subset=["hit"])["hit"] == False).all()  # noqa: E712 - nullable booleans
    assert 'data-hit="1"' not in view.to_html()


class _Cells(HTMLParser):
    """Collects the grid cells of a lens-view page: data attributes and the text of the top-1 token."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict] = []
        self._in_top = False
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "td" and "fl-cell" in classes:
            self.cells.append({**{k: v for k, v in attrs.items() if k.startswith("data-")}, "classes": classes,
                               "token": ""})
            self._depth = 0
        if tag == "div" and "fl-pop" in classes:
            self._depth = 1  # tokens inside the tooltip are not the cell's own token
        if tag == "span" and "fl-tok" in classes and self.cells and self._depth == 0:
            self._in_top = True

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_top = False

    def handle_data(self, data):
        if self._in_top:
            self.cells[-1]["token"] += data


def parse_cells(page: str) -> list[dict]:
    parser = _Cells()
    parser.feed(page)
    return parser.cells


def check_cells(cells: list[dict], view: LensView) -> None:
    """One cell per (depth, position), showing the view's top-1 token and hit."""
    assert len(cells) == len(view.layers) * view.n_positions
    by_cell = {(int(c["data-layer"]), int(c["data-position"])): c for c in cells}
    assert len(by_cell) == len(cells)
    for i, layer in enumerate(view.layers):
        for t in range(view.n_positions):
            cell, top = by_cell[(layer, t)], int(view.top_ids[i, t, 0])
            assert cell["data-top-id"] == ("other" if top == OTHER_ID else str(top))
            assert cell["token"] == visible(view.token_text(top))
            assert cell["data-hit"] == ("" if not view.scored[t] else str(int(view.hits[i, t])))


NASTY = {0: '<script>alert("x")</script>', 1: "a & b", 2: "it's <b>", 3: " \n"}


def handmade_view() -> LensView:
    top_ids = torch.tensor([[[0, 1, OTHER_ID], [OTHER_ID, 2, 3], [2, 0, 1], [3, 0, 1]]])  # [1 layer, 4 pos, 3]
    top_probs = torch.tensor([[0.5, 0.3, 0.2]]).expand(1, 4, 3)
    return LensView(prompt_ids=[2, 0, 1, 3], layers=[1], offset=0, top_ids=top_ids, top_probs=top_probs,
                    true_probs=torch.full((1, 4), float("nan")), vocab=NASTY,
                    label_space=LabelSpace(d_vocab=4, token_ids=(0, 1, 2, 3)), title="<i>title</i> & more")


def test_html_escapes_tokens_and_has_one_cell_per_position_and_depth():
    view = handmade_view()
    assert view.hits.tolist() == [[True, False, False, False]]  # targets 0, 1, 3; position 3 past the prompt
    page = view.to_html()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "a␣&amp;␣b" in page
    assert "&lt;other&gt;" in page
    cells = parse_cells(page)
    check_cells(cells, view)
    assert cells[0]["token"] == visible(NASTY[0]) and cells[3]["token"] == "␣↵"
    fragment = view._repr_html_()
    assert "<html" not in fragment and "<style>" in fragment and len(parse_cells(fragment)) == 4
    assert "src=" not in page and "href=" not in page and "<link" not in page  # nothing external


def test_plot_outlines_hits_and_survives_dollars(tmp_path):
    view = handmade_view()
    view.vocab = {**NASTY, 1: "$x$ costs $5"}
    fig = view.plot()
    ax = fig.axes[0]
    assert len(ax.patches) == int(view.hits.sum()) + int((~view.scored).sum())  # hit frames + hatched columns
    assert view.save(tmp_path / "view.png").stat().st_size > 0
    frame = pd.read_csv(view.save(tmp_path / "view.csv"))
    assert json.loads(frame["top5_tokens"][0]) == [NASTY[0], "$x$ costs $5", OTHER]
    assert "LensView(offset=0, 1 depths × 4 positions" in repr(view)


def test_bad_input(native_model):
    model = native_model
    probes = random_linear(model, LabelSpace.full(model.cfg.d_vocab))
    with pytest.raises(InvalidArgumentError, match=r"offset=5 is not among the probes' offsets \[0, 1, 2\]"):
        lens_view(model, probes, PROMPT, offset=5)
    control = LinearProbes.zeros(LAYERS, [Task(0, control=True)], model.cfg.d_model, probes.label_space)
    with pytest.raises(InvalidArgumentError, match="control-task probes"):
        lens_view(model, control, PROMPT, offset=0)
    with pytest.raises(DataError, match="empty"):
        lens_view(model, probes, "", offset=0)
    with pytest.raises(InvalidArgumentError, match="layers"):
        lens_view(model, probes, PROMPT, layers=[3])
    with pytest.raises(InvalidArgumentError, match="flat sequence of integers"):
        lens_view(model, probes, [0.5, 1.5])
    with pytest.raises(VocabularyMismatchError):
        lens_view(model, probes, [1, model.cfg.d_vocab])
    other = tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=64, device=DEVICE)
    with pytest.raises(VocabularyMismatchError, match="d_vocab=300"):
        lens_view(other, probes, [1, 2])
    with pytest.raises(ModelNotAvailableError, match="tokenizer"):
        lens_view(other, LinearProbes.zeros(LAYERS, TASKS, 32, LabelSpace.full(50)), PROMPT)
    with pytest.raises(InvalidArgumentError, match=".html, .png or .csv"):
        handmade_view().save("view.txt")


# ---- the command line, on probes saved by probe-sweep ----------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tokenizer):
    """A saved tiny model and the probes ``probe-sweep --save-probes`` fitted on it (vocab and ridge)."""
    root = tmp_path_factory.mktemp("lens")
    model_dir = save_model(tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=len(tokenizer), n_ctx=64,
                                      tokenizer=tokenizer, seed=3, device=DEVICE), root / "model")
    assert main(["probe-sweep", "--model", f"m={model_dir}", "--seq-len", "24", "--max-sequences", "80",
                 "--offsets", "0,1", "--top-k", "20", "--max-epochs", "3", "--method", "vocab,ridge", "--no-progress",
                 "--save-probes", "--out", str(root / "sweep")]) == 0
    return model_dir, root / "sweep"


def test_cli_says_in_one_line_what_it_wrote(sweep, tmp_path, capsys):
    model_dir, sweep_dir = sweep
    out = tmp_path / "view"
    capsys.readouterr()
    assert main(["lens-view", "--model", str(model_dir), "--probes", str(sweep_dir / "probes" / "m" / "vocab"),
                 "--prompt", PROMPT, "--offset", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "lens view" in lines[0] and str(out) in lines[0] and "lens_view.html" in lines[0]


@pytest.mark.parametrize("method", ["vocab", "ridge"])
def test_cli_end_to_end(sweep, tmp_path, method):
    model_dir, sweep_dir = sweep
    probe_dir = sweep_dir / "probes" / "m" / method
    out = tmp_path / "view"
    assert main(["lens-view", "--model", str(model_dir), "--probes", str(probe_dir), "--prompt", PROMPT,
                 "--offset", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lens_view.csv", "lens_view.html", "lens_view.png",
                                                      "report.json"]
    model = load_model(model_dir, device=DEVICE)
    view = lens_view(model, probe_dir, PROMPT, offset=1)
    frame = pd.read_csv(out / "lens_view.csv")
    assert len(frame) == 3 * view.n_positions
    expected = view.to_frame()
    assert frame["top_id"].fillna(OTHER_ID).astype(int).tolist() == expected["top_id"].fillna(OTHER_ID).tolist()
    def plain(values):
        return [None if pd.isna(v) else bool(v) for v in values]

    assert plain(frame["hit"]) == plain(expected["hit"])
    check_cells(parse_cells((out / "lens_view.html").read_text(encoding="utf-8")), view)
    report = json.loads((out / "report.json").read_text())
    assert report["probes"]["method"] == method and report["prompt"]["token_ids"] == view.prompt_ids
    assert {k: (v["hits"], v["scored"]) for k, v in report["hits"].items()} == \
        {str(k): v for k, v in view.hit_counts().items()}


@pytest.mark.parametrize("extra, message", [
    (["--offset", "5"], "offset=5"),
    (["--layers", "9"], "layers="),
    (["--prompt", ""], "--prompt is empty"),
])
def test_cli_bad_input_exits_2_without_output(sweep, tmp_path, capsys, extra, message):
    model_dir, sweep_dir = sweep
    out = tmp_path / "view"
    args = ["lens-view", "--model", str(model_dir), "--probes", str(sweep_dir / "probes" / "m" / "vocab"),
            "--prompt", PROMPT, "--out", str(out), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_cli_probe_tree_must_hold_one_probe_set(sweep, tmp_path, capsys):
    model_dir, sweep_dir = sweep
    base = ["lens-view", "--model", str(model_dir), "--prompt", PROMPT, "--out", str(tmp_path / "view")]
    assert main([*base, "--probes", str(sweep_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "2 probe sets" in err and "probes/m/ridge" in err and "probes/m/vocab" in err
    assert main([*base, "--probes", str(tmp_path / "nothing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    only = tmp_path / "only"
    shutil.copytree(sweep_dir / "probes" / "m" / "vocab", only / "m" / "vocab")
    shutil.copytree(sweep_dir / "probes" / "m" / "vocab_control", only / "m" / "vocab_control")
    assert main([*base, "--probes", str(only)]) == 0  # controls are skipped; one probe set remains


# ---- a real headless browser ------------------------------------------------------------------------------


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", *args], capture_output=True, text=True, timeout=180)


def test_page_renders_in_a_headless_browser(native_model, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium or Chrome binary found (install Debian's `chromium` to run this test)")
    model = native_model
    view = lens_view(model, random_linear(model, kept_space(model), other_bias=6.0), PROMPT + ' <b>"&', offset=1)
    page = view.save(tmp_path / "lens_view.html")

    dom = headless(browser, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "fl-grid" in dom.stdout  # the browser parsed and serialised the page
    check_cells(parse_cells(dom.stdout), view)

    shot = tmp_path / "shot.png"
    result = headless(browser, "--hide-scrollbars", "--window-size=1200,500", f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (500, 1200)
    blue = (pixels[..., 2] - pixels[..., 0] > 0.15).mean()  # the shaded cells
    assert blue > 0.02, f"only {blue:.1%} of the screenshot is the grid's blue; the page did not render"
