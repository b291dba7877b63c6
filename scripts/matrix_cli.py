"""Command line of the build matrix: ``python -m scripts.matrix [list|show|sync|ci-*]``.

``scripts/matrix.py`` holds the data model and loader; running it as a module lands here.
Errors (unknown cell/profile, invalid matrix.toml) print one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scripts import gen_workflow, generated
from scripts.matrix import Cell, Matrix, MatrixError, UnknownNameError, load_matrix


def _table_text(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def cell_record(matrix: Matrix, cell: Cell) -> dict:
    """Everything known about one cell, as plain JSON-able data."""
    return {
        "name": cell.name,
        "python": cell.python,
        "torch": cell.torch,
        "cuda": cell.cuda,
        "packages": list(cell.packages),
        "python_tag": cell.python_tag,
        "build_tag": cell.build_tag,
        "torch_index_url": cell.torch_index_url,
        "venv_torch": f"pip install torch=={cell.torch} --index-url {cell.torch_index_url}",
        "gxx": matrix.toolchain(cell).gxx,
        "profiles": matrix.profiles_of(cell),
    }


def _overview(matrix: Matrix) -> str:
    cells = _table_text(
        ["cell", "python", "torch", "cuda", "build tag", "packages"],
        [[c.name, c.python, c.torch, c.cuda, c.build_tag, " ".join(c.packages)]
         for c in matrix.cells],
    )
    profiles = _table_text(
        ["profile", "cells", "members"],
        [[p, str(len(m)), " ".join(m) if len(m) <= 4 else " ".join(m[:3]) + " ..."]
         for p, m in matrix.profiles.items()],
    )
    return f"{len(matrix.cells)} cells ({matrix.path.name})\n\n{cells}\n\n{profiles}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.matrix", description="The build matrix (matrix.toml): cells, profiles, generated files.")
    parser.add_argument("--matrix", type=Path, default=None, help="matrix file (default: repo's)")
    parser.add_argument("--json", action="store_true", help="print cells and profiles as JSON")
    sub = parser.add_subparsers(dest="command")
    p_list = sub.add_parser("list", help="cell names, one per line (or a JSON list)")
    p_list.add_argument("--profile", default="all")
    p_list.add_argument("--json", action="store_true", help="one-line JSON list of names")
    p_show = sub.add_parser("show", help="everything about one cell")
    p_show.add_argument("cell")
    p_show.add_argument("--json", action="store_true")
    p_sync = sub.add_parser("sync", help="regenerate pixi.toml, the workflow and README tables")
    p_sync.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 with a diff when a generated file is stale")
    p_ci = sub.add_parser("ci-profile", help="profile a GitHub event builds (used by the workflow)")
    p_ci.add_argument("--event", required=True, help="github.event_name")
    p_ci.add_argument("--ref", required=True, help="github.ref")
    p_ci.add_argument("--requested", default="", help="workflow_dispatch input 'profile'")
    p_args = sub.add_parser("ci-build-args", help="extra `build` arguments of a profile (workflow)")
    p_args.add_argument("--profile", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        matrix = load_matrix(args.matrix)
        if args.command is None:
            if args.json:
                print(json.dumps({"cells": [cell_record(matrix, c) for c in matrix.cells],
                                  "profiles": matrix.profiles}, indent=2))
            else:
                print(_overview(matrix))
        elif args.command == "list":
            names = [c.name for c in matrix.profile_cells(args.profile)]
            print(json.dumps(names) if args.json else "\n".join(names))
        elif args.command == "show":
            record = cell_record(matrix, matrix.cell(args.cell))
            if args.json:
                print(json.dumps(record, indent=2))
            else:
                for key, value in record.items():
                    print(f"{key:16} {' '.join(value) if isinstance(value, list) else value}")
        elif args.command == "sync":
            return generated.sync(matrix, check=args.check)
        elif args.command == "ci-profile":
            print(gen_workflow.ci_profile(matrix, args.event, args.ref, args.requested))
        elif args.command == "ci-build-args":
            print(gen_workflow.ci_build_args(matrix, args.profile))
    except (MatrixError, UnknownNameError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
