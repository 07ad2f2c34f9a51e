"""The benchmark matrix: its config files, its errors, and the tiny matrix end to end (resumed when rerun)."""

from __future__ import annotations

import importlib.util
import json
import math
import mmap
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mole.bench.matrix import peak_mb, reset_peak, run_matrix
from mole.bench.spec import load_matrix
from mole.bench.table import targets_met
from mole.cli import main
from mole.diffusion.options import check_sample_recipe
from mole.errors import ConfigError
from mole.eval import load_rows
from mole.pipeline import load_recipe, merged

ROOT = Path(__file__).resolve().parents[1]
MATRIX, TINY = ROOT / "configs" / "matrix" / "matrix.yaml", ROOT / "configs" / "matrix" / "tiny.yaml"
QUICKSTART = ROOT / "configs" / "quickstart"


# ---------------------------------------------------------------------------- the config files
def test_the_matrix_runs_the_quickstart_recipe_over_cells_that_differ_only_in_their_zoo():
    raw = yaml.safe_load(MATRIX.read_text())
    assert [Path(c).stem for c in raw["cells"]] == [
        "digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn", "digits_mlp50k"
    ]  # fmt: skip
    assert raw["seeds"] == [0, 1, 2]
    for cell in raw["cells"]:
        assert list(yaml.safe_load((MATRIX.parent / cell).read_text())) == ["zoo"]
    m = load_matrix(MATRIX, cells=["digits_mlp", "digits_cnn"])  # the cells whose zoo specs exist here
    q, rule = load_recipe("default"), yaml.safe_load((MATRIX.parent / "scaling.yaml").read_text())
    guided = yaml.safe_load((MATRIX.parent / "guided.yaml").read_text())
    # the quickstart's model, its one scaling rule, and the function term on guided draws (X18)
    assert m.weights == merged(merged(q.weights, rule), guided)
    budgets = {"function_budget": 400000, "net": {"init_args": {"global_budget": 12000000}}}
    assert rule == {"model": {"init_args": budgets}}
    net = m.weights["model"]["init_args"]["net"]["init_args"]  # the budget joins the quickstart's net
    assert net["global_rank"] == 256 and net["global_budget"] == 12000000 and net["width"] == 64
    assert guided == {"model": {"init_args": {"function_guidance": [1.0, 6.0]}}}
    steps = yaml.safe_load((MATRIX.parent / "steps.yaml").read_text())  # the steps chosen per model (X41)
    assert (m.sample, m.baselines) == (merged(q.sample, steps), q.baselines)
    assert m.cells[0].zoo == q.zoo and m.cells[1].zoo["architecture"] == "cnn"  # each spec as it is
    assert all("random" not in c.zoo["snapshots"] for c in load_matrix(MATRIX).cells)  # X2, X10


def test_the_tiny_matrix_is_the_quickstarts_tiny_recipe_on_two_digits_cells():
    m, q = load_matrix(TINY), load_recipe("tiny")
    assert [c.name for c in m.cells] == ["digits_mlp", "digits_cnn"] and m.seeds == (0,)
    rule, guided = (yaml.safe_load((MATRIX.parent / f).read_text()) for f in ("scaling.yaml", "guided.yaml"))
    assert m.weights == merged(merged(q.weights, rule), guided)
    assert (m.sample, m.baselines) == (q.sample, q.baselines)
    assert m.cells[0].zoo == q.zoo
    assert {c.zoo["task"] for c in m.cells} == {"digits"} and m.cells[1].zoo["members"] == 8
    # a preset does what the tiny file's lists do: the files in configs/quickstart/tiny/ laid over
    assert load_matrix(MATRIX, cells=["digits_mlp"], preset="tiny").weights == m.weights


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


@pytest.fixture
def matrix_dir(tmp_path):
    """A matrix folder of one good cell (the quickstart's tiny zoo) and the quickstart recipe."""
    write(tmp_path, "cell.yaml", f"zoo: [{QUICKSTART}/zoo.yaml, {QUICKSTART}/tiny/zoo.yaml]\n")
    return tmp_path


def matrix_file(folder: Path, cells: str = "[cell.yaml]", seeds: str = "[0, 1]", extra: str = "") -> Path:
    recipe = f"{{weights: {QUICKSTART}/weights.yaml, sample: {QUICKSTART}/sample.yaml, baselines: {QUICKSTART}/baselines.yaml}}"
    return write(folder, "m.yaml", f"cells: {cells}\nseeds: {seeds}\nrecipe: {recipe}\n{extra}")


def test_a_good_matrix_file_reads(matrix_dir):
    m = load_matrix(matrix_file(matrix_dir))
    assert [c.name for c in m.cells] == ["cell"] and m.seeds == (0, 1)
    assert load_matrix(matrix_file(matrix_dir), seeds=[5]).seeds == (5,)


@pytest.mark.parametrize(
    "cells, seeds, extra, error",
    [
        ("[nowhere.yaml]", "[0]", "", r"^cells\[0\]: no such file: .*nowhere.yaml$"),
        ("[bad_zoo.yaml]", "[0]", "", r"^bad_zoo.zoo: no such file: .*configs/zoo/not_written_yet.yaml$"),
        ("[tuned.yaml]", "[0]", "", r"^tuned.weights: unknown in .*tuned.yaml; valid: zoo$"),
        ("[bad_task.yaml]", "[0]", "", r"^bad_task.zoo.task: unknown task 'no_such_task'"),
        ("[]", "[0]", "", r"^cells: must be a non-empty list"),
        ("[cell.yaml, cell.yaml]", "[0]", "", r"^cells: two cell files share a name"),
        ("[cell.yaml]", "[]", "", r"^seeds: must be a non-empty list"),
        ("[cell.yaml]", "3", "", r"^seeds: must be a non-empty list of training seeds, got 3$"),
        ("[cell.yaml]", "[0, -1]", "", r"^seeds: must hold non-negative integers, got -1$"),
        ("[cell.yaml]", "[0, 1.5]", "", r"^seeds: must hold non-negative integers, got 1.5$"),
        ("[cell.yaml]", "[1, 1]", "", r"^seeds: repeats a seed: \[1, 1\]$"),
        ("[cell.yaml]", "[0]", "steps: 10\n", r"^steps: unknown in .*m.yaml; valid: cells, seeds, recipe$"),
    ],
)
def test_a_bad_matrix_file_is_a_one_line_error_naming_the_field(matrix_dir, cells, seeds, extra, error):
    write(matrix_dir, "bad_zoo.yaml", f"zoo: {ROOT}/configs/zoo/not_written_yet.yaml\n")
    write(matrix_dir, "tuned.yaml", f"zoo: {QUICKSTART}/zoo.yaml\nweights: {{lr: 0.1}}\n")
    write(matrix_dir, "bad_task.yaml", f"zoo: [{QUICKSTART}/zoo.yaml, task.yaml]\n")
    write(matrix_dir, "task.yaml", "task: no_such_task\n")
    with pytest.raises(ConfigError, match=error) as e:
        load_matrix(matrix_file(matrix_dir, cells, seeds, extra))
    assert "\n" not in str(e.value)


def test_bad_arguments_and_recipes_are_one_line_errors(matrix_dir):
    path = matrix_file(matrix_dir)
    with pytest.raises(ConfigError, match=r"^cells: unknown \['nope'\]; valid: cell$"):
        load_matrix(path, cells=["nope"])
    with pytest.raises(ConfigError, match=r"^seeds: repeats a seed"):
        load_matrix(path, seeds=[2, 2])
    with pytest.raises(
        ConfigError, match=r"^preset: no 'huge' override of .*weights.yaml: .*huge/weights.yaml$"
    ):
        load_matrix(path, preset="huge")
    write(matrix_dir, "m.yaml", "cells: [cell.yaml]\nseeds: [0]\nrecipe: {weights: w.yaml}\n")
    with pytest.raises(ConfigError, match=r"^recipe.sample: missing in .*m.yaml$"):
        load_matrix(matrix_dir / "m.yaml")
    # a bad sampling option names the recipe files it came from, before any cell trains
    write(matrix_dir, "s.yaml", "weights: {guidance: high}\n")
    recipe = f"{{weights: {QUICKSTART}/weights.yaml, sample: [{QUICKSTART}/sample.yaml, s.yaml], baselines: {QUICKSTART}/baselines.yaml}}"
    write(matrix_dir, "m.yaml", f"cells: [cell.yaml]\nseeds: [0]\nrecipe: {recipe}\n")
    with pytest.raises(
        ConfigError,
        match=r"^sample.weights.guidance: must be a number, got 'high' \(.*sample.yaml, .*s.yaml\)$",
    ):
        load_matrix(matrix_dir / "m.yaml")
    write(matrix_dir, "m.yaml", "cells: [cell.yaml\n")
    with pytest.raises(ConfigError, match=r"^matrix: .*m.yaml: not valid YAML"):
        load_matrix(matrix_dir / "m.yaml")


def test_mole_bench_matrix_prints_a_bad_file_as_one_line_and_exits_2(matrix_dir, tmp_path, capsys):
    path = matrix_file(matrix_dir, seeds="[0, 0]")
    assert main(["bench", "matrix", "--matrix", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "mole: error: seeds: repeats a seed: [0, 0]\n"
    with pytest.raises(ConfigError, match=r"^wandb: got 'loud'"):
        run_matrix(matrix_file(matrix_dir), tmp_path / "out", wandb="loud")
    assert not (tmp_path / "out").exists()


def test_the_script_prints_a_bad_file_as_one_line_and_exits_2(matrix_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_matrix", ROOT / "scripts" / "bench_matrix.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = matrix_file(matrix_dir, seeds="[0, 0]")
    assert script.run(["--matrix", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "bench_matrix: error: seeds: repeats a seed: [0, 0]\n"


def test_the_real_matrix_reads_and_a_missing_zoo_spec_is_named_before_running(matrix_dir, tmp_path):
    m = load_matrix(MATRIX)
    assert [c.name for c in m.cells] == [
        "digits_mlp",
        "digits_cnn",
        "mnist1d_mlp",
        "mnist1d_cnn",
        "digits_mlp50k",
    ]
    assert m.seeds == (0, 1, 2) and {c.zoo["task"] for c in m.cells} == {"digits", "mnist1d"}
    write(matrix_dir, "gone.yaml", "zoo: nowhere/missing.yaml\n")
    with pytest.raises(ConfigError, match=r"^gone.zoo: no such file: .*nowhere/missing.yaml"):
        run_matrix(matrix_file(matrix_dir, cells="[cell.yaml, gone.yaml]"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing ran


# ---------------------------------------------------------------------------- targets and memory
def test_b3_is_met_only_with_spearman_mae_and_monotone_prompts_together():
    row = {"B2": 0.99, "B3_spearman": 0.97, "B3_mae": 0.02, "B3_monotone": True, "B4": 1.0, "B5": 1.0}
    assert targets_met(row) == {"B2": True, "B3": True, "B4": True, "B5": True}
    assert not targets_met({**row, "B3_mae": 0.05})["B3"]
    assert not targets_met({**row, "B3_monotone": False})["B3"]
    assert not targets_met({**row, "B3_spearman": 0.5})["B3"]
    assert targets_met({**row, "B2": math.nan, "B4": 0.75}) == {
        "B2": False,
        "B3": True,
        "B4": False,
        "B5": True,
    }


def resident_mb() -> float:
    """The process's resident set now (VmRSS), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def fresh_pages(mb: int) -> mmap.mmap:
    """`mb` MB of new anonymous pages, each written so it is resident. A mapping of its own: a block
    from malloc may reuse pages the process already holds (twice in CI a 64 MB np.ones left the
    resident set where it was)."""
    block = mmap.mmap(-1, mb * 2**20)
    np.frombuffer(block, dtype=np.uint8)[:: mmap.PAGESIZE] = 1  # one write per page faults it in
    return block


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="VmHWM reset is Linux's")
def test_peak_memory_is_reset_and_sees_an_allocation_after_the_reset():
    big = fresh_pages(256)  # a peak the reset must forget once it is unmapped
    high = peak_mb("VmHWM")
    big.close()
    method = reset_peak()
    assert method == "VmHWM" and peak_mb(method) <= high - 192
    # against the resident set just before the allocation, not the mark: memory freed in between
    # (another thread, an unmapped file) would hide the allocation under the mark
    now = resident_mb()
    block = fresh_pages(64)
    assert peak_mb(method) >= now + 48
    block.close()


# ---------------------------------------------------------------------------- the tiny matrix
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix") / "run"
    lines: list[str] = []
    result = json.loads(run_matrix(TINY, out, progress=False, log=lines.append).read_text())
    return out, result, lines


@pytest.mark.slow
def test_the_tiny_matrix_holds_every_cell_and_seed_with_measured_figures(tiny):
    out, result, _ = tiny
    rows = result["rows"]
    assert [(r["cell"], r["seed"]) for r in rows] == [("digits_mlp", 0), ("digits_cnn", 0)]
    assert [r["architecture"] for r in rows] == ["mlp", "cnn"]
    for key in (
        "zoo_acc",
        "B2",
        "B3_spearman",
        "B3_mae",
        "B4",
        "B5",
        "train_seconds",
        "sample_seconds",
        "peak_mb",
    ):
        values = [r[key] for r in rows]
        assert all(isinstance(v, float) and not math.isnan(v) for v in values), key
    for key in ("zoo_acc", "B2", "B3_mae", "train_seconds"):  # measured, not constants
        assert rows[0][key] != rows[1][key], key
    for r in rows:
        # Not peak_mb above: a stage that needs fewer pages than the process already holds peaks at
        # the resident set it started from, so two cells can read the same peak (CI saw 1052.28 MB
        # twice). It must be the larger of the two stages' peaks that measures.json keeps.
        stages = json.loads((out / r["cell"] / "seed0" / "measures.json").read_text())
        assert r["peak_mb"] == max(stages["train"]["peak_mb"], stages["sample"]["peak_mb"])
        assert set(r["B4_parts"]) == {"above_frontier", "as_novel", "as_diverse", "as_accurate"}
        assert r["B4"] == np.mean(list(r["B4_parts"].values()))
        assert set(r["met"]) == {"B2", "B3", "B4", "B5"} and r["peak_mb"] > 50 and r["train_seconds"] > 0
        assert (
            r["steps"] == 4 and r["timestep_spacing"] == "leading"
        )  # the tiny recipe's, as its nets record them
        # B2 from the written nets: the generated dense set's mean accuracy over the SGD members'
        sgd = [x for x in load_rows(out / r["cell"] / "zoo") if x["variant"] == "dense"]
        gen = load_rows(out / r["cell"] / "seed0" / "generated" / "dense")
        assert len(gen) == len(sgd) == r["members"]
        assert r["B2"] == pytest.approx(
            np.mean([x["test_acc"] for x in gen]) / np.mean([x["test_acc"] for x in sgd])
        )
        assert r["zoo_acc"] == pytest.approx(np.mean([x["test_acc"] for x in sgd]))
    assert set(result["means"]) == {"digits_mlp", "digits_cnn"}
    assert result["means"]["digits_cnn"]["B2"] == rows[1]["B2"]  # one seed: the mean is that seed's


@pytest.mark.slow
def test_the_tiny_matrix_markdown_and_plot(tiny):
    out, result, _ = tiny
    md = (out / "matrix.md").read_text()
    for r in result["rows"]:
        assert f"| {r['cell']} | {r['seed']} | {r['params']} | {r['zoo_acc']:.3f} | {r['B2']:.3f} " in md
        assert f"| **{r['cell']}** | mean of 1 |" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "mean" not in line.split("|")[2]]
    means = [line for line in md.splitlines() if "| mean of 1 |" in line]
    assert len(table) == 1 + 2 and len(means) == 2  # the header, one line per cell and seed; the means
    for line in table[1:] + means:  # B2, B3 Spearman and MAE, B4, B5 each against its target
        assert line.count("✓") + line.count("✗") == 5, line
    assert (out / "plots" / "matrix.png").stat().st_size > 5000


@pytest.mark.slow
def test_the_tiny_matrix_sends_library_chatter_to_its_log(tiny):
    """Its stage lines go to `log`; Lightning's lines to OUT/matrix.log (the routing: tests/test_quiet.py)."""
    out, _, lines = tiny
    assert lines[-1] == f"library output: {out / 'matrix.log'}"
    assert any(line.startswith("[digits_cnn seed 0] B2 ") for line in lines)
    assert "available: " in (out / "matrix.log").read_text()  # Lightning's GPU / TPU lines


@pytest.mark.slow
def test_each_seed_reaches_mole_train(tiny):
    out, _, _ = tiny
    config = yaml.safe_load((out / "digits_cnn" / "train" / "seed0" / "config.yaml").read_text())
    assert config["seed_everything"] == 0
    assert config["trainer"]["max_steps"] == load_recipe("tiny").weights["trainer"]["max_steps"]


@pytest.mark.slow
def test_a_rerun_through_the_script_resumes_without_retraining(tiny, capsys):
    out, result, _ = tiny
    files = [
        out / c / "train" / "seed0" / f
        for c in ("digits_mlp", "digits_cnn")
        for f in ("done.json", "checkpoints/last.ckpt")
    ]
    files += [
        out / "digits_cnn" / "seed0" / "eval" / "results.json",
        out / "digits_cnn" / "zoo" / "manifest.json",
    ]
    stamps = [f.stat().st_mtime_ns for f in files]
    spec = importlib.util.spec_from_file_location("bench_matrix", ROOT / "scripts" / "bench_matrix.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = script.main(out=str(out), matrix=str(TINY))
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing retrained, resampled or re-evaluated
    again = json.loads(Path(path).read_text())
    assert again["rows"] == result["rows"]  # the train seconds kept are the first run's
    assert "| digits_cnn | 0 |" in capsys.readouterr().out


@pytest.mark.slow
def test_table_only_tabulates_what_is_finished_and_runs_nothing(tiny, tmp_path):
    out, result, _ = tiny
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    stamps = {f: f.stat().st_mtime_ns for f in copy.rglob("*") if f.is_file() and "matrix" not in f.name}
    lines: list[str] = []
    again = json.loads(run_matrix(TINY, copy, progress=False, log=lines.append, table_only=True).read_text())

    def placeless(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "report"} for r in rows]

    assert placeless(again["rows"]) == placeless(result["rows"]) and lines == []  # both finished, as recipe
    assert all(r["report"].startswith(str(copy)) for r in again["rows"])  # the copy's own reports
    # a cell whose evaluation is gone is named and left out; nothing is trained, sampled or evaluated
    (copy / "digits_cnn" / "seed0" / "eval" / "results.json").unlink()
    lines.clear()
    part = json.loads(run_matrix(TINY, copy, progress=False, log=lines.append, table_only=True).read_text())
    assert [(r["cell"], r["seed"]) for r in part["rows"]] == [("digits_mlp", 0)]
    assert lines == ["[digits_cnn seed 0] not finished: left out of the table"]
    assert "(1 of 2 finished)" in (copy / "matrix.md").read_text()
    assert not (copy / "digits_cnn" / "seed0" / "eval" / "results.json").exists()
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items() if f.exists())
    # a seed trained with another config is kept and named
    done = copy / "digits_mlp" / "train" / "seed0" / "done.json"
    done.write_text(json.dumps({**json.loads(done.read_text()), "seed_everything": 7}))
    lines.clear()
    run_matrix(TINY, copy, progress=False, log=lines.append, table_only=True)
    assert lines[0].startswith("[digits_mlp seed 0] trained with another config than the recipe's: ")
    with pytest.raises(
        ConfigError, match=r"^out: .*: no finished cell and seed of .*tiny\.yaml to tabulate$"
    ):
        run_matrix(TINY, tmp_path / "empty", table_only=True)


def test_the_steps_overlay_leaves_five_steps_first_and_adds_one_trailing_step():
    q = load_recipe("default")
    over = yaml.safe_load((MATRIX.parent / "steps.yaml").read_text())
    w = merged(q.sample, over)["weights"]
    # the recipe's count, at its own (leading) spacing, stays the preferred one; one step reads x0 at
    # t = 999 only with trailing spacing
    assert "timestep_spacing" not in q.sample["weights"]
    assert w == {
        **q.sample["weights"],
        "steps": [q.sample["weights"]["steps"], {"steps": 1, "timestep_spacing": "trailing"}],
    }
    check_sample_recipe(merged(q.sample, over), "steps.yaml")
