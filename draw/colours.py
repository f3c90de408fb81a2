"""Colours of the drawings: one stable, distinct colour per track id (overlay, viewer)."""
from __future__ import annotations

import colorsys


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per track id (hues spaced by the golden ratio)."""
    hue = (0.6 + int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.55, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)

