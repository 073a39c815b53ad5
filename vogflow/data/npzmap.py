"""Memory-map the arrays of an ``.npz`` archive in place, without reading them into memory.

``np.load(..., mmap_mode="r")`` ignores ``mmap_mode`` for ``.npz`` files: every member is read
whole. A member that ``np.savez`` stored uncompressed is a plain ``.npy`` file lying at a known
offset inside the zip, so it can be mapped there directly; a compressed member cannot.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The fixed part of a zip local file header; the name and extra field follow it, then the data.
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
LOCAL_MAGIC = b"PK\x03\x04"


class CompressedMember(ValueError):
    """The member is deflated (``np.savez_compressed``): its bytes are not the array's bytes."""


@dataclass(frozen=True)
class Member:
    """Where one array's raw bytes lie in the archive, and how to read them."""

    path: Path
    offset: int  # of the first array byte, from the start of the file
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    def open(self) -> np.ndarray:
        """A read-only map of the array (an empty array when it has no elements)."""
        if int(np.prod(self.shape)) == 0 or self.dtype.itemsize == 0:
            return np.empty(self.shape, dtype=self.dtype)
        return np.memmap(
            self.path,
            dtype=self.dtype,
            mode="r",
            offset=self.offset,
            shape=self.shape,
            order="F" if self.fortran_order else "C",
        )


def members(path: str | Path) -> dict[str, zipfile.ZipInfo]:
    """The archive's arrays by name (``x_train`` for ``x_train.npy``)."""
    with zipfile.ZipFile(path) as zf:
        return {
            info.filename.removesuffix(".npy"): info
            for info in zf.infolist()
            if info.filename.endswith(".npy")
        }


def header(path: str | Path, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, bool]:
    """``(shape, dtype, fortran_order)`` of a member, compressed or not, without its data."""
    with zipfile.ZipFile(path) as zf, zf.open(info) as fh:
        return _read_npy_header(fh)


def locate(path: str | Path, info: zipfile.ZipInfo) -> Member:
    """The member's array as a :class:`Member`; :class:`CompressedMember` when it is deflated."""
    path = Path(path)
    if info.compress_type != zipfile.ZIP_STORED:
        raise CompressedMember(info.filename)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        fixed = fh.read(LOCAL_HEADER.size)
        if len(fixed) != LOCAL_HEADER.size or not fixed.startswith(LOCAL_MAGIC):
            raise zipfile.BadZipFile(f"no local header for {info.filename} at its offset")
        fields = LOCAL_HEADER.unpack(fixed)
        # The local header's own name and extra lengths (the extra field may differ from the
        # central directory's, e.g. the zip64 record np.savez writes).
        name_len, extra_len = fields[9], fields[10]
        fh.seek(info.header_offset + LOCAL_HEADER.size + name_len + extra_len)
        start = fh.tell()
        shape, dtype, fortran = _read_npy_header(fh)
        header_len = fh.tell() - start
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects (pickled); cannot be mapped")
    end = start + header_len + int(np.prod(shape)) * dtype.itemsize
    if end > start + info.file_size:
        raise zipfile.BadZipFile(f"{info.filename} is shorter than its header says")
    return Member(path, start + header_len, shape, dtype, fortran)


def _read_npy_header(fh) -> tuple[tuple[int, ...], np.dtype, bool]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    else:
        # 2.0 (and 3.0, whose header is utf-8) hold headers too long for 1.0's length field.
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    return tuple(shape), np.dtype(dtype), bool(fortran)
