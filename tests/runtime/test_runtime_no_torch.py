"""Nothing under runtime/ imports torch, directly or indirectly: every runtime module is
imported in a subprocess where `import torch` fails (a sys.meta_path blocker, plus a fake
`torch` package first on PYTHONPATH whose __init__ raises ImportError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, importlib.abc, pkgutil, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"blocked: {name}")

sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker does not work")

import hamnet_deploy.runtime
runtime = hamnet_deploy.runtime
names = ["hamnet_deploy.runtime"] + [m.name for m in pkgutil.walk_packages(runtime.__path__, "hamnet_deploy.runtime.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not leaked, leaked
print("\\n".join(names))
"""


def test_every_runtime_module_imports_without_torch(tmp_path):
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("fake torch: PyTorch is not installed here")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    imported = set(out.stdout.split())
    for name in ("hamnet_deploy.runtime.postprocess", "hamnet_deploy.runtime.proposals", "hamnet_deploy.runtime.nms", "hamnet_deploy.runtime.detections",
                 "hamnet_deploy.runtime.evaluation", "hamnet_deploy.runtime.annotations", "hamnet_deploy.runtime.fileio", "hamnet_deploy.runtime.errors"):
        assert name in imported
