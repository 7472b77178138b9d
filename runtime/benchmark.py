"""Latency and throughput of inference runners (used by `hamnet bench`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np


def flops_per_snippet(feature_dim: int, num_classes: int, attention_dim: int = 512) -> int:
    """Forward FLOPs per snippet of HAM-Net (2 x the convolutions' multiply-accumulates):
    two 3-tap D->D convs and a 1x1 D->C+1 conv, two 3-tap convs of the attention branch
    (D->A, A->A) and a 1x1 A->1 conv. 58.3 MFLOP at D = 2048, C = 20, A = 512."""
    d, c, a = int(feature_dim), int(num_classes), int(attention_dim)
    macs = 3 * d * d * 2 + d * (c + 1) + 3 * d * a + 3 * a * a + a
    return 2 * macs


@dataclass
class Timing:
    backend: str
    batch: int
    t: int
    median_ms: float
    p90_ms: float

    @property
    def snippets_per_s(self) -> float:
        return self.batch * self.t / (self.median_ms / 1e3)

    def gflops(self, flops_per_snippet: int) -> float:
        return flops_per_snippet * self.snippets_per_s / 1e9


def time_runner(runner: Any, name: str, batch: int, t: int, dim: int, repeats: int = 20, warmup: int = 3,
                seed: int = 0) -> Timing:
    """Median and 90th-percentile latency of `runner.infer` on random [batch, t, dim] input."""
    x = np.random.default_rng(seed).standard_normal((batch, t, dim), dtype=np.float32)
    for _ in range(warmup):
        runner.infer(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.infer(x)
        times.append((time.perf_counter() - start) * 1e3)
    return Timing(name, batch, t, float(np.median(times)), float(np.percentile(times, 90)))
