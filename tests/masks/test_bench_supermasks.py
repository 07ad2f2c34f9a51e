"""scripts/bench_supermasks.py on tiny work: every method's row, the rule beside the learned refiner, plots."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_supermasks.py"


def load():
    """The script as a module."""
    spec = importlib.util.spec_from_file_location("bench_supermasks", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmark_reports_every_method_with_the_rule_beside_the_learned_masks(tmp_path, capsys):
    bench = load()
    out = tmp_path / "b6.json"
    bench.main(out=str(out), archs=["mlp"], inits=2, dists=["normal"], sparsities=[0.5], epochs=1,
               train_steps=1, pool=1, refine_steps=2, widths=[16])  # fmt: skip
    got = json.loads(out.read_text())
    cell = got["cells"][0]
    assert set(bench.METHODS) <= set(cell) and all(0 <= cell[k]["mean"] <= 1 for k in bench.METHODS)
    assert all(cell[k]["seconds_per_mask"] > 0 for k in bench.METHODS)
    target = got["targets"][0]
    assert target["learned_over_rule_points"] == 100 * (target["learned"] - target["rule"])
    assert target["gain_met"] == (target["gain_points"] >= 3)
    assert [Path(p).name for p in got["plots"]] == ["b6_mlp.png", "b6_widths.png"]
    assert all(Path(p).stat().st_size > 0 for p in got["plots"]) and got["overparam"][0]["width"] == 16
    printed = capsys.readouterr().out
    assert "learned_over_rule_points" in printed and "| rule |" in printed  # the tables, as Markdown


def test_a_distilled_run_reports_its_teacher_and_reloads_it(tmp_path):
    bench = load()
    tiny = dict(archs=["mlp"], inits=2, dists=["normal"], sparsities=[0.5], epochs=1, train_steps=1, pool=1,
                refine_steps=1, widths=[])  # fmt: skip
    bench.main(out=str(tmp_path / "a.json"), teacher_steps=2, teacher_train_steps=1,
               save_dir=str(tmp_path / "models"), **tiny)  # fmt: skip
    first = json.loads((tmp_path / "a.json").read_text())
    assert {"mlp", "mlp_teacher"} <= set(first["training"]) and "teacher" in first["cells"][0]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["mlp", "mlp_teacher"]
    assert "teacher" in first["targets"][0]
    bench.main(out=str(tmp_path / "b.json"), teacher_dir=str(tmp_path / "models"), **tiny)
    again = json.loads((tmp_path / "b.json").read_text())
    assert "mlp_teacher" not in again["training"]  # loaded, not trained
    assert again["cells"][0]["teacher"]["mean"] == first["cells"][0]["teacher"]["mean"]


def test_a_teacher_both_loaded_and_trained_is_a_one_line_error(tmp_path, capsys):
    bench = load()
    out = tmp_path / "x.json"
    assert bench.run(["--out", str(out), "--teacher_dir", str(tmp_path), "--teacher_steps", "2"]) == 2
    assert not out.exists()
    assert capsys.readouterr().err.strip() == (
        "bench_supermasks: error: teacher_dir and teacher_steps: give one (load a teacher, or train one: "
        "--teacher_steps 0 to load)"
    )


def test_a_teacher_dir_without_the_teacher_is_a_one_line_error(tmp_path, capsys):
    bench = load()
    out = tmp_path / "x.json"
    assert bench.run(["--out", str(out), "--archs", "[mlp]", "--teacher_dir", str(tmp_path)]) == 2
    assert not out.exists()
    assert (
        capsys.readouterr().err.strip()
        == f"bench_supermasks: error: teacher_dir: no saved teacher at {tmp_path / 'mlp_teacher'}"
    )
