"""The ``crossneuron`` command line: a thin layer over the library."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import CrossneuronError
from .macs import pct
from .models import build_model
from .net import attach
from .search.budget import budgets_help
from .search.modes import modes_help

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)


def out_console() -> Console:
    """stdout console; wide when piped so that site names are never cut."""
    return Console() if sys.stdout.isatty() else Console(width=200)


@app.callback()
def _group() -> None:
    """crossneuron: predict zero activations of CNNs from their neighbours and count the MACs saved."""


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CrossneuronError(f"--input-shape must be C,H,W of positive integers like 3,32,32, got '{text}'")
    return shape


def site_table(net) -> dict:
    """The site table as plain data: one row per site plus totals (MACs per image)."""
    total = net.network_macs
    rows = [
        {
            "index": s.index,
            "name": s.name,
            "shape": list(s.shape),
            "macs_per_output": s.macs_per_output,  # null where channel slices differ
            "macs_per_output_by_slice": [list(run) for run in s.slices],  # [first channel, end, MACs per output]
            "macs": s.macs,
            "share_of_network_pct": pct(s.macs, 1, total),
            "convs": list(s.convs),
        }
        for s in net.sites
    ]
    return {
        "sites": rows,
        "not_sites": [{"activation": name, "why": why} for name, why in net.skipped],
        "network_macs": total,
        "site_macs": net.site_macs,
        "site_share_of_network_pct": pct(net.site_macs, 1, total),
    }


def _per_output(row: dict) -> str:
    """MACs per output for the table: one number, or per channel slice (channels first-last: MACs)."""
    if row["macs_per_output"] is not None:
        return f"{row['macs_per_output']:,}"
    return ", ".join(f"{a}-{b - 1}: {m:,}" for a, b, m in row["macs_per_output_by_slice"])


@app.command()
def sites(
    model: Annotated[
        str,
        typer.Option(
            help="registry model name (alexnet, vgg16, resnet18, ...), "
            "path/to/file.py:factory, package.module:factory or timm:name"
        ),
    ] = "resnet18",
    input_shape: Annotated[str, typer.Option(help="C,H,W of one input image")] = "3,32,32",
    num_classes: Annotated[int, typer.Option(help="number of output classes")] = 10,
    width: Annotated[float, typer.Option(help="channel width multiplier")] = 1.0,
    patch_size: Annotated[int, typer.Option(help="prediction patch size p")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
):
    """List a model's sites: shape, MACs per output, MACs per image and share of the network."""
    shape = parse_shape(input_shape)
    net = attach(build_model(model, num_classes, shape, width), shape, patch_size)
    data = site_table(net)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"{model} on {'x'.join(map(str, shape))} input: {len(net.sites)} sites")
    for col in ("#", "site", "shape (C,H,W)", "MACs/output", "MACs/image", "% network", "convs"):
        table.add_column(col, justify="left" if col in ("site", "convs") else "right")
    for r in data["sites"]:
        table.add_row(
            str(r["index"]), r["name"], "x".join(map(str, r["shape"])), _per_output(r),
            f"{r['macs']:,}", f"{r['share_of_network_pct']:.2f}", " + ".join(r["convs"]),
        )  # fmt: skip
    out_console().print(table)
    typer.echo(
        f"network MACs/image: {data['network_macs']:,}   site MACs/image: {data['site_macs']:,} "
        f"({data['site_share_of_network_pct']:.3f}% of network)"
    )
    for row in data["not_sites"]:
        typer.echo(f"not a site: {row['activation']}: {row['why']}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except CrossneuronError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        raise SystemExit(2) from None
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        raise SystemExit(130) from None
    except OSError as exc:  # permissions, a full disk, a vanished folder: what the system said, in one line
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err.print(f"error: {where}{exc.strerror or exc}", highlight=False, soft_wrap=True, markup=False)
        raise SystemExit(2) from None
    except Exception as exc:  # usage errors (click's, vendored by typer: matched by shape, not import)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            raise SystemExit(code) from None
        raise


Precision = Annotated[
    str, typer.Option(help="fp32, or bf16: training passes in bfloat16 autocast and channels_last (about 3x faster "
                           "on CPUs with AMX or AVX-512 BF16 and on recent GPUs); weights, optimiser and every "
                           "measurement stay fp32")
]
DataRoot = Annotated[
    str | None, typer.Option("--data-root", help="folder with the data files (default: $CROSSNEURON_DATA)")
]
OtherData = Annotated[
    bool, typer.Option("--other-data", help="go on (with a warning) where the data differs from the checkpoint's")
]


@app.command()
def train(
    model: Annotated[
        str, typer.Option(help="registry model name, path/to/file.py:factory, package.module:factory or timm:name")
    ],
    dataset: Annotated[
        str, typer.Option(help="registry dataset name, or imagefolder:DIR (DIR/train/<class>/*, DIR/val/<class>/*)")
    ],
    out: Annotated[str, typer.Option(help="checkpoint folder to write")],
    width: float = 1.0,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.05,
    seed: int = 0,
    val_size: Annotated[int | None, typer.Option(help="images held out for val (default: dataset's)")] = None,
    device: str = "cpu",
    data_root: DataRoot = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out")] = False,
    fp32: Annotated[bool, typer.Option(help="store weights in fp32 (default fp16)")] = False,
    weights: Annotated[
        str | None,
        typer.Option(
            help="start from a weights file (.safetensors or a state_dict) or torchvision's, e.g. IMAGENET1K_V1"
        ),
    ] = None,
    download: Annotated[bool, typer.Option(help="download the dataset with torchvision (network)")] = False,
    stop_after: Annotated[int | None, typer.Option(help="pause after this many epochs (resume with --resume)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar; one line per epoch")] = False,
    input_size: Annotated[int | None, typer.Option(help="imagefolder:DIR only: image side (default 224)")] = None,
    mean: Annotated[str | None, typer.Option(help="imagefolder:DIR only: R,G,B mean (default ImageNet's)")] = None,
    std: Annotated[str | None, typer.Option(help="imagefolder:DIR only: R,G,B std (default ImageNet's)")] = None,
    precision: Precision = "fp32",
):
    """Train a model; a checkpoint each epoch; metrics.json with val and test accuracy at the end."""
    from .train import TrainConfig
    from .train import train as run

    cfg = TrainConfig(model, dataset, width, epochs, batch_size, lr, seed=seed, val_size=val_size, device=device,
                      half=not fp32, weights=weights, input_size=input_size, mean=_floats(mean, "--mean") if mean
                      else None, std=_floats(std, "--std") if std else None, precision=precision)  # fmt: skip
    log = (lambda line: typer.echo(line, err=True)) if quiet or not sys.stderr.isatty() else None
    metrics = run(cfg, out, data_root, download, resume, quiet or not sys.stderr.isatty(), stop_after, log)
    if metrics is None:
        typer.echo(f"paused after {stop_after} epoch(s): continue with --resume --out {out}")
        return
    typer.echo(f"val accuracy {metrics['val_accuracy']:.2f}%  test accuracy {metrics['test_accuracy']:.2f}%  -> {out}")


def _pattern_run(checkpoint_dir, split, patch_size, data_root, device, masks_path=None, other_data=False):
    from .context import open_checkpoint
    from .evaluate import evaluate_pattern, measure

    ctx = open_checkpoint(checkpoint_dir, data_root, device, other_data=other_data)
    x, y = ctx.data(split)
    if masks_path is None:
        return evaluate_pattern(ctx.model, ctx.spec, x, y, patch_size, device=device), ctx.meta
    from .result import attach_result, load_result

    result = load_result(masks_path)
    if result.weights_hash not in (None, ctx.weights_hash):
        err.print(f"note: {masks_path} was searched on other weights than {checkpoint_dir}'s (e.g. before "
                  "retraining); measuring these masks on this checkpoint", highlight=False, soft_wrap=True)  # fmt: skip
    net = attach_result(ctx.model, ctx.spec.input_shape, result)
    return measure(net, ctx.spec, x, y, None, device=device), ctx.meta


def _print_pattern(result, title: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    typer.echo(title)
    typer.echo(f"  accuracy without prediction {result.base_accuracy:.2f}%, with {result.accuracy:.2f}% "
               f"(drop {result.drop:.2f} points) on {result.images} images")  # fmt: skip
    typer.echo(f"  MACs saved {result.macs_saved_pct_network:.2f}% of network, {result.macs_saved_pct_sites:.2f}% "
               f"of sites; oracle {result.oracle_pct_network:.2f}% of network; "
               f"mispredicted {result.mispredicted_rate:.2f}% of predicted positions")  # fmt: skip


@app.command()
def evaluate(
    checkpoint: Annotated[str, typer.Option(help="checkpoint folder")],
    split: Annotated[str, typer.Option(help="val or test")] = "test",
    patch_size: int = 2,
    pattern: Annotated[str, typer.Option(help="pattern tiled at every site: diagonal")] = "diagonal",
    masks: Annotated[
        str | None, typer.Option(help="result.json of `crossneuron optimize` (overrides --pattern)")
    ] = None,
    data_root: DataRoot = None,
    device: str = "cpu",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    other_data: OtherData = False,
):
    """Accuracy with and without prediction on a split, MACs saved, oracle and misprediction rate; for a
    network retrained with masks, also the drop against the original model its chain began with."""
    if pattern != "diagonal":
        raise CrossneuronError(f"unknown --pattern '{pattern}': only 'diagonal' is available here")
    if split not in ("val", "test"):
        raise CrossneuronError(f"--split must be val or test, got '{split}'")
    result, meta = _pattern_run(checkpoint, split, patch_size, data_root, device, masks, other_data)
    what = masks if masks else f"{pattern} {patch_size}x{patch_size}"
    original = _vs_original(checkpoint, split, data_root, device, other_data)
    if as_json:
        extra = {} if original is None else {"original": str(original[0]), "original_accuracy": original[1],
                                             "drop_vs_original": original[1] - result.accuracy}  # fmt: skip
        typer.echo(json.dumps({**result.as_dict(), **extra}, indent=2))
        return
    _print_pattern(result, f"{meta['model']} on {meta['dataset']} ({split}), {what}", False)
    if original is not None:
        gone = " (itself retrained: the chain's earlier links are gone)" if original[2] else ""
        typer.echo(f"  retrained with masks: the original model ({original[0]}{gone}) is {original[1]:.2f}% right "
                   f"without prediction; drop against it {original[1] - result.accuracy:.2f} points")  # fmt: skip


def _vs_original(checkpoint, split, data_root, device, other_data):
    """(path, no-prediction accuracy on the split, whether it was itself retrained with masks) of the model a
    retrained checkpoint's chain began with (retrain.chain_original); None for a checkpoint that was not
    retrained with masks."""
    from .context import open_checkpoint
    from .evaluate import correct_count
    from .retrain import chain_original

    origin = chain_original(checkpoint)
    if origin == Path(checkpoint).resolve():
        return None
    ctx = open_checkpoint(origin, data_root, device, other_data=other_data)
    x, y = ctx.data(split)
    return origin, 100.0 * correct_count(ctx.model, x, y, ctx.spec, device=device) / len(y), bool(ctx.meta.get("masks"))


@app.command()
def baseline(
    checkpoint: Annotated[str, typer.Option(help="checkpoint folder")],
    patch_size: int = 2,
    data_root: DataRoot = None,
    device: str = "cpu",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    other_data: OtherData = False,
):
    """The 2018 paper's baseline: the diagonal pattern at every site, measured on the test split."""
    result, meta = _pattern_run(checkpoint, "test", patch_size, data_root, device, other_data=other_data)
    _print_pattern(result, f"diagonal baseline {patch_size}x{patch_size}: {meta['model']} on {meta['dataset']} (test)",
                   as_json)  # fmt: skip


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CrossneuronError(f"{what} must be numbers separated by commas, got '{text}'") from None


def _ones(text: str | None):
    if text is None:
        return None
    parts = text.split("-")
    try:
        return (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise CrossneuronError(f"--ones must be A-B (e.g. 1-2), got '{text}'") from None


@app.command()
def optimize(
    checkpoint: Annotated[str, typer.Option(help="checkpoint folder")],
    out: Annotated[str, typer.Option(help="run folder (records.sqlite, results); re-run to resume")],
    mode: Annotated[str, typer.Option(help=modes_help())] = "uniform-layer",
    patch_size: int = 2,
    ones: Annotated[str | None, typer.Option(help="range of ones per pattern A-B (default 1 to p*p-1)")] = None,
    patterns: Annotated[str, typer.Option(help="pattern family: all (every pattern in the ones range) or "
                                          "permutations (one computed position per row and column, p! patterns: "
                                          "the 2018 diagonal's share of the patch), or permutations+ones (both: "
                                          "the permutations and every pattern in the ones range)")] = "all",
    gt: Annotated[float, typer.Option(help="granularity threshold (0: single patches)")] = 10.0,
    eps: Annotated[str, typer.Option(help="accuracy budgets in points, comma separated")] = "0,0.5,1,3",
    calib: Annotated[int, typer.Option(help="calibration images drawn from val")] = 1000,
    check: Annotated[int, typer.Option(help="check images: held out of val, never searched on (SPEC 5)")] = 1000,
    verify: Annotated[int | None, typer.Option(help="val images after the calibration images (never searched on): "
                                               "the chosen masks must keep the budget on them too (0: none; "
                                               "default 1000 where val holds calibration + 1000 + 1000 check "
                                               "images, else 0)")] = None,
    milp_verify: Annotated[bool, typer.Option(help="milp: each round's choice must keep the budget on the verify "
                                              "images too, so the rounds search below that boundary")] = False,
    audit: Annotated[bool, typer.Option(help="also measure every trajectory step on the check images "
                                        "(MODE/audit.json: compare budget rules on unseen images)")] = False,
    budget: Annotated[str, typer.Option(help="what 'within eps' means: " + budgets_help())] = "flips",
    reuse: Annotated[
        list[str] | None,
        typer.Option(
            help="another run folder on the same checkpoint and calibration "
            "images: its records are taken, not evaluated again"
        ),
    ] = None,
    top_m: Annotated[int | None, typer.Option(help="keep at most M options per target")] = None,
    couple: Annotated[str, typer.Option(help="none, residual, or groups of site names a+b,c+d")] = "none",
    engine: Annotated[str, typer.Option(help="evaluation engine")] = "naive",
    screen: Annotated[
        bool, typer.Option(help="estimate targets below site level from one gradient pass; exact near epsilon")
    ] = False,
    screen_band: Annotated[float, typer.Option(help="points around the largest eps evaluated exactly")] = 1.0,
    screen_check: Annotated[int, typer.Option(help="screened estimates also evaluated exactly (proxy check)")] = 30,
    refine: Annotated[
        bool, typer.Option(help="after the layer quantizer, a forward greedy that keeps only moves within each eps")
    ] = False,
    refine_order: Annotated[
        str,
        typer.Option(
            help="refine's move orders: mispredictions (0.3.0), index (0.2.2), or both comma separated "
            "(a pass each; the best step within each eps wins)"
        ),
    ] = "mispredictions,index",
    optimizer: Annotated[
        str,
        typer.Option(
            help="after the quantizers: layer (SPEC 6's layer quantizer), milp (one option per site "
            "chosen by HiGHS on per-image margin estimates, verified exactly), or layer,milp"
        ),
    ] = "milp",
    milp_rounds: Annotated[int, typer.Option(help="milp: exact verifications (re-solves) per eps at most")] = 6,
    milp_seconds: Annotated[float, typer.Option(help="milp: HiGHS's time limit per solve (0, the default since "
                                                  "0.17: greedy and exchanges only, the same on any machine)")] = 0.0,
    zero_below: Annotated[float, typer.Option(help="a computed position counts as zero when at most this fraction "
                                              "of its site's mean positive activation on the calibration images "
                                              "(0: exactly zero, SPEC 4; README 'Zero tolerance')")] = 0.0,
    combine: Annotated[
        str, typer.Option(help="patch/channel quantizer: slope (MACs per misprediction) or rank (SPEC 6's combiner)")
    ] = "slope",
    batch_size: int = 500,
    seed: int = 0,
    data_root: DataRoot = None,
    device: str = "cpu",
    other_data: OtherData = False,
    dry_run: Annotated[bool, typer.Option(help="print evaluations per stage and an estimated time")] = False,
    backend: Annotated[
        str, typer.Option(help="local (this process) or ray (evaluations spread over Ray workers)")
    ] = "local",
    workers: Annotated[int, typer.Option(help="--backend ray: workers (actors), one CPU each")] = 2,
    groups: Annotated[
        int, typer.Option(help="--backend ray: groups of workers that take independent candidates side by side "
                               "(each group splits an evaluation by images); a divisor of --workers")
    ] = 1,
    ray_address: Annotated[
        str | None, typer.Option(help="--backend ray: a running cluster (auto, HOST:PORT); default: start a local one")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    quiet: bool = False,
):
    """Search prediction masks that save the most MACs within each epsilon."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import runfolder as opt
    from .context import open_checkpoint
    from .search.modes import parse_modes
    from .search.options import SearchOptions

    given = {k: v for k, v in locals().items() if k in {f.name for f in dataclasses.fields(SearchOptions)}}
    # every option named like a SearchOptions field passes as it is; these three are parsed first
    options = SearchOptions(**{**given, "modes": parse_modes(mode), "ones": _ones(ones), "eps": _floats(eps, "--eps")})
    if backend not in ("local", "ray"):
        raise CrossneuronError(f"unknown --backend '{backend}': choose local or ray")
    from .search.ray_engine import RayBackend

    on_ray = RayBackend(workers, ray_address, groups=groups) if backend == "ray" else None
    if on_ray is not None:
        on_ray.check()
    ctx = open_checkpoint(checkpoint, data_root, device, other_data=other_data)
    options.check(len(ctx.split.val))
    if dry_run:
        from .estimate import dry_run as estimate

        plan = estimate(ctx, options, engine)
        if as_json:
            typer.echo(json.dumps(plan, indent=2))
            return
        per = plan["seconds_per_evaluation"]
        typer.echo(f"measured: {per['one site']:.2f} s per evaluation with one site predicting, {per['every site']:.2f}"
                   f" s with every site, {per['test pass']:.1f} s per test-split pass")  # fmt: skip
        typer.echo("shared: " + ", ".join(f"{k} {v:.0f} s" for k, v in plan["shared_seconds"].items()))
        for m, info in plan["modes"].items():
            stages = ", ".join(f"{k} {v:,} ({info['stage_seconds'][k]:.0f} s)" for k, v in info["evaluations"].items())
            typer.echo(f"{m}: {stages}; about {info['seconds'] / 60:.1f} min")
        typer.echo(f"estimated total: {plan['seconds'] / 60:.1f} min (quantizer and layer counts are at most, "
                   "refine's about)")  # fmt: skip
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("best {task.fields[best]:.2f}% MACs within eps"), TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, disable=quiet or as_json, transient=False, console=err) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int, best: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, best=best)
            bar.update(tasks[stage], completed=done, total=total, best=best)

        summary = opt.optimize(ctx, options, out, engine, progress, check, reuse or [], on_ray, audit)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    verified = summary.get("verify_images", 0)
    table = Table(title=f"MACs saved on the test split (budget {summary['budget']}; {summary['calib_images']} "
                        f"calibration, {f'{verified} verify, ' if verified else ''}{summary['check_images']} check "
                        "images from val)")  # fmt: skip
    for col in ("mode", "eps", "calib drop", *(("verify drop",) if verified else ()), "check drop", "test acc",
                "test drop", "% network", "% sites", "oracle % net"):  # fmt: skip
        table.add_column(col, justify="right")
    for m, info in summary["modes"].items():
        for e, r in info["eps"].items():
            check_drop = "-" if r["check_drop"] is None else f"{r['check_drop']:.2f}"
            verify_drop = (f"{r['verify_drop']:.2f}",) if verified else ()
            table.add_row(m, e, f"{r['calib_drop']:.2f}", *verify_drop, check_drop, f"{r['test_accuracy']:.2f}",
                          f"{r['test_drop']:.2f}", f"{r['macs_saved_pct_network']:.2f}",
                          f"{r['macs_saved_pct_sites']:.2f}", f"{r['oracle_pct_network']:.2f}")  # fmt: skip
    out_console().print(table)
    b = summary["baseline"]["test"]
    typer.echo(f"diagonal baseline (2018): {b['macs_saved_pct_network']:.2f}% of network MACs at a test drop of "
               f"{b['drop']:.2f} points")  # fmt: skip
    for m, info in summary["modes"].items():
        at = info["at_baseline"]
        typer.echo(f"{m} at the baseline's calibration drop: {at['macs_saved_pct_network']:.2f}% of network MACs, "
                   f"test drop {at['test_drop']:.2f}")  # fmt: skip
    typer.echo(f"{summary['evaluations']} evaluations in {summary['seconds']:.0f} s; results under {out}")


@app.command()
def report(
    run_dir: Annotated[str, typer.Argument(help="run folder written by `crossneuron optimize`")],
    out: Annotated[str | None, typer.Option(help="folder for the report (default RUN_DIR/report)")] = None,
):
    """Figures (PNG, SVG), a Markdown table and a self-contained report.html from a run folder."""
    from .report import build_report

    made = build_report(run_dir, out)
    typer.echo(made["table"])
    typer.echo(f"report: {made['html']}")


@app.command()
def compare(
    run_dir: Annotated[str, typer.Argument(help="run folder written by `crossneuron optimize`")],
    zap_epochs: Annotated[int, typer.Option(help="epochs of label-free ZAP predictor training")] = 3,
    zap_images: Annotated[int, typer.Option(help="train images the ZAP predictors learn from")] = 10000,
    zap_lr: Annotated[float, typer.Option(help="Adam learning rate of the ZAP predictors")] = 0.03,
    snapea_images: Annotated[int, typer.Option(help="test images SnaPEA's exact mode is counted on (slow)")] = 100,
    period: Annotated[int, typer.Option(help="SnaPEA: terms between two sign checks")] = 1,
    zap: Annotated[bool, typer.Option(help="measure ZAP")] = True,
    snapea: Annotated[bool, typer.Option(help="measure SnaPEA exact, alone and combined with the masks")] = True,
    data_root: DataRoot = None,
    device: str = "cpu",
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """The field side by side on the run's checkpoint: the 2018 diagonal, the search, retraining, ZAP,
    SnaPEA exact and spatial masks combined with SnaPEA; writes RUN_DIR/compare/."""
    from .compare import compare as run
    from .compare import markdown

    log = (lambda m: None) if as_json else (lambda m: typer.echo(m, err=True))
    cmp = run(run_dir, data_root, device, log, zap=zap, snapea=snapea, zap_epochs=zap_epochs, zap_images=zap_images,
              zap_lr=zap_lr, snapea_images=snapea_images, period=period)  # fmt: skip
    typer.echo(json.dumps(cmp, indent=2) if as_json else markdown(cmp))


@app.command()
def retrain(
    checkpoint: Annotated[str, typer.Option(help="checkpoint folder the masks were searched on")],
    masks: Annotated[str, typer.Option(help="a result.json written by `crossneuron optimize`")],
    out: Annotated[
        str | None, typer.Option(help="new checkpoint folder (default RUN_DIR/retrain-<mode>-eps-<e>)")
    ] = None,  # fmt: skip
    epochs: int = 2,
    lr: float = 0.005,
    batch_size: int = 128,
    resume: Annotated[bool, typer.Option(help="continue an interrupted retraining in --out")] = False,
    research: Annotated[bool, typer.Option(help="run the same search again on the retrained model")] = False,
    engine: Annotated[str, typer.Option(help="evaluation engine for --research")] = "fast",
    data_root: DataRoot = None,
    device: str = "cpu",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    quiet: bool = False,
    other_data: OtherData = False,
    distill: Annotated[
        float, typer.Option(help="weight in [0, 1] of distillation from the original network's logits (0: labels only)")
    ] = 0.0,
    temperature: Annotated[float, typer.Option(help="distillation temperature")] = 4.0,
    teacher: Annotated[
        str | None, typer.Option(help="checkpoint folder to distil from instead of --checkpoint, e.g. the original "
                                      "network when --checkpoint is a retrained one (default: --checkpoint)")
    ] = None,
    predictability: Annotated[
        float, typer.Option(help="weight of the predictability term: pushes a mask's computed positions to zero "
                                 "where the rest of the patch is zero, by the MACs that would save (0: off)")
    ] = 0.0,
    slack: Annotated[
        float, typer.Option(help="the term also counts patches whose rest is small: exp(-rest / (slack x mean "
                                 "activation)); 0: only a rest of exactly zero")
    ] = 0.0,
    warmup: Annotated[float, typer.Option(help="epochs of linear learning-rate warm-up before the cosine")] = 0.0,
    rounds: Annotated[
        int, typer.Option(help="search-retrain rounds: retrain, search the retrained network again (budget held "
                               "against the original model), retrain with those masks...; 0: one retraining")
    ] = 0,
    grow: Annotated[bool, typer.Option(help="with --rounds: each round grows the masks it retrained with "
                                             "(crossneuron grow) instead of searching from no prediction")] = False,
    precision: Precision = "fp32",
    order_seed: Annotated[
        int | None, typer.Option(help="seed of the training images' order, augmentation and dropout (default: the "
                                      "checkpoint's split seed); the split never changes. Networks retrained from "
                                      "one start with other seeds are what benchmarks/soup.py averages")
    ] = None,
):
    """Fine-tune with the masks predicting (predicted positions pass no gradient), then measure again."""
    from .retrain import retrain as run

    quiet = quiet or as_json or not sys.stderr.isatty()
    strategy = dict(epochs=epochs, lr=lr, batch_size=batch_size, distill=distill, temperature=temperature,
                    predictability=predictability, slack=slack, warmup=warmup, teacher=teacher,
                    precision=precision, order_seed=order_seed,
                    log=(lambda line: typer.echo(line, err=True)) if quiet else None)  # fmt: skip
    if grow and not rounds:
        raise CrossneuronError("--grow works with --rounds N; to grow one retrained network's masks: crossneuron grow")
    if rounds:
        from .retrain import rounds as run_rounds

        summary = run_rounds(checkpoint, masks, rounds, out, engine, data_root=data_root, device=device,
                             other_data=other_data, grow=grow, **strategy)  # fmt: skip
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        for r in summary["rounds"]:
            s = r["searched"]
            c = r.get("chosen", s)
            how = "grown" if r.get("search") == "grow" else "searched"
            typer.echo(f"round {r['round']}: {how} at eps {r['eps_searched']:g}: {s['macs_saved_pct_network']:.2f}% "
                       f"of network MACs saved at a test drop of {s['drop_vs_original']:.2f} against the original "
                       f"model (oracle {s['oracle_pct_network']:.2f}%); kept the {r.get('kept', 'searched')} masks: "
                       f"{c['macs_saved_pct_network']:.2f}% at {c['drop_vs_original']:.2f}")  # fmt: skip
        return

    record = run(checkpoint, masks, out, data_root=data_root, device=device, resume=resume,
                 quiet=quiet, research=research, engine=engine,
                 other_data=other_data, **strategy)  # fmt: skip
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    b, a = record["before"]["test"], record["after"]["test"]
    typer.echo(f"test accuracy with the masks: {b['accuracy']:.2f}% before, {a['accuracy']:.2f}% after retraining "
               f"(original model without prediction: {record['base_accuracy']:.2f}%, "
               f"test drop {a['drop_vs_original']:.2f}); "
               f"MACs saved {b['macs_saved_pct_network']:.2f}% -> {a['macs_saved_pct_network']:.2f}% of network "
               f"(oracle {a['oracle_pct_network']:.2f}%)")  # fmt: skip
    typer.echo(f"retrained checkpoint: {record['retrained']}")


@app.command()
def grow(
    checkpoint: Annotated[str, typer.Option(help="a retrained checkpoint folder")],
    masks: Annotated[str, typer.Option(help="the result.json it was retrained with (its retrain's result.json)")],
    original: Annotated[str, typer.Option(help="the checkpoint the first search ran on: the budget's reference")],
    eps: Annotated[float, typer.Option(help="accuracy points the grown masks may lose against --original")],
    out: Annotated[str | None, typer.Option(help="result.json to write (default CHECKPOINT/grow-eps-<e>/result.json)")]
    = None,  # fmt: skip
    data_root: DataRoot = None,
    device: str = "cpu",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    quiet: bool = False,
    other_data: OtherData = False,
):
    """Make a retrained network's masks predict more, one computed position at a time, within eps of the original."""
    from pathlib import Path

    from .context import open_checkpoint
    from .grow import grow_to
    from .result import load_result

    result = load_result(masks)
    ctx = open_checkpoint(checkpoint, data_root, device, other_data=other_data)
    reference = open_checkpoint(original, data_root, device, other_data=other_data)
    path = Path(out) if out else Path(checkpoint) / f"grow-eps-{eps:g}" / "result.json"
    log = None if quiet or as_json else (lambda line: typer.echo(line, err=True))
    grown = grow_to(path, ctx, result, reference, eps, log=log)
    if as_json:
        typer.echo(json.dumps(grown.to_json(), indent=2))
        return
    typer.echo(f"grown in {grown.chosen_step} step(s): {grown.macs_saved_pct_network:.2f}% of network MACs saved at "
               f"a test drop of {grown.test_drop:.2f} against the original model (calibration drop "
               f"{grown.calib_drop:.2f}; oracle {grown.oracle_pct_network:.2f}%) -> {path}")  # fmt: skip
