"""The quickstart's recipe is its config files: read, overridden per preset, validated, documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mole.errors import ConfigError
from mole.pipeline import PARTS, RECIPE, load_recipe, merged
from mole.zoo.spec import ZooSpec

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_merged_merges_mappings_and_replaces_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merged(base, {"a": {"c": [3]}, "e": 2}) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # the base is not changed


def test_the_tiny_preset_overrides_the_default_recipe():
    default, tiny = load_recipe("default"), load_recipe("tiny")
    assert default.zoo["members"] == 64 and tiny.zoo["members"] == 8
    assert tiny.zoo["hparams"]["lr"] == default.zoo["hparams"]["lr"]  # merged, not replaced
    assert tiny.zoo["hparams"]["epochs"] == [3]
    net, default_net = tiny.weights["model"]["init_args"]["net"], default.weights["model"]["init_args"]["net"]
    assert net["class_path"] == default_net["class_path"] == "mole.diffusion.denoiser.Denoiser"
    assert net["init_args"]["width"] == 32 and default_net["init_args"]["width"] == 64
    assert tiny.weights["trainer"]["max_steps"] < default.weights["trainer"]["max_steps"]
    assert ZooSpec.from_dict(tiny.zoo).members == 8


def test_a_users_recipe_folder_and_its_errors(tmp_path):
    folder = tmp_path / "recipe"
    folder.mkdir()
    for part in PARTS:
        (folder / f"{part}.yaml").write_text((RECIPE / f"{part}.yaml").read_text())
    (folder / "small").mkdir()
    (folder / "small" / "sample.yaml").write_text("prompts: {prompts: 2}\n")
    assert load_recipe("small", folder).sample["prompts"] == {"seed": 2, "prompts": 2, "per_prompt": 4}
    with pytest.raises(ConfigError, match=r"preset: unknown 'tiny'; valid: default, small"):
        load_recipe("tiny", folder)
    # a bad sampling option stops at load, before the zoo and the models are built
    (folder / "small" / "sample.yaml").write_text("weights: {steps: [5, 0]}\n")
    with pytest.raises(
        ConfigError, match=r"^sample.weights.steps: candidates must be .* at preset 'small'\)$"
    ):
        load_recipe("small", folder)
    (folder / "sample.yaml").write_text("prompts: [1, 2\n")
    with pytest.raises(ConfigError, match=r"recipe: .*sample.yaml: not valid YAML"):
        load_recipe("default", folder)
    (folder / "sample.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"sample.yaml: must hold a mapping, got list"):
        load_recipe("default", folder)
    (folder / "sample.yaml").unlink()
    with pytest.raises(ConfigError, match=r"sample.yaml is missing"):
        load_recipe("default", folder)
    with pytest.raises(ConfigError, match=r"recipe: .* is not a folder"):
        load_recipe("default", tmp_path / "nowhere")


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[2])) for p in CONFIGS])
def test_every_config_starts_with_its_command_runtime_and_figure(path):
    """The big_vision habit: the header says how to run it, how long it takes, what it should give."""
    text = path.read_text()
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    header = "\n".join(header)
    assert header, f"{path} has no header comment"
    assert "mole " in header or "python " in header, f"{path}: the header names no command"
    assert "Runtime" in header, f"{path}: the header gives no runtime"
    assert "Expected" in header, f"{path}: the header gives no expected figure"
    assert isinstance(yaml.safe_load(text), dict)
