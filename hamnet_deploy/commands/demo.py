"""`hamnet demo`: the whole product on the embedded synthetic data, stage by stage:
synth -> train (short) -> eval -> export (ONNX + INT8) -> detect -> eval of detect's output."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer
from rich.rule import Rule

from hamnet_deploy.console import console, handle_errors, import_torch
from hamnet_deploy.display import map_table, p, print_summary
from hamnet_deploy.reporting import RichReporter
from hamnet_deploy.runtime.errors import ConfigError

# Small on purpose: the demo shows every stage in a few minutes on 2 CPU cores.
DEMO_SETTINGS = ["model.attention_dim=128", "data.batch_size=10", "optim.lr=1e-3", "eval_every=0", "device=cpu"]


def _stage(title: str) -> float:
    console.print(Rule(f"[bold]{title}"))
    return time.perf_counter()


def _done(start: float, what: str) -> None:
    console.print(f"[green]ok[/] {what} ({time.perf_counter() - start:.1f} s)", highlight=False)


@handle_errors
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for the data, run, bundle and results."),
    dim: int = typer.Option(128, "--dim", help="Feature dimension of the synthetic data (real I3D: 2048)."),
    videos: int = typer.Option(200, "--videos", help="Synthetic videos (about half train, half test)."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and the training run."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an earlier demo in --out."),
) -> None:
    """Run synth -> train -> eval -> export -> detect on synthetic data, printing each stage."""
    import_torch()
    from hamnet_deploy.export.options import ExportOptions
    from hamnet_deploy.export.pipeline import run_export
    from hamnet_deploy.runtime.detections import read_results
    from hamnet_deploy.runtime.detector import Detector
    from hamnet_deploy.runtime.evaluation import evaluate_detection
    from hamnet_deploy.training.checkpoint import load_model
    from hamnet_deploy.training.data import load_dataset
    from hamnet_deploy.training.evaluate import evaluate_model
    from hamnet_deploy.training.recipes import load_recipe
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset
    from hamnet_deploy.training.trainer import train

    if out.exists() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"{out} is not empty: pass --force to replace the earlier demo, or choose --out")
        shutil.rmtree(out)
    began = time.perf_counter()
    console.print(f"[bold]hamnet demo[/]: synthetic THUMOS-like data with D = {dim} (real I3D features have "
                  f"D = 2048; the demo uses a reduced dimension so it runs in minutes on a CPU)", highlight=False)

    t = _stage("1/6 synth: generate the dataset")
    data_dir = out / "data"
    ann = generate_dataset(data_dir, SynthConfig(videos=videos, dim=dim, seed=seed))
    _done(t, f"{len(ann.videos)} videos ({len(ann.names('validation'))} train, {len(ann.names('test'))} test), "
             f"{ann.num_classes} classes -> {data_dir}")

    t = _stage("2/6 train: HAM-Net, all six loss terms")
    dataset = load_dataset(data_dir)
    cfg = load_recipe("thumos14").with_overrides([*DEMO_SETTINGS, f"epochs={epochs}", f"seed={seed}"])
    console.print(f"recipe thumos14 with {', '.join(DEMO_SETTINGS[:3])}, {epochs} epochs", highlight=False)
    run = out / "run"
    with RichReporter(console) as report:
        train(cfg, dataset, run, report=report)
    _done(t, f"checkpoint in {run}")

    t = _stage("3/6 eval: the checkpoint on the test split")
    loaded = load_model(run)
    test = dataset.select(loaded.config.data.test_subset)
    summary = evaluate_model(loaded.model, test, loaded.postprocess, loaded.config.recipe)
    print_summary(summary, console)
    _done(t, f"average mAP {100 * summary.average:.2f} % over {len(test)} test videos")

    t = _stage("4/6 export: ONNX (+ parity) and INT8 for CPUs in a verified bundle")
    bundle = out / "bundle"
    with RichReporter(console) as report:
        run_export(run, bundle, ExportOptions(skip_parity_long=True, int8_cpu=True, calib=str(data_dir),
                                              calib_videos=16), report=report)
    _done(t, f"bundle in {bundle}")

    t = _stage("5/6 detect: the bundle on the test videos (ONNX Runtime, no PyTorch)")
    results = out / "results.json"
    files = [data_dir / "videos" / f"{name}.npy" for name in test.names]
    with Detector(bundle, backend="onnxruntime", device="cpu") as detector:
        console.print(f"[bold]backend[/] {p(detector.selection.describe())}", soft_wrap=True, highlight=False)
        found = detector(files, durations={v: a.duration for v, a in ann.videos.items()})
    found.write(results)
    _done(t, f"{len(found) - len(found.failed)} videos, {len(found.detections)} detections in "
             f"{found.timing['seconds']:.2f} s -> {results}")

    t = _stage("6/6 eval: detect's results against the ground truth")
    dets = read_results(results, ann.classes)
    result = evaluate_detection(ann, dets, subset="test")
    console.print(map_table(result, title=f"{results.name}: {len(dets)} detections"))
    same = abs(result.average_map - summary.average) < 1e-4
    _done(t, f"average mAP {100 * result.average_map:.2f} % "
             + ("(same as the PyTorch checkpoint)" if same else f"(checkpoint: {100 * summary.average:.2f} %)"))
    console.print(Rule())
    console.print(f"demo finished in {time.perf_counter() - began:.0f} s. Try: hamnet detect "
                  f"{data_dir / 'videos'} --model {bundle} --plot {out / 'plots'} -a {data_dir / 'annotations.json'}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
