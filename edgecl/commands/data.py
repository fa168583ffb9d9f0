"""`edgecl data`: generate the synthetic dataset, inspect any dataset."""

from __future__ import annotations

import click

from edgecl.config import RunConfig

_DEFAULTS = RunConfig()


@click.group("data")
def data() -> None:
    """Generate the embedded synthetic dataset or inspect a dataset.

    Datasets: synthetic (generated into the workspace), ESC-50 and TAU-ASC (official layouts
    under --data-root), manifest (a CSV with path,label[,split] columns).
    """


@data.command("generate")
@click.option("--workspace", default=_DEFAULTS.workspace, show_default=True,
              type=click.Path(file_okay=False),
              help="Workspace folder; the set goes to WORKSPACE/data/synthetic-<hash>/.")
@click.option("--seed", default=_DEFAULTS.seed, show_default=True, type=int,
              help="Generator seed (the same default as edgecl train); the same seed gives "
                   "byte-identical files.")
@click.option("--clips-per-class", default=None, type=click.IntRange(min=2),
              help="Clips per class, train and test together (20% test). [default: 100]")
def generate(workspace: str, seed: int, clips_per_class: int | None) -> None:
    """Write the synthetic dataset (10 sound classes, 16 kHz, 1 s WAVs and manifest.csv).

    An existing complete copy with the same parameters is reused, not rewritten.
    """
    from edgecl.data import synthetic
    from edgecl.limits import INT_RANGES, check_int, check_seed

    check_seed(seed)
    if clips_per_class is not None:
        check_int("--clips-per-class", clips_per_class, 2, INT_RANGES["clips_per_class"][1])
    count = clips_per_class or synthetic.CLIPS_PER_CLASS
    existed = synthetic.dataset_folder(workspace, seed, count).joinpath("manifest.csv").is_file()
    folder = synthetic.generate_synthetic(workspace, seed=seed, clips_per_class=count)
    click.echo(f"{'reused' if existed else 'wrote'} {folder}")
    click.echo(f"manifest: {folder / 'manifest.csv'}")


@data.command("generate-esc50")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--classes", "n_classes", default=50, show_default=True, type=int,
              help="Classes, 2 to 50 (ten sound families x five speeds).")
@click.option("--clips-per-fold", default=8, show_default=True, type=int,
              help="Clips per class in each of the 5 folds (8: ESC-50's 40 per class).")
@click.option("--sample-rate", default=44100, show_default=True, type=int)
@click.option("--clip-seconds", default=5.0, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int,
              help="Generator seed; the same seed gives byte-identical files.")
def generate_esc50(root: str, n_classes: int, clips_per_fold: int, sample_rate: int,
                   clip_seconds: float, seed: int) -> None:
    """Write a synthetic set in ESC-50's official layout to ROOT (a new folder): by default full
    size (2,000 clips of 5 s at 44.1 kHz, 50 classes, 5 folds, about 880 MB), for benchmarks at
    the published scale. Read it with `--dataset ESC-50 --data-root ROOT`.
    """
    from tqdm import tqdm

    from edgecl.data.esc50_synthetic import FOLDS, generate_esc50_layout
    from edgecl.limits import check_seed

    check_seed(seed)
    if not 1000 <= sample_rate <= 192000:
        raise click.BadParameter(f"expected 1000 to 192000 Hz, got {sample_rate}",
                                 param_hint="--sample-rate")
    if not 0.05 <= clip_seconds <= 60:
        raise click.BadParameter(f"expected 0.05 to 60 s, got {clip_seconds}",
                                 param_hint="--clip-seconds")
    total = n_classes * FOLDS * max(clips_per_fold, 0)
    with tqdm(total=total, unit="clip", desc="generate-esc50", disable=None) as bar:
        folder = generate_esc50_layout(root, n_classes=n_classes, clips_per_fold=clips_per_fold,
                                       sample_rate=sample_rate, clip_seconds=clip_seconds,
                                       seed=seed, progress=bar.update)
    click.echo(f"wrote {folder} ({total} clips, {n_classes} classes, {FOLDS} folds)")


@data.command("info")
@click.argument("name")
@click.option("--data-root", type=click.Path(), default=None,
              help="Dataset folder (ESC-50, TAU-ASC) or manifest CSV or its folder.")
@click.option("--workspace", type=click.Path(file_okay=False), default=_DEFAULTS.workspace,
              show_default=True, help="Workspace of the synthetic dataset (generated there if "
                                      "absent).")
@click.option("--test-fold", default=_DEFAULTS.test_fold, show_default=True, type=int,
              help="ESC-50 test fold.")
@click.option("--seed", default=_DEFAULTS.seed, show_default=True, type=int,
              help="Seed of the stratified test split of a manifest without a split column (the "
                   "same default as edgecl train, so both describe the same split).")
def info(name: str, data_root: str | None, workspace: str | None, test_fold: int,
         seed: int) -> None:
    """Check a dataset and print its classes, clips per class and split, sample rate and clip
    length. The check is the one `edgecl train` makes before training: every clip decodes, every
    class has test clips, no clip is listed twice (duplicate, two labels, train and test).

    NAME is one of synthetic, ESC-50, TAU-ASC, manifest (case-insensitive; esc50, tau).
    """
    from edgecl.data import load_dataset
    from edgecl.data.validate import validate_dataset
    from edgecl.limits import check_seed

    check_seed(seed)
    split = load_dataset(name, data_root, test_fold=test_fold, seed=seed, workspace=workspace)
    validate_dataset(split)
    click.echo(f"dataset: {split.name} ({split.source})")
    click.echo(f"model sample rate: {split.sample_rate} Hz, clip: {split.clip_seconds:g} s "
               f"({split.clip_samples} samples)")
    click.echo(f"classes: {len(split.classes)}; clips: {len(split.train)} train, "
               f"{len(split.test)} test")
    train, test = split.counts("train"), split.counts("test")
    width = max([len("class")] + [len(label) for label in split.classes])
    click.echo(f"  {'class':<{width}}  train   test")
    for label in split.classes:
        click.echo(f"  {label:<{width}}  {train[label]:5d}  {test[label]:5d}")
