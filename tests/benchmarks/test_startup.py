import pytest

from benchmarks import startup


def test_the_table_gives_each_commands_median_and_its_ratio_to_importing_torch():
    times = {name: [2.0, 1.0, 3.0] for name in startup.CONTENDERS}
    times["recipes.bimm_ucf101 --help"] = [3.0, 3.0, 9.0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in startup.table(times, 3).splitlines() if line.startswith("| ")}
    assert rows["import torch"] == "| import torch | 2.00 | 1.00–3.00 | 1.00 |"
    assert rows["recipes.bimm_ucf101 --help"] == "| recipes.bimm_ucf101 --help | 3.00 | 3.00–9.00 | 1.50 |"


@pytest.mark.e2e
def test_the_benchmark_starts_every_command(capsys):
    startup.main(["--repeats", "1"])
    out = capsys.readouterr().out
    assert all(f"| {name} |" in out for name in startup.CONTENDERS)
