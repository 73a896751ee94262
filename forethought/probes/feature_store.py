"""Probe examples on disk: features ``[n, layer, d_model]`` written as they are produced, read back in pieces.

A streaming probe sweep (``probe_sweep(..., stream=True)``) writes every activation batch here instead of
keeping it in memory, and the probe trainer reads back exactly the rows of each minibatch (and contiguous
chunks for held-out losses and scoring). The file is example-major (one row holds every layer of one
example), so a minibatch is one read per example and host memory holds one minibatch, not the data set:
memory is set by the batch sizes, not by the number of tokens. Reads go through ``os.preadv``, not a memory
map, so pages touched stay in the OS page cache and never count against the process.

Example:
    >>> import tempfile, torch
    >>> rows = torch.randn(10, 3, 4)  # [n, layer, d_model]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = FeatureStore.create(f"{tmp}/features.bin", n_layers=3, d_model=4)
    ...     store.append(rows[:6]); store.append(rows[6:])
    ...     same = torch.equal(store.rows(torch.tensor([7, 2])), rows[[7, 2]])
    ...     chunk = store.chunk(2, 5)  # [layer, n, d_model], like features[:, 2:5]
    ...     store.close()
    >>> same, tuple(store.shape), torch.equal(chunk, rows[2:5].transpose(0, 1))
    (True, (3, 10, 4), True)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import InvalidArgumentError


class FeatureStore:
    """An append-only file of example-major feature rows ``[layer, d_model]`` in one dtype.

    ``shape`` is ``(layer, n, d_model)``, the layout of in-memory features, so code that only asks for the
    shape treats both alike.
    """

    def __init__(self, path: str | os.PathLike, n_layers: int, d_model: int, dtype: torch.dtype, n: int = 0):
        self.path = Path(path)
        self.n_layers, self.d_model, self.dtype, self.n = n_layers, d_model, dtype, n
        self.row_bytes = n_layers * d_model * dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    @classmethod
    def create(cls, path: str | os.PathLike, n_layers: int, d_model: int,
               dtype: torch.dtype = torch.float32) -> FeatureStore:
        """An empty store at ``path`` (an existing file there is truncated)."""
        Path(path).write_bytes(b"")
        return cls(path, n_layers, d_model, dtype)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_layers, n, d_model)``, the shape of the in-memory features tensor."""
        return (self.n_layers, self.n, self.d_model)

    @property
    def ndim(self) -> int:
        """Always 3, as for the in-memory ``[layer, n, d_model]`` tensor."""
        return 3

    @property
    def nbytes(self) -> int:
        """Bytes held by the examples written so far."""
        return self.n * self.row_bytes

    def append(self, rows: Float[Tensor, "n layer d_model"]) -> None:
        """Write ``rows`` after the last example."""
        if rows.ndim != 3 or tuple(rows.shape[1:]) != (self.n_layers, self.d_model):
            raise InvalidArgumentError(f"rows of shape {tuple(rows.shape)} do not fit a store of "
                                       f"[n, {self.n_layers}, {self.d_model}]")
        data = rows.detach().to("cpu", self.dtype).contiguous()
        view = _bytes(data)
        offset = self.n * self.row_bytes
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        self.n += rows.shape[0]

    def rows(self, index: Int[Tensor, " b"]) -> Float[Tensor, "b layer d_model"]:
        """The examples ``index`` (any order, repeats allowed), as a CPU tensor."""
        index = index.cpu().long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n):
            raise InvalidArgumentError(f"example indices must lie in [0, {self.n}); got [{int(index.min())}, "
                                       f"{int(index.max())}]")
        out = torch.empty(len(index), self.n_layers, self.d_model, dtype=self.dtype, device="cpu")
        buffer = _bytes(out)
        size = self.row_bytes
        for position, example in enumerate(index.tolist()):
            self._read_into(buffer[position * size : (position + 1) * size], example * size)
        return out

    def chunk(self, start: int, stop: int) -> Float[Tensor, "layer n d_model"]:
        """Examples ``start:stop`` as ``[layer, n, d_model]``, the in-memory layout (``features[:, start:stop]``)."""
        start, stop = max(0, start), min(stop, self.n)
        out = torch.empty(max(0, stop - start), self.n_layers, self.d_model, dtype=self.dtype, device="cpu")
        if len(out):
            self._read_into(_bytes(out), start * self.row_bytes)
        return out.transpose(0, 1)

    def chunks(self, size: int) -> Iterator[Float[Tensor, "layer n d_model"]]:
        """Every example in order, ``size`` at a time."""
        for start in range(0, self.n, size):
            yield self.chunk(start, start + size)

    def _read_into(self, buffer: memoryview, offset: int) -> None:
        while buffer:
            read = os.preadv(self._fd, [buffer], offset)
            if read == 0:
                raise OSError(f"{self.path} ended before offset {offset}; was it truncated?")
            buffer, offset = buffer[read:], offset + read

    def close(self) -> None:
        """Close the file (the data stay on disk); closing twice is harmless."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, n={self.n}, layers={self.n_layers}, d_model={self.d_model}, "
                f"dtype={self.dtype})")


def _bytes(tensor: Tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor, writable in place (any dtype, numpy's or not)."""
    return memoryview(tensor.view(torch.uint8).reshape(-1).numpy())


def feature_chunks(features: Tensor | FeatureStore, size: int) -> Iterator[Float[Tensor, "layer n d_model"]]:
    """``features[:, i:i+size]`` for consecutive ``i``, from memory or from a store."""
    if isinstance(features, FeatureStore):
        yield from features.chunks(size)
        return
    for start in range(0, features.shape[1], size):
        yield features[:, start : start + size]


def rows_that_fit(device: torch.device, bytes_per_row: int, default: int, share: float = 0.25) -> int:
    """How many rows of ``bytes_per_row`` a chunk holds; see below.

    On a GPU as many as ``share`` of its free memory takes (at least one), elsewhere ``default``.

    Example:
        >>> rows_that_fit(torch.device("cpu"), bytes_per_row=4096, default=2048)
        2048
    """
    if device.type != "cuda":
        return default
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(share * free) // max(1, bytes_per_row))
