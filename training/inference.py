"""Run a PyTorch HAM-Net over whole videos and turn the outputs into detections
through the NumPy runtime: the same path the exported model takes, so the trainer's
mAP and `hamnet detect`'s mAP agree."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.postprocess import PostprocessConfig, localize_many, video_scores
from hamnet_deploy.training.config import TrainConfig
from hamnet_deploy.training.data import WtalDataset

ATTENTION_TERMS = ("sal", "ssal", "sparsity", "guide")
"""Loss terms that pass gradient to the attention branch (HAL's hard mask passes none)."""


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


@torch.inference_mode()
def run_model(model: torch.nn.Module, features: Sequence[np.ndarray], device: torch.device,
              max_snippets: int = 20_000) -> list[tuple[np.ndarray, np.ndarray]]:
    """(cas (T, C+1), attention (T,)) float32 per video, full length, eval mode.

    Videos are sorted by length and batched with a padding mask (the model treats the
    padding as zero padding), at most `max_snippets` padded snippets per batch.
    """
    was_training = model.training
    model.eval()
    order = np.argsort([len(f) for f in features], kind="stable")
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(features)
    start = 0
    while start < len(order):
        longest = len(features[order[start]])
        stop = start + 1
        while stop < len(order) and len(features[order[stop]]) * (stop - start + 1) <= max(max_snippets, longest):
            stop += 1
        idx = order[start:stop]
        longest = max(len(features[i]) for i in idx)
        batch = np.zeros((len(idx), longest, features[idx[0]].shape[1]), dtype=np.float32)
        mask = np.zeros((len(idx), longest), dtype=bool)
        for row, i in enumerate(idx):
            batch[row, : len(features[i])] = features[i]
            mask[row, : len(features[i])] = True
        x = torch.from_numpy(batch).to(device)
        m = torch.from_numpy(mask).to(device) if not mask.all() else None
        cas, att = model(x, m)
        cas = cas.float().cpu().numpy()
        att = att.float().cpu().numpy()[..., 0]
        for row, i in enumerate(idx):
            t = len(features[i])
            out[i] = (cas[row, :t], att[row, :t])
        start = stop
    model.train(was_training)
    return out  # type: ignore[return-value]


def detect_dataset(model: torch.nn.Module, data: WtalDataset, post: PostprocessConfig,
                   device: torch.device) -> tuple[Detections, dict[str, np.ndarray]]:
    """Detections and video-level class scores for every video of `data`."""
    outputs = run_model(model, data.features, device)
    items = [(name, cas, att, data.annotations.videos[name].duration)
             for name, (cas, att) in zip(data.names, outputs, strict=True)]
    scores = {name: video_scores(cas, att, post) for name, cas, att, _ in items}
    return localize_many(items, post, classes=data.classes), scores
