"""Keyframes: which of a window's frames the model sees, as JPEG data URLs within a token budget.

Selection covers the change in the window instead of taking the last K:

1. the newest frame of every camera in the zone (what the scene looks like now);
2. then, greedily, the frame that differs most from every frame already chosen
   of its camera (the change score of the gate, on small grey images decoded
   at reduced size from the frames' JPEGs); ties go to the frame farthest in
   time from the chosen ones, which spreads a static stretch over the window;
3. stop at `max_frames`, or when the best candidate differs from the chosen
   ones by less than `min_change` (a static scene costs one image, not K).

The budget then keeps frames in the order they were chosen while their
estimated tokens fit `max_image_tokens` (see `KeyframeSettings` for the
estimate), and the result is returned in time order. Frames no larger than
`longest_side` are sent as they are; larger ones are downscaled and re-encoded
at `jpeg_quality`. Cost: a window of a dozen 640 px frames takes a few ms (thumbnails
are decoded at 1/4 scale and cached per frame); re-encoding larger frames takes
tens of ms, so the model stage calls `choose_images_off_loop`.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import OrderedDict
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from monitor.assess.settings import KeyframeSettings
from monitor.windows import Window
from sensors.camera import downscale, encode_jpeg
from sensors.camera_config import GatingSettings
from sensors.gating import change_score, gray_thumbnail
from sensors.types import Frame

_GATING = GatingSettings()  # the same change measure the camera gate uses
_CACHE_SIZE = 512
_CACHE: OrderedDict[tuple[str, float, int], npt.NDArray[np.uint8] | None] = OrderedDict()
_CACHE_LOCK = threading.Lock()


async def choose_images_off_loop(window: Window, settings: KeyframeSettings) -> list[tuple[Frame, str]]:
    """`choose_images` in a worker thread: decoding and re-encoding stay off the event loop."""
    if not window.frames:
        return []
    return await asyncio.to_thread(choose_images, window, settings)


def choose_images(window: Window, settings: KeyframeSettings) -> list[tuple[Frame, str]]:
    """Up to `max_frames` frames of the window with their data URLs, in time order, within the token budget."""
    chosen = within_budget(select_keyframes(window.frames, settings), settings)
    return [(frame, data_url(frame, settings)) for frame in sorted(chosen, key=lambda f: f.ts)]


def select_keyframes(frames: Sequence[Frame], settings: KeyframeSettings) -> list[Frame]:
    """The frames that cover the change, in the order they were chosen (most important first)."""
    if not frames:
        return []
    thumbs = [_thumbnail(frame) for frame in frames]
    chosen: list[int] = []
    for source in dict.fromkeys(f.source for f in reversed(frames)):
        newest = max((i for i, f in enumerate(frames) if f.source == source), key=lambda i: frames[i].ts)
        chosen.append(newest)
    chosen = sorted(chosen, key=lambda i: frames[i].ts, reverse=True)[: settings.max_frames]
    while len(chosen) < settings.max_frames:
        best = _most_novel(frames, thumbs, chosen)
        if best is None or best[0] < settings.min_change:
            break
        chosen.append(best[1])
    return [frames[i] for i in chosen]


def _most_novel(frames: Sequence[Frame], thumbs: list[npt.NDArray[np.uint8] | None],
                chosen: list[int]) -> tuple[float, int] | None:
    best: tuple[float, float, int] | None = None
    for index, frame in enumerate(frames):
        if index in chosen:
            continue
        same = [c for c in chosen if frames[c].source == frame.source]
        novelty = min((_distance(thumbs[index], thumbs[c]) for c in same), default=1.0)
        spread = min((abs(frame.ts - frames[c].ts) for c in chosen), default=0.0)
        if best is None or (novelty, spread) > (best[0], best[1]):
            best = (novelty, spread, index)
    return None if best is None else (best[0], best[2])


def _distance(a: npt.NDArray[np.uint8] | None, b: npt.NDArray[np.uint8] | None) -> float:
    if a is None or b is None:
        return 1.0  # undecodable: we cannot tell, so it is not a duplicate
    return change_score(a, b, pixel_delta=_GATING.pixel_delta)


def _thumbnail(frame: Frame) -> npt.NDArray[np.uint8] | None:
    # Consecutive windows of a zone share most frames: decode each frame once.
    key = (frame.source, frame.ts, hash(frame.jpeg))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    thumb = _decode_thumbnail(frame)
    with _CACHE_LOCK:
        _CACHE[key] = thumb
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return thumb


def _decode_thumbnail(frame: Frame) -> npt.NDArray[np.uint8] | None:
    reduce = cv2.IMREAD_REDUCED_GRAYSCALE_4 if max(frame.width, frame.height) >= 4 * _GATING.size \
        else cv2.IMREAD_REDUCED_GRAYSCALE_2 if max(frame.width, frame.height) >= 2 * _GATING.size \
        else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), reduce)
    if image is None:
        return None
    return gray_thumbnail(image, size=_GATING.size, blur=_GATING.blur)


def sent_size(frame: Frame, settings: KeyframeSettings) -> tuple[int, int]:
    """Width and height of the frame as it will be sent."""
    scale = min(1.0, settings.longest_side / max(frame.width, frame.height))
    return max(1, round(frame.width * scale)), max(1, round(frame.height * scale))


def image_tokens(frame: Frame, settings: KeyframeSettings) -> int:
    """Estimated prompt tokens of one frame as sent."""
    return settings.estimate_tokens(*sent_size(frame, settings))


def within_budget(frames: Sequence[Frame], settings: KeyframeSettings) -> list[Frame]:
    """The frames, in priority order, that fit `max_image_tokens` together."""
    kept: list[Frame] = []
    spent = 0
    for frame in frames:
        cost = image_tokens(frame, settings)
        if spent + cost <= settings.max_image_tokens:
            kept.append(frame)
            spent += cost
    return kept


def data_url(frame: Frame, settings: KeyframeSettings) -> str:
    """`data:image/jpeg;base64,...` of the frame, downscaled to `longest_side` if larger."""
    jpeg = frame.jpeg
    if max(frame.width, frame.height) > settings.longest_side:
        image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            jpeg = encode_jpeg(downscale(image, settings.longest_side), settings.jpeg_quality)
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
