"""Zoo storage: Parquet shards (one row per member x snapshot) plus a manifest of finished shards.

Layout of a zoo folder (see checkpoints_zoo/README.md):
    spec.json              the normalised sweep spec and its hash
    manifest.json          finished shards: file, sha256, rows, member indices
    shards/shard-NNNNN.parquet

Every file is written to a temporary name and renamed into place; a shard enters the manifest only
after its file is complete, so a killed build never leaves a half shard that counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mole.errors import StoreError
from mole.io import (  # noqa: F401  (callers import them from here too)
    atomic_path,
    is_temporary,
    read_json,
    write_json,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPEC = "spec.json"
LOCK = ".manifest.lock"

# Tensor columns are flat lists; optional ones are null where a variant has nothing to store.
# Contract for the variant columns (the tokenizer and evaluators rely on it):
#   params       always the *effective* parameters the network computes with (masked, dequantized,
#                reconstructed from factors), length num_params, in Architecture.param_shapes() order.
#   mask         bool over params (length num_params; biases included, usually all True).
#   init_params  float32 over params: the frozen random weights (supermask) or the rewind point (IMP).
#   codes        int8 over the weight tensors only (Architecture.weight_names() order, concatenated);
#                biases stay float in params. dequantized weight = code * scale of its output channel.
#   scales       float32, one per output channel of each weight tensor, same order.
#   factors      float32, the flat concatenation of every factor tensor; their names and shapes are in
#                extra["factor_shapes"] as [[name, [dims...]], ...] in concatenation order.
# One zoo may hold several widths of one architecture family (neuron_pruned narrows hidden layers):
# always rebuild a row's network from its own `arch_options`, never from the zoo's spec.
SCHEMA = pa.schema(
    [
        ("zoo", pa.string()),
        ("member_id", pa.string()),
        ("member_index", pa.int64()),
        ("variant", pa.string()),
        ("variant_config", pa.string()),  # JSON
        ("task", pa.string()),
        ("task_options", pa.string()),  # JSON
        ("architecture", pa.string()),
        ("arch_options", pa.string()),  # JSON: Architecture.config(), enough to rebuild it
        ("seed", pa.int64()),
        ("optimizer", pa.string()),
        ("lr", pa.float64()),
        ("weight_decay", pa.float64()),
        ("init_scale", pa.float64()),
        ("momentum", pa.float64()),
        ("batch_size", pa.int64()),
        ("epochs", pa.int64()),
        ("step", pa.int64()),
        ("epoch", pa.float64()),
        ("final", pa.bool_()),
        ("train_loss", pa.float64()),
        ("train_acc", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_acc", pa.float64()),
        ("test_loss", pa.float64()),
        ("test_acc", pa.float64()),
        ("num_params", pa.int64()),
        ("nonzero_params", pa.int64()),
        ("sparsity", pa.float64()),  # fraction of weights removed
        ("bits", pa.int64()),  # bit-width of stored codes (null: float32)
        ("rank", pa.int64()),  # low-rank factor rank (null: full)
        ("params", pa.list_(pa.float32())),  # effective flat parameters, architecture order
        ("mask", pa.list_(pa.bool_())),  # pruning mask over params (null: none)
        ("init_params", pa.list_(pa.float32())),  # frozen random init (supermask, rewinding)
        ("codes", pa.list_(pa.int8())),  # integer quantization codes
        ("scales", pa.list_(pa.float32())),  # quantization scales
        ("factors", pa.list_(pa.float32())),  # flat low-rank factors; shapes in `extra`
        ("extra", pa.string()),  # JSON: variant-specific metrics and layouts
    ]
)
ROW_GROUP_SIZE = 256
METRIC_COLUMNS = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
TENSOR_COLUMNS = [f.name for f in SCHEMA if pa.types.is_list(f.type)]


# ---------------------------------------------------------------------------- files
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- shards
def records_to_table(records: Sequence[dict]) -> pa.Table:
    """Records (dicts with numpy arrays for tensor columns) -> a table with the zoo SCHEMA."""
    columns = {}
    for f in SCHEMA:
        values = [r.get(f.name) for r in records]
        if pa.types.is_list(f.type):
            np_type = f.type.value_type.to_pandas_dtype()
            arrays = [None if v is None else np.asarray(v, dtype=np_type).ravel() for v in values]
            lengths = np.array([0 if a is None else len(a) for a in arrays], dtype=np.int32)
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
            flat = [a for a in arrays if a is not None]
            vals = pa.array(np.concatenate(flat) if flat else np.zeros(0, np_type), type=f.type.value_type)
            mask = pa.array([a is None for a in arrays])
            columns[f.name] = pa.ListArray.from_arrays(offsets, vals, mask=mask)
        else:
            columns[f.name] = pa.array(values, type=f.type)
    return pa.table(columns, schema=SCHEMA)


def write_shard(path: Path, records: Sequence[dict]) -> dict:
    """Write one shard atomically; return its manifest entry (file, sha256, rows, member indices)."""
    table = records_to_table(records)
    with atomic_path(path) as tmp:
        # Small row groups let `datasets` convert and memory-map a shard without holding it whole.
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)
    return {
        "file": f"shards/{path.name}",
        "sha256": sha256_file(path),
        "rows": table.num_rows,
        "members": sorted({r["member_index"] for r in records}),
    }


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def holds_files(folder: Path) -> bool:
    """Whether `folder` holds anything besides the store's lock and the temporary files of writes
    that were killed: those must not make a rerun take the folder for someone else's. (They are
    ignored, not deleted: another process building shards of the same zoo may be writing one.)"""
    return any(p.name != LOCK and not is_temporary(p) for p in Path(folder).iterdir())


# ---------------------------------------------------------------------------- manifest
def empty_manifest(spec_hash: str, num_groups: int) -> dict:
    return {"format": FORMAT_VERSION, "spec_hash": spec_hash, "num_groups": num_groups, "shards": {}}


def load_manifest(zoo: Path) -> dict:
    """Read and sanity-check manifest.json (structure only; see `verify_zoo` for hashes)."""
    m = read_json(Path(zoo) / MANIFEST, "manifest")
    if not isinstance(m, dict) or not isinstance(m.get("shards"), dict) or "spec_hash" not in m:
        raise StoreError(f"{Path(zoo) / MANIFEST}: corrupt manifest (missing 'shards' or 'spec_hash')")
    if m.get("format") != FORMAT_VERSION:
        raise StoreError(
            f"{Path(zoo) / MANIFEST}: format {m.get('format')!r}, this mole reads {FORMAT_VERSION}"
        )
    return m


@contextlib.contextmanager
def manifest_lock(zoo: Path) -> Iterator[None]:
    """Serialise manifest updates between processes building shards of one zoo."""
    zoo.mkdir(parents=True, exist_ok=True)
    with open(zoo / LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def record_shard(zoo: Path, shard: int, entry: dict, spec_hash: str, num_groups: int) -> None:
    """Add a finished shard to the manifest (read-modify-write under a lock, atomic rename)."""
    with manifest_lock(zoo):
        m = load_manifest(zoo) if (zoo / MANIFEST).exists() else empty_manifest(spec_hash, num_groups)
        m["shards"][shard_name(shard).removesuffix(".parquet")] = entry
        m["shards"] = dict(sorted(m["shards"].items()))
        write_json(zoo / MANIFEST, m)


def check_shard_schema(path: Path) -> None:
    """A shard's columns must be SCHEMA's, with its types (its footer only is read): a shard changed
    and re-hashed would otherwise fail later as a KeyError or a many-line pyarrow error."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"{path}: unreadable shard ({' '.join(str(e).split())})") from None
    unknown = sorted(set(schema.names) - set(SCHEMA.names))
    problems = [f"columns {unknown} are not in it"] if unknown else []
    for field in SCHEMA:
        if field.name not in schema.names:
            problems.append(f"column {field.name} is missing")
        elif not schema.field(field.name).type.equals(field.type):
            problems.append(f"column {field.name} is {schema.field(field.name).type}, expected {field.type}")
    if problems:
        raise StoreError(f"{path}: shard does not match the zoo schema ({'; '.join(problems[:3])})")


def verify_zoo(zoo: Path) -> dict:
    """Check every shard in the manifest exists, matches its hash and has the zoo's schema; return
    the manifest."""
    zoo = Path(zoo)
    if not zoo.is_dir():
        raise StoreError(f"{zoo}: no such zoo folder")
    m = load_manifest(zoo)
    for name, entry in m["shards"].items():
        path = zoo / entry["file"]
        if not path.is_file():
            raise StoreError(f"{path}: shard {name} is listed in the manifest but missing")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise StoreError(
                f"{path}: sha256 mismatch (manifest {entry['sha256'][:12]}…, file {digest[:12]}…): corrupt or changed shard"
            )
        check_shard_schema(path)
    return m


# ---------------------------------------------------------------------------- zoos named by a description
# Generated networks (mole.diffusion.generated) and baseline runs (mole.baselines.run) are zoo folders
# made in one go rather than from a sweep spec: their spec.json holds the description of what made
# them, and its hash names the folder's content.
DESCRIBED_SHARD_ROWS = 4096  # rows per shard


def json_column(value: Any) -> dict:
    """A JSON column of a row (string, dict or null) as a dict."""
    if isinstance(value, str):
        return json.loads(value) if value else {}
    return dict(value or {})


def description_hash(description: Any) -> str:
    """sha256 of a description (sorted JSON): names a described zoo and its member ids."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def check_described_zoo(out: Path, description: Any, what: str) -> bool:
    """Whether `out` already holds the zoo of `description`, complete (raises if it holds anything else).

    Call it before the work, so a conflicting folder fails fast with nothing written.

    Args:
        out: the folder.
        description: what makes the zoo (see `write_described_zoo`).
        what: how the error calls another content, e.g. "generation" or "baseline run".
    """
    out = Path(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise StoreError(f"{out}: exists and is not a folder")
    if (out / SPEC).exists():
        old = read_json(out / SPEC, "spec")
        if old.get("spec_hash") != description_hash(description):
            raise StoreError(f"{out}: holds another zoo or {what}; choose another --out")
    elif holds_files(out):
        raise StoreError(f"{out}: folder is not empty and holds no zoo; choose another --out")
    if not (out / MANIFEST).exists():
        return False
    manifest = verify_zoo(out)
    return len(manifest["shards"]) == manifest.get("num_groups")


def write_described_zoo(out: Path, rows: Sequence[dict], description: Any, kind: str) -> Path:
    """Write rows as a zoo folder: spec.json ({kind: description}) first, each shard atomically,
    the manifest last (an empty run still gets one empty shard, so it reads back as complete)."""
    out = Path(out)
    digest = description_hash(description)
    write_json(out / SPEC, {"spec_hash": digest, "spec": {kind: description}})
    n = DESCRIBED_SHARD_ROWS
    shards = [rows[i : i + n] for i in range(0, len(rows), n)] or [[]]
    for k, chunk in enumerate(shards):
        entry = write_shard(out / "shards" / shard_name(k), chunk)
        record_shard(out, k, entry, digest, len(shards))
    return out


def shard_files(zoo: Path, verify: bool = True) -> list[Path]:
    """Shard paths listed in the manifest, in shard order (only those: stray files are ignored)."""
    m = verify_zoo(zoo) if verify else load_manifest(zoo)
    return [Path(zoo) / e["file"] for _, e in sorted(m["shards"].items())]


def read_zoo(zoo: Path, columns: Sequence[str] | None = None, verify: bool = True) -> pa.Table:
    """All rows of a zoo (optionally only some columns) as one Arrow table."""
    files = shard_files(zoo, verify)
    if not files:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(list(columns))
    try:
        return pa.concat_tables(pq.read_table(f, columns=list(columns) if columns else None) for f in files)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"{zoo}: unreadable shard ({e})") from None


def load_zoo_dataset(zoo: Path | Sequence[Path], cache_dir: str | None = None):
    """The zoo as a memory-mapped Hugging Face `datasets.Dataset` (verified against the manifest).

    Args:
        zoo: a zoo folder, or several: their rows one after another (`datasets.concatenate_datasets`),
            zoo by zoo in the order given.
        cache_dir: the `datasets` cache (None: its default).
    """
    import datasets

    if not isinstance(zoo, (str, Path)):
        return datasets.concatenate_datasets([load_zoo_dataset(z, cache_dir) for z in zoo])
    files = [str(f) for f in shard_files(zoo)]
    if not files:
        raise StoreError(f"{zoo}: the manifest lists no shards yet")
    return datasets.Dataset.from_parquet(files, cache_dir=cache_dir, features=None)
