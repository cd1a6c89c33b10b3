"""How a run carries the user's code and loads it back (visualpath.usercode, decision T2):
the cases around packages, ``python -m`` scripts and files of the same name. Each case runs in
a fresh process, as a reader opening a run would."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AREA = '''from areas.v1_gabor import V1Gabor


class {name}(V1Gabor):
    """A user's area."""
'''


def _python(code: str, cwd: Path, store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VISUALPATH_TRUST_FILE": str(store)}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


WRITE = '''import json, sys
sys.path.insert(0, "lab")  # the user's folder on the import path (a module name never means the current folder)
from visualpath import usercode
from visualpath.trust import trusting
with trusting({flag}, named={named!r}):
    module = usercode.import_module({module!r}, "test")
entries = usercode.collect([module])
{after}
json.dump(usercode.write({run!r}, entries), open({run!r} + "/manifest.json", "w"))
'''

LOAD = '''from visualpath import usercode
from visualpath.trust import trusting
import json
carried = usercode.Carried({run!r}, json.load(open({run!r} + "/manifest.json")))
with trusting(True):
    module = carried.load({ref!r}, "test")
print(module.{name}.__name__)
'''


@pytest.mark.e2e
def test_code_imported_by_a_module_trusted_once_is_not_remembered(tmp_path):
    """``--trust-code`` on a module that imports its sibling and its package: none of them is
    remembered as the reader's own (the package and the sibling ran under the same flag)."""
    lab = tmp_path / "lab"
    (lab / "labpkg").mkdir(parents=True)
    (lab / "labpkg" / "__init__.py").write_text("")
    (lab / "labpkg" / "helper.py").write_text("SCALE = 2\n")
    (lab / "labpkg" / "graph.py").write_text("from labpkg.helper import SCALE  # noqa: F401\n"
                                             + AREA.format(name="Mine"))
    store, run = tmp_path / "store.json", tmp_path / "run"
    _ok(_python(WRITE.format(flag=True, named=[], module="labpkg.graph", run=str(run),
                             after="assert {e.ref for e in entries} == {'labpkg', 'labpkg.graph', 'labpkg.helper'}\n"
                                   "usercode.remember_authored(entries)"), tmp_path, store))
    assert not store.exists() or json.loads(store.read_text()).get("sha256", {}) == {}


@pytest.mark.e2e
def test_the_authors_named_module_and_its_siblings_are_remembered(tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "helper.py").write_text("SCALE = 2\n")
    (lab / "mine.py").write_text("from helper import SCALE  # noqa: F401\n" + AREA.format(name="Mine"))
    store, run = tmp_path / "store.json", tmp_path / "run"
    _ok(_python(WRITE.format(flag=False, named=["mine"], module="mine", run=str(run),
                             after="usercode.remember_authored(entries)"), tmp_path, store))
    remembered = json.loads(store.read_text())["sha256"]
    for name in ("mine.py", "helper.py"):
        assert hashlib.sha256((lab / name).read_bytes()).hexdigest() in remembered


@pytest.mark.e2e
def test_a_file_added_beside_a_carried_package_never_runs(tmp_path):
    """A carried package's submodules come from the manifest only: a file someone adds to
    ``code/modules/PKG/`` is not imported, even by a package that tries to import it."""
    lab = tmp_path / "lab"
    (lab / "labpkg").mkdir(parents=True)
    (lab / "labpkg" / "__init__.py").write_text("try:\n    from . import extra  # noqa: F401\nexcept ImportError:\n"
                                                "    pass\n" + AREA.format(name="Mine"))
    store, run = tmp_path / "store.json", tmp_path / "run"
    _ok(_python(WRITE.format(flag=True, named=[], module="labpkg", run=str(run), after=""), tmp_path, store))
    marker = tmp_path / "marker"
    (run / "code" / "modules" / "labpkg" / "extra.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _ok(_python(LOAD.format(run=str(run), ref="labpkg", name="Mine"), elsewhere, store)).split() == ["Mine"]
    assert not marker.exists()


@pytest.mark.e2e
def test_a_module_of_a_namespace_package_loads_from_the_copy(tmp_path):
    """``nsp/mod.py`` in a folder without ``__init__.py``: the run rebuilds it after the
    folder is gone."""
    lab = tmp_path / "lab"
    (lab / "nsp").mkdir(parents=True)
    (lab / "nsp" / "mod.py").write_text(AREA.format(name="Mine"))
    store, run = tmp_path / "store.json", tmp_path / "run"
    _ok(_python(WRITE.format(flag=True, named=[], module="nsp.mod", run=str(run), after=""), tmp_path, store))
    (lab / "nsp" / "mod.py").unlink()
    (lab / "nsp").rmdir()
    assert _ok(_python(LOAD.format(run=str(run), ref="nsp.mod", name="Mine"), lab, store)).split() == ["Mine"]


@pytest.mark.e2e
def test_a_script_run_with_python_m_carries_what_it_imports_relatively(tmp_path):
    lab = tmp_path / "lab"
    (lab / "labpkg").mkdir(parents=True)
    (lab / "labpkg" / "__init__.py").write_text("")
    (lab / "labpkg" / "helper.py").write_text(AREA.format(name="Mine"))
    (lab / "labpkg" / "script.py").write_text("import sys\nfrom .helper import Mine  # noqa: F401\n"
                                              "from visualpath import usercode\n"
                                              "print(sorted(e.ref for e in usercode.collect([sys.modules['__main__']]) "
                                              "if e.module))\n")
    env = {**os.environ, "VISUALPATH_TRUST_FILE": str(tmp_path / "store.json")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-m", "labpkg.script"], cwd=lab, env=env, capture_output=True, text=True,
                          timeout=120)
    assert _ok(done).strip() == "['labpkg', 'labpkg.helper']"


def test_files_of_the_same_name_never_overwrite_each_others_copy(tmp_path):
    """Two graph files both called ``graph.py``, carried by two spec files of one run (as
    ``pathway.json`` and ``pathway.ventral.json`` are): each keeps its own verified copy."""
    from visualpath import usercode
    from visualpath.trust import trusting

    run = tmp_path / "run"
    manifests = []
    for lab in ("a", "b"):
        (tmp_path / lab).mkdir()
        path = tmp_path / lab / "graph.py"
        path.write_text(AREA.format(name=f"Area{lab.upper()}"))
        with trusting(named=[str(path)]):
            module = usercode.load_file(path, "test")
        manifests.append(usercode.write(run, usercode.collect([module])))
    files = [m[0]["file"] for m in manifests]
    assert files[0] != files[1]
    for manifest in manifests:
        with trusting(True):
            usercode.Carried(run, manifest).require(manifest[0])  # present and unchanged


def test_the_weights_of_a_run_read_by_interop_are_verified(tmp_path):
    import torch

    from visualpath.interop import read_state_dict
    from visualpath.rundir import DamagedWeights

    from visualpath.rundir import TrainState, save_checkpoint, selected_checkpoint

    stage = tmp_path / "run" / "joint"
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(torch.ones(3))
    save_checkpoint(stage, module, None, TrainState())
    assert read_state_dict(tmp_path / "run")["w"].sum() == 3
    progress = selected_checkpoint(stage) / "progress.json"
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "weights_sha256": "0" * 64}))
    with pytest.raises(DamagedWeights, match="SHA-256"):
        read_state_dict(tmp_path / "run")
