"""Draw strokes on a page's canvas with a real mouse, or with touch or pen through CDP.

A stroke is a list of (x, y) points in fractions of the canvas box (0..1), so the same drawing
fits any canvas size; points between them are interpolated so the page sees a smooth path.
"""

from __future__ import annotations

import math

Stroke = list[tuple[float, float]]
# One pointer event every STEP_PX pixels along a stroke, as a quick hand would give.
STEP_PX = 10.0

# A seven: the top bar, then the slanted stem.
SEVEN: list[Stroke] = [[(0.28, 0.22), (0.72, 0.22), (0.45, 0.82)]]


def circle(cx: float = 0.5, cy: float = 0.5, r: float = 0.3, points: int = 36) -> list[Stroke]:
    """Return one closed round stroke."""
    return [
        [
            (cx + r * math.cos(2 * math.pi * i / points), cy + r * math.sin(2 * math.pi * i / points))
            for i in range(points + 1)
        ]
    ]


def corners(canvas, stroke: Stroke) -> list[tuple[float, float]]:
    """Map a stroke's points to viewport pixels."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box, "the canvas is not visible"
    return [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]


def steps(a: tuple[float, float], b: tuple[float, float], step_px: float = STEP_PX) -> int:
    """How many moves go from a to b."""
    return max(1, int(math.hypot(b[0] - a[0], b[1] - a[1]) / step_px))


def to_page(canvas, stroke: Stroke) -> list[tuple[float, float]]:
    """Map a stroke to viewport pixels, with a point every STEP_PX along each segment."""
    pts = corners(canvas, stroke)
    out = [pts[0]]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        n = steps((x0, y0), (x1, y1))
        out.extend((x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(1, n + 1))
    return out


def mouse_draw(page, canvas, strokes: list[Stroke]) -> None:
    """Draw with the mouse: press, move through every point, release."""
    for stroke in strokes:
        pts = corners(canvas, stroke)
        page.mouse.move(*pts[0])
        page.mouse.down()
        for a, b in zip(pts, pts[1:], strict=False):
            # Playwright interpolates the moves itself: one call per segment, not per point.
            page.mouse.move(*b, steps=steps(a, b))
        page.mouse.up()


def touch_draw(page, canvas, strokes: list[Stroke]) -> None:
    """Draw with one finger through CDP touch events (the page needs has_touch)."""
    cdp = page.context.new_cdp_session(page)
    try:
        for stroke in strokes:
            pts = to_page(canvas, stroke)
            x, y = pts[0]
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
            for x, y in pts[1:]:
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    finally:
        cdp.detach()


def pen_draw(page, canvas, strokes: list[Stroke]) -> None:
    """Draw with a pen through CDP mouse events of pointer type 'pen'."""
    cdp = page.context.new_cdp_session(page)
    try:
        for stroke in strokes:
            pts = to_page(canvas, stroke)
            common = {"pointerType": "pen", "button": "left"}
            x, y = pts[0]
            cdp.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "pointerType": "pen"})
            cdp.send(
                "Input.dispatchMouseEvent",
                {"type": "mousePressed", "x": x, "y": y, "clickCount": 1, "buttons": 1, **common},
            )
            for x, y in pts[1:]:
                cdp.send(
                    "Input.dispatchMouseEvent",
                    {"type": "mouseMoved", "x": x, "y": y, "buttons": 1, "force": 0.5, **common},
                )
            cdp.send(
                "Input.dispatchMouseEvent",
                {"type": "mouseReleased", "x": x, "y": y, "clickCount": 1, "buttons": 0, **common},
            )
    finally:
        cdp.detach()


def ink_fraction(canvas) -> float:
    """Return the fraction of canvas pixels that differ from the top-left pixel (the background)."""
    return canvas.evaluate(
        """(c) => {
            const ctx = c.getContext("2d");
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            let inked = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (Math.abs(d[i] - d[0]) + Math.abs(d[i + 1] - d[1]) + Math.abs(d[i + 2] - d[2])
                    + Math.abs(d[i + 3] - d[3]) > 60) inked++;
            }
            return inked / (d.length / 4);
        }"""
    )
