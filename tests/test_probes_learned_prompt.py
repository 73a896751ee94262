"""Future Lens' learned prompt: the fixed-prompt transplant untrained, the linear probe's accuracy trained, chance on
a random model, saving, the lens view and the errors."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch
from devices import DEVICE

from forethought.activations import collect_activations
from forethought.errors import ContextLengthError, InvalidArgumentError, OutOfRangeError, VocabularyMismatchError
from forethought.hook_names import RESID, hook_name
from forethought.interventions import greedy, transplant_hooks
from forethought.models import tiny_model
from forethought.probes import (
    LearnedPromptConfig,
    LearnedPrompts,
    ProbeSweepConfig,
    Task,
    fit_learned_prompt,
    lens_view,
    load_probes,
    probe_sweep,
    save_probes,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# The test task: token 0 or 1 first (the rule), then a chain x_{t+1} = perm_rule(x_t) over tokens 2..23
VOCAB, SEQ_LEN, RULE_A = 24, 12, 0
_generator = torch.Generator().manual_seed(0)
PERMUTATIONS = [torch.cat([torch.arange(2), 2 + torch.randperm(VOCAB - 2, generator=_generator)]) for _ in range(2)]


def chains(n: int, seed: int, rules: tuple[int, ...] = (0, 1)) -> torch.Tensor:
    """``n`` sequences, each a rule token and a chain that follows that rule's permutation."""
    generator = torch.Generator().manual_seed(seed)
    rule = torch.tensor(rules)[torch.randint(0, len(rules), (n,), generator=generator)]
    sequence = [rule, 2 + torch.randint(0, VOCAB - 2, (n,), generator=generator)]
    for _ in range(SEQ_LEN - 2):
        sequence.append(torch.where(rule == 0, PERMUTATIONS[0][sequence[-1]], PERMUTATIONS[1][sequence[-1]]))
    return torch.stack(sequence, 1)


def chain_model(steps: int) -> torch.nn.Module:
    """A tiny model trained ``steps`` steps on both rules: it reads the rule from the first token."""
    model = tiny_model(n_layers=2, d_model=32, n_heads=2, d_vocab=VOCAB, n_ctx=32, seed=0, device=DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        loss = model(chains(64, seed=100 + step).to(DEVICE), return_type="loss")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad()
    model.eval()
    return model.requires_grad_(False)


@pytest.fixture(scope="module")
def trained():
    return chain_model(steps=300)


def top1_by_method(model, configs: dict[str, LearnedPromptConfig]) -> pd.DataFrame:
    """Top-1 of the learned prompt under each config and of the direct vocabulary probes, ``[layer, offset]``.

    The probes see rule-A sequences only: there the token ``t + 1 + N`` is a function of the token at ``t``.
    """
    data, config = chains(100, seed=1, rules=(RULE_A,)), ProbeSweepConfig(control=False, n_resamples=200)
    columns = {}
    for name, prompt_config in configs.items():
        table = probe_sweep({"m": model}, data, offsets=[0, 1, 2], method="learned_prompt", progress=False,
                            config=replace(config, methods={"learned_prompt": prompt_config})).to_frame()
        columns[name] = table.set_index(["layer", "offset"])["top1"]
    table = probe_sweep({"m": model}, data, offsets=[0, 1, 2], method="vocab", config=config,
                        progress=False).to_frame()
    columns["linear"] = table.set_index(["layer", "offset"])["top1"]
    return pd.DataFrame(columns)


LEARNED = LearnedPromptConfig(max_epochs=10, progress=False)
FIXED = LearnedPromptConfig(max_epochs=0, progress=False)  # the untrained prompt: the fixed-prompt transplant


def test_the_learned_prompt_reaches_the_linear_probe_and_beats_the_fixed_prompt(trained):
    """Rule-A sources in a trained model: the fixed prompt's own tokens set the rule (often B, or none), so its
    continuation goes astray; the learned prompt learns rule A's context and reads the state as the probe does."""
    before = {name: p.detach().clone() for name, p in trained.named_parameters()}
    top1 = top1_by_method(trained, {"learned": LEARNED, "fixed": FIXED})
    assert (top1["learned"] >= top1["linear"] - 0.05).all(), top1
    assert (top1["learned"] >= top1["fixed"] - 0.02).all(), top1
    assert (top1["learned"] - top1["fixed"] > 0.2).sum() >= 4, top1
    assert top1["learned"].mean() > top1["fixed"].mean() + 0.1, top1
    for name, p in trained.named_parameters():
        assert torch.equal(p, before[name]) and p.grad is None, name


def test_a_random_model_stays_at_chance():
    """The state holds the token (the linear probe reads it), but a random model cannot turn it into the chain."""
    random_model = chain_model(steps=0)
    top1 = top1_by_method(random_model, {"learned": LEARNED})
    assert (top1["linear"].loc[0] > 0.7).all(), top1
    assert (top1["learned"] < 0.15).all(), top1  # chance is about 1 / 22


def test_the_sweep_scores_it_like_every_method(trained):
    data = chains(40, seed=2, rules=(RULE_A,))
    table = probe_sweep({"m": trained}, data, layers=[1], offsets=[0, 1], method="learned_prompt", top_k=10,
                        config=ProbeSweepConfig(methods={"learned_prompt": replace(LEARNED, max_epochs=1)}),
                        progress=False).to_frame()
    assert list(table["method"]) == ["learned_prompt"] * 2 and list(table["offset"]) == [0, 1]
    numbers = ["top1", "top1_ci_low", "top1_ci_high", "top5", "cross_entropy", "greedy_top1", "greedy_cross_entropy",
               "bigram_top1", "gain_over_baseline", "gain_over_baseline_ci_low"]
    assert table[numbers].notna().all().all()
    assert (table["top1"] <= table["coverage"] + 1e-9).all()  # a top-k space: "other" is never a hit
    assert table["control_top1"].isna().all() and table["r2"].isna().all()


def _states(model, tokens, layers):
    resid = collect_activations(model, tokens, layers=layers, progress=False)[RESID]  # [layer, seq, pos, d]
    return resid.flatten(1, 2)


def test_the_untrained_prompt_is_the_fixed_prompt_transplant(any_model):
    """One mechanism, two prompt sources: token prompt [5, 6, 7, 8] and its embeddings give the same logits."""
    layers, offsets, prompt = [0, 1, any_model.cfg.n_layers], [0, 2], (5, 6, 7, 8)
    tokens = torch.randint(0, any_model.cfg.d_vocab, (2, 5), generator=torch.Generator().manual_seed(0))
    states = _states(any_model, tokens, layers)
    future = states[:2]  # any residuals: nothing is trained
    prompts = fit_learned_prompt(states, future, model=any_model, layers=layers, offsets=offsets,
                                 config=LearnedPromptConfig(prompt=prompt, max_epochs=0, progress=False))
    assert isinstance(prompts, LearnedPrompts) and prompts.prompt_length == 4
    with torch.no_grad():
        logits = prompts.logits(states)  # [layer, offset, n, d_vocab]
        run = torch.tensor(prompt).expand(states.shape[1], -1)
        for i, layer in enumerate(layers):
            hooks = transplant_hooks([(hook_name(any_model, RESID, layer), slice(None), states[i])], position=3)
            _, expected = greedy(any_model, run, n_steps=3, fwd_hooks=hooks)
            for j, offset in enumerate(offsets):
                torch.testing.assert_close(logits[i, j], expected[:, offset], rtol=1e-4, atol=1e-4)
    # at the final depth the transplanted state sets the logits of step 0: the model's own prediction
    assert torch.equal(logits[-1, 0].argmax(-1).cpu(), any_model(tokens)[:, :].argmax(-1).flatten().cpu())


def test_tokens_objective_learns_from_labels(trained):
    tokens = chains(60, seed=3, rules=(RULE_A,))
    states = _states(trained, tokens[:, :-2], [1])  # positions 0..9
    labels = torch.stack([tokens[:, 1:-1], tokens[:, 2:]]).flatten(1)  # offsets 0 and 1
    config = LearnedPromptConfig(objective="tokens", max_epochs=6, progress=False)
    learned = fit_learned_prompt(states, labels, model=trained, layers=[1], offsets=[0, 1], config=config)
    fixed = fit_learned_prompt(states, labels, model=trained, layers=[1], offsets=[0, 1],
                               config=replace(config, max_epochs=0))
    with torch.no_grad():
        accuracy = {name: (p.logits(states).argmax(-1)[0].cpu() == labels).float().mean(-1)
                    for name, p in (("learned", learned), ("fixed", fixed))}
    assert (accuracy["learned"] > 0.8).all() and accuracy["learned"][1] > accuracy["fixed"][1] + 0.2, accuracy
    assert learned.meta["epochs"] >= 1 and learned.meta["method"] == "learned_prompt"


def test_save_and_load_round_trip(native_model, tmp_path):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (6, 8), generator=torch.Generator().manual_seed(0))
    states = _states(native_model, tokens, [0, 2])
    prompts = fit_learned_prompt(states, states, model=native_model, layers=[0, 2], offsets=[0, 1],
                                 config=LearnedPromptConfig(max_epochs=1, progress=False))
    folder = save_probes(prompts, tmp_path / "prompts", model=native_model)
    loaded = load_probes(folder, model=native_model)
    assert isinstance(loaded, LearnedPrompts) and loaded.tasks == [Task(0), Task(1)] and loaded.layers == [0, 2]
    torch.testing.assert_close(loaded.weight, prompts.weight)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(states), prompts.logits(states), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded(states[1], layer=2, offset=1), prompts.logits(states)[1, 1])
    torch.testing.assert_close(loaded.prompt(layer=2, offset=1), prompts.weight[1, 1].T)
    with pytest.raises(InvalidArgumentError, match="model="):
        load_probes(folder)
    other = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=native_model.cfg.d_vocab, n_ctx=64, device=DEVICE)
    with pytest.raises(VocabularyMismatchError, match="d_model"):
        load_probes(folder, model=other)


def test_lens_view_reads_learned_prompts(native_model, tmp_path):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (6, 8), generator=torch.Generator().manual_seed(0))
    states = _states(native_model, tokens, [1, 2])
    prompts = fit_learned_prompt(states, states, model=native_model, layers=[1, 2], offsets=[0, 1],
                                 config=LearnedPromptConfig(max_epochs=1, progress=False))
    prompt_ids = [5, 9, 12, 7, 3]
    for source in (prompts, save_probes(prompts, tmp_path / "prompts", model=native_model)):
        view = lens_view(native_model, source, prompt_ids, offset=1)
        assert view.layers == [1, 2] and view.meta["method"] == "learned_prompt"
        with torch.no_grad():
            expected = prompts.logits(_states(native_model, torch.tensor([prompt_ids]), [1, 2]))[:, 1].argmax(-1)
        assert torch.equal(view.top_ids[..., 0], expected.cpu())


@pytest.mark.usefixtures("unchecked_shapes")
def test_bad_input(native_model):
    states = torch.randn(1, 10, native_model.cfg.d_model, device=DEVICE)
    with pytest.raises(InvalidArgumentError, match="objective"):
        LearnedPromptConfig(objective="nope")
    with pytest.raises(InvalidArgumentError, match="prompt_length"):
        LearnedPromptConfig(prompt_length=0)
    with pytest.raises(InvalidArgumentError, match="objective='tokens' expects"):
        fit_learned_prompt(states, states, model=native_model, config=LearnedPromptConfig(objective="tokens"))
    with pytest.raises(InvalidArgumentError, match="same examples"):
        fit_learned_prompt(states, states[:, :9], model=native_model)
    with pytest.raises(VocabularyMismatchError, match="d_model"):
        fit_learned_prompt(torch.randn(1, 10, 8), states, model=native_model)
    with pytest.raises(ContextLengthError, match="n_ctx"):
        fit_learned_prompt(states, states, model=native_model, offsets=[5],
                           config=LearnedPromptConfig(prompt=tuple(range(60)), max_epochs=0))
    with pytest.raises(OutOfRangeError):
        fit_learned_prompt(states, states, model=native_model, layers=[9])
    with pytest.raises(InvalidArgumentError, match="labels must lie"):
        fit_learned_prompt(states, torch.full((1, 10), 10_000), model=native_model,
                           config=LearnedPromptConfig(objective="tokens"))
