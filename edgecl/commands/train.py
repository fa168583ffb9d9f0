"""`edgecl train`: one class-incremental run (finetune, replay or joint)."""

from __future__ import annotations

import click
from click.core import ParameterSource

from edgecl import config as cfg
from edgecl.commands import options as registry_options
from edgecl.errors import EdgeclError


def _explicit(ctx: click.Context, names) -> list[str]:
    """Options among `names` that the user gave on the command line."""
    return [n for n in names
            if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)]


def check_option_combination(ctx: click.Context, mode: str, mem_manage: str) -> None:
    """Memory options need --mode replay; a sampler's own options need that sampler;
    the memory is sized in exemplars or in bytes, not both."""
    from edgecl.samplers import option_owners, sampler_options

    if len(_explicit(ctx, ("memory_size", "memory_bytes"))) == 2:
        raise EdgeclError("--memory-size, --memory-bytes: give one (a byte budget sets the number "
                          "of exemplars from --memory-format)")
    if mode != "replay":
        # --memory-bytes also budgets --mode analytic's state (RunConfig checks the rest)
        given = _explicit(ctx, (*cfg.memory_options(), *(() if mode == "analytic" else
                                                         ("memory_bytes",))))
        if given:
            raise EdgeclError(f"{', '.join(cfg.option_name(n) for n in given)}: only used with "
                              f"--mode replay (this run is --mode {mode}, without a memory)")
    else:
        given = [n for n in _explicit(ctx, sampler_options()) if mem_manage not in option_owners(n)]
        if given:
            owners = sorted({o for n in given for o in option_owners(n)})
            raise EdgeclError(f"{', '.join(cfg.option_name(n) for n in given)}: only used with "
                              f"--mem-manage {' or '.join(owners)} (this run uses {mem_manage})")


def _load_config(ctx: click.Context, _param, path: str | None) -> None:
    """--config: the file's options become this invocation's defaults, so flags still win."""
    if path is None:
        return
    from edgecl.config_file import read_config_file

    known = {name: option.click_type() for name, option in cfg.train_options().items()
             if name != "config"}
    ctx.default_map = {**(ctx.default_map or {}), **read_config_file(path, known)}


@click.command("train", cls=registry_options.GroupedCommand)
@registry_options.add_options(cfg.train_options().values(), config=dict(
    no_default=True, is_eager=True, expose_value=False, callback=_load_config))
@click.pass_context
def train_command(ctx: click.Context, **options) -> None:
    """Learn the dataset's classes task by task and write WORKSPACE/EXP_NAME/results.json."""
    check_option_combination(ctx, options["mode"], options["mem_manage"])
    if options["target"] == "tflm":
        if not options["export"]:
            raise EdgeclError("--target tflm: only used with --export (this run is --no-export)")
        from firmware_export.tflm import require_toolchain

        require_toolchain()
    overwrite = options.pop("overwrite")
    config = cfg.RunConfig(**options)
    from edgecl.results import phase_table
    from edgecl.trainer import ContinualRun

    run = ContinualRun(config, overwrite=overwrite)
    results = run.run()
    where = run.run_dir / "results.json"
    if run.skipped:
        click.echo(f"{config.name}: already complete, skipped; its results are in {where} "
                   f"(--overwrite runs it again)")
    else:
        click.echo(f"{config.name}  ->  {where}")
    click.echo(phase_table(results))
