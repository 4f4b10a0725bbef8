"""The `.vkz` container: a fixed header, the image shape, file names, and the ANS payload.

Layout (little-endian): magic "VKZ1", u16 format version (2: bits-back over Gaussian latents; 3: a VQ
model's two-part code, apps/compress/twopart.py; version 1, whose latents used buckets of equal prior
mass, still reads), u8 kind (0 binary, 1 8-bit), u8 source (0 .npy, 1 IDX, 2 IDX gzip, 3 PNG folder),
32-byte SHA-256 of the model weights, 32-byte probe hash, u32 N, u16 C, u16 H, u16 W, u8 latent bits,
u32 meta length, u32 payload words, u32 CRC-32 of the header before it and everything after it; then
the meta JSON ({"names": [...] for PNG folders, "model": where the model was, a hint, "layout": the
input array's axes, "NHW", "NCHW" or "NHWC", so the same shape comes back; files without it are
"NCHW"}) and the payload.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from vaekit.apps.compress.latents import BITS_BY_VERSION
from vaekit.errors import DataError

MAGIC = b"VKZ1"
VERSION = 2
HEADER = struct.Struct("<4sHBB32s32sIHHHBIII")
SOURCES = {0: "npy", 1: "idx", 2: "idx.gz", 3: "png"}
MAX_NAMES_BYTES = 64 << 20
LAYOUTS = ("NHW", "NCHW", "NHWC")


@dataclass(frozen=True)
class Container:
    kind: int
    source: str
    weights_sha256: bytes
    probe: bytes
    shape: tuple[int, int, int, int]
    latent_bits: int
    names: list[str]
    model_hint: str
    words: np.ndarray  # uint32 ANS payload
    layout: str = "NCHW"  # the input array's axes: NHW, NCHW or NHWC
    version: int = VERSION

    def to_bytes(self) -> bytes:
        names = json.dumps({"names": self.names, "model": self.model_hint, "layout": self.layout}).encode()
        payload = self.words.astype("<u4").tobytes()
        n, c, h, w = self.shape
        source = {v: k for k, v in SOURCES.items()}[self.source]
        body = names + payload
        head = HEADER.pack(
            MAGIC,
            self.version,
            self.kind,
            source,
            self.weights_sha256,
            self.probe,
            n,
            c,
            h,
            w,
            self.latent_bits,
            len(names),
            self.words.size,
            0,
        )
        crc = zlib.crc32(body, zlib.crc32(head[: HEADER.size - 4]))
        return head[: HEADER.size - 4] + struct.pack("<I", crc) + body


def parse(data: bytes, name: str) -> Container:
    """Validate and unpack a container; any damage is a one-line DataError, never a crash or a hang."""
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise DataError(f"{name!r} is not a vaekit compressed file (bad magic or too short)")
    (_, version, kind, source, weights, probe, n, c, h, w, latent_bits, names_len, n_words, crc) = HEADER.unpack_from(
        data
    )
    if version not in BITS_BY_VERSION:
        raise DataError(
            f"{name!r} uses container version {version}; this vaekit reads versions 1..{max(BITS_BY_VERSION)}: "
            "decompress it with the vaekit that wrote it"
        )
    expected = HEADER.size + names_len + 4 * n_words
    if len(data) != expected:
        raise DataError(f"{name!r} is truncated or has trailing bytes ({len(data)} bytes, header says {expected})")
    if zlib.crc32(data[HEADER.size :], zlib.crc32(data[: HEADER.size - 4])) != crc:
        raise DataError(f"{name!r} is corrupted (CRC mismatch); use an intact copy")
    if (
        kind not in (0, 1, 2)
        or source not in SOURCES
        or min(n, c, h, w) == 0
        or names_len > MAX_NAMES_BYTES
        or latent_bits != BITS_BY_VERSION[version]
    ):
        raise DataError(f"{name!r} has an invalid header")
    try:
        meta = json.loads(data[HEADER.size : HEADER.size + names_len])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{name!r} has an unreadable metadata block") from None
    names = meta.get("names") if isinstance(meta, dict) else None
    hint = meta.get("model", "") if isinstance(meta, dict) else None
    layout = meta.get("layout", "NCHW") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names) or not isinstance(hint, str):
        raise DataError(f"{name!r} has an invalid metadata block")
    if layout not in LAYOUTS or (layout == "NHW" and c != 1):
        raise DataError(f"{name!r} has an invalid metadata block (layout {layout!r})")
    if names and len(names) != n:
        raise DataError(f"{name!r} names {len(names)} files for {n} images")
    words = np.frombuffer(data, dtype="<u4", offset=HEADER.size + names_len, count=n_words).astype(np.uint32)
    return Container(
        kind, SOURCES[source], weights, probe, (n, c, h, w), latent_bits, names, hint, words, layout, version
    )
