"""Run-length encoding in Kaggle's DSB2018 convention.

In: a label image (H, W) of non-negative integers, or a list of run strings.
Out: the other one.

Convention: pixels are numbered 1..H*W top to bottom, then left to right (column-major, i.e.
Fortran order); a run string is ``"start length start length ..."`` with ascending starts.
Both directions are vectorised (no Python loop over pixels or runs).
"""
from __future__ import annotations

import numpy as np


class RLEError(ValueError):
    """A run string that cannot be decoded; the message says which runs and why."""


def parse_runs(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (starts, lengths) of a run string, 1-based starts. Raises RLEError if malformed."""
    text = "" if text is None else str(text).strip()
    if not text or text.lower() == "nan":
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    parts = text.split()
    if len(parts) % 2:
        raise RLEError(f"odd number of values ({len(parts)}): runs come as 'start length' pairs")
    try:
        values = np.array(parts, dtype=np.int64)
    except ValueError as err:
        raise RLEError(f"non-integer value in runs: {err}") from None
    return values[0::2], values[1::2]


def check_runs(starts: np.ndarray, lengths: np.ndarray, n_pixels: int) -> None:
    """Raise RLEError unless runs are positive, in range [1, n_pixels], sorted and disjoint."""
    if starts.size == 0:
        return
    if (starts < 1).any():
        raise RLEError(f"run start {int(starts[starts < 1][0])} < 1 (runs are 1-based)")
    if (lengths < 1).any():
        raise RLEError(f"run length {int(lengths[lengths < 1][0])} < 1")
    ends = starts + lengths - 1
    if (ends > n_pixels).any():
        i = int(np.argmax(ends > n_pixels))
        raise RLEError(f"run {int(starts[i])} {int(lengths[i])} ends at pixel {int(ends[i])}, "
                       f"outside the image of {n_pixels} pixels")
    if (starts[1:] <= ends[:-1]).any():
        i = int(np.argmax(starts[1:] <= ends[:-1]))
        raise RLEError(f"runs not sorted or overlapping at run {int(starts[i + 1])} "
                       f"{int(lengths[i + 1])}")


def decode_labels(runs: list[str], shape: tuple[int, int], *, names=None) -> np.ndarray:
    """Decode one run string per object into a label image; object i gets label i + 1.

    Raises RLEError naming the object (``names[i]`` if given, else its index) when a run is
    malformed, out of range, or when two objects claim the same pixel.
    """
    h, w = int(shape[0]), int(shape[1])
    n = h * w
    all_starts, all_ends, all_ids = [], [], []
    for i, text in enumerate(runs):
        name = names[i] if names is not None else f"object {i}"
        try:
            s, l = parse_runs(text)
            check_runs(s, l, n)
        except RLEError as err:
            raise RLEError(f"{name}: {err}") from None
        all_starts.append(s - 1)
        all_ends.append(s - 1 + l)
        all_ids.append(np.full(s.size, i + 1, np.int64))
    dtype = np.uint16 if len(runs) < 65535 else np.int32
    if not runs:
        return np.zeros((h, w), dtype)
    starts = np.concatenate(all_starts)
    ends = np.concatenate(all_ends)
    ids = np.concatenate(all_ids)
    # Difference arrays: one for the label value, one for the coverage count (overlap check).
    value = np.zeros(n + 1, np.int64)
    count = np.zeros(n + 1, np.int32)
    np.add.at(value, starts, ids)
    np.add.at(value, ends, -ids)
    np.add.at(count, starts, 1)
    np.add.at(count, ends, -1)
    coverage = np.cumsum(count[:-1])
    if (coverage > 1).any():
        pix = int(np.argmax(coverage > 1))
        owners = sorted({int(ids[k]) for k in np.nonzero((starts <= pix) & (ends > pix))[0]})
        who = [names[o - 1] if names is not None else f"object {o - 1}" for o in owners]
        raise RLEError(f"objects overlap at pixel {pix + 1}: {', '.join(map(str, who))}")
    flat = np.cumsum(value[:-1]).astype(dtype)
    return flat.reshape((w, h)).T.copy()


def encode_labels(labels: np.ndarray) -> dict[int, str]:
    """Encode every non-zero label of a label image; returns {label: run string}, sorted by label."""
    flat = np.asarray(labels).T.ravel()  # column-major
    pix = np.flatnonzero(flat)
    if pix.size == 0:
        return {}
    lab = flat[pix]
    order = np.lexsort((pix, lab))
    pix, lab = pix[order], lab[order]
    new_run = np.ones(pix.size, bool)
    new_run[1:] = (lab[1:] != lab[:-1]) | (pix[1:] != pix[:-1] + 1)
    run_idx = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_idx, pix.size))
    run_start = pix[run_idx] + 1
    run_lab = lab[run_idx]
    out: dict[int, str] = {}
    bounds = np.flatnonzero(np.diff(run_lab)) + 1
    for chunk in np.split(np.arange(run_lab.size), bounds):
        pairs = np.empty(2 * chunk.size, np.int64)
        pairs[0::2] = run_start[chunk]
        pairs[1::2] = run_len[chunk]
        out[int(run_lab[chunk[0]])] = " ".join(map(str, pairs.tolist()))
    return out


def encode_mask(mask: np.ndarray) -> str:
    """Encode one binary mask as a run string ('' when empty)."""
    return encode_labels(np.asarray(mask).astype(bool).astype(np.uint8)).get(1, "")
