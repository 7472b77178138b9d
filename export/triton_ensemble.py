"""The optional Triton ensemble (`hamnet export ... --triton DIR --triton-ensemble`):
features in, detections out, in one Triton call.

    DIR/hamnet_post/config.pbtxt     backend python: the runtime's post-processing
    DIR/hamnet_post/1/model.py       (export/triton_post_model.py)
    DIR/hamnet_post/1/hamnet_deploy/ the runtime modules post-processing needs (NumPy only)
    DIR/hamnet_detect/config.pbtxt   platform ensemble: hamnet -> hamnet_post

The ensemble takes one video per request (`max_batch_size: 1`: videos give different
numbers of detections); Triton's dynamic batcher still batches the `hamnet` network
across concurrent requests of the same T.
"""

from __future__ import annotations

import ast
from pathlib import Path

from hamnet_deploy.export.triton import MODEL_NAME, config_lines, tensor

POST_NAME = f"{MODEL_NAME}_post"
ENSEMBLE_NAME = f"{MODEL_NAME}_detect"
POST_SOURCE = Path(__file__).with_name("triton_post_model.py")
RUNTIME_ROOTS = ("postprocess", "manifest")
"""The runtime modules the Python model imports; what they import comes with them."""


def _outputs(num_classes: int) -> list[str]:
    return [tensor("label", [-1], "TYPE_STRING"), tensor("score", [-1], "TYPE_FP64"),
            tensor("segment", [-1, 2], "TYPE_FP64"), tensor("class_probability", [num_classes], "TYPE_FP64")]


def post_config(num_classes: int) -> str:
    """config.pbtxt of the Python-backend post-processing model."""
    inputs = [tensor("cas", [-1, num_classes + 1]), tensor("attention", [-1, 1]),
              tensor("duration", [1], "TYPE_FP64", optional=True)]
    return config_lines([f'name: "{POST_NAME}"', 'backend: "python"', "max_batch_size: 1",
                         "input [\n" + ",\n".join(inputs) + "\n]",
                         "output [\n" + ",\n".join(_outputs(num_classes)) + "\n]",
                         "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]"])


def _step(model: str, inputs: list[str], outputs: list[str]) -> str:
    maps = [f'      input_map {{\n        key: "{k}"\n        value: "{k}"\n      }}' for k in inputs]
    maps += [f'      output_map {{\n        key: "{k}"\n        value: "{k}"\n      }}' for k in outputs]
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"


def ensemble_config(feature_dim: int, num_classes: int, network: str = MODEL_NAME) -> str:
    """config.pbtxt of the ensemble: `network` (features -> cas, attention), then the
    post-processing model (-> label, score, segment, class_probability)."""
    outputs = ["label", "score", "segment", "class_probability"]
    steps = [_step(network, ["features"], ["cas", "attention"]), _step(POST_NAME, ["cas", "attention"], outputs)]
    return config_lines([f'name: "{ENSEMBLE_NAME}"', 'platform: "ensemble"', "max_batch_size: 1",
                         "input [\n" + tensor("features", [-1, feature_dim]) + "\n]",
                         "output [\n" + ",\n".join(_outputs(num_classes)) + "\n]",
                         "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}"])


def runtime_files() -> dict[str, Path]:
    """Relative path in the model's version folder -> source file: the runtime modules
    post-processing imports (found by reading their imports), the runtime's
    `__init__`, and a small `hamnet_deploy/__init__.py`."""
    import hamnet_deploy.runtime as runtime

    root = Path(runtime.__file__).resolve().parent
    todo, seen = list(RUNTIME_ROOTS), {"__init__", "version"}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            modules += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            todo += [m.split(".")[2] for m in modules if m.startswith("hamnet_deploy.runtime.")]
    return {f"hamnet_deploy/runtime/{name}.py": root / f"{name}.py" for name in sorted(seen)}


PACKAGE_INIT = '"""hamnet-deploy\'s runtime modules that Triton\'s hamnet_post model needs (vendored)."""\n'
