"""The documentation covers the package: every module in the API reference, every notebook in the site."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def documented_modules() -> set[str]:
    pages = (ROOT / "docs" / "api").glob("*.md")
    return {name for page in pages for name in re.findall(r"^::: (\S+)$", page.read_text(), re.MULTILINE)}


def test_every_module_is_in_the_api_reference():
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "iflow").rglob("*.py")
        if path.name != "__init__.py"
    }
    assert modules - documented_modules() == set()


def test_every_notebook_is_in_the_site():
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"notebooks/{notebook.name}" in mkdocs, f"{notebook.name} is not in mkdocs.yml's nav"
