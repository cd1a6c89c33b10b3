"""Messages and tables in a log file: one message per line, nothing wrapped or cut."""

import subprocess
import sys

import pytest


pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


def test_a_redirected_console_writes_each_message_on_one_line_and_tables_whole(tmp_path):
    code = """
from rich.table import Table
from visualpath import terminal

out = terminal.console(stderr=True)
out.print("[yellow]joint: skipping unreadable file[/] " + "/data/ucf101/UCF-101/" + "x" * 150 + ".avi: truncated")
table = Table(title="what each area learned")
for name in ("stream", "area", "probe top-1 % [95% CI]", "random init %", "kNN top-1 % [95% CI]",
             "OSI median [IQR]", "DSI median [IQR]", "responsive %", "target left [8 neighbours]"):
    table.add_column(name)
table.add_row("ventral", "V3", *["12.3 [1.0-45.6]"] * 7)
out.print(table)
"""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stderr=f, check=True)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("joint: skipping unreadable file /data/ucf101/") and lines[0].endswith(".avi: truncated")
    assert "\x1b[" not in log.read_text() and "…" not in log.read_text()
    assert any("responsive %" in line and "target left [8 neighbours]" in line for line in lines)
