"""The PaSBench composite splitter on composites made here: 2, 3 and 4 panels, with and without borders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.core.errors import SensorError
from sensors.composite import load_composite, split_composite
from tests.support.media import Scene, compose, moving_square, natural_image

SEEDS = range(6)


def _panels(seed: int, count: int, *, height: int = 240, width: int = 320) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [natural_image(rng, height, width) for _ in range(count)]


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("seed", SEEDS)
def test_side_by_side_without_borders_recovers_the_exact_panels(count: int, seed: int) -> None:
    panels = _panels(seed, count)
    frames = split_composite(compose(panels, axis=1))
    assert len(frames) == count
    for frame, panel in zip(frames, panels, strict=True):
        assert np.array_equal(frame, panel)


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize(
    ("gap", "outer", "color"),
    [(1, 0, (0, 0, 0)), (6, 0, (255, 255, 255)), (12, 12, (128, 128, 128)), (0, 10, (255, 255, 255))],
    ids=["hairline", "white-gap", "grey-gap-and-frame", "frame-only"],
)
@pytest.mark.parametrize("seed", SEEDS)
def test_side_by_side_with_borders_recovers_the_panel_count(
    count: int, gap: int, outer: int, color: tuple[int, int, int], seed: int
) -> None:
    panels = _panels(seed, count)
    frames = split_composite(compose(panels, axis=1, gap=gap, gap_color=color, outer=outer))
    assert len(frames) == count
    # Borders are trimmed away: every frame is the panel, give or take a JPEG-free pixel of blur.
    for frame, panel in zip(frames, panels, strict=True):
        assert abs(frame.shape[1] - panel.shape[1]) <= 2 and abs(frame.shape[0] - panel.shape[0]) <= 2


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("gap", [0, 4])
@pytest.mark.parametrize("seed", SEEDS)
def test_stacked_panels_come_out_top_to_bottom(count: int, gap: int, seed: int) -> None:
    panels = _panels(seed, count, height=200, width=360)
    frames = split_composite(compose(panels, axis=0, gap=gap))
    assert len(frames) == count
    means = [float(frame.mean()) for frame in frames]
    assert means == pytest.approx([float(panel.mean()) for panel in panels], abs=1.0)


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("seed", SEEDS)
def test_panels_of_different_widths_split_at_their_gaps(count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(200, 420, size=count)]
    panels = [natural_image(rng, 240, width) for width in widths]
    frames = split_composite(compose(panels, gap=5, gap_color=(20, 20, 20)))
    assert [frame.shape[1] for frame in frames] == widths


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("seed", SEEDS)
def test_frames_of_one_static_scene_glued_edge_to_edge(count: int, seed: int) -> None:
    # The hard case: the same background in every panel, so natural edges repeat in each frame.
    scene = Scene(width=320, height=240, seed=seed, moving=moving_square(320, 240))
    frames = split_composite(compose([scene.frame(0.6 * i) for i in range(count)]))
    assert len(frames) == count


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("seed", SEEDS)
def test_jpeg_artefacts_and_resizing_do_not_hide_the_panels(count: int, seed: int) -> None:
    composite = compose(_panels(seed, count), gap=0)
    composite = cv2.resize(composite, None, fx=0.77, fy=0.77, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", composite, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert decoded is not None
    assert len(split_composite(decoded)) == count


@pytest.mark.parametrize("seed", range(12))
def test_a_single_photo_is_not_split(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    image = natural_image(rng, 400, 1200 if seed % 2 else 600, noise=0.0 if seed % 3 == 0 else 3.0)
    frames = split_composite(image)
    assert len(frames) == 1 and frames[0] is image


def test_tiny_and_grayscale_images() -> None:
    tiny = np.zeros((4, 4, 3), dtype=np.uint8)
    assert split_composite(tiny) == [tiny]
    gray = cv2.cvtColor(compose(_panels(3, 3), gap=6), cv2.COLOR_BGR2GRAY)
    assert len(split_composite(gray)) == 3


def test_load_composite_reads_a_png(tmp_path: Path) -> None:
    path = tmp_path / "115.png"
    assert cv2.imwrite(str(path), compose(_panels(7, 3), gap=8, outer=8))
    assert len(load_composite(path)) == 3


def test_load_composite_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SensorError, match=r"broken\.png"):
        load_composite(bad)
    with pytest.raises(SensorError, match=r"missing\.png"):
        load_composite(tmp_path / "missing.png")
