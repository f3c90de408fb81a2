"""`fastmetro-stream weights`: the official checkpoints, and which of them this machine has."""
from __future__ import annotations

import argparse
import sys


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "weights",
        help="list the official FastMETRO checkpoints and whether each is present",
        description="List the official FastMETRO checkpoints; --download NAME fetches one.",
    )
    p.add_argument("--download", metavar="NAME", help="download this checkpoint into the cache")
    p.set_defaults(func=weights_command)


def weights_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import checkpoints  # (torch: imported only when the command runs)
    from .checkpoints import DOWNLOAD_DOC, CheckpointError

    console = Console()
    if args.download:
        try:
            path = checkpoints.fetch_checkpoint(args.download)
        except CheckpointError as e:
            console.print(f"[red]error:[/red] {e}")
            return 1
        console.print(f"{args.download}: {path}")
        return 0
    table = Table(title="Official FastMETRO checkpoints")
    for col in ("name", "variant", "trained on", "PA-MPJPE (mm)", "on this machine"):
        table.add_column(col)
    for row in checkpoints.status():
        table.add_row(
            row["name"], row["variant"], row["dataset"], f"{row['pa_mpjpe_mm']:.1f}",
            str(row["path"]) if row["path"] else "[yellow]missing[/yellow]",
        )
    console.print(table)
    dirs = ", ".join(str(d) for d in checkpoints.checkpoint_dirs())
    console.print(
        f"Looked in: {dirs}. Get a file with `fastmetro-stream weights --download NAME`, or by hand from "
        f"{DOWNLOAD_DOC} into one of those directories (${checkpoints.ENV_CHECKPOINTS} adds one)."
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastmetro")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
