"""Scenes of flat coloured shapes on a flat background: the palette, the 3x3 placement grid, pixel-exact
rendering. The synthetic editing tasks (data/synthetic.py) and their exact verifiers build on this.

Geometry: the canvas (H, W) is split into a 3x3 grid of cells, row i spanning y in [i*H//3, (i+1)*H//3)
(columns likewise); a shape of side `size` sits centred in its cell, top-left corner
(y0 + (cell_h - size)//2, x0 + (cell_w - size)//2), at least one pixel from the cell's border, so shapes in
different cells never touch. Shapes are drawn without antialiasing; every pixel is exactly a palette colour.
Masks inside the size x size box, with u the row and v the column (0-based), s the size:
  square   every pixel
  circle   (2u - s + 1)^2 + (2v - s + 1)^2 <= s^2 - s
  triangle |2v - s + 1| <= u            (apex up, base on the bottom row)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (240, 210, 30),
    "orange": (245, 130, 20), "purple": (130, 50, 170), "cyan": (40, 200, 210), "pink": (245, 150, 190),
    "white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128),
}
SHAPE_KINDS = ("square", "circle", "triangle")
CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
MIN_SHAPE = 3                                  # the smallest side at which the kinds look different
MIN_SIDE = 3 * (MIN_SHAPE + 2)                 # the smallest canvas side: such a shape and a margin per cell


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str                                  # one of SHAPE_KINDS
    color: str                                 # a PALETTE name
    cell: str                                  # one of CELLS
    top: int                                   # row of the box's top-left pixel
    left: int                                  # column of the box's top-left pixel
    size: int                                  # side of the box in pixels

    def moved_to(self, cell: str, height: int, width: int) -> "Shape":
        top, left = place(cell, self.size, height, width)
        return dataclasses.replace(self, cell=cell, top=top, left=left)


def cell_bounds(cell: str, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a grid cell, half-open."""
    row, col = divmod(CELLS.index(cell), 3)
    return row * height // 3, (row + 1) * height // 3, col * width // 3, (col + 1) * width // 3


def max_shape_size(height: int, width: int) -> int:
    """The largest side that fits every cell with a one-pixel margin."""
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"canvas sides must be >= {MIN_SIDE} pixels, got {height}x{width}")
    return min(height // 3, width // 3) - 2


def place(cell: str, size: int, height: int, width: int) -> tuple[int, int]:
    """(top, left) of a size x size box centred in `cell`."""
    y0, y1, x0, x1 = cell_bounds(cell, height, width)
    return y0 + (y1 - y0 - size) // 2, x0 + (x1 - x0 - size) // 2


def shape_mask(kind: str, size: int) -> torch.Tensor:
    """bool [size, size]: the pixels of the shape inside its box."""
    u = torch.arange(size).view(-1, 1)                              # row    [s, 1]
    v = torch.arange(size).view(1, -1)                              # column [1, s]
    if kind == "square":
        return torch.ones(size, size, dtype=torch.bool)
    if kind == "circle":
        return (2 * u - size + 1) ** 2 + (2 * v - size + 1) ** 2 <= size * size - size
    if kind == "triangle":
        return (2 * v - size + 1).abs() <= u
    raise ValueError(f"unknown shape kind {kind!r}; choose from {SHAPE_KINDS}")


def rgb(color: str) -> tuple[int, int, int]:
    if color not in PALETTE:
        raise ValueError(f"unknown colour {color!r}; choose from {sorted(PALETTE)}")
    return PALETTE[color]


def render(height: int, width: int, background: str, shapes: tuple[Shape, ...] | list[Shape]) -> torch.Tensor:
    """The scene as uint8 [3, H, W]."""
    image = torch.tensor(rgb(background), dtype=torch.uint8).view(3, 1, 1).repeat(1, height, width)
    for shape in shapes:
        box = image[:, shape.top: shape.top + shape.size, shape.left: shape.left + shape.size]   # [3, s, s] view
        if box.shape[1:] != (shape.size, shape.size):
            raise ValueError(f"{shape} does not fit a {height}x{width} canvas")
        colour = torch.tensor(rgb(shape.color), dtype=torch.uint8).view(3, 1)
        box[:, shape_mask(shape.kind, shape.size)] = colour
    return image


def owners(height: int, width: int, shapes: Sequence[tuple[int, Shape]]) -> torch.Tensor:
    """int64 [H, W]: the index of the shape each pixel shows (-1: background); later shapes cover earlier ones,
    as in render."""
    owner = torch.full((height, width), -1, dtype=torch.int64)
    for index, shape in shapes:
        box = owner[shape.top: shape.top + shape.size, shape.left: shape.left + shape.size]   # [s, s] view
        if box.shape != (shape.size, shape.size):
            raise ValueError(f"{shape} does not fit a {height}x{width} canvas")
        box[shape_mask(shape.kind, shape.size)] = index
    return owner
