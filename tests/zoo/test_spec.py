import pytest

from mole.errors import ConfigError
from mole.zoo.plan import select_shards
from mole.zoo.spec import Range, ZooSpec, plan_groups, plan_members
from tests.conftest import TINY_ZOO


def spec(**overrides):
    return ZooSpec.from_dict({**TINY_ZOO, **overrides})


def test_parse_yaml(tiny_spec_path):
    s = ZooSpec.from_yaml(tiny_spec_path)
    assert (
        s.members == 6 and s.hparams.lr == Range(0.02, 0.2, log=True) and s.hparams.init_scale == (0.5, 1.0)
    )
    assert s.variants[0].name == "dense"


def test_spec_hash_is_pinned():
    # A code change that renames every member of existing zoos must change this on purpose.
    assert spec().spec_hash()[:16] == PINNED_TINY_HASH
    assert spec(seed=4).spec_hash() != spec().spec_hash()


PINNED_TINY_HASH = "a6b4c3bd12d9f01b"


@pytest.mark.parametrize(
    "overrides,field,words",
    [
        ({"members": 0}, "members", "positive integer"),
        ({"members": -3}, "members", "positive integer"),
        ({"group_size": 0}, "group_size", "positive integer"),
        ({"hparams": {"lr": -0.1}}, "hparams.lr", "> 0"),
        ({"hparams": {"lr": {"low": -1, "high": 0.1}}}, "hparams.lr", "> 0"),
        ({"hparams": {"lr": {"low": 0.2, "high": 0.1}}}, "hparams.lr", "low 0.2 > high 0.1"),
        ({"hparams": {"weight_decay": [-1e-3]}}, "hparams.weight_decay", ">= 0"),
        ({"hparams": {"momentum": 1.0}}, "hparams.momentum", "in [0, 1)"),
        ({"hparams": {"batch_size": {"low": 1, "high": 9}}}, "hparams.batch_size", "not a range"),
        ({"hparams": {"epochs": [0]}}, "hparams.epochs", "positive integer"),
        ({"hparams": {"optimizer": "lion"}}, "hparams.optimizer", "one of sgd, adam, adamw"),
        ({"hparams": {"lrr": 0.1}}, "hparams.lrr", "unknown field"),
        ({"task": "imagenet"}, "task", "valid: cifar10, digits, fashion_mnist, mnist"),
        ({"architecture": "resnet"}, "architecture", "valid: cnn, mlp"),
        ({"variants": ["dense", "bogus"]}, r"variants\[1\].name", "unknown variant 'bogus'; valid: dense"),
        ({"variants": []}, "variants", "non-empty"),
        ({"snapshots": {"every": 0}}, "snapshots.every", "positive"),
        ({"snapshots": {"random": -1}}, "snapshots.random", "non-negative integer"),
        ({"snapshots": {"random": 2.5}}, "snapshots.random", "non-negative integer"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"name": ""}, "name", "non-empty"),
    ],
)
def test_bad_spec_names_the_field(overrides, field, words):
    with pytest.raises(ConfigError, match=rf"^{field}: .*{words}".replace("[0, 1)", r"\[0, 1\)")) as e:
        spec(**overrides)
    assert "\n" not in str(e.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        ZooSpec.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ZooSpec.from_yaml(tmp_path / "bad.yaml")


def test_member_plans_are_deterministic_and_prefix_stable():
    a, b = plan_members(spec()), plan_members(spec(members=10))
    assert a == b[:6]  # adding members never changes existing ones
    assert len({m.seed for m in b}) == 10
    assert all(0.02 <= m.lr <= 0.2 and m.init_scale in (0.5, 1.0) for m in b)


def test_groups_share_structural_hparams_and_shards_partition():
    s = spec(
        members=20,
        group_size=3,
        hparams={"batch_size": [32, 64], "epochs": [1, 2], "optimizer": ["sgd", "adam"]},
    )
    groups = plan_groups(s)
    assert sorted(m.index for g in groups for m in g.members) == list(range(20))
    for g in groups:
        assert len(g.members) <= 3 and len({(m.optimizer, m.batch_size, m.epochs) for m in g.members}) == 1
    assert [g.shard for g in groups] == list(range(len(groups)))
    parts = [select_shards(groups, 3, i) for i in range(3)]
    assert sorted(g.shard for p in parts for g in p) == list(range(len(groups)))
    with pytest.raises(ConfigError, match="shard_index"):
        select_shards(groups, 3, 3)
    with pytest.raises(ConfigError, match="num_shards"):
        select_shards(groups, 0, 0)


def test_snapshot_schedule():
    s = spec(snapshots={"every": 4, "steps": [1, 99]})
    assert s.snapshots.steps_for(10) == [0, 1, 4, 8, 10]
    s = spec(snapshots={"include_init": False})
    assert s.snapshots.steps_for(7) == [7]


def test_random_snapshot_steps_are_per_member_log_uniform_and_apart_from_the_shared_ones():
    s = spec(snapshots={"every": 100, "random": 8}).snapshots
    total = 660
    steps = [s.random_steps(total, seed) for seed in range(400)]
    assert s.random_steps(total, 7) == steps[7]  # deterministic in the member's seed
    assert len({tuple(x) for x in steps}) > 390  # members draw their own steps
    flat = [t for x in steps for t in x]
    assert all(1 <= t <= total and t not in s.steps_for(total) for t in flat)
    assert all(len(x) <= 8 for x in steps)
    # log-uniform in t + 13.2: P(t <= 66) = ln(80.2 / 14.2) / ln(674.2 / 14.2) ~ 0.45 (uniform: 0.10)
    assert 0.40 < sum(t <= 66 for t in flat) / len(flat) < 0.50
    assert spec(snapshots={"every": 100}).snapshots.random_steps(total, 3) == []
