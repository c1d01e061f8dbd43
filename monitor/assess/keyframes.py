"""Keyframes: which of a window's frames the model sees, as JPEG data URLs within a token budget.

Selection covers the change in the window instead of taking the last K:

1. the newest frame of every camera in the zone (what the scene looks like now);
2. then, greedily, the frame that differs most from every frame already chosen
   of its camera (the change score of the gate, on the small grey image the
   camera's gate already made; a frame without one, from replay, is decoded at
   reduced size once); ties go to the frame farthest in time from the chosen
   ones, which spreads a static stretch over the window;
3. stop at `max_frames`, or when the best candidate differs from the chosen
   ones by less than `min_change` (a static scene costs one image, not K).

The budget then keeps frames in the order they were chosen while their
estimated tokens fit `max_image_tokens` (see `KeyframeSettings` for the
estimate), and the result is returned in the window's order (arrival: a camera
whose clock lags is not taken for an old one; docs/reliability.md). Only the chosen frames are
JPEG-encoded (`Frame.jpeg`, once per frame however many windows send it); frames
larger than `longest_side` are downscaled and encoded at `jpeg_quality`, also
once. Encoding takes a few ms per frame, so the model stage calls
`choose_images_off_loop`. OpenCV is imported only when a window has frames.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from monitor.assess.settings import KeyframeSettings
from monitor.windows import Window
from sensors.camera_config import GatingSettings
from sensors.types import Frame

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_GATING = GatingSettings()  # the same change measure the camera gate uses


async def choose_images_off_loop(window: Window, settings: KeyframeSettings) -> list[tuple[Frame, str]]:
    """`choose_images` in a worker thread: decoding and re-encoding stay off the event loop."""
    if not window.frames:
        return []
    return await asyncio.to_thread(choose_images, window, settings)


def choose_images(window: Window, settings: KeyframeSettings) -> list[tuple[Frame, str]]:
    """Up to `max_frames` frames of the window with their data URLs, in its order, within the token budget."""
    chosen = {id(frame) for frame in within_budget(select_keyframes(window.frames, settings), settings)}
    return [(frame, data_url(frame, settings)) for frame in window.frames if id(frame) in chosen]


def select_keyframes(frames: Sequence[Frame], settings: KeyframeSettings) -> list[Frame]:
    """The frames that cover the change, in the order they were chosen (most important first)."""
    if not frames:
        return []
    thumbs = [_thumbnail(frame) for frame in frames]
    chosen: list[int] = []
    for source in dict.fromkeys(f.source for f in reversed(frames)):
        # Newest by arrival (the window's order), not by a camera clock that may lag or run ahead.
        chosen.append(max(i for i, f in enumerate(frames) if f.source == source))
    chosen = sorted(chosen, reverse=True)[: settings.max_frames]
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
    from sensors.gating import change_score

    if a is None or b is None:
        return 1.0  # undecodable: we cannot tell, so it is not a duplicate
    return change_score(a, b, pixel_delta=_GATING.pixel_delta)


def _thumbnail(frame: Frame) -> npt.NDArray[np.uint8] | None:
    # A camera's frames carry the gate's grey image; others are decoded once and kept with the frame
    # (consecutive windows of a zone share most of their frames).
    if frame.thumbnail is not None:
        return frame.thumbnail
    return frame.derived("keyframes.thumbnail", _make_thumbnail)


def _make_thumbnail(frame: Frame) -> npt.NDArray[np.uint8] | None:
    import cv2
    import numpy as np

    from sensors.gating import gray_thumbnail

    if frame.image is not None:
        return gray_thumbnail(frame.image, size=_GATING.size, blur=_GATING.blur)
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
    """`data:image/jpeg;base64,...` of the frame, downscaled to `longest_side` if larger (encoded once)."""
    if max(frame.width, frame.height) <= settings.longest_side:
        jpeg = frame.jpeg
    else:
        key = ("keyframes.jpeg", settings.longest_side, settings.jpeg_quality)
        jpeg = frame.derived(key, lambda f: _smaller_jpeg(f, settings))
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _smaller_jpeg(frame: Frame, settings: KeyframeSettings) -> bytes:
    import cv2
    import numpy as np

    from sensors.camera import downscale, encode_jpeg

    image: npt.NDArray[Any] | None = frame.image
    if image is None:
        image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return frame.jpeg  # undecodable: sent as it is, the model may still make something of it
    return encode_jpeg(downscale(image, settings.longest_side), settings.jpeg_quality)
