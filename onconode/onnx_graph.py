"""Read named float initializers (the classifier head) out of an ONNX file, without the ``onnx`` package.

Input: the path of an ``.onnx`` file and the initializer names the manifest gives.
Output: ``{name: float32 ndarray}`` with the shapes stored in the graph.

Why not ``onnx.load``: ``onnx`` is a test extra, not a runtime dependency of the node, and
onnxruntime does not expose initializers through its Python API. Grad-CAM only needs the weight
and bias of the last linear layer, so this module reads just enough of the protobuf wire format
(https://protobuf.dev/programming-guides/encoding/) to find them:
ModelProto.graph (field 7) → GraphProto.initializer (field 5) → TensorProto with dims (1),
data_type (2), float_data (4), name (8), raw_data (9), double_data (10), external_data (13) and
data_location (14), as declared in onnx/onnx.proto. Tests compare the result with
``onnx.numpy_helper.to_array`` on the same file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_FLOAT, _DOUBLE, _FLOAT16 = 1, 11, 10  # TensorProto.DataType
_DTYPES = {_FLOAT: np.float32, _DOUBLE: np.float64, _FLOAT16: np.float16}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class InitializerError(ValueError):
    """The file is not a readable ONNX model, or a named initializer is missing or not a float tensor."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise InitializerError("truncated varint in the ONNX protobuf")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for one protobuf message; length-delimited as views."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, buf[pos:pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise InitializerError("truncated field in the ONNX protobuf")
            yield number, wire, buf[pos:pos + length]
            pos += length
        elif wire == 5:
            yield number, wire, buf[pos:pos + 4]
            pos += 4
        else:
            raise InitializerError(f"unsupported protobuf wire type {wire}")


def _tensor(buf: memoryview, folder: Path, names: set[str]) -> tuple[str, np.ndarray | None]:
    """Decode one TensorProto; the array only when its name is wanted (others may be int64 shapes)."""
    name, dims, dtype = "", [], _FLOAT
    raw: bytes | None = None
    floats: list[float] = []
    external: dict[str, str] = {}
    location = 0
    for number, wire, value in _fields(buf):
        if number == 1:  # dims: packed (wire 2) or not (wire 0)
            if isinstance(value, memoryview):
                pos = 0
                while pos < len(value):
                    dim, pos = _varint(value, pos)
                    dims.append(dim)
            else:
                dims.append(value)
        elif number == 2 and isinstance(value, int):
            dtype = value
        elif number == 8 and isinstance(value, memoryview):
            name = bytes(value).decode()
        elif number == 9 and isinstance(value, memoryview):
            raw = bytes(value)
        elif number in (4, 10) and isinstance(value, memoryview):
            fmt = "f" if number == 4 else "d"
            if wire == 2:
                floats.extend(struct.unpack(f"<{len(value) // struct.calcsize(fmt)}{fmt}", value))
            else:
                floats.append(struct.unpack(f"<{fmt}", value)[0])
        elif number == 13 and isinstance(value, memoryview):
            entry = {n: bytes(v).decode() for n, _, v in _fields(value) if isinstance(v, memoryview)}
            external[entry.get(1, "")] = entry.get(2, "")
        elif number == 14 and isinstance(value, int):
            location = value
    if name not in names:
        return name, None
    if dtype not in _DTYPES:
        raise InitializerError(f"initializer {name!r}: data type {dtype} is not a float type")
    np_dtype = _DTYPES[dtype]
    if location == _EXTERNAL:
        data_path = folder / external.get("location", "")
        offset = int(external.get("offset", 0))
        length = int(external.get("length", -1))
        with data_path.open("rb") as f:
            f.seek(offset)
            raw = f.read(length if length >= 0 else -1)
    if raw is not None:
        array = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<"))
    else:
        array = np.asarray(floats, dtype=np_dtype)
    return name, array.reshape(dims).astype(np.float32)


def read_initializers(path: Path, names: set[str]) -> dict[str, np.ndarray]:
    """The float initializers called ``names`` in the graph of ``path``, as float32 arrays.

    Raises
    ------
    InitializerError
        If the file has no graph, a name is not among the initializers, or a tensor is not float.
    """
    data = memoryview(path.read_bytes())
    graph = next((v for n, w, v in _fields(data) if n == 7 and isinstance(v, memoryview)), None)
    if graph is None:
        raise InitializerError(f"{path.name}: no graph in the ONNX file")
    found: dict[str, np.ndarray] = {}
    for number, _, value in _fields(graph):
        if number == 5 and isinstance(value, memoryview):
            name, array = _tensor(value, path.parent, names)
            if array is not None:
                found[name] = array
    missing = sorted(names - set(found))
    if missing:
        raise InitializerError(f"{path.name}: initializers not found in the graph: {missing}")
    return found
