"""The README's Python examples run as written: every ```python block, in order, in one namespace, offline."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_python_blocks_are_found():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 5 and all(block.strip() for block in blocks)


@pytest.fixture
def registered_regimes():
    """The regimes registered before the test, and only they, after it (the README registers one of its own)."""
    from forethought.regimes import REGIMES

    before = dict(REGIMES)
    yield
    REGIMES.clear()
    REGIMES.update(before)


@pytest.mark.slow
@pytest.mark.usefixtures("registered_regimes")
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever the examples write lands here
    namespace: dict = {"__name__": "readme"}
    for number, block in enumerate(python_blocks(README.read_text(encoding="utf-8")), start=1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
        except Exception as error:
            raise AssertionError(f"README python block {number} fails: {type(error).__name__}: {error}\n{block}"
                                 ) from error
    assert os.listdir(tmp_path)  # the examples wrote their results in the working directory
