"""The package as a whole: the public API from the top, loaded lazily, and every docstring example run."""

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

import iflow


def test_every_public_name_resolves_to_its_module() -> None:
    for name in iflow.__all__:
        value = getattr(iflow, name)
        assert value is getattr(importlib.import_module(iflow._EXPORTS[name]), name), name


def test_importing_iflow_does_not_load_torch() -> None:
    code = "import sys, iflow; from iflow import ModelConfig; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_public_name_is_shadowed_by_a_submodule() -> None:
    """Importing a submodule sets it as an attribute of the package: a same-named export would be replaced."""
    submodules = {m.name.split(".")[1] for m in pkgutil.walk_packages(iflow.__path__, "iflow.")}
    assert not submodules & set(iflow.__all__)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        iflow.nope  # noqa: B018


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(iflow.__path__, "iflow.") if not m.name.endswith("__main__"))


def test_docstring_examples_run() -> None:
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    for name in modules():
        module = importlib.import_module(name)
        for test in finder.find(module, name, globs={"torch": importlib.import_module("torch"), **vars(module)}):
            examples += len(test.examples)
            runner.run(test)
    assert examples >= 3, "the package's docstring examples were not found"
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed"
