"""Split a PaSBench composite image into its frames.

A PaSBench image sample is one PNG holding 2-3 frames of a sequence, side by
side or stacked, with or without separating borders of one colour. The splitter
looks for two kinds of evidence, in this order:

1. Bands: full-length runs of rows or columns of (nearly) one colour inside the
   image. They split the image into panels of any size; uniform margins at the
   outer edges (and around each panel) are trimmed. Bands on both axes make a
   grid, read row by row.
2. Seams: with no bands, frames glued edge to edge leave a line where adjacent
   pixels disagree in most rows while pixels on either side agree. Natural
   edges (a door frame) can look alike, so seams are accepted only where the
   frames of one sequence would meet: at equal fractions of the width or
   height, every one of them present.

With no evidence the whole image is one frame. Frames are returned in reading
order (left to right, top to bottom) as BGR arrays, like OpenCV reads them.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from monitor.core.errors import SensorError
from sensors.image_header import DEFAULT_MAX_PIXELS, ImageRefused, check_image, max_file_bytes

Image = npt.NDArray[Any]

MAX_PANELS = 6
# A line is uniform when nearly all its pixels are within this many levels of its median colour.
_UNIFORM_DELTA = 8.0
_UNIFORM_SHARE = 0.97
# A seam must be this many times stronger than the local texture, and this strong in absolute levels.
_SEAM_RATIO = 4.0
_SEAM_MIN_LEVELS = 8.0
_SAMPLES = 256


def split_composite(image: Image, *, max_panels: int = MAX_PANELS, min_panel_frac: float = 0.1) -> list[Image]:
    """The frames of a composite in reading order, or ``[image]`` when it shows no panel borders.

    `min_panel_frac` is the smallest panel, as a share of the composite's width
    (side by side) or height (stacked), that counts as a frame.
    """
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 8:
        return [image]
    box = _trim(image, (0, image.shape[0], 0, image.shape[1]))
    panels = _split_bands(image, box, max_panels, min_panel_frac)
    if panels is None:
        panels = _split_seams(image, box, max_panels)
    if panels is None:
        return [image]
    return [np.ascontiguousarray(image[y0:y1, x0:x1]) for y0, y1, x0, x1 in panels]


def load_composite(path: Path | str) -> list[Image]:
    """Read an image file (PNG, JPEG, ...) and split it with `split_composite`."""
    path = Path(path)
    limit = max_file_bytes(DEFAULT_MAX_PIXELS)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise SensorError(f"composite {path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > limit:
        raise SensorError(f"composite {path}: larger than {limit} bytes")
    try:
        check_image(raw, DEFAULT_MAX_PIXELS)
    except ImageRefused as exc:
        raise SensorError(f"composite {path}: {exc}") from exc
    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SensorError(f"composite {path}: not an image OpenCV can decode")
    return split_composite(image)


Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def _lines(image: Image, axis: int) -> npt.NDArray[np.float32]:
    """The image as (samples along each line, lines, channels), lines being columns (axis 1) or rows (axis 0).

    Every line is kept (a border may be 1 px wide), but each line is sampled at
    most `_SAMPLES` times: plenty to tell one colour from content, and fast.
    """
    pixels = image[:, :, None] if image.ndim == 2 else image
    if axis == 0:
        pixels = pixels.transpose(1, 0, 2)
    stride = max(1, pixels.shape[0] // _SAMPLES)
    return pixels[::stride].astype(np.float32)


def _uniform_lines(region: Image, axis: int) -> npt.NDArray[np.bool_]:
    """For axis 1, which columns are one colour; for axis 0, which rows."""
    pixels = _lines(region, axis)
    median = np.median(pixels, axis=0, keepdims=True)
    distance = np.abs(pixels - median)
    close = np.maximum.reduce([distance[:, :, c] for c in range(distance.shape[2])]) <= _UNIFORM_DELTA
    return np.asarray(close.mean(axis=0) >= _UNIFORM_SHARE)


def _trim(image: Image, box: Box) -> Box:
    """Shrink a box past uniform margins on its four sides."""
    y0, y1, x0, x1 = box
    for _ in range(2):  # trimming columns can make the margin rows uniform, and back
        before = (y0, y1, x0, x1)
        top = _margin(image[y0:y1, x0:x1], 0, reverse=False)
        bottom = _margin(image[y0:y1, x0:x1], 0, reverse=True)
        if top + bottom < y1 - y0:
            y0, y1 = y0 + top, y1 - bottom
        left = _margin(image[y0:y1, x0:x1], 1, reverse=False)
        right = _margin(image[y0:y1, x0:x1], 1, reverse=True)
        if left + right < x1 - x0:
            x0, x1 = x0 + left, x1 - right
        if (y0, y1, x0, x1) == before:
            break
    return y0, y1, x0, x1


def _margin(region: Image, axis: int, *, reverse: bool) -> int:
    """How many uniform lines (rows for axis 0, columns for axis 1) the region starts (or ends) with."""
    count, total = 0, region.shape[axis]
    block = 16
    while count < total:
        lo, hi = (total - count - block, total - count) if reverse else (count, count + block)
        lo, hi = max(0, lo), min(total, hi)
        piece = region[lo:hi] if axis == 0 else region[:, lo:hi]
        flags = _uniform_lines(piece, axis)
        run = _edge_run(flags[::-1] if reverse else flags)
        count += run
        if run < len(flags):
            break
        block *= 2
    return count


def _edge_run(flags: npt.NDArray[np.bool_]) -> int:
    """How many leading entries are True."""
    false = np.flatnonzero(~flags)
    return int(false[0]) if false.size else len(flags)


def _segments(flags: npt.NDArray[np.bool_], min_len: int) -> list[tuple[int, int]]:
    """The runs of False (content) between runs of True (bands), at least `min_len` long."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for index, flag in enumerate([*flags.tolist(), True]):
        if not flag and start is None:
            start = index
        elif flag and start is not None:
            if index - start >= min_len:
                runs.append((start, index))
            start = None
    return runs


def _split_bands(image: Image, box: Box, max_panels: int, min_frac: float) -> list[Box] | None:
    y0, y1, x0, x1 = box
    region = image[y0:y1, x0:x1]
    rows = _segments(_uniform_lines(region, 0), max(2, int(min_frac * (y1 - y0))))
    cols = _segments(_uniform_lines(region, 1), max(2, int(min_frac * (x1 - x0))))
    rows = rows if 2 <= len(rows) <= max_panels else []
    cols = cols if 2 <= len(cols) <= max_panels else []
    if not rows and not cols:
        return None
    boxes: list[Box] = []
    for r0, r1 in rows or [(0, y1 - y0)]:
        for c0, c1 in cols or [(0, x1 - x0)]:
            boxes.append(_trim(image, (y0 + r0, y0 + r1, x0 + c0, x0 + c1)))
    return boxes if len(boxes) <= max_panels * max_panels else None


def _seam_scores(region: Image, axis: int) -> npt.NDArray[np.float64]:
    """How much more the pixels across each boundary differ than the local texture does."""
    pixels = _lines(region, axis)
    step = np.abs(np.diff(pixels, axis=1)).sum(axis=2) / pixels.shape[2]  # (samples, boundaries)
    across = np.median(step, axis=0).astype(np.float64)
    half = max(4, across.size // 100)
    # The local texture: the median of the neighbours on both sides, leaving out the boundary
    # and the two next to it (a slightly blurred seam spreads over three).
    padded = np.pad(across, half, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    keep = np.ones(2 * half + 1, dtype=bool)
    keep[half - 1:half + 2] = False
    local = np.median(windows[:, keep], axis=1)
    scores: npt.NDArray[np.float64] = across / (local + 1.0)
    scores[across < _SEAM_MIN_LEVELS] = 0.0
    return scores


def _split_seams(image: Image, box: Box, max_panels: int) -> list[Box] | None:
    y0, y1, x0, x1 = box
    region = image[y0:y1, x0:x1]
    best: tuple[float, int, list[int]] | None = None
    for axis in (1, 0):
        scores = _seam_scores(region, axis)
        extent = scores.size + 1
        for count in range(max_panels, 1, -1):
            cuts = _equal_cuts(scores, extent, count)
            if cuts is not None:
                strength = float(np.mean([scores[c - 1] for c in cuts]))
                if best is None or strength > best[0]:
                    best = (strength, axis, cuts)
                break
    if best is None:
        return None
    _strength, axis, cuts = best
    edges = [0, *cuts, (x1 - x0) if axis == 1 else (y1 - y0)]
    if axis == 1:
        boxes = [(y0, y1, x0 + a, x0 + b) for a, b in itertools.pairwise(edges)]
    else:
        boxes = [(y0 + a, y0 + b, x0, x1) for a, b in itertools.pairwise(edges)]
    return [_trim(image, b) for b in boxes]


def _equal_cuts(scores: npt.NDArray[np.float64], extent: int, count: int) -> list[int] | None:
    """Cut positions at k/count of the extent, each at a strong seam, or None if one is missing."""
    tolerance = max(2, int(0.015 * extent))
    cuts: list[int] = []
    for k in range(1, count):
        expected = round(k * extent / count) - 1  # boundary index between columns c-1 and c
        lo, hi = max(0, expected - tolerance), min(scores.size, expected + tolerance + 1)
        if lo >= hi:
            return None
        peak = lo + int(np.argmax(scores[lo:hi]))
        if scores[peak] < _SEAM_RATIO:
            return None
        cuts.append(peak + 1)
    # Frames of one sequence share a size: a natural edge repeated in every frame of a static
    # scene can sit near k/count, but not at equal spacing with the true seams.
    widths = np.diff([0, *cuts, extent])
    if int(widths.max() - widths.min()) > max(3, int(0.01 * widths.mean())):
        return None
    return cuts
