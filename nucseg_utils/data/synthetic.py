"""A built-in synthetic nuclei set, drawn procedurally, written in the DSB2018 layout.

It lets every stage of nucseg (data loading, training, prediction, evaluation) run end to end
without the Kaggle download, e.g. in tests, in CI, or to check an installation. Numbers
measured on it say nothing about how a method does on real microscopy images.

In: a seed, how many train and test images, and the image sizes to pick from.

Out: a folder laid out like the Kaggle data, readable unchanged by
:func:`nucseg_utils.data.open_split`::

    <root>/stage1_train/<id>/images/<id>.png        RGB or RGBA, 8 bit
    <root>/stage1_train/<id>/masks/<maskid>.png     one 0/255 PNG per nucleus
    <root>/stage1_train_labels.csv                  ImageId,EncodedPixels (one row per nucleus)
    <root>/stage1_test/<id>/images/<id>.png
    <root>/stage1_solution.csv                      ImageId,EncodedPixels,Height,Width,Usage
    <root>/SYNTHETIC.md                             says what this is (data.is_synthetic)
    <root>/synthetic.json                           the parameters that made it

Each image holds randomly rotated ellipses with wobbly outlines, of a size that varies from
image to image, some touching or overlapping (the later-drawn nucleus wins the shared pixels,
so every pixel belongs to at most one nucleus and every nucleus stays one 4-connected piece of
at least ``MIN_AREA`` pixels), with texture inside, a smooth background gradient, blur and
noise, in one of three looks: ``fluorescence`` (bright nuclei on black, most of DSB),
``brightfield`` (dark nuclei on grey) and ``stained`` (H&E-like purple nuclei, pink cytoplasm,
white background). The labels are exact: they are what was drawn.

Everything is a pure function of its arguments: the same seed gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import filelock
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from nucseg_utils.data.dsb import SYNTHETIC_MARKER
from nucseg_utils.data.rle import encode_labels

GENERATOR_VERSION = 1  # bump when the drawing changes, so cached sets are rebuilt
LOOKS = ("fluorescence", "brightfield", "stained")
DEFAULT_SHAPES = ((256, 256), (256, 256), (256, 320), (200, 300))  # listed twice = twice as likely
# Looks cycle over image indices: 4 of 6 fluorescence (like DSB), 1 brightfield, 1 stained.
DEFAULT_LOOK_CYCLE = ("fluorescence", "brightfield", "fluorescence", "stained",
                      "fluorescence", "fluorescence")
MIN_AREA = 15  # nuclei smaller than this after occlusion are dropped
MIN_VISIBLE = 0.6  # a placement is refused if it would hide more than 40% of an earlier nucleus
EMPTY_TEST_INDEX = 2  # this test image has no nuclei (when n_test >= 4)
SPLIT_CODES = {"stage1_train": 1, "stage1_test": 2}

# Optical-density vectors of haematoxylin and eosin (the usual colour-deconvolution values).
_HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_EOSIN = np.array([0.072, 0.990, 0.105])


# --------------------------------------------------------------------------- one image
@dataclass
class _Canvas:
    """The nuclei drawn so far. Lists are indexed by label (0: the background): the pixels a
    nucleus had when it was drawn, the pixels of it still visible, its (cy, cx, a, b, theta)."""
    labels: np.ndarray  # int32 (H, W)
    rho: np.ndarray  # float32 (H, W), normalised radius inside each nucleus, 1 outside
    orig_area: list = field(default_factory=lambda: [0])
    area: list = field(default_factory=lambda: [0])
    geom: list = field(default_factory=lambda: [()])
    grids: dict = field(default_factory=dict)  # pixel grids by box size, reused


def _nucleus_statistics(rng, shape, n_nuclei):
    """The image's mean nucleus radius, how many nuclei to try to place (``n_nuclei``, or
    chosen from the image size and that radius when None) and the chance that a nucleus is
    placed touching an earlier one."""
    h, w = shape
    mean_r = float(np.exp(rng.uniform(np.log(5.0), np.log(20.0))))
    mean_aspect = 1.25
    if n_nuclei is None:
        fill = rng.uniform(0.08, 0.3)
        n_nuclei = int(np.clip(round(fill * h * w / (np.pi * mean_r ** 2 * mean_aspect)), 3, 200))
    p_touch = rng.uniform(0.15, 0.4)
    return mean_r, n_nuclei, p_touch


def _random_outline(rng, mean_r):
    """One nucleus' half-axes ``a`` and ``b``, rotation and outline wobble (4 harmonics)."""
    a = max(mean_r * float(rng.lognormal(0.0, 0.2)), 2.6)
    aspect = float(rng.uniform(1.0, 1.6))
    a, b = a * np.sqrt(aspect), max(a / np.sqrt(aspect), 2.3)
    theta = float(rng.uniform(0, np.pi))
    n_wob = 4
    wob_amp = (rng.uniform(0.0, 0.05, n_wob) / np.arange(1, n_wob + 1) ** 0.5).astype(np.float32)
    wob_phase = rng.uniform(0, 2 * np.pi, n_wob).astype(np.float32)
    return a, b, theta, wob_amp, wob_phase


def _rasterise(grids: dict, shape, cy, cx, a, b, theta, wob_amp, wob_phase):
    """Mask and rho of one wobbly ellipse inside its (clipped) bounding box: (box, mask, rho),
    or None when the box lies outside the image. ``grids`` caches pixel grids by box size."""
    h, w = shape
    reach = max(a, b) * (1.0 + wob_amp.sum()) + 1.0
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, h)
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, w)
    if y1 <= y0 or x1 <= x0:
        return None
    key = (y1 - y0, x1 - x0)
    if key not in grids:
        grids[key] = np.mgrid[0:key[0], 0:key[1]].astype(np.float32)
    gy, gx = grids[key]
    dy, dx = gy + (y0 - cy), gx + (x0 - cx)
    c, s = np.cos(theta), np.sin(theta)
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    r = np.hypot(u, v)
    phi = np.arctan2(v, u)
    k = np.arange(2, 2 + wob_amp.size, dtype=np.float32)
    wobble = 1.0 + (wob_amp[:, None, None] *
                    np.cos(k[:, None, None] * phi[None] + wob_phase[:, None, None])).sum(0)
    r = r / wobble
    m = r <= 1.0
    return (slice(y0, y1), slice(x0, x1)), m, r


def _reach_along(aa, bb, tt, d):
    """Distance from an ellipse's centre to its edge in direction ``d``."""
    ang = d - tt
    return aa * bb / np.hypot(bb * np.cos(ang), aa * np.sin(ang))


def _touching_centre(rng, canvas: _Canvas, a, b, theta):
    """A centre next to a random earlier nucleus, overlapping it a little or just touching;
    None when it falls outside the image."""
    h, w = canvas.labels.shape
    cy0, cx0, a0, b0, t0 = canvas.geom[int(rng.integers(1, len(canvas.geom)))]
    d = float(rng.uniform(0, 2 * np.pi))
    dist = (_reach_along(a0, b0, t0, d) + _reach_along(a, b, theta, d)) * rng.uniform(0.72, 0.95)
    cy, cx = cy0 + dist * np.sin(d), cx0 + dist * np.cos(d)
    if not (0 <= cy < h and 0 <= cx < w):
        return None
    return cy, cx


def _hides_too_much(canvas: _Canvas, hit) -> bool:
    """Whether covering ``hit`` pixels (per label) would hide more than 1 - ``MIN_VISIBLE`` of
    an earlier nucleus."""
    for lab in np.flatnonzero(hit):
        if canvas.area[lab] - hit[lab] < MIN_VISIBLE * canvas.orig_area[lab]:
            return True
    return False


def _place_nucleus(rng, canvas: _Canvas, outline, p_touch) -> None:
    """Try up to 20 positions for one nucleus and draw it at the first that fits: inside the
    image, at least ``MIN_AREA`` px, overlapping nothing (a free nucleus) or hiding no earlier
    nucleus too much (a touching one; it wins the shared pixels)."""
    a, b, theta, wob_amp, wob_phase = outline
    h, w = canvas.labels.shape
    touch = len(canvas.geom) > 1 and rng.random() < p_touch
    for _try in range(20):
        if touch:
            centre = _touching_centre(rng, canvas, a, b, theta)
            if centre is None:
                continue
            cy, cx = centre
        else:
            cy, cx = float(rng.uniform(0, h)), float(rng.uniform(0, w))
        drawn = _rasterise(canvas.grids, (h, w), cy, cx, a, b, theta, wob_amp, wob_phase)
        if drawn is None:
            continue
        box, m, r = drawn
        n_px = int(m.sum())
        if n_px < MIN_AREA:
            continue
        under = canvas.labels[box][m]
        hit = np.bincount(under, minlength=len(canvas.area))
        hit[0] = 0
        if not touch and hit.any():
            continue  # free nuclei do not overlap anything
        if _hides_too_much(canvas, hit):
            continue
        new = len(canvas.area)
        for lab in np.flatnonzero(hit):
            canvas.area[lab] -= int(hit[lab])
        sub_l, sub_r = canvas.labels[box], canvas.rho[box]
        sub_l[m] = new
        sub_r[m] = r[m]
        canvas.area.append(n_px)
        canvas.orig_area.append(n_px)
        canvas.geom.append((cy, cx, a, b, theta))
        return


def _keep_largest_pieces(labels, rho, n_labels: int):
    """Occlusion can cut a nucleus in pieces: keep its largest 4-connected piece only, and
    drop what is left too small. Then number the survivors 1..N in drawing order. Returns the
    new labels; ``rho`` is set to 1 where they are 0 (in place)."""
    keep = np.zeros(n_labels, bool)
    for lab, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        own = labels[box] == lab
        comp, n = ndi.label(own)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            biggest = int(np.argmax(sizes))
            labels[box][own & (comp != biggest)] = 0
            own = comp == biggest
        if int(own.sum()) >= MIN_AREA:
            keep[lab] = True
        else:
            labels[box][own] = 0
    relabel = np.zeros(n_labels, np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1)
    labels = relabel[labels]
    rho[labels == 0] = 1.0
    return labels


def _draw_nuclei(rng: np.random.Generator, shape: tuple[int, int], n_nuclei: int | None):
    """Place and rasterise the nuclei. Returns (labels uint16, rho float32, mean_radius).

    ``rho`` is the normalised radius inside each nucleus (0 at its centre, 1 at its edge) and
    is used for shading.
    """
    h, w = shape
    canvas = _Canvas(np.zeros((h, w), np.int32), np.ones((h, w), np.float32))
    mean_r, n_nuclei, p_touch = _nucleus_statistics(rng, (h, w), n_nuclei)
    for _ in range(n_nuclei):
        _place_nucleus(rng, canvas, _random_outline(rng, mean_r), p_touch)
    labels = _keep_largest_pieces(canvas.labels, canvas.rho, len(canvas.area))
    return labels.astype(np.uint16), canvas.rho, mean_r


def _smooth_noise(rng, shape, sigma):
    f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    sd = float(f.std())
    return f / sd if sd > 0 else f


def _gradient(rng, shape, strength):
    """A smooth background: a tilted plane plus a very low-frequency blob, in [-1, 1]-ish."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = rng.uniform(0, 2 * np.pi)
    plane = (np.cos(d) * (xx / w - 0.5) + np.sin(d) * (yy / h - 0.5)) * 2
    blob = _smooth_noise(rng, (max(h // 8, 1), max(w // 8, 1)), 2.0)
    blob = ndi.zoom(blob, (h / blob.shape[0], w / blob.shape[1]), order=1)[:h, :w]
    out = 0.7 * plane + 0.3 * blob
    return (strength * out).astype(np.float32)


def _to_uint8(x):
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def _render(rng, look: str, nuc, inside, mean_r: float, blur: float, noise_sd: float):
    """The RGB uint8 image of ``look`` with the nuclei' intensity ``nuc`` (0 outside them):
    fluorescence (bright on dark), brightfield (dark on bright) or stained tissue."""
    h, w = inside.shape
    if look in ("fluorescence", "brightfield"):
        nuc = ndi.gaussian_filter(nuc, blur)
        if look == "fluorescence":
            bg = rng.uniform(0.01, 0.08) + _gradient(rng, (h, w), rng.uniform(0.0, 0.03))
            grey = bg + rng.uniform(0.35, 0.85) * nuc
        else:
            bg = rng.uniform(0.6, 0.85) + _gradient(rng, (h, w), rng.uniform(0.01, 0.06))
            cells = ndi.gaussian_filter(inside.astype(np.float32), max(mean_r * 0.8, 2.0))
            grey = bg - 0.08 * cells - rng.uniform(0.25, 0.45) * nuc
        grey = grey + noise_sd * rng.standard_normal((h, w)).astype(np.float32)
        rgb = np.repeat(_to_uint8(grey)[..., None], 3, axis=-1)
    else:  # stained: Beer-Lambert mix of haematoxylin (nuclei) and eosin (cytoplasm)
        cyto = ndi.gaussian_filter(inside.astype(np.float32), max(mean_r * 0.9, 2.0))
        if cyto.max() > 0:
            cyto = np.clip(cyto / max(float(cyto.max()) * 0.5, 1e-6), 0, 1)
        tissue = np.clip(_smooth_noise(rng, (h, w), max(mean_r, 6.0)) * 0.8 + 0.2, 0, 1)
        eosin = 0.05 + rng.uniform(0.3, 0.6) * np.maximum(cyto, 0.7 * tissue) \
            + 0.1 * ndi.gaussian_filter(inside.astype(np.float32), blur)
        haem = ndi.gaussian_filter(rng.uniform(0.9, 1.5) * nuc, blur) + 0.02
        od = haem[..., None] * _HEMATOXYLIN + eosin[..., None] * _EOSIN
        od = od + _gradient(rng, (h, w), rng.uniform(0.0, 0.03))[..., None]
        rgb = np.exp(-np.maximum(od, 0.0)) * rng.uniform(0.93, 1.0)
        rgb = rgb + noise_sd * rng.standard_normal((h, w, 3))
        rgb = _to_uint8(rgb)
    return rgb


def make_image(rng: np.random.Generator, shape: tuple[int, int] = (256, 256),
               look: str = "fluorescence", n_nuclei: int | None = None,
               channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic image and its exact instance labels.

    ``rng`` is a ``numpy.random.Generator`` (all randomness comes from it); ``look`` is one of
    ``LOOKS``; ``n_nuclei`` is how many nuclei to try to place (None: chosen from the image
    size and a per-image mean radius of 5-20 px; 0: an image with no nuclei). A few may not fit
    or be dropped after occlusion, so the image can hold fewer. ``channels`` is 3 (RGB) or 4
    (RGBA, alpha 255, as many Kaggle PNGs); None picks one at random.

    Returns ``(image, labels)``: ``image`` uint8 (H, W, 3 or 4); ``labels`` uint16 (H, W),
    0 = background, 1..N = nuclei, each a single 4-connected region of >= ``MIN_AREA`` px.
    """
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; choose from {', '.join(LOOKS)}")
    h, w = int(shape[0]), int(shape[1])
    if h < 8 or w < 8:
        raise ValueError(f"image shape {shape} too small (need at least 8x8)")
    if channels is None:
        channels = 4 if rng.random() < 0.6 else 3
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 or 4, got {channels}")
    labels, rho, mean_r = _draw_nuclei(rng, (h, w), n_nuclei)
    inside = labels > 0

    # Per-nucleus brightness, chromatin texture, and a little shading towards the edge.
    n = int(labels.max())
    base = np.concatenate([[0.0], rng.uniform(0.45, 1.0, n)]).astype(np.float32)
    tex = 0.6 * _smooth_noise(rng, (h, w), 1.0) + 0.4 * _smooth_noise(rng, (h, w), 2.5)
    tex_amp = rng.uniform(0.08, 0.22)
    edge = rng.uniform(0.1, 0.35)
    nuc = base[labels] * (1.0 + tex_amp * tex) * (1.0 - edge * rho ** 2)
    nuc = np.where(inside, np.clip(nuc, 0.0, 1.2), 0.0).astype(np.float32)
    blur = rng.uniform(0.5, 1.3)
    noise_sd = rng.uniform(0.005, 0.03)

    rgb = _render(rng, look, nuc, inside, mean_r, blur, noise_sd)
    if channels == 4:
        rgb = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=-1)
    return np.ascontiguousarray(rgb), labels


# --------------------------------------------------------------------------- the dataset
@dataclass
class SyntheticSample:
    id: str
    image: np.ndarray  # uint8 (H, W, 3|4)
    labels: np.ndarray  # uint16 (H, W)
    look: str
    split: str
    index: int


def image_id(seed: int, split: str, index: int) -> str:
    """The Kaggle-like 64-hex id of image ``index`` of ``split`` in the set made with ``seed``."""
    return hashlib.sha256(f"synthetic-{seed}-{split}-{index}".encode()).hexdigest()


def mask_id(seed: int, split: str, index: int, label: int) -> str:
    return hashlib.sha256(f"synthetic-{seed}-{split}-{index}-mask-{label}".encode()).hexdigest()


def make_sample(seed: int, split: str, index: int, n_split: int,
                shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                looks: Sequence[str] = DEFAULT_LOOK_CYCLE) -> SyntheticSample:
    """Image ``index`` of ``split`` (which holds ``n_split`` images) exactly as
    :func:`make_dataset` writes it."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; synthetic sets hold {', '.join(SPLIT_CODES)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)]))
    shape = tuple(shapes[int(rng.integers(len(shapes)))])
    look = looks[index % len(looks)]
    empty = split == "stage1_test" and n_split >= 4 and index == EMPTY_TEST_INDEX
    image, labels = make_image(rng, shape, look, n_nuclei=0 if empty else None)
    return SyntheticSample(image_id(seed, split, index), image, labels, look, split, index)


def _params(seed, n_train, n_test, shapes, looks) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed), "n_train": int(n_train),
            "n_test": int(n_test), "shapes": [list(map(int, s)) for s in shapes],
            "looks": list(looks)}


def _write_png(path: Path, arr: np.ndarray) -> None:
    """8-bit PNG (L, RGB or RGBA from the array's shape); light compression, for speed."""
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG", compress_level=1)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _is_complete(out_dir: Path, params: dict) -> bool:
    meta = out_dir / "synthetic.json"
    if not (meta.is_file() and (out_dir / SYNTHETIC_MARKER).is_file()):
        return False
    try:
        if json.loads(meta.read_text(encoding="utf-8")).get("params") != params:
            return False
    except (ValueError, OSError):
        return False
    for split, n in (("stage1_train", params["n_train"]), ("stage1_test", params["n_test"])):
        d = out_dir / split
        if n and (not d.is_dir() or sum(1 for _ in d.iterdir()) != n):
            return False
    return True


def _readme(params: dict, counts: dict) -> str:
    looks = ", ".join(f"{k}: {v}" for k, v in sorted(counts["looks"].items()))
    return f"""# Synthetic nuclei set (made by nucseg)

This folder is **not** real microscopy data. It is a synthetic set drawn by nucseg
(`nucseg_utils.data.synthetic`, generator version {params['generator_version']}, seed {params['seed']}):
randomly rotated ellipses with wobbly outlines stand in for nuclei, with texture, a background
gradient, blur and noise. It is laid out like the Kaggle Data Science Bowl 2018 files so that
every stage of the pipeline can run on it.

- stage1_train: {params['n_train']} images, {counts['train_nuclei']} nuclei (masks/ and stage1_train_labels.csv)
- stage1_test: {params['n_test']} images, {counts['test_nuclei']} nuclei, {counts['test_empty']} image(s) with none (stage1_solution.csv)
- looks: {looks}
- image sizes drawn from: {', '.join(f'{h}x{w}' for h, w in params['shapes'])}

Any score, loss or timing measured on this set only shows that the code runs. It says
nothing about how a method does on the real DSB2018 data or on any real images.
"""


def _checked_shapes(n_train, n_test, shapes, looks) -> list:
    """``shapes`` as (height, width) tuples of ints; ValueError for arguments that make no set."""
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise ValueError(f"need some images, got n_train={n_train}, n_test={n_test}")
    shapes = [tuple(int(v) for v in s) for s in shapes]
    if not shapes or any(len(s) != 2 for s in shapes):
        raise ValueError(f"shapes must be (height, width) pairs, got {shapes}")
    bad = [lk for lk in looks if lk not in LOOKS]
    if not looks or bad:
        raise ValueError(f"unknown look(s) {bad}; choose from {', '.join(LOOKS)}")
    return shapes


def _refuse_other_folder(out_dir: Path) -> None:
    """FileExistsError unless ``out_dir`` is absent, empty or a synthetic set."""
    if out_dir.exists() and not (out_dir.is_dir() and (
            (out_dir / SYNTHETIC_MARKER).exists() or (out_dir / "synthetic.json").exists()
            or not any(out_dir.iterdir()))):
        raise FileExistsError(f"{out_dir}: exists and is not a nucseg synthetic set; "
                              f"not overwriting it")


def _write_split(folder: Path, split: str, n: int, seed: int, shapes, looks,
                 counts: dict) -> None:
    """Write the ``n`` images of ``split`` (with their masks for stage1_train) and its CSV
    into ``folder``; add what was drawn to ``counts``."""
    (folder / split).mkdir()
    rows = []
    for i in range(n):
        s = make_sample(seed, split, i, n, shapes, looks)
        counts["looks"][s.look] = counts["looks"].get(s.look, 0) + 1
        d = folder / split / s.id
        (d / "images").mkdir(parents=True)
        _write_png(d / "images" / f"{s.id}.png", s.image)
        runs = encode_labels(s.labels)
        h, w = s.labels.shape
        if split == "stage1_train":
            (d / "masks").mkdir()
            for lab in range(1, int(s.labels.max()) + 1):
                _write_png(d / "masks" / f"{mask_id(seed, split, i, lab)}.png",
                           ((s.labels == lab) * 255).astype(np.uint8))
            rows += [(s.id, runs[lab]) for lab in sorted(runs)]
            counts["train_nuclei"] += len(runs)
        else:
            rows += ([(s.id, runs[lab], h, w, "Public") for lab in sorted(runs)]
                     or [(s.id, "", h, w, "Public")])
            counts["test_nuclei"] += len(runs)
            counts["test_empty"] += not runs
    rows.sort(key=lambda r: r[0])  # stable: nuclei keep their label order
    if split == "stage1_train":
        text = "ImageId,EncodedPixels\n" + "".join(f"{a},{b}\n" for a, b in rows)
        _write_text(folder / "stage1_train_labels.csv", text)
    else:
        text = "ImageId,EncodedPixels,Height,Width,Usage\n" + "".join(
            ",".join(map(str, r)) + "\n" for r in rows)
        _write_text(folder / "stage1_solution.csv", text)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished set ``tmp`` to ``out_dir``, replacing the set there, if any."""
    if out_dir.exists():  # an older or incomplete synthetic set (checked before)
        old = out_dir.parent / f".{out_dir.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def make_dataset(out_dir, n_train: int = 24, n_test: int = 8, seed: int = 0,
                 shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                 looks: Sequence[str] = DEFAULT_LOOK_CYCLE) -> Path:
    """Write a synthetic set in the DSB layout to ``out_dir`` and return ``out_dir``.

    If ``out_dir`` already holds a complete set made with the same parameters it is returned
    untouched. Otherwise the set is built in ``.<name>.tmp`` beside it and renamed into place,
    so an interrupted call leaves no half-made set; an older synthetic set at ``out_dir`` is
    replaced, but a folder that is not a synthetic set is never overwritten.
    """
    out_dir = Path(out_dir).expanduser()
    shapes = _checked_shapes(n_train, n_test, shapes, looks)
    params = _params(seed, n_train, n_test, shapes, looks)
    if _is_complete(out_dir, params):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # one maker at a time (two test workers, two notebooks): the others wait, then find it made
    with filelock.FileLock(_lock_path(out_dir)):
        if not _is_complete(out_dir, params):
            _make_in_place(out_dir, params, n_train, n_test, seed, shapes, looks)
    return out_dir


def _lock_path(out_dir: Path) -> Path:
    """The lock of the maker of ``out_dir``: in the system's temporary folder, so that the
    folder beside ``out_dir`` holds only the set."""
    key = hashlib.sha1(str(out_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"nucseg-synthetic-{key}.lock"


def _make_in_place(out_dir: Path, params: dict, n_train, n_test, seed, shapes, looks) -> None:
    """Build the set in ``.<name>.tmp`` beside ``out_dir`` and rename it into place."""
    _refuse_other_folder(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from an interrupted call
    try:
        tmp.mkdir()
        counts = {"looks": {}, "train_nuclei": 0, "test_nuclei": 0, "test_empty": 0}
        for split, n in (("stage1_train", n_train), ("stage1_test", n_test)):
            _write_split(tmp, split, n, seed, shapes, looks, counts)
        _write_text(tmp / SYNTHETIC_MARKER, _readme(params, counts))
        _write_text(tmp / "synthetic.json",
                    json.dumps({"params": params, "counts": counts}, indent=2) + "\n")
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def default_synthetic_root() -> Path:
    """Where the default synthetic set is cached: ``$NUCSEG_CACHE/synthetic``, else
    ``~/.cache/nucseg/synthetic``."""
    base = os.environ.get("NUCSEG_CACHE")
    base = Path(base).expanduser() if base else Path.home() / ".cache" / "nucseg"
    return base / "synthetic"


def ensure_synthetic(root=None, **kw) -> Path:
    """Make the synthetic set at ``root`` (default: :func:`default_synthetic_root`) unless it
    is there already with the same parameters; return its path. ``kw`` go to
    :func:`make_dataset`."""
    return make_dataset(default_synthetic_root() if root is None else root, **kw)
