"""Triton Python-backend model `hamnet_post` (copied as `hamnet_post/1/model.py` by
`hamnet export ... --triton DIR --triton-ensemble`): HAM-Net's post-processing, the
hamnet-deploy runtime's own NumPy code (vendored beside this file, so the Triton
container needs only NumPy) with the bundle's settings (`../hamnet_manifest.json`).

Inputs per request (batch 1): `cas` [1, T, C+1] and `attention` [1, T, 1] from the
`hamnet` model, optional `duration` [1, 1] (seconds; clips the detections, as
`hamnet detect -a` does). Outputs, best detection first: `label` [1, N] (class names),
`score` [1, N], `segment` [1, N, 2] (start, end in seconds), and `class_probability`
[1, C] (video-level). A bad request gets an error response; the others still run.

This file is not imported by hamnet-deploy itself: `triton_python_backend_utils`
exists only inside Triton's Python backend.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the vendored hamnet_deploy.runtime, before any installed one

from hamnet_deploy.runtime.manifest import Manifest  # noqa: E402
from hamnet_deploy.runtime.postprocess import localize_and_score  # noqa: E402

MANIFEST_FILE = HERE.parent / "hamnet_manifest.json"


class TritonPythonModel:
    """The Python backend's model class: `initialize`, `execute`, `finalize`."""

    def initialize(self, args):
        """Read the bundle's manifest: classes and post-processing settings."""
        raw = json.loads(MANIFEST_FILE.read_text(encoding="utf-8"))
        self.manifest = Manifest.from_dict(raw, where=str(MANIFEST_FILE))
        self.post = self.manifest.postprocess
        self.classes = list(self.manifest.classes)

    def execute(self, requests):
        """One response per request, in order."""
        return [self._respond(request) for request in requests]

    def finalize(self):
        """Nothing to release."""

    def _respond(self, request):
        try:
            return pb_utils.InferenceResponse(output_tensors=self._detect(request))
        except Exception as exc:  # one bad request gets its error; the model keeps serving
            text = str(exc).strip().splitlines()
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                f"hamnet_post: {text[0] if text else type(exc).__name__}"))

    def _detect(self, request):
        cas = pb_utils.get_input_tensor_by_name(request, "cas").as_numpy()
        attention = pb_utils.get_input_tensor_by_name(request, "attention").as_numpy()
        if cas.ndim != 3 or cas.shape[0] != 1 or attention.ndim != 3 or attention.shape[0] != 1:
            raise ValueError(f"expected one video per request (cas [1, T, C+1], attention [1, T, 1]); got cas "
                             f"{list(cas.shape)}, attention {list(attention.shape)}")
        given = pb_utils.get_input_tensor_by_name(request, "duration")
        duration = None if given is None else float(np.asarray(given.as_numpy()).reshape(-1)[0])
        dets, probs = localize_and_score([("", cas[0], attention[0], duration)], self.post, classes=self.classes)
        dets, probs = dets.sorted(), probs[0]
        labels = np.array([self.classes[i].encode("utf-8") for i in dets.label.tolist()], dtype=np.object_)
        segments = np.stack([dets.t_start, dets.t_end], axis=-1).astype(np.float64).reshape(1, -1, 2)
        return [pb_utils.Tensor("label", labels.reshape(1, -1)),
                pb_utils.Tensor("score", dets.score.astype(np.float64).reshape(1, -1)),
                pb_utils.Tensor("segment", segments),
                pb_utils.Tensor("class_probability", np.asarray(probs, dtype=np.float64).reshape(1, -1))]
