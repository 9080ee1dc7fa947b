"""Read line images with RapidOCR, one JSON answer per request (run in RapidOCR's own venv).

    bench/peers/.venv-rapidocr/bin/python bench/ocr_rapidocr_worker.py < requests

Each request line is the path of an image; each answer line is {"text": ..., "cpu_ms": ...}. The
angle classifier is off (it turns clean lines upside down), ONNX Runtime has one thread, like our
reader. Boxes are grouped into lines by vertical overlap, joined left to right with a space;
lines are joined with a newline. Imports nothing from this project: its venv lacks our packages.
"""

from __future__ import annotations

import json
import sys
import time


def join_boxes(boxes: list, texts: list[str]) -> str:
    """Group detected boxes into lines (vertical overlap), order them, and join their texts."""
    items = []
    for box, text in zip(boxes, texts, strict=True):
        ys = [p[1] for p in box]
        xs = [p[0] for p in box]
        items.append((min(ys), max(ys), min(xs), text))
    items.sort()
    lines: list[list[tuple]] = []
    for item in items:
        if lines:
            top = min(i[0] for i in lines[-1])
            bottom = max(i[1] for i in lines[-1])
            if min(bottom, item[1]) - max(top, item[0]) > 0.5 * (item[1] - item[0]):
                lines[-1].append(item)
                continue
        lines.append([item])
    return "\n".join(" ".join(i[3] for i in sorted(line, key=lambda i: i[2])) for line in lines)


def main() -> None:
    """Serve requests from stdin until it closes."""
    import cv2
    from rapidocr import RapidOCR

    engine = RapidOCR(
        params={
            "Global.use_cls": False,
            "Global.log_level": "critical",
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        start = time.process_time()
        out = engine(image, use_cls=False)
        cpu_ms = 1000 * (time.process_time() - start)
        text = join_boxes(out.boxes, list(out.txts)) if out.boxes is not None and out.txts else ""
        print(json.dumps({"text": text, "cpu_ms": cpu_ms}), flush=True)


if __name__ == "__main__":
    main()
