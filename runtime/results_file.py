"""The results JSON or CSV written as results arrive, chunk by chunk, so that detecting
on a large archive never holds every video's detections (or their JSON) in memory.
The file is built under a temporary name and renamed into place when `close()` is
reached; an error on the way leaves nothing (`fileio.atomic_write`).

The bytes are those of `json.dump(doc, indent=1)` of the whole document (and of
`Detections.to_csv` for CSV), whatever the chunking: `Results.to_json`/`to_csv` write
through here too, so one writer serves `hamnet detect --out`, `--merge` and the API.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import IO, Any

from hamnet_deploy.runtime.detections import (
    CSV_COLUMNS,
    EXTERNAL_DATA,
    csv_empty_row,
    csv_failed_row,
    failed_entries,
)
from hamnet_deploy.runtime.fileio import atomic_write


def _nested(value: Any, level: int) -> str:
    """`value` as json.dump(indent=1) writes it `level` deep."""
    return json.dumps(value, indent=1).replace("\n", "\n" + " " * level)


class ResultsStream:
    """Writes results (`runtime.results.Results`, one chunk at a time) to a text handle:
    `add(chunk)` for each chunk, then `finish()`."""

    def __init__(self, handle: IO[str], as_csv: bool) -> None:
        self.handle, self.as_csv = handle, as_csv
        self.empty: list[str] = []  # CSV: videos without detections, listed after the detections
        self.failed: list[tuple[str, str]] = []
        self.videos = self.detections = 0
        self._wrote_one = False
        if as_csv:
            self._csv = csv.writer(handle, lineterminator="\n")
            self._csv.writerow(CSV_COLUMNS)
        else:
            handle.write('{\n "version": "VERSION 1.3",\n "results": {')

    def add(self, results: Any) -> None:
        """Write the videos of one `Results` chunk; its failed inputs are kept for the end."""
        context = results._context()
        dets = results.detections
        self.failed += context["failed"]
        self.videos += len(context["videos"])
        self.detections += len(dets)
        if self.as_csv:
            self._csv.writerows(dets.csv_rows(context["class_score"]))
            found = set(dets.video.tolist())
            self.empty += [v for v in context["videos"] if v not in found]
            return
        per_video = dets.to_results_json(videos=context["videos"], class_score=context["class_score"])["results"]
        for video, entries in per_video.items():
            self.handle.write(f"{',' if self._wrote_one else ''}\n  {json.dumps(video)}: {_nested(entries, 2)}")
            self._wrote_one = True

    def finish(self) -> None:
        """Write what comes after the videos (empty videos and failures for CSV; the
        closing keys for JSON)."""
        if self.as_csv:
            self._csv.writerows(csv_empty_row(v) for v in self.empty)
            self._csv.writerows(csv_failed_row(name, reason) for name, reason in self.failed)
            return
        self.handle.write("\n }" if self._wrote_one else "}")
        self.handle.write(f',\n "external_data": {_nested(EXTERNAL_DATA, 1)}')
        if self.failed:
            self.handle.write(f',\n "failed": {_nested(failed_entries(self.failed), 1)}')
        self.handle.write("\n}\n")


class ResultsFile:
    """`with ResultsFile(path) as out: out.add(chunk) ...`: the results file (.csv: CSV,
    anything else JSON), renamed into place when the block ends without an error."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        self.stream: ResultsStream | None = None

    def __enter__(self) -> ResultsFile:
        handle = self._stack.enter_context(atomic_write(self.path, "w"))
        self.stream = ResultsStream(handle, self.path.suffix.lower() == ".csv")
        return self

    def add(self, results: Any) -> None:
        assert self.stream is not None, "use ResultsFile in a with block"
        self.stream.add(results)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if kind is None and self.stream is not None:
            try:
                self.stream.finish()
            except BaseException as error:  # the temp file goes, the error goes on
                self._stack.__exit__(type(error), error, error.__traceback__)
                raise
        return self._stack.__exit__(kind, exc, tb)


def results_text(results: Any, as_csv: bool) -> str:
    """The whole file of `results` as text."""
    buf = io.StringIO()
    stream = ResultsStream(buf, as_csv)
    stream.add(results)
    stream.finish()
    return buf.getvalue()
