"""Which code a stored graph may run: installed packages, and what the reader chose.

A run directory, a spec file or a ``--config`` file is someone else's data. It can name an
area class or a graph builder by import path (``my_graph.py:V3``, ``mylab.areas:V3``), and
importing that path runs its code. So importing is the reader's decision, as unpickling is
(``torch.load(weights_only=True)``) and as Hugging Face's ``trust_remote_code`` makes it
(decision T1 in docs/decisions.md):

- **installed packages are trusted**: the standard library and every top-level package of an
  installed distribution (``visualpath``'s own ``areas``, timm, ...). Code already imported
  in this process is trusted too: importing it again runs nothing.
- **code the reader names** is trusted: ``pathway=my_graph.py:build`` on their own command
  line, or a path given in Python. A value read from a file (a ``--config`` file, a run's
  ``pathway.json``) is not the reader's naming.
- **code the reader trusted before, by content**: when a run is written, the SHA-256 of every
  file of the user's own code it carries is remembered in the reader's trust store
  (``~/.config/visualpath/trusted_code.json``, or ``$VISUALPATH_TRUST_FILE``), so the
  author's own runs open without a flag, anywhere, while a colleague's do not. A file that
  changed has another hash and is not trusted any more.
- **anything else** needs ``trust_code`` (``--trust-code`` on a command line,
  ``trust_code=True`` in Python) for that one call; without it the refusal names each file.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import json
import logging
import os
import sys
import sysconfig
import time
from pathlib import Path
from typing import Iterable, Iterator

import attrs

from visualpath.errors import Refused

__all__ = [
    "CodeNotTrusted",
    "Policy",
    "policy",
    "trusting",
    "chosen",
    "graph_code",
    "installed",
    "store_path",
    "trusted_hashes",
    "remember",
    "how_to_trust",
    "TRUST_HELP",
]

log = logging.getLogger(__name__)

TRUST_FILE_ENV = "VISUALPATH_TRUST_FILE"
STORE_FORMAT = "visualpath.trusted-code/1"


class CodeNotTrusted(Refused):
    """Code named by data (a run, a spec or a config file) that the reader has not trusted."""


@attrs.frozen
class Policy:
    """What this call may import beyond installed packages.

    Attributes:
        trust_code: everything a run or a config names (``--trust-code``).
        named: import paths the reader named themselves (resolved files, module names).
        command: a command line set this policy, so a config's graph is the reader's choice
            only if the command line named it; in Python (no command) the caller chose it.
    """

    trust_code: bool = False
    named: frozenset[str] = frozenset()
    command: bool = False


_POLICY: contextvars.ContextVar[Policy] = contextvars.ContextVar("visualpath_trust", default=Policy())


def policy() -> Policy:
    """The policy in force (see :func:`trusting`)."""
    return _POLICY.get()


def _key(module_part: str) -> str:
    """A file path resolved, a module name as is (how :attr:`Policy.named` stores them)."""
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        return str(Path(module_part).expanduser().resolve())
    return module_part


@contextlib.contextmanager
def trusting(trust_code: bool = False, named: Iterable[str | None] = (), command: bool = False) -> Iterator[Policy]:
    """Widen the policy for the ``with`` block: ``trust_code`` trusts all code a run names;
    ``named`` adds import paths the reader chose (``"my_graph.py"``, ``"mylab.graphs"``,
    or a whole reference ``"my_graph.py:build"``); ``command``: a command line sets it
    (:attr:`Policy.command`). Nested blocks add to the outer one."""
    now = _POLICY.get()
    keys = {_key(n.rpartition(":")[0] if ":" in n and not _is_drive(n) else n) for n in named if n}
    token = _POLICY.set(Policy(trust_code=now.trust_code or bool(trust_code), named=now.named | keys,
                               command=now.command or command))
    try:
        yield _POLICY.get()
    finally:
        _POLICY.reset(token)


def graph_code(ref: str | None) -> list[str]:
    """The code a ``pathway=`` value names, as what it says: ``[MODULE:FN]`` or
    ``[FILE.py:FN]``; ``[]`` for a run's folder or a ``.json`` spec, which are data (the code
    they name is theirs, not the reader's, even where a module of the folder's name exists).
    For ``trusting(named=...)``."""
    code = _code_part(ref)
    return [ref] if code else []


def _code_part(ref: str | None) -> str | None:
    """The code a reference names, as what it says: the module or file of ``MODULE:FN`` /
    ``FILE.py:FN``, a ``FILE.py``; None for anything else (a run's folder, a ``.json`` spec:
    data, whose code is not the reader's naming even if a module of that name exists)."""
    if not ref:
        return None
    if ":" in ref and not _is_drive(ref):
        return ref.rpartition(":")[0] or None
    return ref if ref.endswith(".py") else None


def _is_drive(text: str) -> bool:
    return len(text) > 1 and text[1] == ":" and text.count(":") == 1  # C:\graph.py on Windows


def chosen(ref: str | None) -> list[str]:
    """``[ref]`` when a config's graph reference is the caller's own choice (Python, no
    command line set the policy), else ``[]``: for ``trusting(named=chosen(cfg.pathway))``."""
    return graph_code(ref) if ref and not _POLICY.get().command else []


def named(module_part: str) -> bool:
    """Whether the reader named this module or file (:func:`trusting`)."""
    return _key(module_part) in _POLICY.get().named


# --------------------------------------------------------------------------- installed packages


@functools.lru_cache(maxsize=1)
def _install_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(Path(d).resolve() for d in dirs)


@functools.lru_cache(maxsize=1)
def _editable_projects() -> tuple[tuple[Path, frozenset[str]], ...]:
    """Each distribution installed in editable mode (``pip install -e``): its project folder
    and the top-level names it provides (``top_level.txt``, else its files' top folders).
    Only these distributions' metadata is read: every distribution's (what
    ``importlib.metadata.packages_distributions`` reads) took half a second of each command."""
    import importlib.metadata
    from urllib.parse import unquote, urlparse

    projects = []
    for dist in importlib.metadata.distributions():
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except (ValueError, OSError):
            continue
        if not (info.get("dir_info", {}).get("editable") and info.get("url", "").startswith("file://")):
            continue
        tops = set((dist.read_text("top_level.txt") or "").split())
        if not tops:
            tops = {f.parts[0].removesuffix(".py") for f in dist.files or () if f.parts
                    and not f.parts[0].endswith((".dist-info", ".pth")) and f.parts[0] != "__pycache__"}
        projects.append((Path(unquote(urlparse(info["url"]).path)).resolve(), frozenset(tops)))
    return tuple(projects)


def installed(module_name: str) -> bool:
    """Whether ``module_name`` is the standard library's or an installed distribution's, as
    Python would import it here: its top-level module must be found (finding it runs no
    code) built in, inside the interpreter's library folders, or inside the project folder of
    a distribution installed in editable mode that provides that name. A file of the same
    name earlier on ``sys.path`` (the current folder, ``PYTHONPATH``) is not installed code."""
    top = module_name.split(".")[0]
    if top in sys.builtin_module_names:
        return True
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if found is None:
        return False
    if found.origin in ("built-in", "frozen"):
        return True
    places = [found.origin] if found.origin and found.origin != "namespace" else \
        list(found.submodule_search_locations or [])
    if not places:
        return False
    where = Path(places[0]).resolve()
    if any(where.is_relative_to(d) for d in _install_dirs()):
        return True
    return any(top in tops and where.is_relative_to(root) for root, tops in _editable_projects())


# --------------------------------------------------------------------------- the trust store


def store_path() -> Path:
    """The reader's trust store: ``$VISUALPATH_TRUST_FILE``, else
    ``$XDG_CONFIG_HOME/visualpath/trusted_code.json`` (``~/.config/...``)."""
    if os.environ.get(TRUST_FILE_ENV):
        return Path(os.environ[TRUST_FILE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "visualpath" / "trusted_code.json"


def _read_store(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("the trust store %s cannot be read (%s): no code is trusted from it", path, err)
        return {}
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT or not isinstance(data.get("sha256"), dict):
        log.warning("the trust store %s is not a %s file: no code is trusted from it", path, STORE_FORMAT)
        return {}
    return data["sha256"]


def trusted_hashes() -> set[str]:
    """SHA-256 digests of the code the reader trusts by content."""
    return set(_read_store(store_path()))


def remember(entries: Iterable[tuple[str, str]]) -> None:
    """Add ``(sha256, where it came from)`` pairs to the reader's trust store (atomically);
    a store that cannot be written is reported and left as it was."""
    entries = [(sha, origin) for sha, origin in entries]
    if not entries:
        return
    path = store_path()
    known = _read_store(path)
    new = {sha: {"file": origin, "added": time.strftime("%Y-%m-%dT%H:%M:%S")}
           for sha, origin in entries if sha not in known}
    if not new:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": STORE_FORMAT, "sha256": {**known, **new}}, indent=1))
        os.replace(tmp, path)
    except OSError as err:
        log.warning("cannot remember trusted code in %s (%s): opening this run later will need --trust-code",
                    path, err.strerror or err)


def how_to_trust(what: str) -> str:
    """The end of a refusal: how to opt in."""
    return (f"{what}; read it, and if you trust it pass --trust-code (trust_code=True in Python) to run it "
            "(docs/reliability.md#security)")


TRUST_HELP = ("run code the run's graph (or --config) names that is neither installed nor trusted by you "
              "(read its code/ folder first; docs/reliability.md#security)")
