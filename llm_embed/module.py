"""EmbeddingModule: the training system (encoder + LoRA + InfoNCE + AdamW schedule).

The encoder is injected (``class_path``/``init_args`` in the config), so the same module trains
any backbone, pooling and prompt. Only the LoRA weights train; checkpoints hold only them.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

import lightning as L
import torch
from peft import LoraConfig, get_peft_model

from llm_embed.encoder import Encoder
from llm_embed.errors import UserError
from llm_embed.losses import InfoNCELoss

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
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
        self.save_hyperparameters(ignore=["encoder", "lora"])
        lora = lora if lora is not None else reference_lora()
        self.hparams["lora"] = plain(lora.to_dict())  # plain types keep checkpoints weights_only-loadable
        self.hparams["encoder"] = encoder.config_dict
        self.encoder = encoder
        # peft modifies the backbone in place; wrap once, before the optimizer exists.
        self.encoder.backbone = get_peft_model(encoder.backbone, lora)
        self.loss_fn = InfoNCELoss(temperature=temperature, symmetric=symmetric)
        self.strict_loading = False  # checkpoints hold only the trainable (LoRA) weights
        self.encoder.train()  # from_pretrained leaves the backbone in eval mode

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Embed texts (inference); training goes through :meth:`training_step`."""
        return self.encoder.encode(texts)

    def _loss(self, batch: dict[str, list[str]]) -> torch.Tensor:
        anchors = self.encoder(self.encoder.tokenize(batch["anchor"]))  # (B, D)
        positives = self.encoder(self.encoder.tokenize(batch["positive"]))  # (B, D)
        return self.loss_fn(anchors, positives)

    def training_step(self, batch: dict[str, list[str]], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        if not torch.isfinite(loss):
            # Stop before the optimizer step so the weights (and last.ckpt) stay the last good ones.
            raise UserError(
                f"loss became {loss.item()} at step {self.global_step}: lower model.lr or check the pairs; "
                "resume from checkpoints/<run>/checkpoints/last.ckpt"
            )
        bs = len(batch["anchor"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, list[str]], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True, batch_size=len(batch["anchor"]))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.detach().norm(2) for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.stack(grads).norm(2))

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total)

        def schedule(step: int) -> float:  # linear warm-up, then linear decay (as the paper)
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and self.trainer.log_dir:
            path = self.encoder.save(f"{self.trainer.log_dir}/model")
            log.info("saved encoder config and LoRA adapter to %s", path)


def trainable_fraction(module: torch.nn.Module) -> float:
    """Share of parameters that train (for logs and tests)."""
    total = sum(p.numel() for p in module.parameters())
    train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return train / max(1, total)
