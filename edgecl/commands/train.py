"""`edgecl train`: one class-incremental run (finetune, replay or joint)."""

from __future__ import annotations

import click
from click.core import ParameterSource

from edgecl import config as cfg
from edgecl.commands import options as registry_options
from edgecl.device import DEVICES
from edgecl.errors import EdgeclError
from edgecl.precision import PRECISIONS
from edgecl.training.augment import AUGMENTS
from edgecl.training.batch_sampling import BATCH_SAMPLINGS
from edgecl.training.bias_correction import BIAS_CORRECTIONS
from firmware_export.device.layout import TARGETS

_DEFAULTS = cfg.RunConfig()


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
        given = _explicit(ctx, cfg.memory_options())
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

    known = {param.name: param.type for param in ctx.command.params if param.name != "config"}
    ctx.default_map = {**(ctx.default_map or {}), **read_config_file(path, known)}


@click.command("train")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config,
              help="TOML file of these options (keys as option names: mem-manage = "
                   "\"uncertainty\"); flags given here override it. Every run writes its own as "
                   "RUN/config.toml.")
@registry_options.dataset_option(_DEFAULTS.dataset)
@click.option("--data-root", type=click.Path(), default=None,
              help="Dataset folder (ESC-50, TAU-ASC) or manifest CSV (manifest).")
@registry_options.model_option(_DEFAULTS.model)
@click.option("--width", type=int, default=_DEFAULTS.width, show_default=True,
              help="BC-ResNet base width (40 = the published c = 4).")
@click.option("--n-mels", type=int, default=_DEFAULTS.n_mels, show_default=True,
              help="Log-mel bins of the front end (bc-resnet: a multiple of 32; 32 halves every "
                   "activation, e.g. to fit a microcontroller's tensor arena).")
@click.option("--mode", type=click.Choice(cfg.MODES), default=_DEFAULTS.mode, show_default=True,
              help="finetune: no memory; replay: memory refilled by --mem-manage; joint: every "
                   "class in one phase (upper bound).")
@click.option("--mem-manage", type=registry_options.mem_manage_choice(),
              default=_DEFAULTS.mem_manage, show_default=True, help="Memory sampler (replay).")
@registry_options.sampler_options()
@click.option("--memory-size", type=int, default=_DEFAULTS.memory_size, show_default=True,
              help="Replay memory capacity in exemplars.")
@click.option("--memory-bytes", default=None, metavar="SIZE",
              help="Replay memory budget in bytes of stored data, headers included: 512KB, 4MB "
                   "(x1000), 4MiB (x1024) or plain bytes. Replaces --memory-size.")
@click.option("--memory-format", type=registry_options.memory_format_choice(),
              default=_DEFAULTS.memory_format, show_default=True,
              help="How exemplars are stored: float32, pcm16 or mulaw8 audio, or logmel8 "
                   "(8-bit log-mel with a per-exemplar scale and offset).")
@click.option("--code-new-clips/--no-code-new-clips", default=_DEFAULTS.code_new_clips,
              show_default=True,
              help="Train on new clips passed through a lossy --memory-format as well, so its "
                   "artefacts do not mark the replayed (old) classes.")
@click.option("--weight-align/--no-weight-align", default=_DEFAULTS.weight_align,
              show_default=True,
              help="Bias correction: after each phase, rescale the new classes' classifier "
                   "weights to the old classes' mean norm (weight aligning; no training cost).")
@click.option("--bias-correction", type=click.Choice(BIAS_CORRECTIONS),
              default=_DEFAULTS.bias_correction, show_default=True,
              help="After each phase, map the new classes' logits z to alpha z + beta, fit on the "
                   "validation clips of every seen class and folded into the head (BiC): in-loop "
                   "(the run goes on from the corrected head) or deployed (only the phase's "
                   "tested and exported model; the run goes on uncorrected).")
@click.option("--distill-output", type=float, default=_DEFAULTS.distill_output, metavar="W",
              show_default=True,
              help="Output distillation weight: KL divergence (x T^2) between the previous "
                   "phase's frozen model and this one on the old classes' logits (0 = off).")
@click.option("--distill-feature", type=float, default=_DEFAULTS.distill_feature, metavar="W",
              show_default=True,
              help="Feature distillation weight: 1 - cosine similarity of the previous phase's "
                   "and this model's embeddings (0 = off).")
@click.option("--distill-temperature", type=float, default=_DEFAULTS.distill_temperature,
              metavar="T", show_default=True, help="Temperature of output distillation.")
@click.option("--distill-adaptive/--no-distill-adaptive", default=_DEFAULTS.distill_adaptive,
              show_default=True,
              help="Scale the distillation weights by the share of old classes (old / seen).")
@click.option("--balanced-epochs", type=int, default=_DEFAULTS.balanced_epochs, metavar="E",
              show_default=True,
              help="Class-balanced fine-tuning after each phase (replay, phase >= 1): E epochs on "
                   "the memory's old-class exemplars plus as many new clips per new class "
                   "(0 = off).")
@click.option("--balanced-lr", type=float, default=_DEFAULTS.balanced_lr, metavar="LR",
              show_default=True, help="Adam learning rate of the class-balanced fine-tuning.")
@click.option("--batch-sampling", type=click.Choice(BATCH_SAMPLINGS),
              default=_DEFAULTS.batch_sampling, show_default=True,
              help="How a phase draws its batches (replay): uniform (each clip once an epoch, "
                   "the published rule), class-balanced (every seen class the same share of "
                   "each batch, exemplars repeated), square-root (shares by the square root of "
                   "a class's clips) or progressive (uniform in the first epoch to "
                   "class-balanced in the last); the same steps in every case.")
@click.option("--augment", type=click.Choice(AUGMENTS), default=_DEFAULTS.augment,
              show_default=True,
              help="Augment each training batch: specaugment masks one band of mel bins and one "
                   "span of frames per clip (up to an eighth of each).")
@registry_options.step_options()
@click.option("--val-fraction", type=float, default=_DEFAULTS.val_fraction, metavar="F",
              show_default=True,
              help="Share of each task's training clips held out for model selection, in "
                   "[0, 0.9] (best epoch: highest validation accuracy, ties broken by lower "
                   "validation loss).")
@click.option("--max-steps", type=int, default=None,
              help="Compute budget: optimizer steps per phase.")
@click.option("--max-train-seconds", type=float, default=None,
              help="Compute budget: training wall time per phase.")
@click.option("--max-train-macs", default=None, metavar="COUNT",
              help="Compute budget: training MACs per phase (3 x forward MACs per clip per "
                   "step), e.g. 500M, 2G, 2e9.")
@click.option("--n-tasks", type=int, default=None,
              help="Number of tasks [TAU-ASC 5, ESC-50 5, else min(5, classes)].")
@click.option("--n-init-cls", type=int, default=None,
              help="Classes in the first task [TAU-ASC 2, ESC-50 10, else an even split].")
@click.option("--n-cls-a-task", type=int, default=None,
              help="Classes in each later task [TAU-ASC 2, ESC-50 10, else an even split].")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True,
              help="Maximum epochs per phase.")
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True)
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, help="Adam learning rate.")
@click.option("--lr-incremental", type=float, default=None, metavar="LR",
              help="Adam learning rate of phases >= 1 (a smaller step forgets less) [--lr].")
@click.option("--patience", type=int, default=_DEFAULTS.patience, show_default=True,
              help="Early-stopping patience in epochs on the validation split (0 = off).")
@click.option("--bn-recal-clips", type=int, default=_DEFAULTS.bn_recal_clips, show_default=True,
              help="Training clips (evenly spaced) whose forward pass re-estimates BatchNorm "
                   "statistics after each epoch; fewer is faster (0 = off).")
@click.option("--test-fold", type=click.IntRange(1, 5), default=_DEFAULTS.test_fold,
              show_default=True, help="ESC-50 test fold.")
@click.option("--sample-rate", type=int, default=None,
              help="Model sample rate in Hz [dataset's own].")
@click.option("--clip-seconds", type=float, default=None, help="Clip length [dataset's own].")
@click.option("--clips-per-class", type=int, default=_DEFAULTS.clips_per_class, show_default=True,
              help="Size of the generated synthetic dataset.")
@click.option("--workspace", type=click.Path(file_okay=False), default=_DEFAULTS.workspace,
              show_default=True)
@click.option("--exp-name", default=None,
              help="Run folder name under the workspace [derived from the options].")
@click.option("--overwrite", is_flag=True,
              help="Delete what the run folder holds and run again (by default a rerun with the "
                   "same options resumes or skips the run, and a folder holding another run is "
                   "an error).")
@click.option("--export/--no-export", default=_DEFAULTS.export, show_default=True,
              help="Export each phase's model for the device.")
@click.option("--target", type=click.Choice(TARGETS), default=_DEFAULTS.target,
              show_default=True,
              help="Device export: onnx (fp32 and int8 ONNX per phase) or tflm (those plus an "
                   "int8 TensorFlow Lite Micro build with a C front end; needs pip install "
                   "'edgecl[tflm]').")
@click.option("--tflm-window-seconds", type=float, default=None, metavar="SECONDS",
              help="Window of the TFLM build: the device runs the model on windows of this "
                   "length and averages their logits over the clip; 0 = the whole clip. "
                   "[auto: 1 s windows for clips longer than 1 s, else the whole clip] "
                   "(--target tflm)")
@click.option("--arena-limit", default=None, metavar="SIZE",
              help="Most TFLM arena bytes the part gives the model (256KB, 256KiB): checked on "
                   "the untrained model before training and on each phase's build (--target "
                   "tflm).")
@click.option("--flash-limit", default=None, metavar="SIZE",
              help="Most TFLM flatbuffer bytes the part gives the model (1MB): checked like "
                   "--arena-limit (--target tflm).")
@click.option("--feature-cache/--no-feature-cache", default=_DEFAULTS.feature_cache,
              show_default=True, help="Compute each clip's log-mel once (off only to measure it).")
@click.option("--feature-store/--no-feature-store", default=_DEFAULTS.feature_store,
              show_default=True,
              help="Keep each clip's log-mel features in WORKSPACE/features/, shared by every "
                   "run of the workspace, so a later run over the same files computes none.")
@click.option("--device", type=click.Choice(DEVICES), default=_DEFAULTS.device,
              show_default=True,
              help="Where to train and update the memory: cuda when available (auto), cpu or "
                   "cuda.")
@click.option("--allow-tf32/--no-allow-tf32", default=_DEFAULTS.allow_tf32, show_default=True,
              help="On a GPU, let matmuls and convolutions use TF32 (faster; results are then "
                   "not reproducible bit for bit and differ from float32).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=_DEFAULTS.precision,
              show_default=True,
              help="Training forward in float32, or the backbone and head in bfloat16 under "
                   "autocast (front end, loss, weights and optimizer stay float32; exports come "
                   "from float32 weights); auto: bf16 where the CPU (AVX-512 BF16, AMX) or GPU "
                   "runs it natively, else fp32.")
@click.option("--threads", type=int, default=_DEFAULTS.threads, show_default=True,
              help="CPU threads for torch.")
@click.option("--quiet", is_flag=True, help="No progress bars or log lines on stderr.")
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
