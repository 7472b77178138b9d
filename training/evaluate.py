"""The validate step of training: a PyTorch HAM-Net over a dataset split through the
runtime's one inference path (`runtime.inference` with the PyTorch runner), scored by
`runtime.scoring`, so the trainer's mAP, `hamnet eval RUN --data` and detect's mAP on
an exported model are computed the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hamnet_deploy.runtime.inference import Inference
from hamnet_deploy.runtime.postprocess import PostprocessConfig
from hamnet_deploy.runtime.scoring import EvalSummary, Outputs, evaluate_outputs, thresholds_for
from hamnet_deploy.training.config import TrainConfig
from hamnet_deploy.training.dataset import WtalDataset
from hamnet_deploy.training.torch_runner import TorchRunner

ATTENTION_TERMS = ("sal", "ssal", "sparsity", "guide")
"""Loss terms that pass gradient to the attention branch (HAL's hard mask passes none)."""
EVAL_BATCH = 8
"""Windows per forward pass in evaluation (videos of equal length batch together)."""


def attention_trained(cfg: TrainConfig) -> bool:
    """Whether any active loss term trains the attention branch (False for Table 1's exp1,
    BCL only: its attention stays at its random initialisation)."""
    loss = cfg.effective_loss()
    return any(getattr(loss, f"use_{t}") for t in ATTENTION_TERMS)


def postprocess_config(cfg: TrainConfig) -> PostprocessConfig:
    """Post-processing settings that match a training config (top-k ratio, snippet
    length); a model whose attention no loss trains localizes with the CAS foreground
    probability (`attention_source="cas"`)."""
    return PostprocessConfig(topk_ratio=float(cfg.loss.r), snippet_seconds=float(cfg.data.snippet_seconds),
                             attention_source="attention" if attention_trained(cfg) else "cas")


def model_outputs(model: Any, data: WtalDataset, batch_size: int = EVAL_BATCH) -> Outputs:
    """(cas, attention) of every video of `data`, whole length, eval mode (the model's
    mode is restored afterwards), on the device the model is on."""
    with TorchRunner.from_model(model) as runner:
        infer = Inference(runner, runner.receptive_radius, batch_size=batch_size)
        return dict(zip(data.names, infer.run(data.features), strict=True))


def evaluate_model(model: Any, data: WtalDataset, post: PostprocessConfig, recipe: str = "thumos14",
                   thresholds: Sequence[float] | None = None) -> EvalSummary:
    """Run `model` over every video of `data` and score the detections against its ground truth."""
    return evaluate_outputs(data.annotations, model_outputs(model, data), post,
                            thresholds or thresholds_for(recipe), data.classes)
