"""Versioned, signed model artifacts. No file is unpickled: arrays load with allow_pickle=False and the
forests through skops with an explicit list of trusted types, after the version's signature (HMAC-SHA256
with a key from the environment) and every file's SHA-256 have been checked.

    registry/
      <version>/metadata.json   features, training window, thresholds, calibration, versions, file hashes
      <version>/signature       HMAC-SHA256 of metadata.json
      <version>/<model>.npz     PCA, smoothing, rate and stuck-sensor parameters (model: class or class@context)
      <version>/<model>.skops   IsolationForest
      ACTIVE, CANDIDATE         the version that drives alerts, and the one scored beside it (shadow)
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import platform
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import skops.io

from linewatch.services.scorer.features import FeatureLayout
from linewatch.services.scorer.models import ARRAYS, RAW, ClassModel

TRUSTED_SKOPS_TYPES = ["sklearn.tree._tree.Tree"]
MAX_METADATA_BYTES = 8 << 20
MAX_ARTIFACT_BYTES = 256 << 20
Role = Literal["ACTIVE", "CANDIDATE"]


class ModelVerificationError(Exception):
    """The artifact is unsigned, tampered with, or not what the registry says it is."""


def new_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def read_file(path: Path, limit: int) -> bytes:
    """A model file's bytes, refused unless it is a regular file of at most `limit` bytes: a FIFO would block the
    reload, /dev/zero or a huge file would fill the memory. Opened without blocking, checked before reading."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ModelVerificationError(f"{path}: {exc.strerror}") from exc
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ModelVerificationError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise ModelVerificationError(f"{path} holds {info.st_size} bytes, more than the {limit} allowed")
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise ModelVerificationError(f"{path} grew past the {limit} bytes allowed while being read")
    return data


def _sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
    }


def save(
    root: Path, key: bytes, models: dict[str, ClassModel], training: dict[str, Any], version: str | None = None
) -> str:
    version = version or new_version()
    final = root / version
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    classes: dict[str, Any] = {}
    for name, model in sorted(models.items()):
        np.savez(staging / f"{name}.npz", **{field: getattr(model, field) for field in ARRAYS})
        skops.io.dump(model.forest, staging / f"{name}.skops")
        classes[name] = {
            "equipment_class": model.equipment_class,
            "context": model.context,
            "recipes_not_learned": model.recipes_not_learned,
            "sensors": model.sensors,
            "tracks": model.layout.tracks,
            "lags": model.layout.lags,
            "features": model.layout.names,
            "period_s": model.period_s,
            "normalizers": model.normalizers,
            "left_out": model.left_out,
            "threshold": model.threshold,
            "debounce": model.debounce,
            "settle_samples": model.settle,
            "calibration": model.calibration,
            "files": {suffix: _sha256(staging / f"{name}.{suffix}") for suffix in ("npz", "skops")},
        }
    metadata = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "training": training,
        "libraries": library_versions(),
        "classes": classes,
    }
    body = json.dumps(metadata, indent=2, sort_keys=True).encode()
    (staging / "metadata.json").write_bytes(body)
    (staging / "signature").write_text(_sign(key, body))
    staging.rename(final)  # a version appears complete or not at all
    return version


def load(root: Path, version: str, key: bytes) -> dict[str, ClassModel]:
    folder = root / version
    if not (folder / "metadata.json").exists() and not (folder / "metadata.json").is_symlink():
        raise ModelVerificationError(f"model version {version!r} is incomplete or unknown: no {folder}/metadata.json")
    body = read_file(folder / "metadata.json", MAX_METADATA_BYTES)
    signature = read_file(folder / "signature", 1024).decode("ascii", "replace").strip()
    if not hmac.compare_digest(signature, _sign(key, body)):
        raise ModelVerificationError(
            f"model version {version!r}: signature does not match (unsigned, tampered with, or signed with another key)"
        )
    try:
        metadata = json.loads(body)
        if metadata.get("version") != version:
            raise ModelVerificationError(f"model version {version!r}: metadata names {metadata.get('version')!r}")
        return {name: _load_class(folder, name, entry) for name, entry in metadata["classes"].items()}
    except ModelVerificationError:
        raise
    except Exception as exc:  # signed, yet not what this scorer reads (another format, a broken file): refused
        raise ModelVerificationError(
            f"model version {version!r} cannot be loaded by this scorer ({type(exc).__name__}: {exc}); train a new one"
        ) from exc


def _load_class(folder: Path, name: str, entry: dict[str, Any]) -> ClassModel:
    blobs: dict[str, bytes] = {}
    for suffix, digest in entry["files"].items():
        blob = read_file(folder / f"{name}.{suffix}", MAX_ARTIFACT_BYTES)
        if hashlib.sha256(blob).hexdigest() != digest:
            raise ModelVerificationError(f"{folder.name}/{name}.{suffix}: SHA-256 does not match the metadata")
        blobs[suffix] = blob
    untrusted = skops.io.get_untrusted_types(data=blobs["skops"])
    if set(untrusted) - set(TRUSTED_SKOPS_TYPES):
        raise ModelVerificationError(f"{folder.name}/{name}.skops holds unexpected types {untrusted}")
    forest = skops.io.loads(blobs["skops"], trusted=TRUSTED_SKOPS_TYPES)
    with np.load(io.BytesIO(blobs["npz"]), allow_pickle=False) as arrays:
        params = {k: arrays[k] for k in arrays.files}
    layout = FeatureLayout(list(entry["sensors"]), dict(entry["tracks"]), int(entry["lags"]))
    left_out = list(entry.get("left_out", []))  # none before versions said
    if (
        layout.names != entry["features"]
        or set(params) != set(ARRAYS)
        or set(entry["normalizers"]) != set(RAW)
        or not set(left_out) <= set(RAW)
    ):
        raise ModelVerificationError(f"{folder.name}/{name}: features or parameters do not match this scorer")
    return ClassModel(
        equipment_class=entry["equipment_class"],
        context=entry["context"],
        layout=layout,
        period_s=float(entry["period_s"]),
        forest=forest,
        normalizers={k: float(v) for k, v in entry["normalizers"].items()},
        left_out=left_out,
        threshold=float(entry["threshold"]),
        debounce=int(entry["debounce"]),
        settle=int(entry["settle_samples"]),
        calibration=entry["calibration"],
        recipes_not_learned=list(entry.get("recipes_not_learned", [])),  # older versions: every recipe is scored
        **params,
    )


def point(root: Path, role: Role, version: str | None) -> None:
    """Make `version` the ACTIVE or CANDIDATE model (None clears CANDIDATE); atomic for readers."""
    target = root / role
    if version is None:
        target.unlink(missing_ok=True)
        return
    temporary = root / f".{role}.tmp"
    temporary.write_text(version + "\n")
    temporary.replace(target)


def pointed(root: Path, role: Role) -> str | None:
    """The version a pointer file names, None without one; ModelVerificationError for anything else."""
    path = root / role
    if not path.exists() and not path.is_symlink():
        return None
    return read_file(path, 1024).decode("utf-8", "replace").strip() or None


def activate(root: Path, key: bytes, version: str, role: Role = "ACTIVE") -> None:
    """Point a role at a version once it verifies and loads; raises ModelVerificationError otherwise."""
    load(root, version, key)
    point(root, role, version)
