"""What a detection run returns: one `VideoResult` per input (detections, video-level
class probabilities, status) in a `Results` list that writes the results files
(`to_json`, `to_csv`: every processed video listed, failed inputs recorded) and makes a
pandas table. `hamnet detect --out` and `Detector(...)(...)` write through here."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.detections import Detections, activitynet_document
from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.fileio import write_json_atomic, write_text_atomic


@dataclass
class VideoResult:
    """One input: `status` "ok" (it ran; `detections` may be empty) or "failed" (`error`
    says why). `class_probs`: video-level probability of each class, in [0, 1]."""

    video: str
    status: str
    detections: Detections
    class_probs: dict[str, float] = field(default_factory=dict)
    snippets: int = 0
    error: str | None = None

    @classmethod
    def failure(cls, name: str, reason: str, classes: Sequence[str]) -> VideoResult:
        """An input that failed (`name`: its path, or the video id of an array)."""
        return cls(name, "failed", Detections.empty(classes), error=reason)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def rows(self) -> list[dict[str, Any]]:
        """The detections as dicts (label, score, start, end, class_score), best first."""
        d = self.detections.sorted()
        return [{"label": d.classes[c], "score": float(s), "start": float(a), "end": float(b),
                 "class_score": self.class_probs.get(d.classes[c], float("nan"))}
                for c, s, a, b in zip(d.label.tolist(), d.score.tolist(), d.t_start.tolist(), d.t_end.tolist(),
                                      strict=True)]

    def __repr__(self) -> str:
        what = f"{len(self.detections)} detections" if self.ok else f"failed: {self.error}"
        return f"VideoResult({self.video!r}, {what})"


@dataclass
class Results(Sequence[VideoResult]):
    """Every input of a run, in order (the videos that ran, then those that failed)."""

    classes: tuple[str, ...]
    videos: list[VideoResult]
    timing: dict[str, float] = field(default_factory=dict)
    run: Any = field(default=None, repr=False)
    """The `runtime.detect.DetectRun` behind it (model outputs, inference statistics)."""

    @classmethod
    def from_run(cls, run: Any, classes: Sequence[str]) -> Results:
        """From a `runtime.detect.DetectRun`."""
        classes = tuple(classes)
        out = [VideoResult(v, "ok", run.detections.for_video(v),
                           {c: float(p) for c, p in zip(classes, run.video_scores[v].tolist(), strict=True)},
                           int(run.outputs[v][0].shape[0])) for v in run.videos]
        out += [VideoResult.failure(name, reason, classes) for name, reason in run.failed]
        timing = {"network_s": run.network_seconds, "postprocess_s": run.post_seconds, "seconds": run.seconds}
        return cls(classes, out, timing, run)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: Any) -> Any:
        return self.videos[index]

    def __iter__(self) -> Iterator[VideoResult]:
        return iter(self.videos)

    @property
    def detections(self) -> Detections:
        """All detections of the videos that ran, in one table."""
        return Detections.concatenate([r.detections for r in self.videos if r.ok], self.classes)

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [(r.video, r.error or "") for r in self.videos if not r.ok]

    def _context(self) -> dict[str, Any]:
        """What the writers need besides the detections (`Detections.to_results_json`); the
        class scores in the order of `self.detections` (the ok videos' tables joined)."""
        ok = [r for r in self.videos if r.ok]
        score = np.concatenate([np.array([r.class_probs.get(c, np.nan) for c in self.classes])[r.detections.label]
                                for r in ok]) if ok else np.zeros(0)
        return {"videos": [r.video for r in ok], "failed": self.failed, "class_score": score}

    def to_dict(self) -> dict[str, Any]:
        """The ActivityNet results object, every processed video listed and failures
        under "failed" (`Detections.to_results_json`)."""
        return self.detections.to_results_json(**self._context())

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The results JSON as text; written atomically to `path` when given (through the
        one results writer, `runtime.results_file`)."""
        from hamnet_deploy.runtime.results_file import results_text

        text = results_text(self, as_csv=False)
        if path is not None:
            write_text_atomic(path, text)
        return text.rstrip("\n")

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The results CSV as text; written atomically to `path` when given."""
        from hamnet_deploy.runtime.results_file import results_text

        text = results_text(self, as_csv=True)
        if path is not None:
            write_text_atomic(path, text)
        return text

    def to_classification(self, path: str | os.PathLike | None = None) -> dict[str, Any]:
        """Video-level classification in the ActivityNet classification format
        (`{"results": {video: [{"label", "score"}, ...]}}`, classes by descending
        probability); written atomically to `path` when given."""
        doc = activitynet_document(self.classification_entries(), self.failed)
        if path is not None:
            write_json_atomic(path, doc)
        return doc

    def classification_entries(self) -> dict[str, list[dict[str, Any]]]:
        """{video: [{"label", "score"}, ...]} of the videos that ran, classes by descending
        probability (the "results" of `to_classification`)."""
        return {r.video: [{"label": c, "score": float(f"{p:.9g}")}
                          for c, p in sorted(r.class_probs.items(), key=lambda kv: -kv[1])]
                for r in self.videos if r.ok}

    def write(self, path: str | os.PathLike) -> None:
        """JSON or CSV by the file's suffix (`.csv` is CSV, anything else JSON)."""
        if Path(path).suffix.lower() == ".csv":
            self.to_csv(path)
        else:
            self.to_json(path)

    def to_pandas(self) -> Any:
        """A pandas DataFrame, one row per detection (video, label, score, start, end,
        class_score); needs pandas (`pip install 'hamnet-deploy[pandas]'`)."""
        try:
            import pandas as pd
        except ImportError:
            raise ConfigError("Results.to_pandas needs pandas: pip install 'hamnet-deploy[pandas]' (or use "
                              ".to_csv() / .to_json())") from None

        rows = [{"video": r.video, **row} for r in self.videos if r.ok for row in r.rows()]
        return pd.DataFrame(rows, columns=["video", "label", "score", "start", "end", "class_score"])

    def __repr__(self) -> str:
        bad = len(self.failed)
        return (f"Results({len(self) - bad} videos, {len(self.detections)} detections"
                + (f", {bad} failed" if bad else "") + ")")
