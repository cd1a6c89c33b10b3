"""The README's (and the guide's) Python examples run as written, and its commands in a
newcomer's order.

``python`` blocks run here; ``py`` blocks need files a user has (checkpoints, a finished run)
and are only shown.
"""

import json
import re
from pathlib import Path

import pytest
from tests.conftest import accuracy_over

README = Path(__file__).resolve().parents[1] / "README.md"
GUIDE = README.parent / "docs" / "guide.md"
BLOCKS = [(path.name, block) for path in (README, GUIDE)
          for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)]


def test_readme_and_guide_have_the_pathway_and_custom_area_examples():
    readme = [block for name, block in BLOCKS if name == "README.md"]
    guide = [block for name, block in BLOCKS if name == "guide.md"]
    assert "share=[\"V1\", \"V2\"]" in readme[0]
    assert any("class V3Orientation(Area)" in b for b in guide) and any("Feedback(" in b for b in guide)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    name, block = BLOCKS[index]
    exec(compile(block, f"{name}[python block {index}]", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "V1" in printed  # each example prints its per-area losses


def test_the_readme_is_a_front_door_and_docs_has_an_index():
    assert len(README.read_text().splitlines()) <= 210
    index = (README.parent / "docs" / "README.md").read_text()
    for doc in sorted((README.parent / "docs").glob("*.md")):
        if doc.name != "README.md":
            assert f"]({doc.name})" in index, f"docs/README.md does not list {doc.name}"
    for link in re.findall(r"\]\((docs/[^)#]+)", README.read_text()):
        assert (README.parent / link).is_file(), link


def test_readme_commands_are_the_ci_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)
    tests = [c for c in commands if "pytest" in c]
    assert tests and tests[0] in ci


SHOWN = [b for path in (README, GUIDE) for b in re.findall(r"```py\n(.*?)```", path.read_text(), flags=re.S)]


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


FILES = re.findall(r"```python (\S+\.py)\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.e2e
def test_the_own_graph_commands_run_in_the_order_a_newcomer_types_them(tmp_path):
    """The graph file is written as shown; each command runs in a shell as shown, at the tiny
    scale (``--variant tiny``) so that the whole path takes seconds."""
    import subprocess
    import sys

    assert [name for name, _ in FILES] == ["my_graph.py"]
    for name, code in FILES:
        (tmp_path / name).write_text(code)
    section = README.read_text().split("```python my_graph.py", 1)[1]
    commands = re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1).splitlines()
    assert len(commands) == 5
    outputs = []
    for line in commands:
        command = line.split("  #", 1)[0].strip()
        command = command.replace("python -m recipes.bimm_ucf101",
                                  f"{sys.executable} -m recipes.bimm_ucf101 --variant tiny device=cpu")
        command = command.replace("python -m analysis", f"{sys.executable} -m analysis")
        log = tmp_path / "log.txt"  # redirected as a batch job does: 2>log
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {command} 2>{log}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{log.read_text()[-4000:]}"
        outputs.append(done.stdout)
        if "run_dir=runs/my_graph " in command + " " and "--help" not in command and len(outputs) == 2:
            text = log.read_text()  # the first training run: plain progress lines with every loss in the log
            assert "joint step" in text and "ventral.V3=" in text and "\x1b[" not in text
    assert "pathway.V3.decoder.depth" in outputs[0]
    results = json.loads((tmp_path / "runs/my_graph/analysis/results.json").read_text())
    assert ("ventral", "V3") in {(r["stream"], r["area"]) for r in results["rows"]}
    deep = json.loads((tmp_path / "runs/my_graph_deep/pathway.json").read_text())
    assert deep["streams"][0]["areas"][2]["decoder"]["depth"] == 2


@pytest.mark.e2e
def test_the_recipe_commands_run_after_the_quick_start(tmp_path):
    """The README's recipe lines that can run here (no dataset, no SAM checkpoint), in order,
    after the quick start's main job, at the tiny scale; the help line as it is."""
    import subprocess
    import sys

    block = re.search(r"## Recipes\n\n```bash\n(.*?)\n```", README.read_text(), flags=re.S).group(1).splitlines()
    runnable = [line.split("  #", 1)[0].strip() for line in block
                if "/data/" not in line and "sam_checkpoint" not in line]
    assert any("--help" in c for c in runnable) and any("pretrained=runs/bimm_ucf101_demo" in c for c in runnable)
    tiny = "--variant tiny device=cpu"
    commands = [f"python -m recipes.bimm_ucf101 {tiny}"] + runnable  # the quick start's job first
    for command in commands:
        command = command.replace("python -m recipes.bimm_ucf101", f"{sys.executable} -m recipes.bimm_ucf101")
        if "--help" not in command and tiny not in command:
            command = command.replace("-m recipes.bimm_ucf101", f"-m recipes.bimm_ucf101 {tiny}")
        command = command.replace("runs/bimm_ucf101_demo", "runs/bimm_ucf101_tiny")
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    results = json.loads((tmp_path / "runs/bimm_ucf101_ft/results.json").read_text())
    assert accuracy_over(results)


@pytest.mark.e2e
def test_a_changed_finetune_setting_in_a_finished_run_suggests_the_command_that_works(tmp_path, capsys):
    import attrs

    from recipes import bimm_ucf101

    run = tmp_path / "run"
    bimm_ucf101.run(attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(run), device="cpu"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        bimm_ucf101.main(["--variant", "tiny", "device=cpu", f"run_dir={run}", "stages=finetune,test",
                          "finetune.optim.epochs=2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"run_dir={run}_ft pretrained={run} stages=finetune,test" in err and "\n" not in err.strip()


@pytest.mark.e2e
def test_the_cluster_commands_parse_as_written(monkeypatch, tmp_path):
    """No cluster here: each line of the README's cluster block is parsed by the program that
    would run it (torchrun's own parser; recipes.submit up to the executor, which records what
    it would submit to SLURM)."""
    import shlex

    from torch.distributed.run import get_args_parser

    from recipes import submit

    block = re.search(r"## On a cluster\n\n```bash\n(.*?)\n```", README.read_text(), flags=re.S).group(1)
    lines = [line.split("  #", 1)[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    assert len(lines) == 3
    for line in lines[:2]:
        args = get_args_parser().parse_args(shlex.split(line)[1:])
        assert args.module and args.training_script == "recipes.bimm_k400"
    submitted = {}

    class Executor:
        def __init__(self, folder, cluster, slurm_max_num_timeout):
            submitted.update(folder=folder, cluster=cluster)

        def update_parameters(self, **params):
            submitted.update(params)

        def submit(self, work):
            submitted["work"] = repr(work)

            class Job:
                job_id, paths = "1", type("P", (), {"folder": "f"})

            return Job()

    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    monkeypatch.chdir(tmp_path)
    command = shlex.split(lines[2].split("&&", 1)[1])
    assert command[:3] == ["python", "-m", "recipes.submit"]
    assert submit.main(command[3:]) == 0
    assert submitted["cluster"] == "slurm" and submitted["nodes"] == 8 and submitted["gpus_per_node"] == 8
    assert submitted["tasks_per_node"] == 8 and submitted["slurm_partition"] == "gpu"
    assert submitted["work"] == "python -m recipes.bimm_k400 --data-root /data/k400"
