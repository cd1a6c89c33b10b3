"""The README's Python examples run as written."""

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
