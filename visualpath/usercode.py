"""The user's own code a graph needs: found by import path, carried into a run, loaded back.

A graph may name classes outside the installed packages (``my_graph.py:V3``,
``v3_sobel:V3Sobel``). This module imports such a reference under the trust rule of
:mod:`visualpath.trust`, and makes a run self-contained (decision T2 in docs/decisions.md):

- :func:`collect` gathers, when a run is written, the source of every module outside the
  installed packages that the graph's areas (and its builder) live in, and of the user's
  modules those import (``from v3_sobel import V3Sobel`` beside the graph file), with each
  file's SHA-256;
- :func:`write` copies them into ``run_dir/code/`` (``modules/`` by module name, ``files/``
  for files loaded by path) and returns the manifest stored in ``pathway.json``;
- :class:`Carried` loads them back: every consumer rebuilds from the copy, never from the
  path the run was trained from, so a run moved to another machine, with its original files
  renamed, edited or deleted, rebuilds exactly what it trained, from any working directory.
  A copy whose bytes no longer match its recorded hash is refused. A module the process
  already holds with the same bytes is reused (its classes stay the same objects).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import attrs

from visualpath import trust
from visualpath.atomic import atomic_write, sha256
from visualpath.errors import SpecError
from visualpath.trust import CodeNotTrusted

__all__ = ["CodeError", "SourceFile", "Carried", "load_file", "import_module", "collect", "write", "CODE_DIR",
           "module_of"]

CODE_DIR = "code"

# modules by the SHA-256 of the bytes they were executed from: a run's copy of code this
# process already runs is that module, not a second one
_BY_SHA: dict[str, types.ModuleType] = {}
# files loaded by path (or carried copies of them), by the reference they are stored under:
# one module per reference in a process
_BY_REF: dict[str, types.ModuleType] = {}
# how each module of user code came to run: "reader" (named by the reader, or imported by
# code they ran), "store" (trusted by content) or "flag" (--trust-code for one call)
_HOW = "__visualpath_trusted__"


class CodeError(SpecError):
    """User code that cannot be found, read or loaded (the message names the file)."""


def is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def _exec(module: types.ModuleType, source: bytes, filename: str) -> None:
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, module.__dict__)  # noqa: S102 (the code was trusted by the caller's policy)


# --------------------------------------------------------------------------- importing by path or name


def load_file(path: str | Path, where: str = "reference", how: str | None = None) -> types.ModuleType:
    """Import a ``.py`` file once per resolved path (a second load returns the same module,
    so its classes stay the same objects), under the trust rule. Its folder is first on the
    import path while it runs, as under ``python FILE.py``: the sibling modules it imports
    are found from whatever folder the command runs in.

    Raises:
        CodeError: no such file.
        CodeNotTrusted: the reader neither named nor trusted it.
    """
    path = Path(path).expanduser().resolve()
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) and Path(main.__file__).resolve() == path:
        return main  # the running script: its classes, not a second copy of them
    if str(path) in _BY_REF:
        return _BY_REF[str(path)]
    if not path.is_file():
        raise CodeError(f"{where}: no such file {str(path)!r}")
    source = path.read_bytes()
    sha = sha256(source)
    how = how or _decide(str(path), sha, where)
    name = f"_visualpath_file_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    folder = str(path.parent)
    sys.path.insert(0, folder)  # as `python FILE.py` runs it: its sibling modules import, from any folder
    try:
        module = _new_module(name, source, str(path), str(path), str(path), sha, how)
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    _BY_REF[str(path)] = module
    return module


def _new_module(name: str, source: bytes, filename: str, ref: str, origin: str, sha: str,
                how: str) -> types.ModuleType:
    """A module named ``name`` run from ``source`` (registered while it runs, as imports are)."""
    module = types.ModuleType(name)
    module.__file__ = filename
    module.__visualpath_file__ = ref  # its classes are stored under this reference
    sys.modules[name] = module
    try:
        with _Tagging(how):
            _Loader(source, filename, origin, sha, how).exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class _Tagging:
    """Marks every module of user code that runs inside the block as trusted ``how`` (the
    siblings a trusted module imports run under the same choice): code that runs only
    because of ``--trust-code`` is never remembered as the reader's own."""

    def __init__(self, how: str | None) -> None:
        self.how = how

    def __enter__(self) -> None:
        self.before = set(sys.modules)

    def __exit__(self, *exc) -> None:
        if self.how is None:
            return
        for name in set(sys.modules) - self.before:
            module = sys.modules.get(name)
            if module is not None and not hasattr(module, _HOW) and _user_module(module):
                setattr(module, _HOW, self.how)


def _decide(module_part: str, sha: str | None, where: str) -> str:
    """How code that is about to run is trusted, or the refusal."""
    if trust.named(module_part):
        return "reader"
    if sha is not None and sha in trust.trusted_hashes():
        return "store"
    if trust.policy().trust_code:
        return "flag"
    raise CodeNotTrusted(trust.how_to_trust(f"{where} names {module_part!r}, code outside the installed packages "
                                            "that you have not trusted"))


def import_module(name: str, where: str = "reference") -> types.ModuleType:
    """Import a module by name under the trust rule: installed packages and modules this
    process already holds freely, anything else (a module found in the current folder or on
    ``PYTHONPATH``) only when trusted.

    Raises:
        CodeError: no such module.
        CodeNotTrusted: the reader neither named nor trusted it.
    """
    if not all(part.isidentifier() for part in name.split(".")):
        raise CodeError(f"{where}: {name!r} is not a module name (a file is named by its path: 'path/to/file.py')")
    if name in sys.modules:
        return sys.modules[name]
    if "__main__" in name.split("."):  # importing a package's __main__ runs it as a program
        raise CodeError(f"{where}: {name!r} is a program's entry point, not a module a graph can name")
    if not trust.installed(name):
        top = name.split(".")[0]
        found = None
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            pass
        if found is None:
            raise CodeError(f"{where}: cannot import {name!r} (no module named {top!r})")
        folder = _path_entry(found)
        if folder is not None and folder == Path.cwd().resolve():
            raise CodeError(f"{where}: {name!r} names a module by its name, and the first {top!r} on the import "
                            f"path is {found.origin if found.origin not in (None, 'namespace') else folder / top} in the "
                            "current folder: a module name means an installed module (or one on PYTHONPATH), never "
                            "whatever matches in the current folder; to use that file, name it by its path "
                            f"('{top}.py:NAME' or '{top}/__init__.py:NAME')")
        sha = None
        if "." not in name and found.origin and Path(found.origin).is_file():
            sha = sha256(Path(found.origin).read_bytes())
        how = _decide(name, sha, where)
    else:
        how = None
    try:
        with _Tagging(how):
            module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise CodeError(f"{where}: cannot import {name!r} ({err})") from None
    return module


def _path_entry(found) -> Path | None:
    """The folder of ``sys.path`` a top-level module was found in (None if unknown)."""
    if found.origin and found.origin not in ("built-in", "frozen", "namespace"):
        origin = Path(found.origin).resolve()
        return origin.parent.parent if origin.name == "__init__.py" else origin.parent
    places = list(found.submodule_search_locations or [])
    return Path(places[0]).resolve().parent if places else None


def module_of(module_part: str, where: str = "reference") -> types.ModuleType:
    """The module ``module_part`` of a reference names (a file path or a module name)."""
    return load_file(module_part, where) if is_path(module_part) else import_module(module_part, where)


# --------------------------------------------------------------------------- what a run carries


@attrs.frozen
class SourceFile:
    """One file of user code a run carries.

    Attributes:
        ref: how the graph names it: a module name, or the file's path when it was loaded
            by path (the module part of the area's ``"type"``).
        module: the name sibling modules import it by (None for a file loaded by path).
        package: whether it is a package's ``__init__.py``.
        source: its bytes.
        origin: where it was read from when the run was written (provenance only).
    """

    ref: str
    module: str | None
    package: bool
    source: bytes
    origin: str

    @property
    def sha256(self) -> str:
        return sha256(self.source)


def _user_module(module: types.ModuleType | None) -> bool:
    if module is None or module.__name__ == "builtins":
        return False
    if getattr(module, "__visualpath_source__", None) is not None or getattr(module, "__visualpath_file__", None):
        return True
    if module.__name__ == "__main__":  # a script is the user's; `python -m package.module` may be installed
        spec_name = getattr(getattr(module, "__spec__", None), "name", None)
        return bool(getattr(module, "__file__", None)) and (spec_name is None or not trust.installed(spec_name))
    file = getattr(module, "__file__", None)
    return bool(file) and str(file).endswith(".py") and not trust.installed(module.__name__)


def _source_of(module: types.ModuleType) -> tuple[bytes, str]:
    """The bytes a module runs (a carried copy's own, or its file's) and where they came from."""
    carried = getattr(module, "__visualpath_source__", None)
    if carried is not None:
        return carried, getattr(module, "__visualpath_origin__", module.__file__)
    file = Path(module.__file__)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise CodeError(f"cannot read {file}, the source of {module.__name__!r} that the graph needs "
                        f"({err.strerror or err})") from None
    return data, str(file.resolve())


def _entry(module: types.ModuleType) -> SourceFile:
    source, origin = _source_of(module)
    file_ref = getattr(module, "__visualpath_file__", None)
    if module.__name__ == "__main__":
        file_ref = str(Path(module.__file__).resolve())
    package = bool(getattr(module, "__path__", None)) and file_ref is None
    if not hasattr(module, "__visualpath_sha256__"):
        module.__visualpath_sha256__ = sha256(source)
    _BY_SHA.setdefault(sha256(source), module)
    return SourceFile(ref=file_ref or module.__name__, module=None if file_ref else module.__name__,
                      package=package, source=source, origin=origin)


def _imports(source: bytes, module: types.ModuleType) -> set[str]:
    """Module names a source imports (absolute, and relative ones resolved in its package)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    name = module.__name__
    if name == "__main__":  # `python -m pkg.script`: its relative imports are pkg's
        name = getattr(getattr(module, "__spec__", None), "name", None) or name
    package = name if getattr(module, "__path__", None) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor).strip(".")
            if not base:
                continue
            parts = base.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def collect(modules: Iterable[types.ModuleType]) -> list[SourceFile]:
    """The user's code that ``modules`` need: each of them that is not installed, the user
    modules they import (found in ``sys.modules``, recursively) and their parent packages."""
    seen: dict[str, SourceFile] = {}
    todo = [m for m in modules if _user_module(m)]
    while todo:
        module = todo.pop()
        entry = _entry(module)
        if entry.ref in seen:
            continue
        seen[entry.ref] = entry
        names = _imports(entry.source, module)
        if entry.module and "." in entry.module:
            parts = entry.module.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts)))
        for name in sorted(names):
            found = sys.modules.get(name)
            if _user_module(found) and name not in seen:
                todo.append(found)
    return sorted(seen.values(), key=lambda e: (e.module is None, e.ref))


def _relative(run_dir: Path, entry: SourceFile, taken: set[str]) -> str:
    """Where ``entry``'s copy goes: by module path or file name, with its hash added when
    that place holds other bytes (another file of the same name, or of another spec file
    of the run, e.g. ``pathway.ventral.json``'s), so no copy is ever overwritten."""
    if entry.module is not None:
        path = f"{CODE_DIR}/modules/" + "/".join(entry.module.split(".")) + ("/__init__.py" if entry.package else ".py")
    else:
        path = f"{CODE_DIR}/files/{Path(entry.ref).stem}.py"
    target = run_dir / path
    if path in taken or (target.is_file() and target.read_bytes() != entry.source):
        path = path[:-len(".py")] + f"-{entry.sha256[:12]}.py"
    return path


def write(run_dir: str | Path, entries: Sequence[SourceFile]) -> list[dict]:
    """Copy ``entries`` into ``run_dir/code/`` (each file atomically); the manifest
    ``[{"ref", "module", "package", "file", "sha256", "origin"}]`` for ``pathway.json``."""
    run_dir = Path(run_dir)
    manifest, taken = [], set()
    for entry in entries:
        relative = _relative(run_dir, entry, taken)
        taken.add(relative)
        target = run_dir / relative
        if not (target.is_file() and target.read_bytes() == entry.source):
            atomic_write(target, entry.source)
        manifest.append({"ref": entry.ref, "module": entry.module, "package": entry.package, "file": relative,
                         "sha256": entry.sha256, "origin": entry.origin})
    return manifest


def remember_authored(entries: Sequence[SourceFile]) -> None:
    """The author's own code, carried into a run they wrote, becomes trusted by content
    (:func:`visualpath.trust.remember`); code that runs only because of ``--trust-code``
    does not."""
    flagged = {getattr(m, "__visualpath_sha256__", None) for m in list(sys.modules.values())
               if getattr(m, _HOW, None) == "flag"}
    trust.remember((e.sha256, e.origin) for e in entries if e.sha256 not in flagged)


# --------------------------------------------------------------------------- loading a run's copy


def _check_manifest(manifest: Any, where: str) -> list[dict]:
    if not isinstance(manifest, list):
        raise CodeError(f"{where}: 'code' must be a list of carried files, got {type(manifest).__name__}")
    out = []
    for i, item in enumerate(manifest):
        ok = isinstance(item, Mapping) and isinstance(item.get("ref"), str) and isinstance(item.get("file"), str) \
            and isinstance(item.get("sha256"), str) and (item.get("module") is None or
                                                         isinstance(item.get("module"), str))
        if not ok:
            raise CodeError(f"{where}: code[{i}] must hold 'ref', 'file', 'sha256' and 'module', got {item!r}")
        relative = Path(item["file"])
        if relative.is_absolute() or ".." in relative.parts or relative.parts[:1] != (CODE_DIR,) or \
                relative.suffix != ".py":
            raise CodeError(f"{where}: code[{i}].file must be a .py file inside {CODE_DIR}/, got {item['file']!r}")
        module = item.get("module")
        if module is not None and not all(p.isidentifier() for p in module.split(".")):
            raise CodeError(f"{where}: code[{i}].module is not a module name: {module!r}")
        if module is not None and trust.installed(module):
            raise CodeError(f"{where}: code[{i}] carries a module named {module!r}, which is an installed package's "
                            "name: a run never carries a replacement for installed code")
        out.append(dict(item))
    return out


class _Loader(importlib.abc.Loader):
    def __init__(self, source: bytes, filename: str, origin: str, sha: str, how: str) -> None:
        self.source, self.filename, self.origin, self.sha, self.how = source, filename, origin, sha, how

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        module.__visualpath_source__ = self.source
        module.__visualpath_origin__ = self.origin
        module.__visualpath_sha256__ = self.sha
        setattr(module, _HOW, self.how)
        _exec(module, self.source, self.filename)
        _BY_SHA.setdefault(self.sha, module)


class _Finder(importlib.abc.MetaPathFinder):
    """Resolves the carried modules' names to their verified copies while a run's code loads."""

    def __init__(self, carried: Carried) -> None:
        self.carried = carried

    def find_spec(self, name, path=None, target=None):
        item = self.carried.modules.get(name)
        if item is None:
            if any(m.startswith(name + ".") for m in self.carried.modules):
                # a namespace package (a folder without __init__.py) above carried modules
                spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
                spec.submodule_search_locations = []
                return spec
            return None
        source, how = self.carried.source(item)
        filename = str(self.carried.root / item["file"])
        spec = importlib.machinery.ModuleSpec(name, _Loader(source, filename, item.get("origin") or filename,
                                                             item["sha256"], how),
                                              origin=filename, is_package=bool(item.get("package")))
        spec.has_location = True
        if item.get("package"):
            # submodules come from the manifest only (through this finder), never from a file
            # someone added beside the copies
            spec.submodule_search_locations = []
        return spec


class Carried:
    """The code a run carries (``pathway.json``'s ``"code"``), loadable under the trust rule.

    Args:
        root: the run directory (its ``code/`` folder holds the copies).
        manifest: the ``"code"`` list of its ``pathway.json``.
        where: what to name in messages (the spec file).
    """

    def __init__(self, root: str | Path, manifest: Any, where: str = "pathway.json") -> None:
        self.root, self.where = Path(root), where
        self.items = _check_manifest(manifest, where)
        self.refs = {item["ref"]: item for item in self.items}
        self.modules = {item["module"]: item for item in self.items if item.get("module")}
        self._checked: dict[str, tuple[bytes, str]] = {}

    def __contains__(self, module_part: str) -> bool:
        return module_part in self.refs

    def source(self, item: Mapping) -> tuple[bytes, str]:
        """The verified bytes of a carried file and how they are trusted."""
        if item["sha256"] not in self._checked:
            self.require(item)
        return self._checked[item["sha256"]]

    def require(self, item: Mapping) -> None:
        """Check the files that loading ``item`` may run (it, and the carried modules it may
        import) are present and unchanged, and that the reader trusts them; one refusal
        names every file that is damaged or untrusted."""
        stored = trust.trusted_hashes()
        untrusted, checked = [], {}
        for each in [item, *(i for i in self.items if i.get("module") and i is not item)]:
            path = self.root / each["file"]
            try:
                data = path.read_bytes()
            except OSError as err:
                raise CodeError(f"{self.where}: the run's copy {each['file']} of {each['ref']!r} cannot be read "
                                f"({err.strerror or err})") from None
            if sha256(data) != each["sha256"]:
                raise CodeError(f"{self.where}: the run's copy {each['file']} of {each['ref']!r} is not the file it "
                                f"recorded (SHA-256 {sha256(data)[:12]}... against {each['sha256'][:12]}...): it was "
                                "damaged or edited; restore it from the original run")
            if each["sha256"] in _BY_SHA or each["sha256"] in stored:
                checked[each["sha256"]] = (data, "store")
            elif trust.policy().trust_code:
                checked[each["sha256"]] = (data, "flag")
            else:
                untrusted.append(f"{self.root / each['file']} (sha256 {each['sha256'][:12]}...)")
        if untrusted:
            raise CodeNotTrusted(trust.how_to_trust(f"{self.where} needs code that is not installed and that you have "
                                                    f"not trusted: {', '.join(untrusted)}"))
        self._checked.update(checked)

    def _another_version(self, held: types.ModuleType, item: Mapping, where: str):
        raise CodeError(f"{where}: {item['ref']!r} changed since this run was written: this command runs the edited "
                        f"file ({getattr(held, '__file__', '?')}), and the run carries the version it trained "
                        f"({self.root / item['file']}); to go on with the run as it was trained, restore the file from "
                        "that copy; to train the edited version, give it another run_dir (or resume=false); from "
                        "Python, open the run in a process that has not imported the edited file")

    def load(self, module_part: str, where: str) -> types.ModuleType:
        """The module of a carried reference: one this process holds with the same bytes,
        else the run's copy (its sibling modules resolve to their copies too)."""
        item = self.refs[module_part]
        same = _BY_SHA.get(item["sha256"])
        if same is not None and (item.get("module") is None or same.__name__ == item["module"]):
            return same
        name = item.get("module")
        if name is None and item["ref"] in _BY_REF:
            self._another_version(_BY_REF[item["ref"]], item, where)
        if name is not None and name in sys.modules:
            held = sys.modules[name]
            held_sha = getattr(held, "__visualpath_sha256__", None)
            if held_sha is None and getattr(held, "__file__", None) and Path(held.__file__).is_file():
                held_sha = sha256(Path(held.__file__).read_bytes())
            if held_sha == item["sha256"]:
                _BY_SHA.setdefault(held_sha, held)
                return held
            self._another_version(held, item, where)
        self.require(item)
        sys.meta_path.insert(0, finder := _Finder(self))
        try:
            if name is not None:
                return importlib.import_module(name)
            source, how = self.source(item)
            filename = str(self.root / item["file"])
            module = _new_module(f"_visualpath_code_{Path(item['file']).stem}_{item['sha256'][:12]}", source, filename,
                                 item["ref"], item.get("origin") or filename, item["sha256"], how)
            _BY_REF[item["ref"]] = module
            return module
        finally:
            sys.meta_path.remove(finder)
