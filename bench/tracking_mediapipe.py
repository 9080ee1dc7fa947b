"""MediaPipe Face Mesh's nose tip (landmark 4) on 96x96 gray crops: run in bench/peers/.venv-mediapipe.

    python bench/tracking_mediapipe.py CROPS.npy OUT.json --sizes 96 192

Started by bench/tracking_peers.py as a subprocess (its own venv: mediapipe 0.10.21 pins numpy 1.x).
Imports nothing from this project. Each crop (gray, replicated to RGB) is given to Face Mesh at each
size (cv2.resize, bilinear, when upscaled); the answer is mapped back to 96x96 pixel-centre
coordinates, or null when no face is found. CPU time is time.process_time per face (all threads).
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import mediapipe as mp
import numpy as np

NOSE_TIP = 4  # Face Mesh's nose tip (the iBUG 68-point nose tip is landmark 30)
SIZE = 96


def run(crops: np.ndarray, size: int) -> dict:
    """Return each crop's nose tip (96x96 pixel centres) or None, and the CPU ms per face."""
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
    warm = cv2.cvtColor(cv2.resize(crops[0], (size, size)), cv2.COLOR_GRAY2RGB)
    mesh.process(warm)  # the first call builds the graph
    points, cpu = [], []
    for crop in crops:
        t0 = time.process_time()
        image = crop if size == SIZE else cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
        result = mesh.process(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
        cpu.append(time.process_time() - t0)
        if not result.multi_face_landmarks:
            points.append(None)
            continue
        p = result.multi_face_landmarks[0].landmark[NOSE_TIP]
        # Normalised coordinates are in units of the image side (pixel edges): the same for any size.
        points.append([p.x * SIZE - 0.5, p.y * SIZE - 0.5])
    mesh.close()
    return {"points": points, "cpu_ms": 1000 * float(np.mean(cpu))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("crops", help=".npy of (N, 96, 96) uint8 gray crops")
    p.add_argument("out", help="JSON written here")
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 192])
    args = p.parse_args()
    crops = np.load(args.crops)
    out = {"mediapipe": mp.__version__, "sizes": {str(s): run(crops, s) for s in args.sizes}}
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
