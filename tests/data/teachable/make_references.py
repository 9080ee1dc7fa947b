"""Recompute reference_own_images.json: each export's probabilities from its own runtime on images/.

Each runtime gets the same float32 input, prepared here as Teachable Machine's Python snippet does
(Pillow ImageOps.fit to 224x224 with LANCZOS, then x / 127.5 - 1). A quantized TFLite input is
rounded to the model's own input grid, q = clip(round(x / scale + zero_point)), as the script that
wrote reference_tfjs_tflite.json did.

    python tests/data/teachable/make_references.py EXPORTS_DIR [EXPORTS_DIR ...] \
        --node-modules DIR      # holds @tensorflow/tfjs 4.22.0 (npm install @tensorflow/tfjs@4.22.0)
        --litert-python PYTHON  # a Python with ai-edge-litert 2.3.0
        --tf-keras DIR          # tf-keras 2.21.0 (pip install --target DIR --no-deps), run with this
                                # Python's TensorFlow

Every sub-folder of an EXPORTS_DIR holding model.json, *.tflite or keras_model.h5 is run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).parent
IMAGES = ["red.png", "circle.png", "gradient_shapes.png", "photo_frame.png", "photo_face.png"]

TFJS = r"""
const tf = require('@tensorflow/tfjs'); const fs = require('fs'), path = require('path');
(async () => {
  const [dir, inp, n] = process.argv.slice(2); await tf.setBackend('cpu');
  const mj = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const specs = [].concat(...mj.weightsManifest.map(g => g.weights));
  const wb = Buffer.concat([].concat(...mj.weightsManifest.map(g => g.paths.map(p => fs.readFileSync(path.join(dir, p))))));
  const weightData = wb.buffer.slice(wb.byteOffset, wb.byteOffset + wb.byteLength);
  const model = await tf.loadLayersModel(tf.io.fromMemory({modelTopology: mj.modelTopology, weightSpecs: specs, weightData}));
  const raw = fs.readFileSync(inp);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [Number(n), 224, 224, 3]);
  process.stdout.write(JSON.stringify({runtime: '@tensorflow/tfjs ' + tf.version.tfjs + ' (node, cpu backend)', probs: model.predict(x).arraySync()}));
})().catch(e => { console.error(e); process.exit(1); });
"""

LITERT = r"""
import json, sys, numpy as np
from importlib.metadata import version
from ai_edge_litert import interpreter as lite
it = lite.Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
i, o = it.get_input_details()[0], it.get_output_details()[0]
x = np.load(sys.argv[2]); out = []
for k in range(len(x)):
    t = x[k:k + 1]
    if i['dtype'] != np.float32:
        s, z = i['quantization']; t = np.clip(np.round(t / s + z), 0, 255).astype(i['dtype'])
    it.set_tensor(i['index'], t); it.invoke(); y = it.get_tensor(o['index'])[0]
    if o['dtype'] != np.float32:
        s, z = o['quantization']; y = (y.astype(np.float32) - z) * s
    out.append(y.tolist())
print(json.dumps({'runtime': 'ai-edge-litert ' + version('ai-edge-litert'), 'probs': out}))
"""

KERAS2 = r"""
import json, os, sys, numpy as np
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import tf_keras
m = tf_keras.models.load_model(sys.argv[1], compile=False)
p = m(np.load(sys.argv[2]), training=False).numpy()
print(json.dumps({'runtime': 'tf_keras ' + tf_keras.__version__, 'probs': p.tolist()}))
"""


def prepared() -> np.ndarray:
    """Return the five images as the float32 batch every runtime is given."""
    rows = []
    for name in IMAGES:
        image = Image.open(HERE / "images" / name).convert("RGB")
        fitted = ImageOps.fit(image, (224, 224), Image.Resampling.LANCZOS)
        rows.append(np.asarray(fitted).astype(np.float32) / 127.5 - 1)
    return np.stack(rows)


def run(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def labels_of(folder: Path) -> list[str]:
    if (folder / "metadata.json").is_file():
        return json.loads((folder / "metadata.json").read_text(encoding="utf-8"))["labels"]
    lines = (folder / "labels.txt").read_text(encoding="utf-8").splitlines()
    return [line.split(maxsplit=1)[-1].strip() for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--node-modules", required=True)
    parser.add_argument("--litert-python", required=True)
    parser.add_argument("--tf-keras", required=True)
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        x = prepared()
        npy, f32 = Path(tmp) / "x.npy", Path(tmp) / "x.f32"
        np.save(npy, x)
        x.tofile(f32)
        js, lite, keras = Path(tmp) / "tfjs.js", Path(tmp) / "litert.py", Path(tmp) / "keras2.py"
        js.write_text(TFJS)
        lite.write_text(LITERT)
        keras.write_text(KERAS2)
        folders = sorted(p for base in args.exports for p in base.iterdir() if p.is_dir())
        for folder in folders:
            runs = []
            if (folder / "model.json").is_file():
                cmd = ["node", str(js), str(folder.resolve()), str(f32), str(len(x))]
                runs.append(("model.json", "tfjs", cmd, {"NODE_PATH": args.node_modules}))
            for name in ("model_unquant.tflite", "model.tflite"):
                if (folder / name).is_file():
                    runs.append(
                        (name, "tflite", [args.litert_python, str(lite), str(folder / name), str(npy)], None)
                    )
            if (folder / "keras_model.h5").is_file():
                cmd = [sys.executable, str(keras), str(folder / "keras_model.h5"), str(npy)]
                runs.append(("keras_model.h5", "keras_h5", cmd, {"PYTHONPATH": args.tf_keras}))
            for name, fmt, cmd, env in runs:
                got = run(cmd, env)
                key = f"{folder.name}/{name}"
                print(key, got["runtime"], np.round(got["probs"], 4).tolist())
                result[key] = {
                    "format": fmt,
                    "runtime": got["runtime"],
                    "labels": labels_of(folder),
                    "images": IMAGES,
                    "probabilities": [[round(float(v), 7) for v in row] for row in got["probs"]],
                }
    out = HERE / "reference_own_images.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", out)


if __name__ == "__main__":
    main()
