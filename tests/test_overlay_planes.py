"""The overlay draws on yuv420p planes with numpy: any input pixel format and odd sizes are
cropped to even ones, and boxes and labels come out in their RGB colours."""

from __future__ import annotations

import av
import numpy as np

from cusep.video import overlay as video


def rgb_of(planes: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="rgb24")


def test_odd_rgb_frame_becomes_even_yuv420p_planes_of_the_same_picture():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(30, 220, (7, 9, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    image = np.ascontiguousarray(smooth[:49, :65])  # 65 x 49: odd both ways
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    planes = video._planes(frame, 64, 48)
    assert planes.shape == (72, 64) and planes.dtype == np.uint8
    back = rgb_of(planes).astype(float)
    centres = np.ix_(np.arange(48) % 8 // 2 == 2, np.arange(64) % 8 // 2 == 2)  # 2x2 per block
    error = np.abs(back - image[:48, :64])[centres]
    assert error.max() < 12, error.max()  # away from the blocks' edges (chroma is subsampled)


def test_box_and_label_are_drawn_in_their_colours():
    grey = np.full((48 * 3 // 2, 64), 128, np.uint8)
    grey[48:] = 128  # neutral chroma
    colour = (230, 25, 75)
    patch = np.zeros((8, 12, 3), np.uint8)
    patch[:] = colour
    patch[2:6, 3:9] = 0  # black "text"
    ink = video._Ink.of(colour, patch)
    video._draw(grey, (21, 19, 30, 20), ink, 2)  # odd corner: chroma rounded outwards
    rgb = rgb_of(grey).astype(float)
    red = np.array(colour, float)
    for y, x in ((30, 21), (30, 22), (30, 49), (30, 50), (19, 35), (38, 35)):  # the outline
        assert np.abs(rgb[y, x] - red).max() < 40, (y, x, rgb[y, x])
    assert np.abs(rgb[30, 35] - 128).max() < 8  # inside the box: untouched
    label = rgb[10:18, 20:32]  # above the box, at an even corner
    assert np.abs(label[0, 0] - red).max() < 40 and label[4, 6].max() < 40
