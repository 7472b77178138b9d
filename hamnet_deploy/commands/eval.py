"""`hamnet eval PREDICTIONS --annotations ANN`: detection mAP of a results file (SPEC §5).

The command is split into loading the ground truth, getting the detections, scoring
and reporting, so other sources of detections (a checkpoint or bundle plus features)
can be added as another branch of `_detections` without touching the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hamnet_deploy.console import console, err_console, handle_errors
from hamnet_deploy.display import map_table, p
from hamnet_deploy.runtime.annotations import Annotations
from hamnet_deploy.runtime.backends.select import is_checkpoint
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.fileio import read_text
from hamnet_deploy.training.data import load_ground_truth


def read_video_list(path: Path) -> list[str]:
    """One video id per line; blank lines and `#` comments are skipped."""
    text = read_text(path, "exclude file")
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def choose_subset(gt: Annotations, videos: list[str], subset: str) -> str | None:
    """`all` -> every video; `auto` -> the one subset holding all predicted videos
    (every video when they span several or none); anything else must exist."""
    key = subset.strip()
    if key.lower() == "all":
        return None
    if key.lower() == "auto":
        found = {gt.videos[v].subset for v in videos if v in gt.videos}
        return found.pop() if len(found) == 1 else None
    if key not in gt.subsets():
        raise ConfigError(f"--subset {key!r}: the annotations have subsets {', '.join(gt.subsets()) or 'none'}; "
                          f"pick one, or 'all'")
    return key


def _checkpoint_detections(checkpoint: Path, data: Path | None, subset: str):
    """Run a checkpoint over a dataset split through the one inference path: (ground truth,
    detections, subset, video scores)."""
    from hamnet_deploy.runtime.inference import Inference
    from hamnet_deploy.runtime.scoring import detect_outputs
    from hamnet_deploy.training.data import load_dataset, refuse_recorded_pickle
    from hamnet_deploy.training.evaluate import EVAL_BATCH
    from hamnet_deploy.training.torch_runner import TorchRunner

    runner = TorchRunner(checkpoint, device="auto")
    with runner:
        if data is None:  # the dataset the run was trained on, as its config.json records it
            recorded = runner.config.data.path
            if not recorded or not Path(recorded).exists():
                raise ConfigError(f"{checkpoint} is a checkpoint and the dataset it records "
                                  f"({recorded or 'none'}) is not here: add --data DATASET")
            data = Path(recorded)
            refuse_recorded_pickle(data, checkpoint)
            console.print(f"data: {p(data)} (recorded by the run)", highlight=False, soft_wrap=True)
        with console.status(f"loading {p(data)}"):
            dataset = load_dataset(data)
        if dataset.classes != runner.classes:
            raise DataError(f"{data}: its {dataset.num_classes} classes differ from the checkpoint's "
                            f"{len(runner.classes)}; evaluate on the dataset the model was trained for")
        key = runner.config.data.test_subset if subset.lower() == "auto" else subset
        part = dataset if key.lower() == "all" else dataset.select(key)
        with console.status(f"running the model over {len(part)} videos ({p(runner.describe())})"):
            outputs = Inference(runner, runner.receptive_radius, batch_size=EVAL_BATCH).run(part.features)
    durations = {v: part.annotations.videos[v].duration for v in part.names}
    dets, scores = detect_outputs(dict(zip(part.names, outputs, strict=True)), runner.postprocess, part.classes,
                                  durations)
    return dataset.annotations, dets, (None if key.lower() == "all" else key), scores


def _detections(predictions: Path, gt: Annotations):
    """Detections from a results JSON or CSV."""
    from hamnet_deploy.runtime.detections import read_results

    if predictions.is_dir():
        raise ConfigError(f"{predictions}: is a folder but not a checkpoint; give a results JSON/CSV file "
                          "or a run folder from `hamnet train`")
    return read_results(predictions, gt.classes)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    @handle_errors
    def eval_command(
        predictions: Annotated[Path, typer.Argument(
            help="Detections: ActivityNet results JSON ({\"results\": {video: [{label, score, segment}]}}) "
                 "or CSV (video,label,score,t_start,t_end); or a checkpoint (run folder) with --data.")],
        annotations: Annotated[Path | None, typer.Option(
            "--annotations", "-a", help="Ground truth: a dataset folder of either layout, its annotation JSON, "
                                        "or a W-TALC annotation folder (pickled arrays: trusted data only). "
                                        "With a checkpoint: default the dataset's own.")] = None,
        data: Annotated[Path | None, typer.Option(
            "--data", "-d", help="With a checkpoint: the dataset whose features to run it on "
                                 "(subset 'auto' = the run's test split).")] = None,
        subset: Annotated[str, typer.Option(
            "--subset", help="Videos to evaluate: a subset name (e.g. test), 'all', or 'auto' (the subset "
                             "holding the predicted videos).")] = "auto",
        exclude_file: Annotated[Path | None, typer.Option(
            "--exclude-file", help="File with video ids to leave out, one per line.")] = None,
        ambiguous: Annotated[Path | None, typer.Option(
            "--ambiguous", help="Ambiguous regions (`video start end` per line, e.g. THUMOS14 "
                                "Ambiguous_test.txt): false positives overlapping them are not counted.")] = None,
        thresholds: Annotated[str, typer.Option(
            "--thresholds", help="tIoU thresholds: thumos (0.1:0.1:0.7), activitynet (0.5:0.05:0.95) or "
                                 "a list like 0.3,0.5,0.7.")] = "thumos",
        per_class: Annotated[bool, typer.Option("--per-class", help="Add one row of AP per class.")] = False,
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="Also write the result (mAP per threshold, per-class AP, settings) as JSON.")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", hidden=True, help="Old name of --out.")] = None,
        force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing --out file.")] = False,
    ) -> None:
        """Score detections against ground truth: mAP per tIoU threshold and their average."""
        from hamnet_deploy.runtime.evaluation import (
            evaluate_detection,
            load_ambiguous,
            parse_thresholds,
        )
        from hamnet_deploy.runtime.fileio import check_output, write_json_atomic

        if out is not None and json_out is not None:
            raise ConfigError("--json is the old name of --out: give one of them")
        option = "--json" if json_out is not None else "--out"
        json_out = json_out if json_out is not None else out
        check_output(json_out, option, [predictions, annotations, data, exclude_file, ambiguous], force)
        tiou = parse_thresholds(thresholds)
        if not predictions.exists():
            raise DataError(f"{predictions}: not found; give a results JSON/CSV file or a checkpoint folder")
        if annotations is not None and not annotations.exists():
            raise DataError(f"{annotations}: annotations not found; give the annotation JSON or W-TALC folder")
        scores = None
        if is_checkpoint(predictions):
            gt, dets, chosen, scores = _checkpoint_detections(predictions, data, subset)
            if annotations is not None:
                gt = load_ground_truth(annotations)
        else:
            if annotations is None:
                raise ConfigError("--annotations is required to score a results file")
            gt = load_ground_truth(annotations)
            dets = _detections(predictions, gt)
            chosen = choose_subset(gt, dets.videos(), subset)
        exclude = read_video_list(exclude_file) if exclude_file is not None else []
        regions = load_ambiguous(ambiguous) if ambiguous is not None else None
        result = evaluate_detection(gt, dets, tiou, subset=chosen, exclude=exclude, ambiguous=regions)

        where = f"subset {chosen}" if chosen is not None else "all subsets"
        title = (f"{predictions.name}: {len(dets)} detections, {result.num_videos} videos ({where}), "
                 f"{int(result.num_ground_truth.sum())} ground-truth segments")
        # Never let a narrow terminal (or a pipe: 80 columns) drop threshold columns.
        names = max((len(c) for c in result.classes), default=4) if per_class else 8
        needed = names + 8 * (len(tiou) + 1) + 2
        out = console if console.width >= needed else Console(width=needed, highlight=False)
        out.print(map_table(result, per_class=per_class, title=title))
        if scores is not None:
            from hamnet_deploy.runtime.evaluation import evaluate_classification

            console.print(f"classification mAP (%) {100 * evaluate_classification(gt, scores):.2f}")
        if result.dropped_predictions:
            console.print(f"[dim]{result.dropped_predictions} detections of annotated videos outside the "
                          f"evaluated set were left out[/]")
        if result.ambiguous_ignored is not None:
            console.print("[dim]false positives forgiven for overlapping Ambiguous regions: "
                          + ", ".join(f"{t:g}: {n}" for t, n in zip(result.thresholds, result.ambiguous_ignored,
                                                                     strict=True)) + "[/]")
        if len(dets) == 0:
            err_console.print(f"[yellow]warning:[/] {p(predictions)} holds no detections: every AP is 0 (check "
                              "that it is the file hamnet detect --out wrote)", highlight=False, soft_wrap=True)
        elif result.num_videos and result.dropped_predictions == len(dets):
            err_console.print("[yellow]warning:[/] none of the detections is of an evaluated video: every AP is "
                              "0 (check --subset and that the video ids match the annotations)", highlight=False,
                              soft_wrap=True)
        if result.unknown_videos:
            shown = ", ".join(result.unknown_videos[:3])
            err_console.print(f"[yellow]warning:[/] {len(result.unknown_videos)} predicted videos are not in "
                              f"{p(annotations.name) if annotations is not None else 'the dataset'} (e.g. {p(shown)}); their detections count as false positives")
        if json_out is not None:
            report = result.to_dict()
            report["settings"] = {"predictions": str(predictions), "annotations": None if annotations is None else str(annotations),
                                  "subset": chosen, "excluded": len(exclude),
                                  "ambiguous": None if ambiguous is None else str(ambiguous)}
            write_json_atomic(json_out, report)
            console.print(f"wrote {p(json_out)}", highlight=False, soft_wrap=True)
