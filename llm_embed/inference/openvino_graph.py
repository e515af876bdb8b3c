"""The encoder's backbone as an OpenVINO graph: the fast CPU inference path.

``Encoder(inference_backend="openvino")`` runs the backbone of every inference pass (``encode``,
evaluation, the training callback, an export's sentence-transformers module) through OpenVINO's
CPU runtime instead of PyTorch; tokenization, pooling, calibration and normalisation stay the
encoder's own code, so there is one copy of each. In float32 the graph computes what PyTorch
computes (cosine > 0.9999999 on real texts) about twice as fast on a CPU
(``benchmarks/encode.py``), because OpenVINO fuses each layer's small operations into a few
kernels. Training never uses it: a pass that needs gradients, or runs in train mode, is PyTorch.

The graph is converted from the PyTorch backbone itself (``openvino.convert_model``, padded
batches with dynamic batch and length), with the current weights baked in. It is rebuilt when
the weights change: a fingerprint of the weights (every tensor's name, shape and a strided sample
of its values) keys it, so an optimizer step or a merged adapter gives a new graph and a second
``encode`` on the same weights reuses the first one's. An export folder keeps the graph
(``openvino/openvino_model.xml``) with its fingerprint, so loading the export skips conversion.
The export also records the SHA-256 of the graph's files (``openvino/checksums.json``): a graph
whose files do not match (edited, truncated, missing, or from before checksums) is never run; it
is converted again from the weights, with a one-line notice, so the vectors are always the
weights' own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llm_embed.errors import OptionError, UserError, first_line

if TYPE_CHECKING:
    from llm_embed.encoder import Encoder

log = logging.getLogger(__name__)

GRAPH_DIR = "openvino"
GRAPH_FILE = "openvino_model.xml"
WEIGHTS_FILE = "openvino_model.bin"
CHECKSUMS_FILE = "checksums.json"
INPUTS = ("input_ids", "attention_mask", "position_ids")
_RT_KEY = "llm_embed"  # the graph's runtime-info section that holds what it was built from


def require_openvino() -> Any:
    """The ``openvino`` module, or one line saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise UserError(
            "inference_backend 'openvino' needs the openvino package: pip install openvino "
            "(or set inference_backend torch)"
        ) from None
    return openvino


def weights_fingerprint(module: nn.Module, *, layer: int, samples: int = 256) -> str:
    """A short hash of ``module``'s tensors (names, shapes, ~``samples`` values each) and ``layer``.

    Merging an adapter or an optimizer step changes nearly every value of a weight, so a strided
    sample sees it; hashing every value of a 270M-parameter model would cost ~1 s per call.
    """
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"layer={layer}".encode())
    hash_tensors(digest, [*module.named_parameters(), *module.named_buffers()], samples=samples)
    return digest.hexdigest()


def hash_tensors(digest: Any, tensors: Any, *, samples: int = 256) -> None:
    """Feed ``digest`` each (name, tensor)'s name, shape, dtype and ~``samples`` strided values,
    in name order."""
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())


class BackboneStates(nn.Module):
    """The traced function: padded token ids -> the pooled layer's hidden states (B, T, H) float32."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
        }
        return self.encoder.hidden_states(batch, packing=False).float()


def example_batch(encoder: Encoder) -> dict[str, torch.Tensor]:
    """Two texts of different lengths: the traced graph must keep the padding mask.

    (transformers drops the mask of a batch without padding; a trace of such a batch would ignore
    padding ever after.)
    """
    tokens = encoder.tokenize(["a b c d e f g h", "a"], prompt="none")
    if bool(tokens["attention_mask"].all()):
        raise RuntimeError("the example batch for tracing has no padding")
    return {name: tokens[name] for name in INPUTS}


def _without_telemetry() -> None:
    """Point OpenVINO's converter at its own no-op telemetry stub.

    The converter sends usage events to Google Analytics from a forked process. Offline, with
    the parent's threads running, that fork can deadlock inside the dynamic loader, and the
    parent then waits for it forever (a hung ``fit``). llm-embed sends nothing anywhere.
    """
    try:
        from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils, utils
    except ImportError:  # another layout: nothing to switch off
        return
    for module in (convert_impl, telemetry_utils, utils):
        if hasattr(module, "tm"):
            module.tm = telemetry_stub
    convert_impl.init_ovc_telemetry = lambda *args, **kwargs: telemetry_stub.Telemetry()


def convert(encoder: Encoder, fingerprint: str) -> Any:
    """``openvino.convert_model`` of the encoder's backbone, as it is now, on dynamic shapes."""
    ov = require_openvino()
    _without_telemetry()
    if encoder.device.type != "cpu":
        raise OptionError(
            f"inference_backend 'openvino' runs on the CPU, but the model is on {encoder.device}; "
            "set inference_backend torch"
        )
    start = time.monotonic()
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer notes each Python branch on a shape; the graph is checked against
            # PyTorch on other shapes in tests/test_openvino_graph.py
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            model = ov.convert_model(BackboneStates(encoder), example_input=example_batch(encoder))
    finally:
        encoder.train(was_training)
    for name, port in zip(INPUTS, model.inputs, strict=True):
        port.get_tensor().set_names({name})
    model.set_rt_info(fingerprint, [_RT_KEY, "weights"])
    log.info("converted the backbone to an OpenVINO graph in %.1f s", time.monotonic() - start)
    return model


class OpenVINOBackbone:
    """A compiled backbone graph for one set of weights, called on a tokenized batch.

    Args:
        model: an ``openvino.Model`` from :func:`convert` (or read from an export).
        precision: ``f32`` (the float32 path) or ``bf16`` (``inference_dtype: bfloat16``).
        threads: CPU threads (PyTorch's count, so a distributed run's processes share the cores).
        bidirectional: the model attends both ways (e.g. EmbeddingGemma): pads stay masked.
    """

    def __init__(
        self, model: Any, *, precision: str, threads: int, bidirectional: bool = False
    ) -> None:
        ov = require_openvino()
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        ):
            raise OptionError(
                "inference_dtype bfloat16 with inference_backend 'openvino' needs a CPU with bf16 "
                "units, and this one has none; use inference_dtype float32"
            )
        self.model = model
        self.fingerprint = model.get_rt_info([_RT_KEY, "weights"]).astype(str)
        self.precision = precision
        self.bidirectional = bidirectional
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": precision,
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self.request = self.compiled.create_infer_request()

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states (B, T, H) float32 of a padded batch (CPU tensors).

        The graph sees every row right-padded, its pads unmasked: a causal model's tokens never
        attend to the pads after them, so their states are the padded batch's, and no pad is
        left attending to no key at all (a left pad, or a right pad with only pads in its
        sliding window). OpenVINO's attention returns NaN for such a row where PyTorch's returns
        zeros, and a NaN row reaches every token through the attention matmul. A bidirectional
        model keeps its mask. Positions come from ``position_ids``, so moving the pads changes
        nothing else.
        """
        mask = batch["attention_mask"]
        order = torch.argsort(1 - mask, dim=1, stable=True)  # real tokens first, in order
        inputs = {name: batch[name].gather(1, order) for name in INPUTS}
        if not self.bidirectional:
            inputs["attention_mask"] = torch.ones_like(mask)
        out = self.request.infer({k: v.numpy() for k, v in inputs.items()}, share_inputs=True)
        states = torch.from_numpy(out[self.compiled.output(0)])
        index = order[..., None].expand(-1, -1, states.shape[-1])
        return torch.empty_like(states).scatter_(1, index, states)


def saved_graph(encoder: Encoder) -> Path | None:
    """The graph folder an export holds next to its weights, if any."""
    folder = Path(encoder.backbone_name).expanduser() / GRAPH_DIR
    return folder if folder.is_dir() else None


def file_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of the graph's two files."""
    sums = {}
    for name in (GRAPH_FILE, WEIGHTS_FILE):
        with (folder / name).open("rb") as f:
            sums[name] = hashlib.file_digest(f, "sha256").hexdigest()
    return sums


def graph_problem(folder: Path) -> str | None:
    """Why the graph in ``folder`` must not be run, or None when its files match their checksums."""
    try:
        recorded = json.loads((folder / CHECKSUMS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no recorded checksums"
    except (OSError, ValueError):
        return "has an unreadable checksums file"
    try:
        actual = file_checksums(folder)
    except OSError as err:
        return f"is missing a file ({err.strerror}: {Path(err.filename or '').name})"
    if not isinstance(recorded, dict) or recorded != actual:
        return "does not match the checksums recorded at export (damaged or edited)"
    return None


def graph_model(encoder: Encoder, cached: OpenVINOBackbone | None, fingerprint: str) -> Any:
    """The ``openvino.Model`` of the encoder's weights (``fingerprint``): ``cached``'s, the one an
    export folder holds when its files are intact, or a new conversion."""
    if cached is not None and cached.fingerprint == fingerprint:
        return cached.model
    folder = saved_graph(encoder)
    if folder is not None:
        problem = graph_problem(folder)
        if problem is None:
            try:
                saved = require_openvino().Core().read_model(folder / GRAPH_FILE)
            except RuntimeError as err:  # intact files OpenVINO still cannot read
                problem = f"cannot be read ({first_line(err, 120)})"
            else:
                if saved.get_rt_info([_RT_KEY, "weights"]).astype(str) == fingerprint:
                    return saved
                problem = "was built from other weights"
        log.warning(
            "the OpenVINO graph in %s %s: converting it again from the weights", folder, problem
        )
    return convert(encoder, fingerprint)


def graph_for(encoder: Encoder, cached: OpenVINOBackbone | None) -> OpenVINOBackbone:
    """The compiled graph for the encoder's current weights and precision (``cached`` if it is)."""
    precision = "bf16" if encoder.inference_dtype == "bfloat16" else "f32"
    fingerprint = weights_fingerprint(encoder.backbone, layer=encoder.layer)
    if cached is not None and cached.fingerprint == fingerprint and cached.precision == precision:
        return cached
    config = encoder.backbone.config
    return OpenVINOBackbone(
        graph_model(encoder, cached, fingerprint),
        precision=precision,
        threads=torch.get_num_threads(),
        bidirectional=bool(getattr(config, "use_bidirectional_attention", False)),
    )


def save_graph(encoder: Encoder, folder: str | Path) -> Path:
    """Write the encoder's backbone graph into ``folder/openvino/`` (an export); returns the file."""
    fingerprint = weights_fingerprint(encoder.backbone, layer=encoder.layer)
    model = graph_model(encoder, encoder._graph, fingerprint)
    path = Path(folder) / GRAPH_DIR / GRAPH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # float32 weights, as the folder's
    require_openvino().save_model(model, str(path), compress_to_fp16=False)
    sums = json.dumps(file_checksums(path.parent), indent=2, sort_keys=True) + "\n"
    (path.parent / CHECKSUMS_FILE).write_text(sums, encoding="utf-8")
    return path
