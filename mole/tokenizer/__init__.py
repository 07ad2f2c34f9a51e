"""Parameter tokenizers (TOKENIZERS): a zoo member <-> tokens (T, D) + a JSON layout, exactly.

Policies (one file each): `layer_chunk` (G.pt's chunk_within_layer) and `neuron` (one token per
output neuron). See mole.tokenizer.base for the shared interface and mole.tokenizer.member for the
member structure built from zoo rows.
"""

from __future__ import annotations

from mole.errors import ConfigError
from mole.tokenizer.base import TOKENIZERS, Tokenizer
from mole.tokenizer.canonical import apply_permutation, canonical_order, invert
from mole.tokenizer.layer_chunk import LayerChunkTokenizer
from mole.tokenizer.member import MemberTensors
from mole.tokenizer.neuron import NeuronTokenizer

TOKENIZERS.register("layer_chunk")(LayerChunkTokenizer)
TOKENIZERS.register("neuron")(NeuronTokenizer)


def build_tokenizer(name: str, **options) -> Tokenizer:
    """Instantiate tokenizer `name`; unknown names and options raise a one-line ConfigError."""
    cls = TOKENIZERS.get(name, field="tokenizer")
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError("tokenizer_options", f"{name}: {e}") from None


__all__ = [
    "TOKENIZERS",
    "LayerChunkTokenizer",
    "MemberTensors",
    "NeuronTokenizer",
    "Tokenizer",
    "apply_permutation",
    "build_tokenizer",
    "canonical_order",
    "invert",
]
