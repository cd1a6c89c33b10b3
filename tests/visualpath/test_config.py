import typing

import attrs
import pytest

from visualpath.config import ConfigError, apply_overrides, flat_fields, parse_cli
from visualpath.engine import OptimSpec


@attrs.frozen(kw_only=True)
class Inner:
    ratio: float = attrs.field(default=0.9, validator=lambda i, a, v: (_ for _ in ()).throw(ValueError(f"ratio must be in (0, 1), got {v}")) if not 0 < v < 1 else None)
    name: str | None = None
    split: tuple[int, int, int] = (2, 2, 8)


@attrs.frozen(kw_only=True)
class Outer:
    seed: int = 0
    flag: bool = False
    inner: Inner = Inner()
    optim: OptimSpec = OptimSpec(epochs=1, batch_size=2, base_lr=1e-3)


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(Outer(), ["seed=3", "flag=true", "inner.ratio=0.5", "inner.name=none",
                                    "inner.split=1,1,10", "optim.clip_grad=1.5", "optim.betas=0.9,0.999"])
    assert (cfg.seed, cfg.flag, cfg.inner.ratio, cfg.inner.name, cfg.inner.split) == (3, True, 0.5, None, (1, 1, 10))
    assert cfg.optim.clip_grad == 1.5 and cfg.optim.betas == (0.9, 0.999)


@pytest.mark.parametrize("override, message", [
    ("inner.ratoi=0.5", "unknown config key 'inner.ratoi'; did you mean 'inner.ratio'"),
    ("seed=three", "seed must be an integer, got 'three'"),
    ("flag=maybe", "flag must be true or false"),
    ("inner.ratio=1.5", r"inner.ratio='1.5' rejected: ratio must be in \(0, 1\)"),
    ("inner.split=1,2", "needs 3 comma-separated values"),
    ("optim.epochs=0", "OptimSpec.epochs must be an integer >= 1"),
    ("seed", "key.path=value"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Outer(), [override])


def test_cli_variants_help_and_flags(capsys):
    variants = {"demo": Outer(), "paper": Outer(seed=7)}
    assert parse_cli([], variants, "x", "doc")[1].seed == 0
    name, cfg = parse_cli(["--variant", "paper", "--inner.name", "a", "flag=1"], variants, "x", "doc")
    assert name == "paper" and cfg.seed == 7 and cfg.inner.name == "a" and cfg.flag
    with pytest.raises(SystemExit) as exit_:
        parse_cli(["--help"], variants, "x", "doc")
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "variants (--variant V; default demo):\n  demo\n  paper" in printed and "inner.ratio: float = 0.9" in printed
    with pytest.raises(SystemExit) as exit_:
        parse_cli(["--variant", "papr"], variants, "x", "doc")
    assert exit_.value.code == 2 and "did you mean 'paper'" in capsys.readouterr().err


def test_flat_fields_lists_leaves():
    assert {"seed", "inner.ratio", "optim.base_lr"} <= set(flat_fields(Outer()))


def test_a_config_file_nested_too_deeply_is_one_line(tmp_path, capsys):
    """A --config file is someone else's input: JSON nested past Python's recursion limit is a
    refusal naming the file, not a RecursionError traceback."""
    from recipes import bimm_ucf101 as recipe

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["--config", str(deep), "--print-config"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "nested too deeply" in err and "deep.json" in err


def test_config_keys_and_graph_keys_read_text_with_one_converter():
    """A value typed on the command line means the same as a config key and as a graph key:
    both go through :func:`visualpath.spec.convert`."""
    from areas.bimm import paper_pathway, ModelConfig
    from visualpath.overrides import apply_overrides as edit_graph
    from visualpath.spec import convert

    @attrs.frozen
    class Holder:
        wavelengths: tuple[float, ...] = (1.0,)
        normalize: bool = True
        depth: int | None = 3

    cases = {"wavelengths": "4, 8", "normalize": "off", "depth": "none"}
    cfg = apply_overrides(Holder(), [f"{k}={v}" for k, v in cases.items()])
    kinds = typing.get_type_hints(Holder)
    assert {k: getattr(cfg, k) for k in cases} == {k: convert(v, kinds[k], k, text=True) for k, v in cases.items()} \
        == {"wavelengths": (4.0, 8.0), "normalize": False, "depth": None}
    graph = edit_graph(paper_pathway(ModelConfig(size="tiny")), ["V1.wavelengths=4, 8", "V1.normalize=off"])
    v1 = graph.stream("ventral").area("V1")
    assert (v1.wavelengths, v1.normalize) == (cfg.wavelengths, cfg.normalize)
