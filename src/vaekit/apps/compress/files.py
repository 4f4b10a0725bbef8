"""Compress and decompress files (IDX, uint8 `.npy`, folders of PNG images) with a trained VAE."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vaekit import zoo
from vaekit.apps.compress import bbans, twopart
from vaekit.apps.compress.container import VERSION, Container, parse
from vaekit.apps.compress.latents import BITS_BY_VERSION
from vaekit.data import idx
from vaekit.data.datasets import load_image_folder
from vaekit.data.folders import IMAGE_SUFFIXES
from vaekit.errors import DataError, VaekitError
from vaekit.models.vae import load_model
from vaekit.models.vq import VQVAE
from vaekit.storage import atomic_write_bytes


def _weights_hash(model_dir: Path) -> bytes:
    import json

    folder = model_dir / "model" if (model_dir / "model" / "config.json").is_file() else model_dir
    return bytes.fromhex(json.loads((folder / "config.json").read_text())["weights_sha256"])


def read_images(source: Path) -> tuple[np.ndarray, str, list[str], str]:
    """uint8 (N, C, H, W), the source format, file names for a PNG folder, and the input's axes.

    Arrays may be (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3 (channels first when the
    second axis is 1 or 3, the usual convention of the data loader); the layout is kept so that
    `decompress` gives back the same shape.
    """
    if source.is_dir():
        names = sorted(p.name for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if any(not n.lower().endswith(".png") for n in names):
            raise DataError(f"{str(source)!r}: only PNG folders compress losslessly (JPEG is already lossy)")
        return load_image_folder(source).numpy(), "png", names, "NCHW"
    if not source.is_file():
        raise DataError(f"{str(source)!r} not found; give an IDX file, a uint8 .npy or a folder of PNG images")
    if source.suffix == ".npy":
        try:
            array = np.load(source, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{str(source)!r} is not a readable .npy array ({exc})") from None
        kind = "npy"
    else:
        array = idx.read_idx(source)
        kind = "idx.gz" if source.suffix == ".gz" else "idx"
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[0] == 0:
        raise DataError(
            f"{str(source)!r} holds {array.dtype} {array.shape}; compress needs uint8 images (N, H, W), "
            "(N, C, H, W) or (N, H, W, C)"
        )
    if array.ndim == 3:
        return array[:, None], kind, [], "NHW"
    if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        return np.ascontiguousarray(np.moveaxis(array, -1, 1)), kind, [], "NHWC"
    return array, kind, [], "NCHW"


def _symbols(images: np.ndarray, kind: int) -> np.ndarray:
    if kind == bbans.KIND_8BIT:
        return images
    return (images > 0).astype(np.uint8)


def compress_file(
    model_dir: str | Path, source: str | Path, output: str | Path, verify: bool = False
) -> dict[str, Any]:
    """Compress `source` into `output` (.vkz); with `verify`, decode it again and compare first."""
    model_dir, source = zoo.resolve(model_dir), Path(source)
    model = load_model(model_dir)
    images, fmt, names, layout = read_images(source)
    if images.shape[1:] != tuple(model.shape):
        raise DataError(f"{str(source)!r} has images of shape {images.shape[1:]} but the model expects {model.shape}")
    kind = bbans.kind_for(model)
    if kind == bbans.KIND_BINARY:
        values = np.unique(images)
        if not set(values.tolist()) <= {0, 1, 255} or {1, 255} <= set(values.tolist()):
            raise DataError(
                f"{str(source)!r} is not binary (values {values[:5].tolist()}...); this model codes 0/255 "
                "or 0/1 images: use a discretized-logistic model for 8-bit data"
            )
        kind = 2 if images.max() == 1 else bbans.KIND_BINARY  # 2: binary stored as 0/1
    vq = isinstance(model, VQVAE)  # a two-part code (container version 3), else bits-back (version 2)
    coder = twopart if vq else bbans
    t0 = time.perf_counter()
    words = coder.encode_images(model, _symbols(images, kind), _coding(kind))
    seconds = time.perf_counter() - t0
    version = 3 if vq else VERSION
    container = Container(kind, fmt, _weights_hash(model_dir), coder.probe_hash(model), tuple(images.shape),
                          BITS_BY_VERSION[version], names, str(model_dir.resolve()), words, layout, version)
    data = container.to_bytes()
    if verify:
        restored = _decode(container, model)
        if not np.array_equal(restored, images):
            raise VaekitError("verification failed: the decoded images differ from the input; nothing was written")
    atomic_write_bytes(output, data)
    dims = images.size
    return {
        "output": str(output),
        "n": int(images.shape[0]),
        "bytes": len(data),
        "payload_bits": int(words.size * 32),
        "bits_per_dim": 8 * len(data) / dims,
        "payload_bits_per_dim": words.size * 32 / dims,
        "images_per_s": images.shape[0] / max(seconds, 1e-9),
        "verified": verify,
        **(_two_part(model, _symbols(images, kind), _coding(kind), dims) if vq else {}),
    }


def _two_part(model: Any, symbols: np.ndarray, kind: int, dims: int) -> dict[str, float]:
    """A VQ model's two-part code length of the images (its -ELBO) beside the file: what the payload should match."""
    bits = twopart.code_length_bits(model, symbols, kind)
    return {"code_length_bits_per_dim": (bits["code_bits"] + bits["pixel_bits"]) / dims,
            "codes_bits_per_dim": bits["code_bits"] / dims, "pixels_bits_per_dim": bits["pixel_bits"] / dims}


def _decode(container: Container, model: Any) -> np.ndarray:
    if container.version == 3:
        symbols = twopart.decode_images(model, container.words, _coding(container.kind), container.shape)
    else:
        symbols = bbans.decode_images(model, container.words, _coding(container.kind), container.shape,
                                      container.version)
    return symbols * 255 if container.kind == bbans.KIND_BINARY else symbols


def _coding(kind: int) -> int:
    """Container kinds 0 (binary as 0/255) and 2 (binary as 0/1) code as binary; 1 as 8-bit."""
    return bbans.KIND_8BIT if kind == bbans.KIND_8BIT else bbans.KIND_BINARY


def decompress_file(path: str | Path, output: str | Path, model_dir: str | Path | None = None) -> dict[str, Any]:
    """Restore the images of a `.vkz` file into `output`, in the format they came from."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r} ({exc.strerror or exc})") from None
    container = parse(data, str(path))
    model_dir = zoo.resolve(model_dir) if model_dir is not None else None
    if model_dir is not None and not model_dir.exists():
        raise DataError(f"model folder {str(model_dir)!r} not found; pass the run the file was compressed with")
    model_dir = Path(model_dir) if model_dir is not None else Path(container.model_hint)
    if not model_dir.exists():
        raise DataError(f"the model this file was compressed with is not at {str(model_dir)!r}; pass --model RUN")
    model = load_model(model_dir)
    if _weights_hash(model_dir) != container.weights_sha256:
        raise DataError(f"{str(path)!r} was compressed with another model (weights hash differs); pass that --model")
    if (twopart if container.version == 3 else bbans).probe_hash(model) != container.probe:
        raise DataError(
            f"{str(path)!r}: this machine's floating point differs from the compressing machine's "
            "(probe hash mismatch); decode where it was encoded"
        )
    if tuple(model.shape) != container.shape[1:]:
        raise DataError(f"{str(path)!r} holds images of shape {container.shape[1:]}, not the model's {model.shape}")
    t0 = time.perf_counter()
    try:
        images = _decode(container, model)
    except (ValueError, RuntimeError) as exc:
        raise DataError(f"{str(path)!r} could not be decoded ({exc})") from None
    seconds = time.perf_counter() - t0
    write_images(images.astype(np.uint8), container.source, container.names, Path(output), container.layout)
    return {"output": str(output), "n": int(images.shape[0]), "images_per_s": images.shape[0] / max(seconds, 1e-9)}


def write_images(images: np.ndarray, fmt: str, names: list[str], output: Path, layout: str = "NCHW") -> None:
    """Write images (N, C, H, W) as `.npy` in `layout`, IDX (gzip when asked) or a PNG folder; all-or-nothing."""
    if fmt == "png":
        _write_png_folder(images, names, output)
        return
    if fmt == "npy":
        array = images[:, 0] if layout == "NHW" else np.moveaxis(images, 1, -1) if layout == "NHWC" else images
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array))
        atomic_write_bytes(output, buffer.getvalue())
        return
    array = images[:, 0] if images.shape[1] == 1 else images
    raw = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    atomic_write_bytes(output, gzip.compress(raw, mtime=0) if fmt == "idx.gz" else raw)


def _write_png_folder(images: np.ndarray, names: list[str], output: Path) -> None:
    from PIL import Image

    for name in names:  # names come from the file: never let one write outside the output folder
        if name != os.path.basename(name) or name in ("", ".", "..") or not name.lower().endswith(".png"):
            raise DataError(f"refusing to write file name {name!r} from the compressed file")
    if output.exists() and not output.is_dir():
        raise DataError(f"{str(output)!r} exists and is not a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}."))
    try:
        for image, name in zip(images, names, strict=True):
            array = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
            Image.fromarray(array).save(tmp / name)
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
