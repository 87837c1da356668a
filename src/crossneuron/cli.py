"""The ``crossneuron`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import CrossneuronError
from .models import build_model
from .net import attach

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
            "macs_per_output": s.macs_per_output,
            "macs": s.macs,
            "share_of_network_pct": 100.0 * s.macs / total,
            "convs": list(s.convs),
        }
        for s in net.sites
    ]
    return {
        "sites": rows,
        "network_macs": total,
        "site_macs": net.site_macs,
        "site_share_of_network_pct": 100.0 * net.site_macs / total,
    }


@app.command()
def sites(
    model: Annotated[str, typer.Option(help="registry model name (alexnet, vgg16, resnet18, ...)")] = "resnet18",
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
            str(r["index"]), r["name"], "x".join(map(str, r["shape"])), f"{r['macs_per_output']:,}",
            f"{r['macs']:,}", f"{r['share_of_network_pct']:.2f}", " + ".join(r["convs"]),
        )  # fmt: skip
    out_console().print(table)
    typer.echo(
        f"network MACs/image: {data['network_macs']:,}   site MACs/image: {data['site_macs']:,} "
        f"({data['site_share_of_network_pct']:.3f}% of network)"
    )


def main() -> None:
    try:
        app(standalone_mode=False)
    except CrossneuronError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
