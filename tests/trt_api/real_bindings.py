"""The real TensorRT Python bindings, loadable on a machine without TensorRT.

The bindings wheels (`tensorrt-bindings` 8.6, `tensorrt-cu12-bindings` 10.x / 11.x,
about 1 MB each) are on the package index; the libraries they link against
(libnvinfer, the ONNX parser, the plugins) are not. So each wheel is unpacked as a
`tensorrt` package (with its dist-info, so package metadata is real too) and a stand-in
library is compiled with the system C compiler under each soname the extension needs.
It exports the C factory symbols the extension imports and every one returns NULL:
`import tensorrt` works and every name, signature and enum value is the real one, and
`trt.Builder(logger)` / `trt.Runtime(logger)` fail exactly as on a machine whose CUDA
cannot start (`TypeError: pybind11::init(): factory function returned nullptr`).

Everything is cached (`$HAMNET_TEST_CACHE`, else the user cache folder) and built
atomically, so reruns are offline and take well under a second per version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

VERSIONS = {
    "8.6.1": "tensorrt-bindings",
    "10.13.0.35": "tensorrt-cu12-bindings",
    "11.4.0.106": "tensorrt-cu12-bindings",
}
"""TensorRT versions checked in CI (8.6 as on JetPack 6.0, one 10.x, one 11.x) and the
distribution of their bindings. More: HAMNET_TRT_VERSIONS=10.3.0,11.0.0.114 (comma
separated; the distribution is tensorrt-cu12-bindings, tensorrt-bindings for 8.x)."""

_LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin", "nvparsers")

STUB_C = r"""
/* Stand-in for TensorRT's libraries: the symbols the Python bindings import, all NULL. */
void *createInferBuilder_INTERNAL(void *logger, int version) { return 0; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return 0; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return 0; }
void *getBuilderPluginRegistry(int capability) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
/* 8.x only: the UFF and Caffe parsers (C++ names, mangled by hand). */
void *_ZN11nvuffparser15createUffParserEv(void) { return 0; }
void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(void *self, const char *n, const void *d, int t, int l) {}
void *_ZN14nvcaffeparser117createCaffeParserEv(void) { return 0; }
void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void) {}
"""


class BindingsUnavailable(RuntimeError):
    """The wheel could not be fetched or the stand-in library could not be built."""


def versions() -> dict[str, str]:
    """The versions to check: VERSIONS plus those named in $HAMNET_TRT_VERSIONS."""
    out = dict(VERSIONS)
    for v in filter(None, (s.strip() for s in os.environ.get("HAMNET_TRT_VERSIONS", "").split(","))):
        out[v] = "tensorrt-bindings" if v.startswith("8.") else "tensorrt-cu12-bindings"
    return out


def major(version: str) -> int:
    return int(version.split(".")[0])


def cache_dir() -> Path:
    explicit = os.environ.get("HAMNET_TEST_CACHE")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_cache_dir("hamnet-deploy")) / "tests"


def _publish(tmp: Path, final: Path) -> Path:
    """Rename a finished temporary folder into place (another run may have won)."""
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise
    return final


def wheel(version: str, distribution: str) -> Path:
    """The cached wheel of `distribution==version` for this Python, fetched once."""
    folder = cache_dir() / "wheels"
    prefix = distribution.replace("-", "_") + f"-{version}-"
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(p for p in folder.glob(prefix + "*.whl") if tag in p.name) if folder.is_dir() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "--dest", tmp, f"{distribution}=={version}"],
                             capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        got = list(Path(tmp).glob("*.whl"))
        if out.returncode != 0 or not got:
            raise BindingsUnavailable(f"pip download {distribution}=={version} failed: "
                                      f"{(out.stderr or out.stdout).strip()[-600:]}")
        target = folder / got[0].name
        os.replace(got[0], target)
    return target


def site(version: str, distribution: str) -> Path:
    """A folder to put on sys.path where `import tensorrt` is the real `version` bindings."""
    final = cache_dir() / "site" / version
    if (final / "tensorrt" / "__init__.py").is_file():
        return final
    whl = wheel(version, distribution)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{version}-"))
    with zipfile.ZipFile(whl) as zf:
        for member in zf.namelist():
            top, _, rest = member.partition("/")
            if top == "tensorrt_bindings" and rest:
                dest = tmp / "tensorrt" / rest
            elif top.endswith(".dist-info") and rest:
                dest = tmp / member
            else:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(member))
    if not (tmp / "tensorrt" / "__init__.py").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise BindingsUnavailable(f"{whl.name}: no tensorrt_bindings package inside")
    return _publish(tmp, final)


def stub_libraries(trt_major: int) -> Path:
    """A folder of stand-in lib{nvinfer,nvonnxparser,nvinfer_plugin,nvparsers}.so.<major>."""
    final = cache_dir() / "stub-libs" / str(trt_major)
    if all((final / f"lib{n}.so.{trt_major}").is_file() for n in _LIBRARIES):
        return final
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise BindingsUnavailable("no C compiler (cc) to build the stand-in TensorRT library; install gcc")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{trt_major}-"))
    source = tmp / "stub.c"
    source.write_text(STUB_C)
    for name in _LIBRARIES:
        soname = f"lib{name}.so.{trt_major}"
        out = subprocess.run([compiler, "-shared", "-fPIC", "-O0", f"-Wl,-soname,{soname}", "-o",
                              str(tmp / soname), str(source)], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BindingsUnavailable(f"building {soname} failed: {out.stderr.strip()[-600:]}")
    source.unlink()
    return _publish(tmp, final)


def environment(version: str, distribution: str, libraries: bool = True, block_torch: Path | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a subprocess whose `import tensorrt` is the real `version`: the
    bindings and the checkout on PYTHONPATH; with `libraries` the stand-in libnvinfer on
    LD_LIBRARY_PATH (without: the bindings are installed but the library is missing).
    `block_torch`: a folder holding a `torch` package whose import fails, put first."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    paths = ([str(block_torch)] if block_torch else []) + [str(site(version, distribution)), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if libraries:
        env["LD_LIBRARY_PATH"] = str(stub_libraries(major(version)))
    env.update(extra or {})
    return env


def run_python(code: str, env: dict[str, str], *args: str, cwd: Path | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -c code args...` in `env`; its output as text."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


def probe(version: str, distribution: str, names: list[str], enums: list[str]) -> dict:
    """`probe.py` run against the real `version` bindings: what each of `names` is there,
    every member of `enums`, and what `trt.Builder` / `trt.Runtime` raise."""
    import json

    script = (Path(__file__).with_name("probe.py")).read_text()
    out = run_python(script, environment(version, distribution), json.dumps({"names": names, "enums": enums}))
    if out.returncode != 0:
        raise BindingsUnavailable(f"probing TensorRT {version} failed: {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout)
