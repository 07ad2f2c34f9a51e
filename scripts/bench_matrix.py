"""The benchmark matrix (DESIGN section 9): one recipe over tasks x architectures x training seeds.

The full matrix (5 cells x 3 seeds, up to an hour on 2 CPU cores; rerun the same command to resume):

    python scripts/bench_matrix.py --matrix configs/matrix/matrix.yaml --out runs/matrix

Its tiny version (two digits cells, one seed, the quickstart's tiny recipe; tests/test_matrix.py):

    python scripts/bench_matrix.py --matrix configs/matrix/tiny.yaml --out runs/matrix-tiny

Cells can run side by side, one command each (`--cells [digits_mlp] --seeds [1]`); each writes the
table of what it ran, and `--table_only true` then tabulates every cell and seed finished in OUT:

    python scripts/bench_matrix.py --matrix configs/matrix/matrix.yaml --out runs/matrix --table_only true

The same as `mole bench matrix`. A thin script over mole.bench.matrix.run_matrix: the same zoo build, `mole train`, sampling and
`mole eval` as the quickstart, per cell and seed. Prints the table (OUT/matrix.md) and writes
OUT/matrix.json; --json_out also copies the JSON there.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing mole
from mole.bench.matrix import run_matrix  # noqa: E402
from mole.cli import run_script  # noqa: E402


def main(
    *,
    out: str = "runs/matrix",
    matrix: str = "configs/matrix/matrix.yaml",
    cells: list[str] | None = None,
    seeds: list[int] | None = None,
    preset: str | None = None,
    json_out: str | None = None,
    progress: bool = False,
    table_only: bool = False,
) -> str:
    """Run (or resume) a benchmark matrix, print its table, write its JSON.

    Args:
        out: run folder (every stage is kept there and reused when rerun).
        matrix: the matrix file (configs/matrix/).
        cells: only these cells, by name (e.g. [digits_mlp]).
        seeds: these training seeds instead of the matrix file's.
        preset: merge each recipe file's override in this preset's folder (e.g. tiny).
        json_out: also write matrix.json there.
        progress: progress bars.
        table_only: run nothing; tabulate every chosen cell and seed finished in OUT, naming the others.
    """
    path = run_matrix(matrix, out, cells, seeds, preset, progress, table_only=table_only)
    if json_out:
        shutil.copyfile(path, json_out)
    print((path.parent / "matrix.md").read_text())
    return str(path)


def run(argv: list[str] | None = None) -> int:
    """The command line: 0, or 2 with one line on stderr for bad input (a bad matrix file, an OUT that
    holds another run), as `mole bench matrix` answers."""
    return run_script(main, "bench_matrix", argv)


if __name__ == "__main__":
    sys.exit(run())
