"""Embed a text or JSONL file into ``.npy`` (and ``.parquet`` with ids), in chunks that survive a restart.

Inputs: ``.txt`` (one text per line; its id is the line number) or ``.jsonl`` (one object per
line; the text under ``field``, the id under ``id_field`` or else the line number). A first
pass reads the whole file once to validate it and count the texts, so bad input stops the run
before anything is written. The second pass streams it in chunks of ``chunk_size`` texts: each
chunk is embedded by one :meth:`Encoder.encode` call (length-sorted batches) and written atomically
to ``<out>.parts/chunk-NNNNNN.npz`` together with a digest of its ids and texts. A restarted run
reuses every chunk whose digest still matches, so it continues where the killed one stopped and
never reuses a chunk of other texts. At the end the chunks are copied into ``<out>`` through a
memory map (and into ``--parquet`` row group by row group), both renamed into place when
complete, and the parts folder is removed. Memory holds one chunk at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_embed._fs import (
    atomic_write,
    atomic_write_text,
    check_output,
    ensure_space,
    exclusive_lock,
    reserve,
)
from llm_embed._progress import progress_bar
from llm_embed.data.labelled_file import json_object
from llm_embed.errors import UserError, first_line
from llm_embed.inference.distributed import InferenceGroup

if TYPE_CHECKING:
    import numpy as np

    from llm_embed.encoder import Encoder

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson")
MANIFEST = "manifest.json"


# -- reading --------------------------------------------------------------------------------------
@dataclass
class InputStats:
    """What the validation pass found."""

    texts: int = 0
    skipped_empty: int = 0
    first_empty_line: int | None = None
    id_kind: str = "line"  # "line" (int line numbers) or "field" (strings from id_field)


def _lines(path: Path, *, split_cr: bool = True) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its newline); UserError at the first non-UTF-8 byte.

    With ``split_cr`` a line ends at ``\n``, ``\r\n`` or a lone ``\r`` (old Mac files), as
    Python's text mode reads it: a file of CR-only lines is many texts, not one. (A JSONL line
    keeps its CRs: there they are JSON whitespace.)
    """
    lineno = 0
    for _, line in _raw_lines(path):
        for piece in line.split("\r") if split_cr else (line,):
            lineno += 1
            yield lineno, piece


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            start = offset
            offset += len(raw)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM from some editors
                raw, start = raw[3:], start + 3
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {start + err.start} of the file): "
                    "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
                ) from None
            yield lineno, line.rstrip("\n").removesuffix("\r")


def read_texts(
    path: str | Path,
    *,
    field: str = "text",
    id_field: str | None = None,
    skip_empty: bool = False,
    stats: InputStats | None = None,
) -> Iterator[tuple[int | str, str]]:
    """Stream ``(id, text)`` pairs from a ``.txt`` or ``.jsonl`` file, raising one-line UserErrors.

    An empty (or whitespace-only) text is an error naming its line, unless ``skip_empty``: then it
    is skipped and counted in ``stats``. Blank lines of a JSONL file are not records and are ignored.
    """
    path = Path(path)
    stats = stats if stats is not None else InputStats()
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    stats.id_kind = "field" if jsonl and id_field else "line"
    for lineno, line in _lines(path, split_cr=not jsonl):
        if jsonl:
            if not line.strip():
                continue
            obj = json_object(path, lineno, line)
            if field not in obj:
                keys = ", ".join(map(str, list(obj)[:8])) or "none"
                raise UserError(
                    f"{path}:{lineno}: no {field!r} field (keys: {keys}): pass --field NAME"
                )
            text = obj[field]
            if not isinstance(text, str):
                raise UserError(
                    f"{path}:{lineno}: {field!r} is {type(text).__name__}, not a string"
                )
            ident: int | str = lineno
            if id_field:
                if id_field not in obj:
                    raise UserError(
                        f"{path}:{lineno}: no {id_field!r} field: pass --id-field NAME, or none"
                    )
                value = obj[id_field]
                if not isinstance(value, str | int) or isinstance(value, bool):
                    raise UserError(
                        f"{path}:{lineno}: {id_field!r} is {type(value).__name__}; ids are strings or integers"
                    )
                ident = str(value)
        else:
            text, ident = line, lineno
        if not text.strip():
            if not skip_empty:
                raise UserError(
                    f"{path}:{lineno}: empty text: remove the line or pass --skip-empty to skip and count such lines"
                )
            stats.skipped_empty += 1
            stats.first_empty_line = stats.first_empty_line or lineno
            continue
        stats.texts += 1
        yield ident, text


def scan(path: str | Path, **kwargs: Any) -> InputStats:
    """The validation pass: read everything once, keep nothing but counts."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"input {path} not found: give a .txt file (one text per line) or a .jsonl file"
        )
    stats = InputStats()
    for _ in read_texts(path, stats=stats, **kwargs):
        pass
    if stats.texts == 0:
        skipped = f" ({stats.skipped_empty} empty skipped)" if stats.skipped_empty else ""
        raise UserError(f"input {path} holds no texts{skipped}: nothing to embed")
    return stats


def _chunks(
    records: Iterator[tuple[int | str, str]], size: int
) -> Iterator[list[tuple[int | str, str]]]:
    chunk: list[tuple[int | str, str]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def digest(chunk: list[tuple[int | str, str]]) -> str:
    """sha256 of a chunk's ids and texts: a reused chunk must hold exactly these texts."""
    h = hashlib.sha256()
    for ident, text in chunk:
        h.update(f"{ident}\x00{len(text)}\x00".encode())
        h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# -- writing --------------------------------------------------------------------------------------
def _save_chunk(
    path: Path, emb: np.ndarray, ids: list[int | str], digest_: str, truncated: int
) -> None:
    import numpy as np

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(
                f,
                emb=emb,
                ids=np.asarray(ids),
                digest=np.asarray(digest_),
                truncated=np.asarray(truncated),
            )

    atomic_write(path, write)


def _load_chunk(path: Path) -> dict[str, Any] | None:
    """A finished chunk, or None if it is unreadable (then it is simply embedded again)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("emb", "ids", "digest", "truncated")}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def model_fingerprint(model: str) -> list[Any]:
    """Name plus size and mtime of the weight files of a local model folder (cheap; catches retraining)."""
    path = Path(model).expanduser()
    files = sorted(path.rglob("*.safetensors")) if path.is_dir() else []
    return [
        model,
        *[[str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
    ]


@dataclass
class Summary:
    """What :func:`embed_file` did."""

    texts: int
    dim: int
    chunks: int
    reused_chunks: int
    truncated: int
    skipped_empty: int
    out: Path
    parquet: Path | None


PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def ranges_path(out: str | Path) -> Path:
    """Where an int8/uint8 output keeps its calibration: ``emb.npy`` -> ``emb.ranges.npy``."""
    out = Path(out)
    return out.with_name(out.stem + ".ranges.npy")


def quantize(emb: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """sentence-transformers' ``quantize_embeddings`` (int8/uint8 ranges from ``emb`` if None)."""
    try:  # sentence-transformers >= 6 moved it
        from sentence_transformers.util.quantization import quantize_embeddings
    except ImportError:
        from sentence_transformers.quantization import quantize_embeddings
    return quantize_embeddings(emb, precision=precision, ranges=ranges)


def prepare(
    input: str | Path,
    out: str | Path,
    *,
    parquet: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
    chunk_size: int = 4096,
    precision: str = "float32",
    **read_kwargs: Any,
) -> InputStats:
    """Every check that needs no model: options, outputs, pyarrow, and the validation pass over the input."""
    if batch_size < 1 or chunk_size < 1:
        raise UserError(f"batch size ({batch_size}) and chunk size ({chunk_size}) must be >= 1")
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    out = Path(out).expanduser()
    if out.suffix != ".npy":
        raise UserError(f"output {out} must end in .npy")
    paths = {"--out": out, "--parquet": parquet, "--input": input}
    if precision in ("int8", "uint8"):
        paths["the ranges file"] = ranges_path(out)
    seen: dict[Path, str] = {}
    for flag, value in paths.items():
        if value is None:
            continue
        where = Path(value).expanduser().resolve()
        if where in seen:
            raise UserError(
                f"{seen[where]} and {flag} are the same file ({where}): give each its own path"
            )
        seen[where] = flag
    check_output(out, folder=False, overwrite=overwrite)
    if precision in ("int8", "uint8"):
        check_output(ranges_path(out), folder=False, overwrite=overwrite, what="the ranges file")
    if parquet is not None:
        check_output(parquet, folder=False, overwrite=overwrite, what="--parquet")
    if parquet is not None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError(
                "--parquet needs pyarrow, which is not installed: pip install pyarrow"
            ) from None
    return scan(input, **read_kwargs)


def embed_file(
    encoder: Encoder,
    input: str | Path,
    out: str | Path,
    *,
    parquet: str | Path | None = None,
    field: str = "text",
    id_field: str | None = None,
    skip_empty: bool = False,
    batch_size: int = 32,
    chunk_size: int = 4096,
    progress: bool = True,
    overwrite: bool = False,
    precision: str = "float32",
    model_id: Any = None,
    stats: InputStats | None = None,
    group: InferenceGroup | None = None,
) -> Summary:
    """Embed every text of ``input`` into ``out`` (``.npy``, N x D float32, input order).

    Args:
        encoder: the encoder (its prompt, pooling and truncation apply).
        input: ``.txt`` or ``.jsonl`` file.
        out: ``.npy`` path; ``<out>.parts/`` holds the chunks until the end.
        parquet: also write a Parquet file with columns ``id`` and ``embedding`` (needs pyarrow).
        field, id_field: JSONL keys of the text and of an optional id.
        skip_empty: skip and count empty texts instead of stopping at the first.
        batch_size: texts per forward pass; chunk_size: texts per resumable chunk (bounds memory).
        precision: ``float32``, or compact vectors by sentence-transformers' ``quantize_embeddings``:
            ``int8``/``uint8`` (per-dimension ranges from the whole file, saved beside ``out`` as
            ``<name>.ranges.npy`` to quantize queries alike) or ``binary``/``ubinary`` (one bit per
            dimension, packed: D/8 bytes).
        model_id: identifies the model in the parts manifest, so chunks of another model are never reused.
        stats: the result of :func:`prepare` when the caller already ran it (the file is then read once less).
        group: the processes sharing this run (:mod:`llm_embed.inference.distributed`); each
            embeds its share of every chunk, the first writes the files. None: this process alone.

    Raises:
        UserError: bad input, an existing output without ``overwrite``, missing pyarrow, or a parts
            folder left by a run with other settings.
    """
    read_kwargs = {"field": field, "id_field": id_field, "skip_empty": skip_empty}
    if stats is None:
        stats = prepare(
            input,
            out,
            parquet=parquet,
            overwrite=overwrite,
            batch_size=batch_size,
            chunk_size=chunk_size,
            precision=precision,
            **read_kwargs,
        )
    input, out = Path(input).expanduser(), Path(out).expanduser()
    parquet = Path(parquet).expanduser() if parquet is not None else None
    if stats.skipped_empty:
        log.warning(
            "skipped %d empty text(s) in %s (first: line %d); rows follow the remaining lines%s",
            stats.skipped_empty,
            input,
            stats.first_empty_line,
            "" if parquet else ", use --parquet for ids",
        )

    group = group or InferenceGroup()
    parts = out.with_name(out.name + ".parts")
    # Chunk digests guard the texts and ids; the manifest guards the model that embedded them.
    manifest = {"model": model_id, "encoder": encoder.config_dict}
    if group.is_main:
        _open_parts(parts, manifest)
    group.barrier()

    dim = encoder.embed_dim
    n_chunks = -(-stats.texts // chunk_size)
    reused = truncated = 0
    bar = progress_bar(
        total=stats.texts, unit="text", desc="encode", disable=not (progress and group.is_main)
    )
    sharded = group.shard(encoder)
    try:
        with encoder.merged_adapter():
            for i, chunk in enumerate(_chunks(read_texts(input, **read_kwargs), chunk_size)):
                path = parts / f"chunk-{i:06d}.npz"
                key = digest(chunk)
                done = None
                if group.is_main and path.is_file():
                    done = _load_chunk(path)
                    if done is not None and (
                        str(done["digest"]) != key or done["emb"].shape != (len(chunk), dim)
                    ):
                        done = None
                # every process must take part in each chunk the first one embeds
                cut = group.broadcast(None if done is None else int(done["truncated"]))
                if cut is not None:
                    reused += 1
                    truncated += cut
                    bar.update(len(chunk))
                    continue
                before = encoder.num_truncated
                emb = _embed_chunk(sharded, [text for _, text in chunk], batch_size, bar)
                cut = encoder.num_truncated - before
                if group.is_main:
                    _save_chunk(path, emb, [ident for ident, _ in chunk], key, cut)
                truncated += cut
    finally:
        bar.close()
    if reused:  # (the other processes log warnings only: InferenceGroup)
        log.info("reused %d of %d chunks from %s", reused, n_chunks, parts)

    if group.is_main:
        _assemble(parts, n_chunks, stats.texts, dim, out, parquet, stats.id_kind, precision)
        shutil.rmtree(parts, ignore_errors=True)
    group.barrier()
    if truncated:
        log.info(
            "%d of %d texts were longer than max_text_tokens=%d and were cut to it",
            truncated,
            stats.texts,
            encoder.max_text_tokens,
        )
    log.info(
        "wrote %d x %d %s embeddings to %s%s",
        stats.texts,
        dim,
        precision,
        out,
        f" and {parquet}" if parquet else "",
    )
    return Summary(stats.texts, dim, n_chunks, reused, truncated, stats.skipped_empty, out, parquet)


def encode_file(
    model: str,
    input: str | Path,
    out: str | Path,
    *,
    pooling: str | None = None,
    prompt: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    progress: bool = True,
    truncate_dim: int | None = None,
    layer: int | None = None,
    inference_dtype: str | None = None,
    inference_backend: str | None = None,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    **options: Any,
) -> Summary:
    """Check the input, load ``model`` with the one ``--model`` loader, and :func:`embed_file` it.

    Bad input fails before the model loads. ``device`` defaults to cuda where available;
    ``devices`` x ``num_nodes`` > 1 splits the work over that many processes
    (:class:`~llm_embed.inference.distributed.InferenceGroup`), each on its own device.
    ``options`` are :func:`embed_file`'s (parquet, overwrite, batch_size, chunk_size, field,
    id_field, skip_empty).
    """
    import torch

    from llm_embed.inference.load import load_encoder

    stats = prepare(input, out, **options)
    group = InferenceGroup(accelerator, devices, num_nodes)
    lock = exclusive_lock(Path(out).expanduser(), "encode") if group.is_main else nullcontext()
    with lock:  # a second writer stops here, as one line
        encoder = load_encoder(
            model,
            command="encode",
            pooling=pooling,
            prompt=prompt,
            trust_remote_code=trust_remote_code,
            truncate_dim=truncate_dim,
            layer=layer,
            inference_dtype=inference_dtype,
            inference_backend=inference_backend,
        )
        device = group.device or device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            encoder.to(torch.device(device))
        except (RuntimeError, AssertionError) as err:  # a bad name, or CUDA missing from this torch
            raise UserError(
                f"device {device!r} is not usable here ({first_line(err, 120)}): pass --device cpu"
            ) from None
        return embed_file(
            encoder,
            input,
            out,
            progress=progress,
            model_id=model_fingerprint(model),
            stats=stats,
            group=group,
            **options,
        )


def _open_parts(parts: Path, manifest: dict[str, Any]) -> None:
    """Create the parts folder, or check that the one there was made with the same settings."""
    file = parts / MANIFEST
    if file.is_file():
        try:
            old = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples -> lists)
        if old != manifest:
            differ = sorted(
                k for k in manifest if not isinstance(old, dict) or old.get(k) != manifest[k]
            )
            raise UserError(
                f"{parts} holds chunks embedded by another model or settings (differs in: {', '.join(differ)}): "
                "rerun with the same --model and options, or delete that folder to start over"
            )
        for stale in parts.glob(".*.tmp"):  # a chunk being written when the last run was killed
            stale.unlink(missing_ok=True)
        return
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, json.dumps(manifest, indent=2) + "\n")


def _embed_chunk(encoder: Encoder, texts: list[str], batch_size: int, bar: Any) -> np.ndarray:
    """One :meth:`Encoder.encode` call per chunk (length-sorted batches, rows in input order)."""
    return encoder.encode(texts, batch_size=batch_size, on_batch=bar.update).numpy()


def _assemble(
    parts: Path,
    n_chunks: int,
    n: int,
    dim: int,
    out: Path,
    parquet: Path | None,
    id_kind: str,
    precision: str = "float32",
) -> None:
    """Copy the chunks into ``out`` (and ``parquet``) one at a time; each appears only when complete.

    A compact ``precision`` quantizes each chunk on the way (int8/uint8 with ranges taken over
    every chunk first, so the result equals quantizing the whole matrix at once).
    """
    import numpy as np

    def chunks() -> Iterator[dict[str, Any]]:
        for i in range(n_chunks):
            data = _load_chunk(parts / f"chunk-{i:06d}.npz")
            if data is None:  # deleted or damaged between the two passes
                raise UserError(
                    f"chunk {i} in {parts} is unreadable: rerun the same command to embed it again"
                )
            yield data

    ranges = None
    if precision in ("int8", "uint8"):
        lows, highs = zip(*((d["emb"].min(0), d["emb"].max(0)) for d in chunks()), strict=True)
        ranges = np.stack([np.min(lows, axis=0), np.max(highs, axis=0)])

    def convert(emb: np.ndarray) -> np.ndarray:
        if precision == "float32":
            return emb
        return quantize(emb, precision, ranges)

    probe = convert(np.zeros((1, dim), dtype=np.float32))
    qdim, qtype = probe.shape[1], probe.dtype

    def write_npy(tmp: Path) -> None:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=qtype, shape=(n, qdim))
        # a memory map over a sparse file dies of SIGBUS when the disk fills while it is written;
        # reserved blocks turn a full disk into ENOSPC here instead
        reserve(tmp)
        row = 0
        for data in chunks():
            array[row : row + len(data["emb"])] = convert(data["emb"])
            row += len(data["emb"])
        assert row == n, (row, n)
        array.flush()
        del array

    out.parent.mkdir(parents=True, exist_ok=True)
    size = n * qdim * qtype.itemsize
    ensure_space(out, size * (2 if parquet is not None else 1), f"writing {out}")
    if ranges is not None:

        def write_ranges(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.save(f, ranges)

        atomic_write(ranges_path(out), write_ranges, suffix=".npy")
    atomic_write(out, write_npy, suffix=".npy")
    if parquet is None:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    id_type = pa.int64() if id_kind == "line" else pa.string()
    value_type = pa.from_numpy_dtype(qtype)
    schema = pa.schema([("id", id_type), ("embedding", pa.list_(value_type, qdim))])

    def write_parquet(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for data in chunks():
                ids = data["ids"].astype(np.int64) if id_kind == "line" else data["ids"].astype(str)
                values = pa.array(convert(data["emb"]).reshape(-1), type=value_type)
                embedding = pa.FixedSizeListArray.from_arrays(values, qdim)
                writer.write_table(
                    pa.table(
                        {"id": pa.array(ids, type=id_type), "embedding": embedding}, schema=schema
                    )
                )

    parquet.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(parquet, write_parquet, suffix=".parquet")
