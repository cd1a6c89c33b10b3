"""A disk that fills at any moment of a recipe: one ``no space left`` line (exit 1), nothing
half-written, and the same command, once there is room, resumes to the weights of an
uninterrupted run (decision R13). The disk is a real one: a tmpfs of a chosen size in a
user namespace (``unshare``), so every write of the command meets a true ``ENOSPC``."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
COMMAND = ["-m", "recipes.bimm_ucf101", "--variant", "tiny", "device=cpu"]

# mount a tmpfs of size $1 on $2, run the command there, record what it left in $3, give the
# disk room and run the same command again
SCRIPT = """
set -u
mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99
shift 3
"$@" > "$OUT/first.log" 2>&1; echo $? > "$OUT/first.rc"
(cd "$DISK" && find . -mindepth 1 -printf '%y %s %p\\n' | sort) > "$OUT/left.txt"
cp "$DISK/run/metrics.jsonl" "$OUT/first-metrics.jsonl" 2>/dev/null
mount -o remount,size=64m "$DISK" || exit 98
"$@" > "$OUT/second.log" 2>&1; echo $? > "$OUT/second.rc"
cp "$DISK/run/finetune/model.safetensors" "$DISK/run/results.json" "$OUT/" 2>/dev/null
exit 0
"""


def _can_mount(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {tmp}"], capture_output=True)
    return probe.returncode == 0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("plain") / "run"
    done = subprocess.run([sys.executable, *COMMAND, f"run_dir={run}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return _sha(run / "finetune" / "model.safetensors"), json.loads((run / "results.json").read_text())["top1"]


@pytest.mark.e2e
@pytest.mark.parametrize("size", ["8k", "900k", "2m", "5m"])  # before any write, in each stage's checkpoint, a figure
def test_a_full_disk_at_any_moment_is_one_line_leaves_nothing_half_written_and_resumes_exactly(
        size, uninterrupted, tmp_path):
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    if not _can_mount(disk):
        pytest.skip("this machine cannot mount a tmpfs in a user namespace (unshare --user --mount)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OUT": str(out), "DISK": str(disk)}
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", SCRIPT, "sh", size, str(disk),
                           str(out), sys.executable, *COMMAND, f"run_dir={disk / 'run'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    first = (out / "first.log").read_text()
    assert (out / "first.rc").read_text().strip() == "1", first[-3000:]
    said = [line for line in first.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and said[0].startswith("error: no space left on the device"), first[-3000:]
    assert "Traceback" not in first and "free some space and run the same command again" in said[0]
    left = [line.split(" ", 2) for line in (out / "left.txt").read_text().splitlines()]
    for kind, bytes_, path in left:  # no temporary file, no empty or half file
        name = Path(path).name
        assert not (name.startswith(".") and name != ".lock"), f"a temporary file is left: {path}"
        assert kind != "f" or int(bytes_) > 0, f"an empty file is left: {path}"
    if (out / "first-metrics.jsonl").exists():  # no half record
        for line in (out / "first-metrics.jsonl").read_text().splitlines():
            json.loads(line)
    if "holds no checkpoint" in said[0]:  # nothing kept: the folder is as the command found it
        assert left == [], left
    assert (out / "second.rc").read_text().strip() == "0", (out / "second.log").read_text()[-3000:]
    sha, top1 = uninterrupted
    assert _sha(out / "model.safetensors") == sha
    assert json.loads((out / "results.json").read_text())["top1"] == top1
