"""A small, fast GGUF reader: metadata, tensor directory, and dequantisation to float32.

Why not only `gguf.GGUFReader`: it maps every element of every metadata array as its own numpy
object, which takes ~10 s for a 49k-token vocabulary; this reader parses the header with `struct`
in well under a second, memory-maps the tensor data, and dequantises the common block formats with
vectorised torch code.  Other formats (K-quants, IQ…) go through `gguf.quants.dequantize`.

File layout (GGUF v2/v3, little endian):
  "GGUF" u32 version, u64 n_tensors, u64 n_kv
  n_kv × (string key, u32 type, value)          strings: u64 length + UTF-8 bytes; arrays: u32 type, u64 n, items
  n_tensors × (string name, u32 n_dims, u64 dims[n_dims] (ne0 = contiguous dim first), u32 type, u64 offset)
  padding to `general.alignment` (32), then the tensor data (offsets relative to its start)
Block formats dequantised here (32 values per block, d/m float16):
  Q8_0  d, 32 × int8 q                 x = d·q
  Q4_0  d, 16 bytes of nibbles          x = d·(q − 8)     low nibbles = values 0..15, high = 16..31
  Q4_1  d, m, 16 bytes of nibbles       x = d·q + m
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32, 7: np.bool_,
       10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9
# ggml type id -> (name, values per block, bytes per block) for the types handled natively
F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30
_NATIVE = {F32: ("F32", 1, 4), F16: ("F16", 1, 2), Q4_0: ("Q4_0", 32, 18), Q4_1: ("Q4_1", 32, 20),
           Q8_0: ("Q8_0", 32, 34), BF16: ("BF16", 1, 2)}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]       # PyTorch order (reversed ggml dims): [out, in] for a matrix
    ggml_type: int
    offset: int                  # absolute byte offset in the file
    nbytes: int


class GGUFFile:
    """Parsed header of a .gguf file: `meta` (key -> value; arrays as lists), `tensors` (name -> info)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: cannot read ({e})") from None
        self._size = len(self._buf)
        self._hdr = b""   # the header, read into plain bytes (parsing a memmap slice per string is slow)
        self._pos = 0
        try:
            self._parse()
        except (struct.error, IndexError, UnicodeDecodeError, OverflowError, MemoryError) as e:
            raise ValueError(f"{self.path}: corrupted or truncated GGUF header ({type(e).__name__}: {e})") from None

    # -------------------------------------------------------------------------------- parsing
    def _need(self, n: int) -> None:
        end = self._pos + n
        if end > self._size:
            raise ValueError(f"{self.path}: truncated GGUF header (needs byte {end}, file has {self._size})")
        if end > len(self._hdr):
            with open(self.path, "rb") as f:
                self._hdr = f.read(min(self._size, max(end, 2 * len(self._hdr), 1 << 20)))

    def _read(self, fmt: str):
        size = struct.calcsize(fmt)
        self._need(size)
        v = struct.unpack_from(fmt, self._hdr, self._pos)[0]
        self._pos += size
        return v

    def _string(self) -> str:
        n = self._read("<Q")
        self._need(n)
        s = self._hdr[self._pos:self._pos + n].decode("utf-8", errors="replace")
        self._pos += n
        return s

    def _value(self, kind: int):
        if kind in _SCALAR:
            return self._read(_SCALAR[kind])
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            item, n = self._read("<I"), self._read("<Q")
            if item in _NP:  # numeric array: one vectorised read
                dt = np.dtype(_NP[item])
                self._need(n * dt.itemsize)
                arr = np.frombuffer(self._hdr, dtype=dt, count=n, offset=self._pos).tolist()
                self._pos += n * dt.itemsize
                return arr
            return [self._value(item) for _ in range(n)]
        raise ValueError(f"{self.path}: corrupted GGUF header (unknown value type {kind} at byte {self._pos})")

    def _parse(self) -> None:
        if self._size < 24 or bytes(self._buf[:4]) != b"GGUF":
            raise ValueError(f"{self.path}: not a GGUF file (magic {bytes(self._buf[:4])!r}, expected b'GGUF')")
        self._pos = 4
        self.version = self._read("<I")
        if self.version not in (2, 3):
            raise ValueError(f"{self.path}: unsupported GGUF version {self.version} (2 and 3 are read)")
        n_tensors, n_kv = self._read("<Q"), self._read("<Q")
        if n_tensors > 1 << 24 or n_kv > 1 << 24:
            raise ValueError(f"{self.path}: corrupted GGUF header ({n_tensors} tensors, {n_kv} keys)")
        self.meta: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string()
            self.meta[key] = self._value(self._read("<I"))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._read("<I")
            if n_dims > 8:
                raise ValueError(f"{self.path}: corrupted GGUF tensor info for {name!r} ({n_dims} dims)")
            dims = [self._read("<Q") for _ in range(n_dims)]
            infos.append((name, tuple(reversed(dims)), self._read("<I"), self._read("<Q")))
        align = int(self.meta.get("general.alignment", 32))
        data_start = (self._pos + align - 1) // align * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, kind, off in infos:
            n = int(np.prod(shape)) if shape else 1
            nbytes = _nbytes(kind, n, name, self.path)
            info = TensorInfo(name, shape, kind, data_start + off, nbytes)
            if info.offset + nbytes > self._size:
                raise ValueError(f"{self.path}: truncated GGUF file: tensor {name!r} ends at byte "
                                 f"{info.offset + nbytes}, the file has {self._size}")
            self.tensors[name] = info
        self._hdr = b""

    # ---------------------------------------------------------------------------- tensor data
    def tensor(self, name: str) -> torch.Tensor:
        """The tensor dequantised to float32, in PyTorch shape order."""
        if name not in self.tensors:
            raise ValueError(f"{self.path}: GGUF lacks tensor {name!r}")
        info = self.tensors[name]
        raw = np.frombuffer(self._buf, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        try:
            return dequantize(raw, info.ggml_type, info.shape)
        except ValueError as e:
            raise ValueError(f"{self.path}: tensor {name!r}: {e}") from None


def _nbytes(kind: int, n: int, name: str, path: Path) -> int:
    if kind in _NATIVE:
        _, block, size = _NATIVE[kind]
    else:
        import gguf  # noqa: PLC0415
        try:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise ValueError(f"{path}: tensor {name!r} has unknown ggml type {kind}") from None
    if n % block:
        raise ValueError(f"{path}: tensor {name!r}: {n} values is not a multiple of the block size {block}")
    return n // block * size


def dequantize(raw_u8: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> torch.Tensor:
    """float32 tensor of `shape` from the raw bytes of one GGUF tensor."""
    b = torch.from_numpy(np.array(raw_u8, copy=True))  # one copy out of the read-only memory map
    if ggml_type == F32:
        x = b.view(torch.float32)
    elif ggml_type == F16:
        x = b.view(torch.float16).float()
    elif ggml_type == BF16:
        x = b.view(torch.bfloat16).float()
    elif ggml_type == Q8_0:
        blocks = b.view(-1, 34)
        d = blocks[:, :2].contiguous().view(torch.float16).float()           # [nb, 1]
        x = d * blocks[:, 2:].contiguous().view(torch.int8).float()
    elif ggml_type in (Q4_0, Q4_1):
        head = 2 if ggml_type == Q4_0 else 4
        blocks = b.view(-1, head + 16)
        dm = blocks[:, :head].contiguous().view(torch.float16).float()      # [nb, 1 or 2]
        q = blocks[:, head:]
        q = torch.cat((q & 0x0F, q >> 4), dim=1).float()                     # values 0..15 then 16..31
        x = dm[:, :1] * (q - 8) if ggml_type == Q4_0 else dm[:, :1] * q + dm[:, 1:2]
    else:
        import gguf  # noqa: PLC0415
        try:
            arr = gguf.quants.dequantize(raw_u8.reshape(1, -1), gguf.GGMLQuantizationType(ggml_type))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot dequantise ggml type {ggml_type}: {e}") from None
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return x.reshape(shape)
