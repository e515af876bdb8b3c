"""EmbeddingModule: the training system (encoder + LoRA + InfoNCE + AdamW schedule).

The encoder is injected (``class_path``/``init_args`` in the config), so the same module trains
any backbone, pooling and prompt. Only the LoRA weights train; checkpoints hold only them.

Scale switches (all plain hparams, see ``configs/ddp.yaml``): ``gather_across_devices`` makes the
global batch the negative pool under DDP/FSDP; ``grad_cache`` computes a large contrastive batch in
mini-batches at flat memory (:mod:`llm_embed.train.gradcache`); ``gradient_checkpointing`` trades a
recomputation for activation memory. Mixed precision is the Trainer's ``precision``.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from enum import Enum
from functools import partial
from typing import Any

import lightning as L
import torch
from peft import LoraConfig, get_peft_model

from llm_embed.data.pairs import sample_anchors
from llm_embed.encoder import Encoder, attention_kernels
from llm_embed.errors import UserError
from llm_embed.losses import InfoNCELoss
from llm_embed.train.gradcache import cached_loss, embed_in_chunks

log = logging.getLogger(__name__)


def plain(obj: Any) -> Any:
    """JSON-like copy of a config (sets -> sorted lists, enums -> values), safe for ``weights_only`` loads."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [plain(v) for v in obj]
        return sorted(items, key=str) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, Enum):
        return plain(obj.value)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def reference_lora() -> LoraConfig:
    """LoRA settings of arXiv 2507.22729: r=64, alpha=16, dropout 0.05, q/v/o and the MLP (k untouched)."""
    return LoraConfig(
        r=64,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="FEATURE_EXTRACTION",
    )


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Turn on non-reentrant activation checkpointing of a transformers model's layers.

    Reentrant checkpointing (the old default) gives no gradient to a layer whose inputs need none
    (every layer of a frozen base, unless input grads are forced on), and it refuses
    ``torch.autograd.grad``, which GradCache's second pass uses.
    """
    # the recomputation in the backward pass must pick the same attention kernel as the forward
    kwargs = {
        "use_reentrant": False,
        "context_fn": lambda: (attention_kernels(), attention_kernels()),
    }
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class EmbeddingModule(L.LightningModule):
    """Contrastive LoRA fine-tuning of a decoder encoder on (anchor, positive) text pairs.

    Args:
        encoder: the text encoder (backbone, pooling, prompt); the one used everywhere else.
        lora: peft ``LoraConfig``; None = the paper's settings (:func:`reference_lora`).
        temperature: InfoNCE τ (the paper: 0.2).
        symmetric: add the positive -> anchor direction to the loss.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps, then linear decay to 0 at the last step.
        gather_across_devices: under DDP/FSDP, score each anchor against the positives of all
            ranks (gathered with gradient): ``world * B - 1`` negatives instead of ``B - 1``.
            No-op on one device.
        grad_cache: compute the contrastive batch with GradCache (two forward passes, activation
            memory of one mini-batch); combines with ``gather_across_devices``. DDP or one device.
        grad_cache_mini_batch: texts per forward pass under ``grad_cache`` (and in validation).
        gradient_checkpointing: recompute each layer's activations in the backward pass
            (non-reentrant, so LoRA gets its gradients); less memory, ~30% more compute.
        matryoshka_dims: also train the leading slices of the vectors as embeddings of their
            own (e.g. ``[640, 256, 128, 64]``; the loss is the mean over the slices), so
            ``truncate_dim`` can shorten them later. None = the plain loss.
        calibration_texts: before each evaluation (the baseline, every validation), set the
            encoder's eval-mode ``dim_scale`` from this many training anchors (a seeded sample;
            :meth:`Encoder.calibrate`); it is saved with the model. 0 = no scaling.
        guide: a sentence-transformers model (``all-minilm-l6-v2`` is packaged) that judges each
            batch: a negative it scores above the anchor's positive (less ``guide_margin``) is left
            out of the loss, as a likely false negative (GISTEmbed). None = every in-batch
            negative counts. The validation loss is masked the same way, so it stays the
            training objective. The guide is frozen and is not saved with the model.
        guide_margin: see ``guide`` (cosine units; 0 = the guide's own ranking).
    """

    def __init__(
        self,
        encoder: Encoder,
        lora: LoraConfig | None = None,
        temperature: float = 0.2,
        symmetric: bool = False,
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        gather_across_devices: bool = True,
        grad_cache: bool = False,
        grad_cache_mini_batch: int = 32,
        gradient_checkpointing: bool = False,
        matryoshka_dims: list[int] | None = None,
        calibration_texts: int = 0,
        guide: str | None = None,
        guide_margin: float = 0.0,
    ) -> None:
        super().__init__()
        if calibration_texts < 0 or calibration_texts == 1:
            raise ValueError(f"calibration_texts={calibration_texts} must be 0 (off) or >= 2")
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
        if grad_cache_mini_batch < 1:
            raise ValueError(f"grad_cache_mini_batch={grad_cache_mini_batch} must be >= 1")
        self.save_hyperparameters(ignore=["encoder", "lora"])
        lora = lora if lora is not None else reference_lora()
        # plain types keep checkpoints weights_only-loadable
        self.hparams["lora"] = plain(lora.to_dict())
        self.hparams["encoder"] = encoder.config_dict
        self.encoder = encoder
        if getattr(encoder.backbone, "is_loaded_in_4bit", False):
            from peft import prepare_model_for_kbit_training

            # fp32 norms and input grads for a 4-bit base (QLoRA); it freezes every base weight
            encoder.backbone = prepare_model_for_kbit_training(
                encoder.backbone,
                use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        # peft modifies the backbone in place; wrap once, before the optimizer exists.
        self.encoder.backbone = get_peft_model(encoder.backbone, lora)
        if gradient_checkpointing:
            enable_checkpointing(self.encoder.backbone.get_base_model())
        self.loss_fn = InfoNCELoss(
            temperature=temperature,
            symmetric=symmetric,
            gather=gather_across_devices,
            matryoshka_dims=matryoshka_dims,
            guide_margin=guide_margin,
        )
        self._guide: Any = None  # the guide model, loaded when training starts (not a submodule)
        if matryoshka_dims and max(matryoshka_dims) > encoder.embed_dim:
            raise ValueError(
                f"matryoshka_dims={list(matryoshka_dims)} has a dimension above the encoder's "
                f"{encoder.embed_dim}; use values in 1..{encoder.embed_dim}"
            )
        self.strict_loading = False  # checkpoints hold only the trainable (LoRA) weights
        self.encoder.train()  # from_pretrained leaves the backbone in eval mode

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Embed texts (inference); training goes through :meth:`training_step`."""
        return self.encoder.encode(texts)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return self.encoder(self.encoder.tokenize(texts))  # (B, D)

    def _loss(self, batch: dict[str, list[str]]) -> torch.Tensor:
        """InfoNCE of a batch; with GradCache (when gradients are on) its parameter gradients are attached.

        A batch with hard negatives (a ``"negative"`` column) scores each anchor against every
        positive and every hard negative of the batch.
        """
        columns = [batch["anchor"], batch["positive"]]
        if "negative" in batch:
            if self.hparams.symmetric:
                raise UserError(
                    "model.symmetric scores positives against anchors and has no place for hard "
                    "negatives: set model.symmetric false, or train on pairs without a 'negative'"
                )
            columns.append(batch["negative"])
        guide = self._guide_vectors(columns) if self.hparams.get("guide") else None
        loss_fn = partial(self._columns_loss, guide=guide)
        if not self.hparams.grad_cache:
            if self.encoder.packing:  # one packed pass for all columns: fewer kernel launches
                every = self._embed([text for texts in columns for text in texts])
                return loss_fn(*every.split([len(texts) for texts in columns]))
            return loss_fn(*(self._embed(texts) for texts in columns))
        size = self.hparams.grad_cache_mini_batch
        if not torch.is_grad_enabled():  # validation: the first pass alone, in mini-batches
            return loss_fn(*(embed_in_chunks(self._embed, texts, size) for texts in columns))
        params = [p for p in self.parameters() if p.requires_grad]
        return cached_loss(
            self._embed,
            columns,
            loss_fn,
            params,
            mini_batch_size=size,
            grad_scale=self._loss_scale(),
        )

    def _columns_loss(
        self, anchors: torch.Tensor, *candidates: torch.Tensor, guide: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """The loss of anchors against their positives and any hard negatives, stacked as candidates."""
        cands = candidates[0] if len(candidates) == 1 else torch.cat(candidates)
        if guide is None:
            return self.loss_fn(anchors, cands)
        return self.loss_fn(anchors, cands, guide=(guide[0], torch.cat(guide[1:])))

    def guide_model(self) -> Any:
        """The frozen guide (an :class:`~llm_embed.inference.st_encoder.STEncoder`), loaded once."""
        if self._guide is None:
            from llm_embed.inference.st_encoder import STEncoder

            self._guide = STEncoder(self.hparams.guide, device=str(self.device))
        return self._guide

    def _guide_vectors(self, columns: list[list[str]]) -> list[torch.Tensor]:
        """The guide's vectors of each column's raw texts, on this module's device."""
        guide = self.guide_model()
        return [
            guide.encode(texts, batch_size=len(texts)).clone().to(self.device) for texts in columns
        ]

    def _loss_scale(self) -> float:
        """The fp16 GradScaler's current scale (1 without one): GradCache scales its inner backward by it."""
        scaler = getattr(self._trainer, "scaler", None) if self._trainer is not None else None
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.get("guide"):
            self.guide_model()  # a bad name fails here, before the first step
        if stage == "fit" and self.hparams.grad_cache:
            from lightning.pytorch.strategies import (
                DDPStrategy,
                DeepSpeedStrategy,
                SingleDeviceStrategy,
            )

            strategy = self.trainer.strategy
            supported = isinstance(strategy, DDPStrategy | SingleDeviceStrategy)
            if not supported or isinstance(strategy, DeepSpeedStrategy):  # DeepSpeed subclasses DDP
                raise UserError(
                    f"model.grad_cache works on one device or with DDP, not with {type(strategy).__name__}: "
                    "use trainer.strategy ddp, or set model.grad_cache false (gather_across_devices still works)"
                )

    def calibrate(self) -> None:
        """Refit the encoder's ``dim_scale`` on a seeded sample of training anchors, once per step.

        Every rank computes the same scale (same texts, same weights), so validation losses and
        the saved model agree. A no-op without ``calibration_texts`` or without training pairs.
        """
        n = self.hparams.calibration_texts
        trainer = self._trainer
        if not n or trainer is None or getattr(self, "_calibrated_at", None) == trainer.global_step:
            return
        pairs = getattr(trainer.datamodule, "train_pairs", None) if trainer.datamodule else None
        if not pairs:
            log.warning("calibration_texts is set but the datamodule has no train_pairs: no dim_scale")
            return
        with self.encoder.merged_adapter():
            self.encoder.calibrate(sample_anchors(pairs, n))
        self._calibrated_at = trainer.global_step

    def on_validation_epoch_start(self) -> None:
        self.calibrate()

    def training_step(self, batch: dict[str, list[str]], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        if not torch.isfinite(loss):
            # Stop before the optimizer step so the weights (and last.ckpt) stay the last good ones.
            where = (
                "resume from checkpoints/<run>/checkpoints/last.ckpt"
                if self.global_step
                else "no checkpoint was written yet, so start again"
            )
            raise UserError(
                f"loss became {loss.item()} at step {self.global_step}: lower model.lr or check the pairs; {where}"
            )
        bs = len(batch["anchor"])
        # sync_dist: the mean of the ranks' losses is the loss of the global batch
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, list[str]], batch_idx: int) -> None:
        with self.encoder.torch_backend():  # the loss training computes, not the inference graph
            loss = self._loss(batch)
        self.log(
            "val/loss",
            loss,
            prog_bar=True,
            batch_size=len(batch["anchor"]),
            sync_dist=True,
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.detach() for p in self.parameters() if p.grad is not None]
        if grads:  # one fused kernel for all the norms, not one launch per LoRA matrix
            self.log("train/grad_norm", torch.stack(torch._foreach_norm(grads, 2)).norm(2))

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=self.device.type == "cuda",  # one kernel per step on a GPU
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total)

        def schedule(step: int) -> float:  # linear warm-up, then linear decay (as the paper)
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {unwrapped(n) for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if unwrapped(k) in trainable
        }

    def on_fit_end(self) -> None:
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank asks, not rank 0 alone
        with self._full_parameters():  # FSDP: every rank joins the gather, rank 0 writes
            # The saved scale fits the final weights even when no validation ran at the last step
            # (a resume that starts at max_steps runs none): a no-op when one already did.
            self.calibrate()
            if self.trainer.is_global_zero and log_dir:
                path = self.encoder.save(f"{log_dir}/model")
                log.info("saved encoder config and LoRA adapter to %s", path)

    def _full_parameters(self) -> AbstractContextManager[Any]:
        """Under FSDP, the unsharded weights on rank 0 for the duration of the block; else a no-op."""
        from lightning.pytorch.strategies import FSDPStrategy

        if not isinstance(self.trainer.strategy, FSDPStrategy):
            return nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(
            self.trainer.strategy.model, writeback=False, rank0_only=True, offload_to_cpu=True
        )


def unwrapped(name: str) -> str:
    """A parameter name without the wrapper segments FSDP and activation checkpointing insert."""
    for part in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(part, "")
    return name
