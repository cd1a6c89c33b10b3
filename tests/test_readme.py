"""The README's Python examples run as written.

``python`` blocks run here; ``py`` blocks need files a user has (checkpoints, a finished run)
and are only shown.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_pathway_and_custom_area_examples():
    assert len(BLOCKS) >= 2
    assert "share=[\"V1\", \"V2\"]" in BLOCKS[0] and "class V3Orientation(Area)" in BLOCKS[1]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "V1" in printed  # each example prints its per-area losses


def test_readme_commands_are_the_ci_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)
    tests = [c for c in commands if "pytest" in c]
    assert tests and tests[0] in ci


SHOWN = re.findall(r"```py\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(SHOWN)))
def test_shown_examples_compile_and_import_what_exists(index):
    import importlib
    import textwrap

    code = textwrap.dedent(SHOWN[index])
    compile(code, f"README.md[py block {index}]", "exec")
    for module, names in re.findall(r"^from ([\w.]+) import (.+)$", code, flags=re.M):
        imported = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(imported, name.strip()), f"{module} has no {name.strip()}"
