"""The one path from text to vectors: prompt -> tokenize -> backbone -> pool -> normalize.

Training, evaluation, analysis and export all call this module, so a template, a BOS token or a
padding side can never differ between them (three such mismatches live in the reference code).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from llm_embed.backbone import load_backbone, load_tokenizer
from llm_embed.errors import OptionError, UserError
from llm_embed.packing import pack, packed_attention, supports_packing, unpack
from llm_embed.pooling import Pooling, from_config
from llm_embed.prompts import PromptTemplate, get_prompt

log = logging.getLogger(__name__)


INFERENCE_DTYPES = ("float32", "bfloat16")
INFERENCE_BACKENDS = ("torch", "openvino")


def check_task_prompts(task_prompts: Mapping[str, str] | None) -> dict[str, str]:
    """``task_prompts`` with each prompt resolved to its template; OptionError naming a bad entry."""
    if task_prompts is None:
        return {}
    if not isinstance(task_prompts, Mapping):
        raise OptionError(
            f"task_prompts={task_prompts!r} must map mteb task names to prompts, e.g. "
            "{WordNetNounGlosses: clustering}"
        )
    resolved = {}
    for task, prompt in task_prompts.items():
        if not isinstance(task, str) or not task or not isinstance(prompt, str):
            raise OptionError(
                f"task_prompts[{task!r}]={prompt!r} is invalid; map task names to prompt strings"
            )
        try:
            resolved[task] = get_prompt(prompt).template
        except ValueError as err:
            raise OptionError(f"task_prompts[{task!r}]: {err}") from None
    return resolved


def check_inference_options(
    truncate_dim: int | None, inference_dtype: str | None, inference_backend: str | None = None
) -> None:
    """ValueError for a ``truncate_dim``, ``inference_dtype`` or ``inference_backend`` no encoder
    takes (None: not given)."""
    if truncate_dim is not None and (
        isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or truncate_dim < 1
    ):
        raise OptionError(f"truncate_dim={truncate_dim!r} is invalid; use an int >= 1 or null")
    if inference_dtype is not None and inference_dtype not in INFERENCE_DTYPES:
        raise OptionError(
            f"inference_dtype={inference_dtype!r} is unknown; use 'float32' or 'bfloat16'"
        )
    if inference_backend is not None and inference_backend not in INFERENCE_BACKENDS:
        raise OptionError(
            f"inference_backend={inference_backend!r} is unknown; use 'torch' or 'openvino'"
        )


def check_finite(vectors: torch.Tensor, texts: Sequence[str]) -> None:
    """Refuse a batch with a NaN or infinite value: such a vector would cluster, rank and export
    silently wrong. Damaged weights or graphs, and float16 overflow, produce them."""
    finite = torch.isfinite(vectors).all(dim=-1)
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    first = texts[int((~finite).nonzero()[0])]
    raise UserError(
        f"the model gave non-finite vectors (NaN or inf) for {bad} of {len(texts)} texts of a "
        f"batch (first: {first[:60]!r}): its weights or OpenVINO graph are damaged, or the "
        "precision overflows; re-export the model, or use inference_dtype float32 and "
        "inference_backend torch"
    )


def attention_kernels() -> AbstractContextManager[None]:
    """Let SDPA use the flash, memory-efficient or math kernels, not cuDNN's.

    On Hopper GPUs PyTorch tries cuDNN attention first, which builds an execution plan for each
    new (batch, length) shape, which costs milliseconds of CPU per call (profiled in
    ``docs/performance.md``), and batches of texts rarely repeat a shape. The flash and
    memory-efficient kernels have no such set-up cost. CPUs have no cuDNN kernel, so nothing
    changes there.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    )


class Encoder(nn.Module):
    """A decoder LLM as a text encoder.

    Args:
        backbone: packaged model name (``smollm2-135m-instruct``), local folder or hub id.
        pooling: a pooling name (``last``, ``mean``, ``weighted_mean``, ``eos``,
            ``prompt_masked_mean``, ``max``, ``last_mean``,
            ``weighted_mean_last``) or a :class:`Pooling`.
        prompt: a built-in template name (``clustering``, ``prompteol``, ``none``, ...) or a
            template string with one ``{text}``.
        normalize: L2-normalize embeddings (cosine similarity = dot product).
        max_text_tokens: cut each text to this many tokens before templating (the paper: 100),
            so a long text never pushes the prompt's closing words out.
        padding_side: side to pad on; results do not depend on it (positions come from the mask).
        layer: hidden layer to pool (-1 = last; any ``hidden_states`` index).
        dtype: backbone weight dtype (``float32``; ``bfloat16`` on GPUs).
        attn_implementation: ``sdpa`` (fast), ``eager`` (needed for attention maps).
        trust_remote_code: let transformers run code shipped with a hub model (off by default).
        load_in_4bit: keep the frozen base weights in 4-bit NF4 on the GPU (QLoRA; needs CUDA
            and bitsandbytes, else a one-line error).
        truncate_dim: keep the first ``truncate_dim`` dimensions of each vector (then normalise):
            shorter vectors, as a Matryoshka-trained model (``EmbeddingModule(matryoshka_dims=...)``)
            allows. None keeps them all.
        inference_dtype: ``bfloat16`` runs :meth:`encode` (evaluation, ``encode``, the training
            callback) under bf16 autocast: ~3x faster on a CPU with bf16 matmul units
            (benchmarks/encode.py measures speed and V-measure side by side); the weights and
            training stay as they are. ``float32``: exact.
        inference_backend: ``openvino`` runs the backbone of every inference pass (not training)
            through an OpenVINO graph of the current weights on the CPU
            (:mod:`llm_embed.inference.openvino_graph`): the float32 numbers ~2x faster.
            ``torch``: PyTorch.
        dim_scale: per-dimension divisors applied in eval mode to the normalised pooled vector
            (then normalised again), so no few dimensions dominate the cosine; :meth:`calibrate`
            sets them to the dimensions' standard deviations over training texts. None: off.
        packing: run each batch padding-free, its texts packed into one row with attention kept
            inside each text (:mod:`llm_embed.packing`): the same states without the pad tokens'
            compute. Needs a model that runs its attention through transformers' interface.
        task_prompts: mteb task name -> prompt (a template name or a template with ``{text}``)
            used in place of ``prompt`` when that task is scored, as instruction-following
            embedders carry a prompt per task; saved with the model, so a trained run and its
            reloads score alike. Training and :meth:`encode` keep ``prompt``.
    """

    def __init__(
        self,
        backbone: str = "smollm2-135m-instruct",
        pooling: str | Pooling = "last",
        prompt: str = "clustering",
        normalize: bool = True,
        max_text_tokens: int = 100,
        padding_side: Literal["left", "right"] = "right",
        layer: int = -1,
        dtype: str = "float32",
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        load_in_4bit: bool = False,
        truncate_dim: int | None = None,
        inference_dtype: Literal["float32", "bfloat16"] = "float32",
        inference_backend: Literal["torch", "openvino"] = "torch",
        dim_scale: Sequence[float] | None = None,
        packing: bool = False,
        task_prompts: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        # the arguments as given, for config_dict (pooling and prompt are read live: a grid swaps pooling)
        self._init_args = {k: v for k, v in locals().items() if k in ENCODER_ARGS}
        if max_text_tokens < 1:
            raise OptionError(f"max_text_tokens={max_text_tokens} must be >= 1")
        if padding_side not in ("left", "right"):
            raise OptionError(f"padding_side={padding_side!r} must be 'left' or 'right'")
        check_inference_options(truncate_dim, inference_dtype, inference_backend)  # before loading
        if inference_backend == "openvino":
            from llm_embed.inference.openvino_graph import require_openvino

            require_openvino()
        self.pooling = from_config(pooling)
        self.prompt = get_prompt(prompt)
        self.task_prompts = check_task_prompts(task_prompts)
        self.normalize = normalize
        self.max_text_tokens = max_text_tokens
        self.padding_side = padding_side
        self.layer = layer
        self.backbone_name = backbone
        if trust_remote_code:
            log.warning(
                "trust_remote_code is on: Python code shipped with %s may run as it loads", backbone
            )
        self.tokenizer = load_tokenizer(backbone, trust_remote_code=trust_remote_code)
        if not self.tokenizer.is_fast:
            raise UserError(
                f"model {backbone!r} has no fast tokenizer: llm-embed needs character offsets"
            )
        self.backbone = load_backbone(
            backbone,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            load_in_4bit=load_in_4bit,
        )
        n_layers = self.backbone.config.num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise OptionError(f"layer={layer} is out of range for a {n_layers}-layer model")
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id  # decoders often have no pad token; pad = eos
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        self.load_in_4bit = load_in_4bit
        self.truncate_dim = truncate_dim
        self.inference_dtype = inference_dtype
        self.inference_backend = inference_backend
        self._graph: Any = None  # the compiled OpenVINO backbone of the last weights it saw
        if packing and not supports_packing(self.backbone):
            raise UserError(
                f"model {backbone!r} runs its own attention code, so its texts cannot be packed "
                "into one row; set packing false"
            )
        self.packing = packing
        self.set_pooling(self.pooling)  # checks what the pooling needs of the tokenizer
        self.register_buffer("_dim_scale", None, persistent=False)
        if dim_scale is not None:
            self.dim_scale = dim_scale
        self.num_truncated = 0  # texts cut to max_text_tokens so far

    def set_pooling(self, pooling: str | Pooling) -> None:
        """Use another pooling on the same backbone (poolings hold no weights; a grid swaps them)."""
        pooling = from_config(pooling)
        if getattr(self, "_dim_scale", None) is not None and (
            pooling.to_config() != self.pooling.to_config()
        ):
            log.info("dim_scale was calibrated for %s pooling: dropped", self.pooling.name)
            self._dim_scale = None
        full = pooling.output_dim(self.backbone.config.hidden_size)
        if self.truncate_dim is not None and self.truncate_dim > full:
            raise OptionError(
                f"truncate_dim={self.truncate_dim} is larger than the model's {full} dimensions "
                f"({pooling.name} pooling); use 1..{full}"
            )
        if pooling.appends_eos and self.tokenizer.eos_token_id is None:
            raise UserError(
                f"pooling 'eos' needs an EOS token, and model {self.backbone_name!r} has none"
            )
        self.pooling = pooling

    @property
    def dim_scale(self) -> list[float] | None:
        """The eval-mode per-dimension divisors (see the class doc), or None."""
        return None if self._dim_scale is None else self._dim_scale.tolist()

    @dim_scale.setter
    def dim_scale(self, value: Sequence[float] | torch.Tensor | None) -> None:
        if value is None:
            self._dim_scale = None
            return
        scale = torch.as_tensor(value, dtype=torch.float32).flatten()
        full = self.pooling.output_dim(self.backbone.config.hidden_size)
        if scale.numel() != full or not bool((scale > 0).all() & scale.isfinite().all()):
            raise OptionError(
                f"dim_scale needs {full} positive finite values ({self.pooling.name} pooling); "
                f"got {scale.numel()}"
            )
        self._dim_scale = scale.to(self.device)

    @torch.no_grad()
    def calibrate(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        prompt: str | PromptTemplate | None = None,
    ) -> None:
        """Set :attr:`dim_scale` to each dimension's standard deviation over ``texts`` (training
        texts: the vectors of evaluation data never set it), embedded under ``prompt`` (None: the
        encoder's own)."""
        if len(texts) < 2:
            raise OptionError("calibrate needs at least 2 texts")
        self.dim_scale = None
        vectors = F.normalize(self.encode(texts, batch_size=batch_size, prompt=prompt), dim=-1)
        self.dim_scale = vectors.std(0).clamp_min(1e-6)

    @property
    def config_dict(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this encoder (``Encoder(**config_dict)``)."""
        live = {
            "pooling": self.pooling.to_config(),
            "prompt": self.prompt.template,
            "dim_scale": self.dim_scale,
            "task_prompts": self.task_prompts or None,
        }
        return {name: live.get(name, self._init_args[name]) for name in ENCODER_ARGS}

    @property
    def name(self) -> str:
        return (
            Path(self.backbone_name).name
            if Path(self.backbone_name).is_dir()
            else self.backbone_name
        )

    @property
    def embed_dim(self) -> int:
        full = self.pooling.output_dim(self.backbone.config.hidden_size)
        return full if self.truncate_dim is None else self.truncate_dim

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # -- text -> tokens -------------------------------------------------------------------------
    def _encode(
        self, texts: Sequence[str], *, special: bool
    ) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and character offsets per text, straight from the Rust tokenizer.

        Calling ``backend_tokenizer`` skips transformers' per-text Python conversion, which took
        as long as the tokenization itself; the ids and offsets are the same (tests/test_encoder.py).
        """
        backend = self.tokenizer.backend_tokenizer
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        return [
            (e.ids, e.offsets)
            for e in backend.encode_batch(list(texts), add_special_tokens=special)
        ]

    def truncate(self, texts: Sequence[str]) -> list[str]:
        """Cut each text to ``max_text_tokens`` tokens, at a token boundary of the original string."""
        texts = list(texts)
        # An ASCII text of fewer characters than the limit cannot have too many tokens (each token
        # covers at least one character, plus at most one added word-start marker), so only the
        # others are tokenized here.
        check = [
            i for i, t in enumerate(texts) if not (t.isascii() and len(t) < self.max_text_tokens)
        ]
        for i, (_, offsets) in zip(
            check, self._encode([texts[i] for i in check], special=False), strict=True
        ):
            if len(offsets) > self.max_text_tokens:
                self.num_truncated += 1
                texts[i] = texts[i][: offsets[self.max_text_tokens - 1][1]]
        return texts

    def tokenize(
        self, texts: Sequence[str], *, prompt: str | PromptTemplate | None = None
    ) -> dict[str, torch.Tensor]:
        """Template, tokenize and pad a batch.

        Returns ``input_ids``, ``attention_mask``, ``position_ids`` and ``prompt_mask`` (1 where a
        token belongs to the template or is a special token, 0 on the text's own tokens), each
        (B, T). Position ids count real tokens only, so left padding gives the same states as right.
        """
        template = self.prompt if prompt is None else get_prompt(prompt)
        texts = self.truncate(texts)
        encoded = self._encode([template.apply(t) for t in texts], special=True)
        eos = [self.tokenizer.eos_token_id] if self.pooling.appends_eos else []
        rows: list[tuple[list[int], list[int]]] = []
        for text, (ids, offsets) in zip(texts, encoded, strict=True):
            lo, hi = template.text_span(text)  # an echoed text: its last copy
            # a token is text if its character span overlaps the text; special tokens span (0, 0)
            is_prompt = [int(not (s < hi and e > lo and e > s)) for s, e in offsets]
            rows.append((ids + eos, is_prompt + [1] * len(eos)))
        T = max(len(ids) for ids, _ in rows)
        left = self.padding_side == "left"

        def pad(row: list[int], value: int) -> list[int]:
            fill = [value] * (T - len(row))
            return fill + row if left else row + fill

        input_ids = torch.tensor([pad(ids, self.pad_id) for ids, _ in rows], dtype=torch.long)
        attention_mask = torch.tensor([pad([1] * len(ids), 0) for ids, _ in rows], dtype=torch.long)
        prompt_mask = torch.tensor([pad(p, 1) for _, p in rows], dtype=torch.long)
        position_ids = (attention_mask.cumsum(1) - 1).clamp_min(0)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "prompt_mask": prompt_mask,
        }

    # -- tokens -> vectors ----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "_graph": None}  # a compiled graph does not pickle; it is rebuilt

    def uses_graph(self) -> bool:
        """Whether a pass now runs the OpenVINO graph: the backend asks for it, and the pass is
        inference (eval mode, no gradients)."""
        return (
            self.inference_backend == "openvino"
            and not self.training
            and not torch.is_grad_enabled()
        )

    @contextmanager
    def torch_backend(self) -> Iterator[None]:
        """Run every pass in PyTorch for the duration (a training run's validation loss)."""
        saved, self.inference_backend = self.inference_backend, "torch"
        try:
            yield
        finally:
            self.inference_backend = saved

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embed a tokenized batch (from :meth:`tokenize`), with gradients. Returns (B, D) float32."""
        if self.uses_graph():
            from llm_embed.inference.openvino_graph import graph_for

            self._graph = graph_for(self, self._graph)
            hidden = self._graph(batch)  # on the CPU, as the graph's model
        else:
            hidden = self.hidden_states(batch, packing=self.packing)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        emb = self.pooling(
            hidden.float(), batch["attention_mask"], prompt_mask=batch["prompt_mask"]
        )
        if self._dim_scale is not None and not self.training:
            emb = F.normalize(emb, dim=-1) / self._dim_scale
        if self.truncate_dim is not None:
            emb = emb[:, : self.truncate_dim]
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def hidden_states(self, batch: dict[str, torch.Tensor], *, packing: bool) -> torch.Tensor:
        """The pooled layer's states (B, T, H) of a padded batch, in PyTorch (packed or not)."""
        packed = pack(batch) if packing else None  # on the tokenizer's CPU tensors: no sync
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if packed is not None:
            with packed_attention(self.backbone):
                out = self.backbone(
                    input_ids=packed.input_ids.to(self.device),
                    position_ids=packed.position_ids.to(self.device),
                    output_hidden_states=self.layer != -1,
                    use_cache=False,
                    cu_seq_lens_q=packed.cu_seqlens.to(self.device),
                    max_length_q=packed.max_len,
                )
        else:
            with attention_kernels():
                out = self.backbone(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"],
                    output_hidden_states=self.layer != -1,
                    use_cache=False,  # no KV cache: one pass per text, nothing to reuse
                )
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        return unpack(hidden, packed) if packed is not None else hidden

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        prompt: str | PromptTemplate | None = None,
        show_progress: bool = False,
        on_batch: Callable[[int], object] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> torch.Tensor:
        """Embed texts for inference: length-sorted batches, eval mode, result in input order. (N, D) on CPU.

        ``on_batch(n)`` is called as each batch's ``n`` vectors arrive (a caller's progress bar).
        ``shard=(rank, world)`` embeds only every ``world``-th batch from ``rank`` on and leaves
        the other rows zero: the processes of a distributed run sum their results into the whole
        (:mod:`llm_embed.inference.distributed`), each batch the one a single process would run.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        from tqdm.auto import tqdm

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty((len(texts), self.embed_dim), dtype=torch.float32)
        was_training = self.training
        self.eval()
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        rank, world = shard
        batches = batches[rank::world]
        if shard != (0, 1):
            out.zero_()

        def collect(idx: list[int], emb: torch.Tensor) -> None:
            emb = emb.float().cpu()
            check_finite(emb, [texts[i] for i in idx])
            out[idx] = emb
            if on_batch is not None:
                on_batch(len(idx))

        try:
            with torch.inference_mode(), self.inference_autocast():
                pending = None  # the batch whose forward pass is in flight, and its result
                for idx in tqdm(batches, desc="encode", disable=not show_progress, unit="batch"):
                    # On a GPU, tokenizing batch i overlaps the forward pass of batch i-1, which
                    # is only waited for (by the copy to the CPU) afterwards.
                    tokens = self.tokenize([texts[i] for i in idx], prompt=prompt)
                    if pending is not None:
                        collect(*pending)
                    pending = (idx, self(tokens))
                if pending is not None:
                    collect(*pending)
        finally:
            self.train(was_training)
        return out

    def inference_autocast(self) -> AbstractContextManager[Any]:
        """bf16 autocast for an inference pass when ``inference_dtype`` asks for it, else a no-op.

        :meth:`encode` and the sentence-transformers module of an export both run under it, so
        one setting decides the numerics of every inference path; training never does.
        """
        enabled = (
            self.inference_dtype == "bfloat16"
            and not self.training
            and self.inference_backend == "torch"  # the OpenVINO graph has its own precision
        )
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @contextmanager
    def merged_adapter(self) -> Iterator[None]:
        """Fold LoRA weights into the base weights for a long inference pass, then unfold them.

        An unmerged adapter costs an extra pair of matmuls per adapted layer; merging costs one
        matmul per adapted weight, once. Unmerging by subtraction would leave the base weights
        off by rounding (W + BA - BA != W in floating point), so a training run would continue
        from weights that each evaluation nudged; the base weights are restored from a copy
        instead (kept in CPU memory). No-op for a plain backbone.
        """
        backbone = self.backbone
        if not hasattr(backbone, "merge_adapter") or getattr(backbone.base_model, "merged", False):
            yield
            return
        from peft.tuners.lora import LoraLayer

        with torch.no_grad():
            bases = [m.get_base_layer() for m in backbone.modules() if isinstance(m, LoraLayer)]
            saved = [(b.weight, b.weight.detach().to("cpu", copy=True)) for b in bases]
            backbone.merge_adapter()
        try:
            yield
        finally:
            with torch.no_grad():
                backbone.unmerge_adapter()  # peft's bookkeeping; the weights come from the copy
                for weight, copy in saved:
                    weight.copy_(copy)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``encoder.json`` and, for a LoRA-wrapped backbone, the adapter (see :mod:`llm_embed.inference.load`)."""
        from llm_embed.inference.load import save_encoder

        return save_encoder(self, path)

    @classmethod
    def load(cls, path: str | Path, *, merge: bool = True, **overrides: Any) -> Encoder:
        """Rebuild an encoder saved by :meth:`save`; the adapter is merged into the weights by default."""
        from llm_embed.inference.load import load_saved

        return load_saved(path, merge=merge, **overrides)


# The constructor's argument names: the saved description (encoder.json, an export's
# llm_embed.json) and the sentence-transformers module's config keys derive from this one list.
ENCODER_ARGS: tuple[str, ...] = tuple(inspect.signature(Encoder.__init__).parameters)[1:]
