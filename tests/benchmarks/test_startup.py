import pytest

from benchmarks import startup


def test_the_table_gives_each_commands_median_and_its_ratio_to_importing_torch():
    times = {name: [2.0, 1.0, 3.0] for name in startup.CONTENDERS}
    times["recipes.bimm_ucf101 --help"] = [3.0, 3.0, 9.0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in startup.table(times, 3).splitlines() if line.startswith("| ")}
    assert rows["import torch"] == "| import torch | 2.00 | 1.00–3.00 | 1.00 |"
    assert rows["recipes.bimm_ucf101 --help"] == "| recipes.bimm_ucf101 --help | 3.00 | 3.00–9.00 | 1.50 |"


@pytest.mark.e2e
def test_the_benchmark_starts_the_commands(capsys, monkeypatch):
    """Every contender is a command that exits 0 (``seconds`` checks); the run prints each."""
    for argv in startup.CONTENDERS.values():
        assert argv[0] in ("-c", "-m")
    chosen = {k: startup.CONTENDERS[k] for k in ("import torch", "recipes.bimm_ucf101 --help")}
    monkeypatch.setattr(startup, "CONTENDERS", chosen)
    startup.main(["--repeats", "1"])
    out = capsys.readouterr().out
    assert all(f"| {name} |" in out for name in chosen)
