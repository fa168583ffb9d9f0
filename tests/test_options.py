"""Option declarations (edgecl.options): one declaration per option drives the CLI, the checks,
the run identity, the grid's hash and the report's method key."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from edgecl.cli import main
from edgecl.config import (
    NOT_IDENTITY,
    RunConfig,
    field_options,
    identity_defaults_left_out,
    memory_options,
    run_options,
    train_options,
)
from edgecl.errors import EdgeclError
from edgecl.grid.spec import NOT_HASHED, options_hash
from edgecl.limits import Range
from edgecl.options import GROUPS, Option
from edgecl.report.aggregate import NOT_METHOD, method_key


def test_every_config_field_declares_its_option():
    from dataclasses import fields

    declared = set(field_options())
    assert declared == {f.name for f in fields(RunConfig)} - {"sampler_options"}
    assert all(option.group in GROUPS for option in train_options().values())


def test_help_lists_every_option_under_its_group_heading():
    result = CliRunner().invoke(main, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    headings = re.findall(r"^(\w+) options:$", result.output, flags=re.MULTILINE)
    assert headings == [group.capitalize() for group in GROUPS]
    sections = dict(zip(headings, re.split(r"^\w+ options:$", result.output,
                                           flags=re.MULTILINE)[1:], strict=True))
    for name, option in train_options().items():
        assert re.search(rf"^  {option.flag_name}\b", sections[option.group.capitalize()],
                         flags=re.MULTILINE), name


def test_options_outside_the_identity_change_no_run_name_nor_trial_hash():
    base = RunConfig()
    moved = RunConfig(workspace="elsewhere", threads=1, quiet=True, feature_store=False,
                      device="cpu", exp_name="mine")
    assert moved.identity_hash() == base.identity_hash()
    assert options_hash(moved.to_dict()) == options_hash(base.to_dict())
    assert set(NOT_HASHED) == set(NOT_IDENTITY)
    assert set(NOT_METHOD) == set(NOT_IDENTITY) | {"seed", "test_fold"}
    assert method_key(RunConfig(seed=9, test_fold=2).to_dict()) == method_key(base.to_dict())
    assert RunConfig(seed=9).identity_hash() != base.identity_hash()


@pytest.mark.parametrize(("name", "other"), [("n_mels", 32), ("uncert_ties", "soft"),
                                             ("bias_correction", "deployed")])
def test_an_option_left_out_at_its_default_joins_the_identity_otherwise(name, other):
    assert name in identity_defaults_left_out()
    assert name not in RunConfig().identity()
    assert RunConfig(**{name: other}).identity()[name] == other


def test_memory_options_are_the_replay_only_ones_with_every_samplers():
    assert {"mem_manage", "memory_size", "metric_k", "uncert_metric"} <= set(memory_options())
    assert "memory_bytes" not in memory_options()  # also the analytic state's budget
    assert "epochs" not in memory_options()
    assert all(run_options()[name].replay_only for name in memory_options())


def test_a_declared_range_and_choices_are_checked_with_the_option_named():
    option = Option("A weight.", "learning",
                    range=Range(0.0, 2.0, low_inclusive=True, what="a weight")).bound("w_x", 1.0)
    option.check(0.0)
    option.check(None)  # unset
    with pytest.raises(EdgeclError, match=r"^--w-x: expected a weight in \[0, 2\], got 3"):
        option.check(3)
    choice = Option(None, "model", choices=("a", "b")).bound("kind", "a")
    with pytest.raises(EdgeclError, match=r"^--kind: expected one of a, b, got 'c'"):
        choice.check("c")
    with pytest.raises(EdgeclError, match=r"^--width: expected an integer in \[1, 1024\]"):
        RunConfig(width=0)


def test_an_option_outside_the_identity_cannot_be_part_of_a_method():
    with pytest.raises(ValueError):
        Option(None, "run", identity=False)
    with pytest.raises(ValueError):
        Option(None, "nowhere")


def test_the_config_file_takes_every_train_option(tmp_path):
    from edgecl.config_file import read_config_file

    path = tmp_path / "run.toml"
    path.write_text('mem-manage = "random"\nbalanced_epochs = 2\nquiet = true\n')
    known = set(train_options()) - {"config"}
    assert read_config_file(path, known) == {"mem_manage": "random", "balanced_epochs": 2,
                                            "quiet": True}
