"""Fixtures of the TensorRT tests: the fake TensorRT + GPU + CUDA memory."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

import hamnet_deploy.runtime.backends.tensorrt as trt_backend
from hamnet_deploy.export import tensorrt_build as tb
from tests.trt_api.fake_trt import H100, FakeCuda, make_fake_trt


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    """Install a fake TensorRT + GPU + CUDA memory; returns a setter for the TensorRT version."""
    cuda = FakeCuda()
    monkeypatch.setattr(tb, "cuda_devices", lambda: [dict(H100)])
    monkeypatch.setattr(trt_backend, "cuda_devices", lambda: [dict(H100)])
    monkeypatch.setattr(trt_backend, "cuda_memory_api", lambda: cuda)
    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path / "cache"))

    def install(version: str = "10.3.0.26", **kw: Any) -> types.ModuleType:
        fake = make_fake_trt(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        return fake

    install.cuda = cuda
    return install

