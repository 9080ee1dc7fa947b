"""The training data sets' public sources and the digests of what the committed models were trained on.

Read by training/download_data.py, which fetches, builds and checks each set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Mnist:
    """MNIST: one .npz whose file and arrays are both checked."""

    url: str
    sha256: str  # of the downloaded file
    content: str  # content_sha256 of its four arrays
    file: str  # SHA-256 of the .npz the models were trained on (same bytes with the same zlib)


@dataclass(frozen=True)
class QuickDraw:
    """Quick, Draw!: the first rows of each class's numpy_bitmap file; {name} in url is the class."""

    url: str
    classes: tuple[tuple[str, int, str], ...]  # (class, rows, SHA-256 of those rows' bytes)
    content: str
    file: str
    # Google's file of a class, where its name is not the class's: the drawings the models learnt
    # as "clock" are the first rows of alarm clock.npy (matched to Google's own strokes by
    # training/doodle_strokes.py: correlation 0.99 with alarm clock's rows 0, 1 and 3, 0.16 with clock's).
    files: Mapping[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        """Return the numpy_bitmap file name (without .npy) that holds a class's drawings."""
        return self.files.get(name, name)


@dataclass(frozen=True)
class Faces:
    """Face crops with 68 landmarks, built from two repository archives."""

    udacity: str  # archive of data/{training,test}/ and their keypoint CSVs
    helen: str  # archive of helen/{trainset,testset}/*.jpg|*.pts
    helen_crops: Path  # file,x0,y0,x1,y1 per HELEN sample, in order
    source_names: tuple[str, ...]
    arrays: Mapping[str, str]  # array name -> content_sha256 of that array alone
    file: str


QUICKDRAW_CLASSES = (
    ("airplane", 3499, "ca9af5f4f09a26106f898cdfc9adeeac052e3009d656e851a34ecfdd39725aae"),
    ("apple", 2500, "da41bccec9ae9f23e4faed174280bdd0b24f8e8b6bb51070fd6a921cb38864af"),
    ("banana", 3499, "ec34394a23d925b8c03ea4770e98d66afce4615a46672135f06a4d2124a6248d"),
    ("bicycle", 4500, "1b11b97041496480b064c401f07912cd6a8c7050e3aa0d8ca093200bc2a9f4a9"),
    ("bird", 3499, "e01f02f1fb3811d1aa47d9ca11d6f939965c3fb7a9fcff26a6bd464fbf4bdc89"),
    ("book", 4500, "0661b63d57a5a30716c7f4f6fc0d2e72cb4235a92528a8048e069645339fc227"),
    ("boomerang", 800, "db9437e2369b761f4fcf5f2617709dcc1d45361496c8362b20e56b45ac555fdb"),
    ("bowtie", 4500, "a9d30b0de2334532beed05fb1f5741ec77075af334a8579ae4c64335a21238a0"),
    ("car", 800, "05853d4033c19f45bf10e83ded43009dd9d454737a27b3675183e4b8e5895191"),
    ("cat", 3499, "b363b1759feff712a8fcbb5d79e9983a64130349ce3e955e067dedb8c9eb742c"),
    ("clock", 3499, "2c9d69de95fbfc655097fa43f9e87306ac195ed003045a0372cce19ade76f179"),
    ("diamond", 2500, "f7a82a534dfc1d09699d53a5fb22a8bc9dca30a6f16d83fee40573026d9567eb"),
    ("dog", 3499, "76f186712d8f4816062258cad6666e20cd5ad852b415ccf70e567740333bac7d"),
    ("eye", 2500, "75ef0b9b4d641430a6517734690856e1ba989c531cd79d9174454af577502954"),
    ("fish", 2500, "388092ca36f201c49e4b929e841682301ad87d0c81cca058b81d29d487b28eb3"),
    ("flower", 3499, "6932b7a6579fe0c8c70957c401b0da088390a1648de9db0db1de13359b080e03"),
    ("horse", 800, "a21bae2d95353fb4a6dc2659f3e0fe23e9f9ac96f6331e7dd938c26bacccd5ab"),
    ("house", 3499, "2a41721c684b1189c315dddd17665e9d0f3634fe7b48672616db048e63dc2f29"),
    ("house plant", 800, "4149e17e126a725c18375a16bdc382cf18efea72393884d7985bff2296fcdca2"),
    ("knife", 800, "cc52e8d422c0a79fde0dbdab1ec38ecfde0d57a9b9b0daa0d99eb43b58bdab2f"),
    ("piano", 800, "377b0386d1757957f9fba5b07ac04d61eb55599e640e12549f967e3529134e6d"),
    ("rainbow", 3499, "f0a25bbb7dfa38e7063f8bbd62a9e11c3e629d39940072f03c28f52b9fc71585"),
    ("train", 800, "ed8cba280162f73c3147cf869499023a76738777183103b62e23853c2d550dce"),
    ("tree", 800, "672964be189eb51e11db5d523f8ee7dcd1a580b4df803385154c168b2df15576"),
)

# The digests are those of the copies in the project's shared data folder, which the committed
# models were trained on (tests/training/test_download_data.py checks them when that folder is there).
DATASETS: dict[str, Mnist | QuickDraw | Faces] = {
    "mnist": Mnist(
        url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",  # keras.datasets.mnist
        content="bd930a59a860c3d5915c6d67631a728a21bc7c535055bac61f9487e95b28eaa5",
        file="06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
    ),
    "quickdraw": QuickDraw(
        url="https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/{name}.npy",
        classes=QUICKDRAW_CLASSES,
        files={"clock": "alarm clock"},
        content="907e35662e32e6ddf93d7b3c64223e925c762652e883123c03e4c373d939d7d2",
        file="b34cf11aec6d920ed74c8efc82b48dae540db5bfca4adac61b449654d700742f",
    ),
    "faces": Faces(
        udacity="https://codeload.github.com/pdmct/Facial_Keypoints/tar.gz/0bf8f6dcbbf4246728705b498f554760d4affbcf",
        helen="https://codeload.github.com/Spinkoo/Face-alignement/tar.gz/e08a16aa91ad771df34e75f70bc5aaf20238ff6a",
        helen_crops=HERE / "faces_helen_crops.csv",
        source_names=(
            "udacity_P1_training (YouTube Faces frames)",
            "udacity_P1_test (YouTube Faces frames)",
            "300W HELEN trainset",
            "300W HELEN testset",
        ),
        arrays={
            "images": "994900cc95fa35fda5e54d32154a0b2b4d55da225b9ed20a3bdb918346e12c24",
            "nose": "aa5f2e68176ba110974d982d24d185f29684c6bb7627a0b1bbbe5c8ac1361e57",
            "landmarks68": "9b4da8eca1edfca8384545a262328542c184019f7a8eaf8fa6de273b5ace7793",
            "source": "d177822c2c6f7f1e57fd0911f181211afb2546ea0f8e4530be0385ad408cc40b",
            "source_names": "d9b3edc43a6fe38aafa28b5515c9c1fab0bf9fd5e9deb27c83c5cf3d8a0d0260",
            "names": "6b86c02ff248c9b5bcfdc181eed2e30e45fd215090aab484dbf9ace7d94b5422",
            "crop_box": "66c11edb504648b21fe5a41d6aa7be9260d2bb43e5655276c0c6d82038d7b409",
            "orig_size": "e67e38d2c32f2ab06dd51abc5f6a824398c964b33cd04c6b479b23fed824f62a",
        },
        file="ab8a354e756ba13efbfa5e62906f810509cbe1e1a0f9fbe3bce5366b8be284a7",
    ),
}
FILES = {"mnist": "mnist/mnist.npz", "quickdraw": "quickdraw/quickdraw_28.npz", "faces": "faces/faces_96.npz"}
