"""The compile table's topology names: slices read from a trailing axis, Cloud slice names."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "compile_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compile_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trailing_axis_beyond_the_generation_rank_is_a_slice_count():
    table = load_script()
    assert table.split_topology("v4:4x4x2x2") == ("v4:4x4x2", 2)
    assert table.split_topology("v4:4x4x4") == ("v4:4x4x4", 1)
    assert table.split_topology("v5e:16x16") == ("v5e:16x16", 1)
    assert table.split_topology("v6e:8x8x4") == ("v6e:8x8", 4)
    with pytest.raises(SystemExit, match="cannot read"):
        table.split_topology("v5e:16")


def test_slice_names_count_tensorcores_on_megacore_generations():
    table = load_script()
    assert table.slice_name("v4:4x4x4", 1) == "v4-128 (`v4:4x4x4`)"
    assert table.slice_name("v5p:4x4x4", 1) == "v5p-128 (`v5p:4x4x4`)"
    assert table.slice_name("v5e:16x16", 1) == "v5e-256 (`v5e:16x16`)"
    assert table.slice_name("v4:4x4x2", 2) == "2 x v4-64 (`v4:4x4x2` x2)"
