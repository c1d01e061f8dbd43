"""Image sizes read from the file header, before anything is decoded.

An image's header states its width and height in a few bytes; decoding
allocates width x height x 3 bytes whatever the file's size (an 875 KB PNG of
30000 x 30000 pixels decodes to 2.7-5.4 GB). So every image from outside is
measured here first and decoded only within a pixel budget (`check_image`).

Formats: PNG, JPEG, BMP, WebP, GIF and TIFF, the ones a camera, a phone or a
hub writes. OpenCV recognises a file by its content, not its name, and decodes
more (PxM, Sun raster, Radiance HDR, OpenEXR, JPEG 2000...): those are refused
as unknown rather than decoded unmeasured. `OPENCV_IO_MAX_IMAGE_PIXELS` is set
as a second line of defence (`set_decoder_limit`), never the only one.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

# 8K UHD (7680 x 4320) is 33.2 megapixels: every camera and most phone photos fit, and the decoded
# BGR image stays at 120 MB on the edge boxes the monitor runs on.
DEFAULT_MAX_PIXELS = 40_000_000
# The largest budget a setting may ask for (750 MB decoded); also OpenCV's own process-wide ceiling.
MAX_PIXELS_CEILING = 250_000_000
DECODER_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
FORMATS = ("PNG", "JPEG", "BMP", "WebP", "GIF", "TIFF")

_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (Huffman tables), C8 (reserved) and CC (arithmetic) do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn stand alone
_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG: the types a size tag may have
_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_TILE_WIDTH, _TIFF_TILE_HEIGHT = 256, 257, 322, 323
_TIFF_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class ImageSize:
    """An image's format and size as its header states them."""

    format: str
    width: int
    height: int
    # A TIFF decoder allocates a whole tile at once: a tile may be declared larger than the image.
    tile_pixels: int = 0

    @property
    def pixels(self) -> int:
        return max(self.width * self.height, self.tile_pixels)


class ImageRefused(ValueError):
    """An image that must not be decoded: unknown format, unreadable header, or over the pixel budget."""


def image_size(data: bytes) -> ImageSize | None:
    """The size an image's header states, or None if it is not one of `FORMATS` or its header is cut short."""
    try:
        if data.startswith(_PNG):
            return _png(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if data.startswith(b"BM"):
            return _bmp(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack_from("<HH", data, 6)
            return ImageSize("GIF", width, height)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
    except struct.error:  # a header cut short
        return None
    return None


def check_image(data: bytes, max_pixels: int, *, setting: str = "") -> ImageSize:
    """The image's size if it may be decoded; raises ImageRefused naming the problem (and `setting`) otherwise."""
    size = image_size(data)
    if size is None:
        raise ImageRefused(f"not a {', '.join(FORMATS)} image with a readable header")
    if size.width <= 0 or size.height <= 0:
        raise ImageRefused(f"{size.format} header states {size.width} x {size.height} pixels")
    if size.pixels > max_pixels:
        what = f"{size.width} x {size.height}" + (f" (tiles of {size.tile_pixels})" if size.tile_pixels else "")
        raise ImageRefused(f"{size.format} of {what} pixels is over the budget of {max_pixels}"
                           f"{f' ({setting})' if setting else ''}: {size.pixels / 1e6:.1f} > "
                           f"{max_pixels / 1e6:.1f} megapixels")
    return size


def max_file_bytes(max_pixels: int) -> int:
    """The largest file worth reading for a budget: 4 bytes a pixel (uncompressed BGRA) plus headers."""
    return max_pixels * 4 + (1 << 20)


def set_decoder_limit(max_pixels: int = MAX_PIXELS_CEILING) -> None:
    """OpenCV's own pixel limit (it reads the variable at its first decode, default 2^30): a second line.

    An operator's own lower value is kept.
    """
    current = os.environ.get(DECODER_LIMIT_ENV, "")
    if not current.isdigit() or int(current) > max_pixels:
        os.environ[DECODER_LIMIT_ENV] = str(max_pixels)


def _png(data: bytes) -> ImageSize | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return ImageSize("PNG", width, height)


def _jpeg(data: bytes) -> ImageSize | None:
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte before a marker
            index += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            index += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, index + 5)
            return ImageSize("JPEG", width, height)
        index += 2 + struct.unpack_from(">H", data, index + 2)[0]
    return None


def _bmp(data: bytes) -> ImageSize:
    header_size = struct.unpack_from("<I", data, 14)[0]
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return ImageSize("BMP", width, abs(height))  # a negative height is a top-down bitmap


def _webp(data: bytes) -> ImageSize | None:
    kind = data[12:16]
    if kind == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageSize("WebP", width & 0x3FFF, height & 0x3FFF)
    if kind == b"VP8L":
        if data[20] != 0x2F:
            return None
        bits = struct.unpack_from("<I", data, 21)[0]
        return ImageSize("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8X":
        if len(data) < 30:
            return None
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageSize("WebP", width, height)
    return None


def _tiff(data: bytes) -> ImageSize | None:
    """The first page's size (the one OpenCV decodes), from the tags of the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack_from(order + "I", data, 4)[0]
    count = struct.unpack_from(order + "H", data, offset)[0]
    if count > _TIFF_MAX_ENTRIES:
        return None
    tags: dict[int, int] = {}
    for entry in range(count):
        tag, kind, values = struct.unpack_from(order + "HHI", data, offset + 2 + 12 * entry)
        if kind in _TIFF_TYPES and values == 1:
            code, _ = _TIFF_TYPES[kind]
            tags[tag] = struct.unpack_from(order + code, data, offset + 2 + 12 * entry + 8)[0]
    if _TIFF_WIDTH not in tags or _TIFF_HEIGHT not in tags:
        return None
    tile = tags.get(_TIFF_TILE_WIDTH, 0) * tags.get(_TIFF_TILE_HEIGHT, 0)
    return ImageSize("TIFF", tags[_TIFF_WIDTH], tags[_TIFF_HEIGHT], tile_pixels=tile)
