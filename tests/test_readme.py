"""README.md's commands, run as written: the curl example answers the digit the README says.

docs/examples/digit.png is MNIST test digit 52 of tests/data/numbers/train_sample.npz (a 5), drawn
at the canvas's scale and inverted to black on white as the drawing page sends it;
`python tests/test_readme.py` writes it again.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "docs" / "examples" / "digit.png"
SAMPLE = ROOT / "tests" / "data" / "numbers" / "train_sample.npz"
INDEX = 52  # a 5, read at 100.00% by the committed model
SIDE = 280  # ten canvas pixels per MNIST pixel


def render_digit(mnist: np.ndarray) -> Image.Image:
    """Draw a 28x28 MNIST digit (white on black) as a black-on-white pen drawing."""
    big = Image.fromarray(mnist).resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    # Steeper edges than a plain resize: a pen stroke, not a blurred photo of one.
    ink = np.clip((np.asarray(big, np.float32) - 60) * 2.2, 0, 255)
    return Image.fromarray((255 - ink).astype(np.uint8))


def fixture_digit() -> tuple[np.ndarray, int]:
    with np.load(SAMPLE) as data:
        return data["x_test"][INDEX], int(data["y_test"][INDEX])


def curl_examples() -> list[tuple[list[str], str]]:
    """Each `curl` line of the README, split as a shell would, with the answer printed under it."""
    lines = README.read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("curl "):
            answer = lines[i + 1]
            assert answer.startswith("# "), f"README: no answer under {line!r}"
            found.append((shlex.split(line), answer[2:]))
    return found


def as_request(argv: list[str]) -> dict:
    """Turn a curl command line (the options the README uses) into a test-client request."""
    request: dict = {"headers": {}}
    args = iter(argv[1:])
    for arg in args:
        if arg == "-s":
            continue
        if arg == "-H":
            name, _, value = next(args).partition(":")
            request["headers"][name.strip()] = value.strip()
        elif arg == "--data-binary":
            value = next(args)
            assert value.startswith("@"), "the README posts a file"
            request["data"] = (ROOT / value[1:]).read_bytes()  # curl reads it from the checkout
        else:
            assert "path" not in request, f"unexpected curl argument {arg!r}"
            request["path"] = re.sub(r"^(https?://)?[^/]+", "", arg)
    return request


def test_example_digit_is_the_fixture_rendered():
    pixels, label = fixture_digit()
    assert label == 5
    committed = np.asarray(Image.open(EXAMPLE))
    assert committed.shape == (SIDE, SIDE)
    assert np.array_equal(committed, np.asarray(render_digit(pixels)))
    assert committed[0, 0] == 255 and committed.min() == 0  # black ink on a white page


def test_readme_curl_answers_what_it_says(base_app_config):
    from app import create_app

    examples = curl_examples()
    assert examples, "README.md has no curl example"
    client = create_app(base_app_config).test_client()
    for argv, answer in examples:
        request = as_request(argv)
        assert request["headers"].get("Content-Type") == "image/png"
        response = client.post(request["path"], data=request["data"], headers=request["headers"])
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_data(as_text=True).strip() == answer  # what curl prints
        assert json.loads(answer)["prediction"] == fixture_digit()[1]


if __name__ == "__main__":
    render_digit(fixture_digit()[0]).save(EXAMPLE, format="PNG", optimize=True)
    print(f"wrote {EXAMPLE.relative_to(ROOT)}")
