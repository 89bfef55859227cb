"""Reader for PyTorch's legacy (pre-1.6, non-zip) serialisation, without torch.

A legacy file is a sequence of pickles followed by raw storage bytes:

1. the magic number 0x1950a86a20f9469cfc6c,
2. the protocol version (1001),
3. a dict of system information (endianness, C type sizes),
4. the pickled object (here a state dict); each tensor inside it is rebuilt by
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and
   each storage is referenced by a persistent id
   ``("storage", StorageType, key, location, element_count, view_metadata)``,
5. the list of storage keys in the order their data follows,
6. for each key: an 8-byte little-endian element count, then the raw
   little-endian elements.

The unpickler below maps torch's classes and rebuild functions onto small
stand-ins so that only ``pickle`` and ``numpy`` are needed.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class LegacyFormatError(ValueError):
    """The bytes are not a PyTorch legacy file this reader understands."""


@dataclass(frozen=True)
class StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class StorageReference:
    key: str
    storage_type: StorageType
    element_count: int
    data: np.ndarray | None = None


@dataclass
class TensorReference:
    storage: StorageReference
    storage_offset: int
    size: tuple
    stride: tuple

    def to_numpy(self) -> np.ndarray:
        if self.storage.data is None:
            raise LegacyFormatError(f"storage {self.storage.key} has no data")
        item_size = self.storage.data.itemsize
        if len(self.size) == 0:
            return self.storage.data[self.storage_offset : self.storage_offset + 1].reshape(()).copy()
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.storage_offset :],
            shape=self.size,
            strides=tuple(s * item_size for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return TensorReference(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, StorageReference]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        raise LegacyFormatError(f"unsupported class in legacy file: {module}.{name}")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise LegacyFormatError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, element_count = pid[:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if view_metadata is not None:
            raise LegacyFormatError(f"storage views are not supported (key {key})")
        if not isinstance(storage_type, StorageType):
            raise LegacyFormatError(f"unexpected storage type {storage_type!r}")
        reference = self.storages.get(key)
        if reference is None:
            reference = StorageReference(str(key), storage_type, int(element_count))
            self.storages[key] = reference
        return reference


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise LegacyFormatError(f"unexpected class {module}.{name} in file header")


def load_legacy_state_dict(raw: bytes) -> "collections.OrderedDict[str, np.ndarray]":
    """Parse a legacy PyTorch file and return its state dict as numpy arrays."""
    stream = io.BytesIO(raw)
    magic = _PlainUnpickler(stream).load()
    if magic != LEGACY_MAGIC_NUMBER:
        raise LegacyFormatError("not a legacy PyTorch file (magic number mismatch)")
    protocol = _PlainUnpickler(stream).load()
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise LegacyFormatError(f"unsupported legacy protocol version {protocol}")
    system_info = _PlainUnpickler(stream).load()
    if not system_info.get("little_endian", False):
        raise LegacyFormatError("big-endian legacy files are not supported")

    storages: dict[str, StorageReference] = {}
    state = _LegacyUnpickler(stream, storages).load()
    storage_keys = _PlainUnpickler(stream).load()
    for key in storage_keys:
        reference = storages.get(key)
        if reference is None:
            raise LegacyFormatError(f"storage {key} listed but never referenced")
        header = stream.read(8)
        if len(header) != 8:
            raise LegacyFormatError(f"truncated file before storage {key}")
        (count,) = struct.unpack("<q", header)
        if count != reference.element_count:
            raise LegacyFormatError(
                f"storage {key}: {count} elements on disk, {reference.element_count} expected"
            )
        dtype = reference.storage_type.dtype
        payload = stream.read(count * dtype.itemsize)
        if len(payload) != count * dtype.itemsize:
            raise LegacyFormatError(f"truncated data for storage {key}")
        reference.data = np.frombuffer(payload, dtype=dtype)
    if stream.read(1):
        raise LegacyFormatError("unexpected bytes after the last storage")

    result: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()
    for name, value in state.items():
        if not isinstance(value, TensorReference):
            raise LegacyFormatError(f"entry {name} is not a tensor")
        result[name] = value.to_numpy()
    return result
