"""Every benchmark of docs/design.md section 5, one table against the targets.

    python scripts/bench_all.py --out runs/bench [--run runs/bench/quickstart-run] [--skip_b1 true]

B1 is scripts/bench_zoo.py (stacked vs one-by-one zoo training); B2-B8 come from one quickstart run
(scripts/bench_quickstart.py; B5 / B6 details from scripts/bench_sparse.py / bench_masks.py on the
same run). Each script runs as its own process and writes OUT/<name>.json; this one prints the table
and writes OUT/all.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jsonargparse import auto_cli

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing mole
from mole.zoo.store import write_json  # noqa: E402


def script(name: str, *args: str) -> None:
    subprocess.run([sys.executable, str(HERE / name), *args], check=True)


def main(
    *, out: str = "runs/bench", run: str | None = None, preset: str = "default", skip_b1: bool = False
) -> None:
    """Every benchmark script in one run, one table against the targets.

    Args:
        out: folder for the JSON files.
        run: quickstart run folder (default: OUT/quickstart-run, fresh).
        preset: the quickstart's preset: default or tiny.
        skip_b1: skip the zoo benchmark (B1).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(run) if run else out / "quickstart-run"
    rows = []
    if not skip_b1:
        script("bench_zoo.py", "--out", str(out / "zoo.json"))
        b1 = json.loads((out / "zoo.json").read_text())
        for arch, s in b1["summary"].items():  # DESIGN B1: each of the script's targets, as it judged it
            for key, target in b1["targets"][arch].items():
                cmp = "<=" if key.startswith("acc") else ">="
                rows.append(["B1", f"zoo {arch}: {key}", s[key], f"{cmp} {target}", bool(s["met"][key])])
    script(
        "bench_quickstart.py",
        "--out",
        str(out / "quickstart.json"),
        "--run",
        str(run),
        "--preset",
        preset,
    )
    script("bench_sparse.py", "--out", str(out / "sparse.json"), "--run", str(run), "--preset", preset)
    script("bench_masks.py", "--out", str(out / "masks.json"), "--run", str(run), "--preset", preset)
    for b, f in json.loads((out / "quickstart.json").read_text())["benchmarks"].items():
        rows.append([b, f["what"], f["value"], f["target"], f["met"]])
    print(f"{'#':<3} {'what':<96} {'value':>9}  {'target':<9} met")
    for b, what, value, target, met in rows:
        print(f"{b:<3} {what:<96} {value:>9.3f}  {target:<9} {'yes' if met else 'no'}")
    write_json(
        out / "all.json", {"rows": [dict(zip(["id", "what", "value", "target", "met"], r)) for r in rows]}
    )


if __name__ == "__main__":
    auto_cli(main)
