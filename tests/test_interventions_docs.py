"""Every docstring example in forethought.interventions runs and prints what it shows."""

import doctest
import importlib

import pytest

MODULES = ["__init__", "metrics", "patching", "transplant", "directions", "past"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    name = "forethought.interventions" + ("" if module == "__init__" else f".{module}")
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
