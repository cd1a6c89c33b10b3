"""How long a command takes to start, against importing torch alone.

    python -m benchmarks.startup [--repeats 5] [--docs]

Each contender is a fresh ``python`` process, as a user starts it; the contenders are
interleaved repeat by repeat on the same machine:

- ``import torch``: the floor every command pays;
- ``import timm.layers, torchvision``: what the commands paid on top of it before they
  stopped importing these at start-up;
- ``recipes.bimm_ucf101 --help``, ``analysis --help`` and ``recipes.export --help``: the
  commands themselves, which parse their arguments and exit.

Prints the median and range of wall-clock seconds and each median's ratio to the floor.
``--docs`` writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.step_profile import write_docs

CONTENDERS = {
    "import torch": ["-c", "import torch"],
    "import timm.layers, torchvision": ["-c", "import torch, timm.layers, torchvision"],
    "recipes.bimm_ucf101 --help": ["-m", "recipes.bimm_ucf101", "--help"],
    "analysis --help": ["-m", "analysis", "--help"],
    "recipes.export --help": ["-m", "recipes.export", "--help"],
}


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=Path(__file__).parents[1])
    return time.perf_counter() - start


def table(times: dict[str, list[float]], repeats: int) -> str:
    floor = statistics.median(times["import torch"])
    lines = [f"`python -m benchmarks.startup --repeats {repeats}` — Python {sys.version.split()[0]}, "
             f"fresh processes, interleaved.", "",
             "| command | median s | min–max s | / import torch |", "|---|---|---|---|"]
    for name, t in times.items():
        lines.append(f"| {name} | {statistics.median(t):.2f} | {min(t):.2f}–{max(t):.2f} | "
                     f"{statistics.median(t) / floor:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    seconds(CONTENDERS["import torch"])  # warm the file cache once
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(args.repeats):
        for name, cmd in CONTENDERS.items():
            times[name].append(seconds(cmd))
    text = table(times, args.repeats)
    print(text)
    if args.docs:
        write_docs("startup", text)


if __name__ == "__main__":
    main()
