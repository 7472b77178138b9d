"""The Python API of detection: `Detector("bundle")(["a.npy", features, ...])`.

    from hamnet_deploy import Detector
    det = Detector("bundle")                     # any model `hamnet detect --model` takes
    results = det(["video1.npy", "feats/"])     # files, folders, globs or (T, D) arrays
    results.to_json("results.json")

It starts a backend once (as `hamnet detect` chooses it: `backend`, `device`, `threads`
mean what the options of that name mean), then runs the one detection loop
(`runtime.detect.detect_items`) for every call. NumPy only, like the rest of the runtime:
it runs where only NumPy and ONNX Runtime or TensorRT are installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from hamnet_deploy.runtime.backends.select import resolve_model, select_runner
from hamnet_deploy.runtime.detect import detect_items, repeat_reason
from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.feature_files import find_feature_files, video_id
from hamnet_deploy.runtime.results import Results

Inputs = Any
"""A feature file, folder or glob (str / PathLike), a (T, D) array, a mapping
{video id: file or array}, or a list of these."""


class Detector:
    """A started model: call it on inputs to get `Results`.

    Args:
        model: bundle folder or training run (default: $HAMNET_MODEL, else ./bundle).
        backend, device, threads: as `hamnet detect --backend/--device/--threads`.
        batch_size, max_t: windows per network call, chunk length (`--batch-size`, `--max-t`).
        preset: "released" (the bundle's settings: what evaluation uses) or "deploy" (hard
            NMS, top 5 per class and 20 per video, no negative scores), as `--preset`.
        conf: drop detections scoring below this (`--conf`).
        sets: post-processing `key=value` items, as `--set` (after the preset).
        **settings: post-processing settings by name (`class_threshold=0.5`, `nms="hard"`,
            `max_detections=20`), as the options of the same name.
    """

    def __init__(self, model: str | os.PathLike | None = None, *, backend: str = "auto", device: str = "auto",
                 threads: int | None = None, batch_size: int = 8, max_t: int | None = None,
                 preset: str = "released", conf: float | None = None, sets: Iterable[str] = (),
                 ort_trt: Any = None, **settings: Any) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
        if max_t is not None and max_t < 1:
            raise ConfigError(f"--max-t {max_t}: must be >= 1")
        self.model = resolve_model(model)
        self.batch_size, self.max_t = batch_size, max_t
        self.selection = select_runner(self.model, backend, device, threads=threads, ort_trt=ort_trt)
        try:
            post = self.selection.info.postprocess.preset(preset).with_overrides(list(sets))
            changes = {k: v for k, v in {**settings, "min_score": conf}.items() if v is not None}
            self.post = post.replace(**changes) if changes else post
        except Exception:
            self.close()
            raise

    # ------------------------------------------------------------ what it runs
    @property
    def info(self) -> Any:
        """The model's classes, feature_dim, receptive_radius, snippet_seconds (`ModelInfo`)."""
        return self.selection.info

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    @property
    def backend(self) -> str:
        return self.selection.backend

    def describe(self) -> str:
        """The backend, its model file and device, and why it was chosen."""
        return f"{self.selection.describe()} ({self.selection.reason})"

    # ------------------------------------------------------------ running
    def __call__(self, inputs: Inputs, *, durations: Mapping[str, float | None] | None = None,
                 recursive: bool = False, on_video: Callable[[], None] | None = None) -> Results:
        """Detect actions in `inputs`; one `VideoResult` per video (and per input that
        failed). `durations` (video -> seconds) clip detections; `on_video` is called once
        per input (progress)."""
        return self.run(self.expand(inputs, recursive), durations=durations, on_video=on_video)

    def expand(self, inputs: Inputs, recursive: bool = False) -> list[tuple[str, Any]]:
        """`inputs` as (video id, file or array) items; a path that names nothing becomes
        an item the run reports as failed."""
        if isinstance(inputs, (str, os.PathLike, np.ndarray, Mapping)):
            inputs = [inputs]
        inputs = list(inputs)
        items: list[tuple[str, Any]] = []
        paths = [x for x in inputs if isinstance(x, (str, os.PathLike))]
        paths_done = False
        for i, x in enumerate(inputs):
            if isinstance(x, Mapping):
                items += [(str(k), v) for k, v in x.items()]
            elif isinstance(x, np.ndarray):
                items.append((f"video_{i}", x))
            elif isinstance(x, (str, os.PathLike)):
                if not paths_done:  # all paths at once, where the first one was: a file named twice runs once
                    paths_done = True
                    files, missing = find_feature_files(paths, recursive=recursive)
                    items += [(video_id(f), f) for f in files]
                    items += [(m.path, _Missing(f"{m.path}: {m.reason}")) for m in missing]
            else:
                raise ConfigError(f"input {i}: {type(x).__name__} is not a feature file, folder, glob or "
                                  "(T, D) array")
        return items

    @staticmethod
    def missing(items: list[tuple[str, Any]]) -> list[tuple[str, str]]:
        """The (input, reason) of the items `expand` found nothing for."""
        return [(vid, src.reason) for vid, src in items if isinstance(src, _Missing)]

    def run(self, items: list[tuple[str, Any]], *, durations: Mapping[str, float | None] | None = None,
            on_video: Callable[[], None] | None = None) -> Results:
        """Detect on (video id, file or array) items (`expand`)."""
        tick = on_video or (lambda: None)
        missing = self.missing(items)
        for _ in missing:
            tick()
        info = self.info
        run = detect_items([(v, s) for v, s in items if not isinstance(s, _Missing)], self.selection.runner,
                           radius=info.receptive_radius, feature_dim=info.feature_dim, classes=info.classes,
                           post=self.post, max_t=self.max_t, batch_size=self.batch_size, durations=durations,
                           on_video=tick)
        run.failed = missing + run.failed
        return Results.from_run(run, info.classes)

    def stream(self, items: list[tuple[str, Any]], *, chunk: int = 256,
               durations: Mapping[str, float | None] | None = None,
               on_video: Callable[[], None] | None = None) -> Iterator[Results]:
        """`run` over `items` a chunk of videos at a time, yielding each chunk's `Results`:
        what a caller keeps is up to it, so memory does not grow with the number of
        videos. A video id that repeats an earlier chunk's fails as it does within one."""
        first: dict[str, str] = {}
        todo: list[tuple[str, Any]] = []
        for vid, source in items:
            if isinstance(source, _Missing):
                todo.append((vid, source))
                continue
            name = vid if isinstance(source, np.ndarray) else str(source)
            if vid in first:
                todo.append((name, _Missing(repeat_reason(name, vid, first[vid]))))
            else:
                first[vid] = name
                todo.append((vid, source))
        for start in range(0, len(todo), max(1, int(chunk))):
            yield self.run(todo[start:start + chunk], durations=durations, on_video=on_video)

    # ------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Stop the backend (frees its memory); calling it again does nothing."""
        self.selection.runner.deactivate()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Detector({str(self.model)!r}, backend={self.backend!r}, {len(self.classes)} classes)"


class _Missing:
    """An input path that named no feature file (its reason)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
