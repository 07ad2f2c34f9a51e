"""The Tokenizer interface: member <-> (T, D) tokens + JSON layout, plus fitted normalisation.

A policy only decides *where* each tensor goes (`_plan` returns segments and placements, see
mole.tokenizer.layout); writing, reading, checking, normalising, fitting and saving are shared here.
`detokenize(*tokenize(m))` equals `m` bit for bit. Normalisation is a separate step
(`normalize` / `denormalize`, computed in float64 and rounded to float32 once each way), so the
exact path never goes through it; after a normalise/denormalise round trip floats are within about
one float32 ulp and masks / codes, which detokenize snaps to their grid, are exact again.
"""

from __future__ import annotations

import collections
import itertools
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from mole.errors import ConfigError
from mole.nets import Architecture
from mole.registry import Registry
from mole.tokenizer import layout as L
from mole.tokenizer import persist
from mole.tokenizer.canonical import apply_permutation, canonical_order, invert, match_order, match_reference
from mole.tokenizer.member import (
    OPTIONAL_FIELDS,
    MemberTensors,
    arch_info,
    architecture_family,
    architecture_signature,
    family_tag,
)
from mole.tokenizer.stats import RunningStats, stat_maps

STATS_PER = ("column", "tensor", "element")
FAMILY_SEP = "::"  # "<family tag>::<field>/<tensor>": statistics keys of a tokenizer of several families
CANONICAL = ("sort", "match")
REFERENCE_MEMBERS = 256  # members `fit` aligns to build the matching reference (it is their mean)


class Tokenizer(ABC):
    """Turns a MemberTensors into tokens (T, D) and a layout, and back.

    Args:
        fields: optional fields that get token space ("mask", "init_params", "codes", "factors");
            None: whatever each member holds (`fit` then fixes it to the union seen, so every member
            of a zoo gets the same token width). A member holding a field outside a fixed set is
            refused.
        canonical: reorder hidden neurons before encoding (mole.tokenizer.canonical); the
            permutation goes into the layout, so detokenize still returns the original member.
            "sort" (or True): a canonical sort per member; "match": weight matching to a reference
            that `fit` builds (the mean of the aligned members of the most common widths, one per
            architecture family), so that neurons doing the same job in different members share a
            token position; members of other widths are sorted; False: as stored.
        stats_per: "column" (mean/std per layer and column), "tensor" (per layer only) or "element"
            (per weight, with canonical="match": see mole.tokenizer.stats).
    """

    name: str = ""

    def __init__(
        self, fields: list[str] | None = None, canonical: bool | str = False, stats_per: str = "column"
    ):
        if fields is not None:
            bad = [f for f in fields if f not in OPTIONAL_FIELDS]
            if bad:
                raise ConfigError("tokenizer.fields", f"unknown {bad}; valid: {', '.join(OPTIONAL_FIELDS)}")
            fields = [f for f in OPTIONAL_FIELDS if f in fields]
        if stats_per not in STATS_PER:
            raise ConfigError("tokenizer.stats_per", f"unknown {stats_per!r}; valid: {', '.join(STATS_PER)}")
        if canonical is True:
            canonical = "sort"
        if canonical not in (False, None, *CANONICAL):
            raise ConfigError(
                "tokenizer.canonical", f"unknown {canonical!r}; valid: false, true, {', '.join(CANONICAL)}"
            )
        self.fields = fields
        self.canonical: str | bool = canonical or False
        self.reference: dict[str, torch.Tensor] | None = None  # "match": fitted by `fit`
        self.stats_per = stats_per
        # Bound by fit / from_dir: the first member's architecture, and one [name, config] per
        # architecture family fitted (see check_architecture); other widths of a family pass.
        self.architecture: str | None = None
        self.arch_config: dict | None = None
        self.families: list[list] = []
        self.stats: dict[str, dict[str, torch.Tensor]] | None = None
        self._reset_caches()

    def _reset_caches(self) -> None:
        """Drop cached plans (options or statistics changed). Keys: (architecture, config JSON,
        present fields, factor shapes JSON); templates and compiled indices are read-only."""
        self._plans: dict[tuple, dict] = {}
        self._known: dict[int, tuple[list, tuple]] = {}  # id(template placements) -> (them, key)
        self._compiled: dict[tuple, L.Compiled] = {}
        self._maps: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        # Caches are keyed partly by object ids, which do not survive pickling (DataLoader workers).
        return {k: v for k, v in self.__dict__.items() if k not in ("_plans", "_known", "_compiled", "_maps")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    # ------------------------------------------------------------------ policy
    @abstractmethod
    def _plan(
        self, arch: Architecture, channels: list[str], present: list[str], factor_shapes: list | None
    ) -> tuple[list[dict], list[dict], int]:
        """(segments, placements, D) for a member of `arch` holding `present` fields.

        Args:
            arch: the architecture.
            channels: fields that get token space (present is a subset).
            present: optional fields the member holds.
            factor_shapes: [[name, dims], ...] when "factors" is present.
        """

    def policy_options(self) -> dict:
        """The policy's own constructor options."""
        return {}

    def options(self) -> dict:
        return {
            "fields": self.fields,
            "canonical": self.canonical,
            "stats_per": self.stats_per,
            **self.policy_options(),
        }

    # ------------------------------------------------------------------ layouts
    def _structure(
        self, architecture: str, config_key: str, present: list[str], factor_shapes: list | None
    ) -> tuple[dict, tuple]:
        """The (cached) layout template of a member structure, and its cache key."""
        key = (architecture, config_key, tuple(present), json.dumps(factor_shapes))
        template = self._plans.get(key)
        if template is not None:
            return template, key
        if len(self._plans) >= 64:
            self._reset_caches()
        info = arch_info(architecture, config_key)
        channels = list(present) if self.fields is None else list(self.fields)
        extra = [f for f in present if f not in channels]
        if extra:
            raise ConfigError(
                "member", f"holds {extra}, but tokenizer {self.name!r} gives token space to {channels} only"
            )
        segments, placements, width = self._plan(info.arch, channels, list(present), factor_shapes)
        template = {
            "tokenizer": self.name,
            "options": self.options(),
            "architecture": architecture,
            "arch_config": json.loads(info.key),
            "present": list(present),
            "factor_shapes": factor_shapes,
            "shape": [segments[-1]["stop"], width],
            "segments": segments,
            "placements": placements,
            "perm": None,
        }
        self._plans[key] = template
        self._known[id(placements)] = (placements, key)
        return template, key

    def plan(
        self, architecture: str, arch_config: dict, present: list[str], factor_shapes: list | None
    ) -> dict:
        """The layout of any member with this structure (perm None). Treat it as read-only."""
        return dict(
            self._structure(architecture, json.dumps(arch_config, sort_keys=True), present, factor_shapes)[0]
        )

    def layout_for(self, member: MemberTensors) -> dict:
        """The layout of `member` (perm None)."""
        factor_shapes = member.factor_shapes() or None
        return dict(self._structure(member.architecture, member.info.key, member.present(), factor_shapes)[0])

    def _verified_key(self, layout: Any) -> tuple:
        """The structure key of a layout this tokenizer makes for its architecture, else ConfigError."""
        if not isinstance(layout, Mapping) or not {"tokenizer", "placements", "architecture"} <= set(layout):
            raise ConfigError("layout", "not a tokenizer layout (needs tokenizer, architecture, placements)")
        if layout["tokenizer"] != self.name:
            raise ConfigError("layout", f"made by tokenizer {layout['tokenizer']!r}, this is {self.name!r}")
        self.check_architecture(layout["architecture"], layout["arch_config"], "layout")
        known = self._known.get(id(layout["placements"]))
        if known is not None and known[0] is layout["placements"]:  # made here: skip re-planning
            template = self._plans.get(known[1])
            same = ("architecture", "arch_config", "present", "factor_shapes", "shape", "segments")
            if template is not None and all(layout[k] == template[k] for k in same):
                return known[1]
        config_key = json.dumps(layout["arch_config"], sort_keys=True)
        want, key = self._structure(
            layout["architecture"], config_key, layout["present"], layout["factor_shapes"]
        )
        for k in ("shape", "segments", "placements"):
            if want[k] != layout[k]:
                raise ConfigError(
                    "layout",
                    f"its {k} differ from what {self.name} {self.policy_options()} makes for "
                    f"{architecture_signature(layout['architecture'], layout['arch_config'])}; "
                    f"it was made with options {layout.get('options')}",
                )
        return key

    def check_layout(self, layout: Any) -> None:
        """A layout this tokenizer made for its architecture, else ConfigError naming the mismatch."""
        self._verified_key(layout)

    def _compiled_for(self, key: tuple) -> L.Compiled:
        if key not in self._compiled:
            self._compiled[key] = L.compile_layout(self._plans[key])
        return self._compiled[key]

    def check_architecture(self, name: str, config: dict, field: str) -> None:
        """ConfigError naming `field` when the member is of no architecture family the tokenizer is
        bound to (other layers, input shape or classes; other widths of the same layers are fine)."""
        if self.architecture is None or (name, config) == (self.architecture, self.arch_config):
            return
        families = self.families or [[self.architecture, self.arch_config]]
        if architecture_family(name, config) not in {architecture_family(*f) for f in families}:
            built = ", ".join(architecture_signature(*f) for f in families)
            raise ConfigError(
                field, f"tokenizer built for {built}, got {architecture_signature(name, config)}"
            )

    def _stats_prefix(self, layout: Mapping) -> str:
        """What the statistics keys of a layout's placements start with: its family's tag when the
        tokenizer was fitted on several families (so an MLP on digits and one on mnist1d never share
        a column's statistics), else nothing."""
        if len(self.families) <= 1:
            return ""
        return family_tag(layout["architecture"], layout["arch_config"]) + FAMILY_SEP

    def _check_tokens(self, tokens: Any, layout: Mapping) -> None:
        t, d = layout["shape"]
        if not isinstance(tokens, torch.Tensor) or list(tokens.shape) != [t, d]:
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ConfigError(
                "tokens",
                f"expected shape (T, D) = ({t}, {d}) for "
                f"{architecture_signature(layout['architecture'], layout['arch_config'])}, got {got}",
            )
        if not tokens.is_floating_point():
            raise ConfigError("tokens", f"expected floating point tokens, got {tokens.dtype}")

    # ------------------------------------------------------------------ the round trip
    def tokenize(self, member: MemberTensors, perm: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Tokens (T, D) float32 and the JSON layout that inverts them (not normalised).

        Args:
            member: the member.
            perm: hidden-neuron permutations to apply instead of this tokenizer's own canonical
                order (`reorder`), e.g. the end's order for the start of a G.pt pair; None: its own.
        """
        member.validate()
        self.check_architecture(member.architecture, member.arch_config, "member")
        if perm is not None:
            member = apply_permutation(member, perm)
        elif self.canonical:
            member, perm = self.reorder(member)
        template, key = self._structure(
            member.architecture, member.info.key, member.present(), member.factor_shapes() or None
        )
        layout = {**template, "perm": perm}
        return L.encode(member, layout, self._compiled_for(key)), layout  # (T, D)

    def reorder(self, member: MemberTensors) -> tuple[MemberTensors, dict]:
        """The member in this tokenizer's canonical neuron order, and the permutations applied."""
        if self.canonical == "sort":
            return canonical_order(member)
        if self.reference is None:
            raise ConfigError("tokenizer", "canonical='match' needs a reference: call fit(rows) first")
        ref = self.reference
        if any(FAMILY_SEP in k for k in ref):  # one reference per family: this member's
            prefix = family_tag(member.architecture, member.arch_config) + FAMILY_SEP
            ref = {k[len(prefix) :]: v for k, v in ref.items() if k.startswith(prefix)}
        if any(n not in ref or ref[n].shape != t.shape for n, t in member.params.items()):
            return canonical_order(member)  # another width (e.g. neuron_pruned): no reference to match
        return match_order(member, ref)

    def detokenize(self, tokens: torch.Tensor, layout: dict) -> MemberTensors:
        """The member of (un-normalised) tokens (T, D); masks > 0.5, codes rounded to int8."""
        key = self._verified_key(layout)
        self._check_tokens(tokens, layout)
        member = L.decode(tokens.detach().cpu(), layout, self._compiled_for(key))
        if layout.get("perm"):
            member = apply_permutation(member, invert(layout["perm"]))
        return member

    def channel_values(self, tokens: torch.Tensor, layout: dict) -> dict[str, dict[str, torch.Tensor] | None]:
        """Every field of (un-normalised) tokens as they hold it, before any cast (mole.tokenizer.layout.
        decode_fields): a generated mask channel as scores, generated codes as values to snap onto a
        grid. For layouts from `plan` (a tokenized member's own permutation is not undone here)."""
        key = self._verified_key(layout)
        self._check_tokens(tokens, layout)
        if layout.get("perm"):
            raise ConfigError(
                "layout", "channel values are read from planned layouts, not a permuted member's"
            )
        return L.decode_fields(tokens.detach().cpu(), layout, self._compiled_for(key))

    def layer_ids(self, layout: dict) -> torch.Tensor:
        """(T,) long: each token's segment (layer) index."""
        return self._compiled_for(self._verified_key(layout)).layer_ids.clone()

    # ------------------------------------------------------------------ normalisation
    def fit(self, items: Iterable[MemberTensors | Mapping], max_items: int | None = None) -> Tokenizer:
        """Fit per-layer, per-column mean/std on members or zoo rows; binds the architectures.

        Members may mix architecture families (a zoo of MLPs and CNNs, or of two tasks): each
        family gets statistics of its own (keyed by `family_tag`, see _stats_prefix), and the
        policy's widths (e.g. the neuron policy's row width) cover them all, so every member
        tokenizes to the same D.

        Args:
            items: MemberTensors or zoo rows (dicts), any iterable (read once).
            max_items: stop after this many.
        """
        running: dict[str, RunningStats] = {}  # family tag -> its statistics
        seen, count, families = set(), 0, {}
        self.architecture = self.arch_config = None
        self.families = []
        self._reset_caches()
        members = (m if isinstance(m, MemberTensors) else MemberTensors.from_row(m) for m in items)
        if max_items is not None:
            members = itertools.islice(members, max_items)
        if self.canonical == "match":  # two passes: build the references, then the statistics
            members = list(members)
            if not members:
                raise ConfigError("fit", "no members to fit on")
            self.reference = self._references(members)
        for member in members:
            if count == 0:
                name, config = member.architecture, member.arch_config
            tag = family_tag(member.architecture, member.arch_config)
            if tag not in families:
                families[tag] = [member.architecture, member.arch_config]
                running[tag] = RunningStats(self.stats_per == "element")
            if self.canonical:
                member, _ = self.reorder(member.validate())
            layout = self.layout_for(member.validate())
            running[tag].update(member, layout["placements"])
            self._observe(layout)
            seen.update(member.present())
            count += 1
        if count == 0:
            raise ConfigError("fit", "no members to fit on")
        if self.fields is None:
            self.fields = [f for f in OPTIONAL_FIELDS if f in seen]
        self.architecture, self.arch_config = name, config
        self.families = list(families.values())
        if len(running) == 1:
            self.stats = running[tag].finalize(self.stats_per)
        else:
            self.stats = {
                t + FAMILY_SEP + k: v
                for t, r in running.items()
                for k, v in r.finalize(self.stats_per).items()
            }
        self._reset_caches()  # fields (and a policy's widths) may have changed
        return self

    @staticmethod
    def _references(members: list[MemberTensors]) -> dict[str, torch.Tensor]:
        """canonical="match": the mean of the aligned members of each family's most common width;
        keyed "<family tag>::<param>" when the members span several families."""
        by_family: dict[str, list[MemberTensors]] = collections.defaultdict(list)
        for m in members:
            by_family[family_tag(m.architecture, m.arch_config)].append(m)
        refs = {}
        for tag, group in by_family.items():
            widest = collections.Counter(m.signature() for m in group).most_common(1)[0][0]
            same = [m.validate() for m in group if m.signature() == widest]
            refs[tag] = match_reference(same[:REFERENCE_MEMBERS])
        if len(refs) == 1:
            return refs[tag]
        return {t + FAMILY_SEP + n: v for t, ref in refs.items() for n, v in ref.items()}

    def _observe(self, layout: dict) -> None:
        """Hook: a policy may record structure seen during fit (e.g. the widest factor row)."""
        return None

    def _stat_maps(self, layout: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stats is None:
            raise ConfigError("tokenizer", "not fitted: call fit(rows) or load one with Tokenizer.from_dir")
        key = self._verified_key(layout)
        if key not in self._maps:
            self._maps[key] = stat_maps(self.stats, layout, self._stats_prefix(layout))
        return self._maps[key]

    def normalization(self, layout: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (T, D) float64, that `normalize` applies to tokens of this layout."""
        mean, std = self._stat_maps(layout)
        return mean.clone(), std.clone()

    def normalize(self, tokens: torch.Tensor, layout: dict) -> torch.Tensor:
        """(tokens - mean) / std per layer and column, float32; padding stays zero."""
        mean, std = self._stat_maps(layout)
        self._check_tokens(tokens, layout)
        return ((tokens.double() - mean) / std).float()  # (T, D)

    def denormalize(self, tokens: torch.Tensor, layout: dict) -> torch.Tensor:
        """Inverse of `normalize` (to about one float32 ulp)."""
        mean, std = self._stat_maps(layout)
        self._check_tokens(tokens, layout)
        return (tokens.double() * std + mean).float()  # (T, D)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (name, options, architecture) and `stats.safetensors` atomically."""
        config = {
            "tokenizer": self.name,
            "options": self.options(),
            "architecture": self.architecture,
            "arch_config": self.arch_config,
            "fitted": self.stats is not None,
            **({"families": self.families} if len(self.families) > 1 else {}),
        }
        return persist.write_tokenizer(Path(path), config, self.stats, self.reference)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Reload a tokenizer written by `save` (the policy comes from TOKENIZERS by its stored name).

        Args:
            path: the folder `save` wrote. Called on a policy class, the stored policy must be it (or
                a subclass).
        """
        path = Path(path)
        config = persist.read_config(path)
        policy = TOKENIZERS.get(config["tokenizer"], field="tokenizer")
        if cls is not Tokenizer and not issubclass(policy, cls):
            raise ConfigError(
                "tokenizer", f"{path} holds a {config['tokenizer']!r} tokenizer, not {cls.name!r}"
            )
        tok = policy(**config["options"])
        tok.architecture, tok.arch_config = config["architecture"], config["arch_config"]
        tok.families = config.get("families") or (
            [[tok.architecture, tok.arch_config]] if tok.architecture else []
        )
        if config["fitted"]:
            tok.stats = persist.read_stats(path)
            if tok.canonical == "match":
                tok.reference = persist.read_reference(path)
        return tok


# Policy name -> class. The package (mole/tokenizer/__init__.py) registers every policy; it runs before
# any of its modules, so the registry is full whenever `from_dir` can be called.
TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer")
