"""Bounds-checked little-endian reading and writing, with byte offsets in every error.

Every read of a ``.sqc`` file goes through :class:`Reader`, which checks that the bytes exist before
touching them, so a corrupt length can produce a :class:`SqcFormatError` naming the offset, never an
IndexError, a negative slice or a huge allocation.
"""

from __future__ import annotations

import struct

from sqc.errors import SqcFormatError


class Reader:
    """Sequential reader over a buffer; ``base`` is the buffer's offset in the file, for messages."""

    def __init__(self, data: bytes | memoryview, base: int = 0, what: str = "data") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.base = base
        self.what = what

    @property
    def offset(self) -> int:
        """The file offset of the next byte."""
        return self.base + self.pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def fail(self, message: str) -> SqcFormatError:
        return SqcFormatError(f"{self.what}: {message}", self.offset)

    def take(self, count: int) -> memoryview:
        if count < 0 or count > self.remaining:
            raise self.fail(f"needs {count} more bytes, only {self.remaining} left (truncated or corrupt)")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        return int(struct.unpack(fmt, self.take(size))[0])

    def u8(self) -> int:
        return self._unpack("<B")

    def i8(self) -> int:
        return self._unpack("<b")

    def u16(self) -> int:
        return self._unpack("<H")

    def u32(self) -> int:
        return self._unpack("<I")

    def u64(self) -> int:
        return self._unpack("<Q")

    def varint(self, limit: int = 1 << 62) -> int:
        """Unsigned LEB128, minimal form, at most ``limit``."""
        start = self.offset
        value = shift = 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise SqcFormatError(f"{self.what}: non-minimal varint", start)
                break
            shift += 7
            if shift > 63:
                raise SqcFormatError(f"{self.what}: varint too long", start)
        if value > limit:
            raise SqcFormatError(f"{self.what}: value {value} exceeds the limit {limit}", start)
        return value

    def sized(self, what: str, limit: int | None = None) -> Reader:
        """A sub-reader over a varint-length-prefixed block."""
        length = self.varint(limit if limit is not None else self.remaining)
        base = self.offset
        return Reader(self.take(length), base, what)

    def expect_end(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} unexpected trailing bytes")


class Writer:
    """Little-endian writer, the mirror of :class:`Reader`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def u8(self, value: int) -> None:
        self.parts.append(struct.pack("<B", value))

    def i8(self, value: int) -> None:
        self.parts.append(struct.pack("<b", value))

    def u16(self, value: int) -> None:
        self.parts.append(struct.pack("<H", value))

    def u32(self, value: int) -> None:
        self.parts.append(struct.pack("<I", value))

    def u64(self, value: int) -> None:
        self.parts.append(struct.pack("<Q", value))

    def varint(self, value: int) -> None:
        self.parts.append(varint(value))

    def sized(self, data: bytes) -> None:
        self.varint(len(data))
        self.parts.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def varint(value: int) -> bytes:
    """Unsigned LEB128."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
