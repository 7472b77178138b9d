"""Rewrite snapshot.json from the real TensorRT bindings (`real_bindings.versions()`):
per version, the members of the enums the fakes use and which of the names the fake
classes declare the real classes have. Run after changing the fakes or the versions:

    python tests/trt_api/update_snapshot.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.trt_api import fake_trt, real_bindings  # noqa: E402


def real_snapshot(version: str, distribution: str) -> dict:
    """What snapshot.json holds for `version`, taken from the real bindings."""
    enums = real_bindings.probe(version, distribution, [], list(fake_trt.FAKE_ENUMS))["enums"]
    fake = fake_trt.make_fake_trt(version, snapshot={"enums": enums})
    classes = {real: getattr(fake, real) for real in fake_trt.fake_classes(fake, version)}
    names = [real for real in classes] + [f"{real}.{n}" for real, cls in classes.items()
                                          for n in fake_trt.declared(cls)]
    found = real_bindings.probe(version, distribution, names, [])["names"]
    members = {real: (sorted(n for n in fake_trt.declared(cls) if found[f"{real}.{n}"]["exists"])
                      if found[real]["exists"] else None) for real, cls in classes.items()}
    return {"enums": enums, "members": members}


def main() -> None:
    data = {v: real_snapshot(v, d) for v, d in real_bindings.versions().items()}
    fake_trt.SNAPSHOT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {fake_trt.SNAPSHOT} ({', '.join(data)})")


if __name__ == "__main__":
    main()
