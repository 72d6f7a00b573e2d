"""fastMRI-format HDF5 files: the ``ismrmrd_header`` XML and atomic writing.

A fastMRI file holds ``kspace`` (complex64, ``(slices, H, W)`` single-coil or
``(slices, coils, H, W)`` multi-coil; H is the readout, W the phase-encode
direction the column masks act on), a magnitude target ``reconstruction_esc``
(single-coil) or ``reconstruction_rss`` (multi-coil), float32 ``(slices, h, w)``,
the ISMRMRD XML header as the byte string ``ismrmrd_header`` and the attributes
``max`` (target maximum), ``norm`` (target L2 norm), ``acquisition`` and
``patient_id``. fastfn's synthetic and imported files add ``fastfn_*`` datasets and
attributes (anatomy labels, coil maps, how the acquisition was simulated).
"""
from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from fastfn.fileio import umask

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"
TARGET_KEYS = {False: "reconstruction_esc", True: "reconstruction_rss"}

__all__ = ["ISMRMRD_NS", "TARGET_KEYS", "ismrmrd_header", "parse_ismrmrd_header",
           "write_fastmri_h5"]


def ismrmrd_header(encoded: Sequence[int], recon: Sequence[int], *,
                   fov_mm: Sequence[float] = (160.0, 160.0, 3.0),
                   recon_fov_mm: Optional[Sequence[float]] = None,
                   acquired: Optional[Tuple[int, int]] = None,
                   system: str = "fastfn", field_strength_t: float = 3.0,
                   extra_comment: str = "") -> bytes:
    """An ISMRMRD XML header with the fields fastMRI's loaders read.

    Args:
        encoded: encoded matrix ``(x, y, z)``: x = readout (H), y = phase encode (W).
        recon: reconstruction matrix ``(x, y, z)`` (fastMRI knee: 320, 320, 1).
        acquired: ``(first, last)`` acquired phase-encode columns (inclusive), default
            all of them; the rest of W is zero padding. fastMRI computes
            ``padding_left = W // 2 - center`` and ``padding_right = padding_left +
            maximum + 1`` from ``encodingLimits/kspace_encoding_step_1``.
    """
    enc_x, enc_y, enc_z = (int(v) for v in encoded)
    first, last = acquired if acquired is not None else (0, enc_y - 1)
    # Header coordinates count from the first acquired line; the centre line is column
    # W // 2 of the (zero-padded) k-space array.
    center = enc_y // 2 - first
    recon_fov = recon_fov_mm if recon_fov_mm is not None else fov_mm
    root = ET.Element("ismrmrdHeader", xmlns=ISMRMRD_NS)
    sysinfo = ET.SubElement(root, "acquisitionSystemInformation")
    ET.SubElement(sysinfo, "systemVendor").text = system
    ET.SubElement(sysinfo, "systemFieldStrength_T").text = f"{field_strength_t:g}"
    enc = ET.SubElement(root, "encoding")

    def space(tag: str, matrix: Sequence[int], fov: Sequence[float]) -> None:
        node = ET.SubElement(enc, tag)
        m = ET.SubElement(node, "matrixSize")
        for axis, v in zip("xyz", matrix):
            ET.SubElement(m, axis).text = str(int(v))
        f = ET.SubElement(node, "fieldOfView_mm")
        for axis, v in zip("xyz", fov):
            ET.SubElement(f, axis).text = f"{float(v):g}"

    space("encodedSpace", (enc_x, enc_y, enc_z), fov_mm)
    space("reconSpace", recon, recon_fov)
    limits = ET.SubElement(enc, "encodingLimits")
    for tag, lo, hi, c in (("kspace_encoding_step_1", 0, last - first, center),
                           ("kspace_encoding_step_2", 0, 0, 0), ("slice", 0, 0, 0)):
        node = ET.SubElement(limits, tag)
        ET.SubElement(node, "minimum").text = str(lo)
        ET.SubElement(node, "maximum").text = str(hi)
        ET.SubElement(node, "center").text = str(c)
    ET.SubElement(enc, "trajectory").text = "cartesian"
    if extra_comment:
        root.append(ET.Comment(extra_comment))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _find_int(root: ET.Element, path: Sequence[str], where: str) -> int:
    node = root.find("/".join(f"ns:{p}" for p in path), {"ns": ISMRMRD_NS})
    if node is None or node.text is None:
        raise KeyError(f"{where}: ismrmrd_header has no {'/'.join(path)}")
    try:
        return int(float(node.text))
    except ValueError:
        raise ValueError(f"{where}: ismrmrd_header {'/'.join(path)} is {node.text!r}, "
                         "expected an integer") from None


def parse_ismrmrd_header(xml: bytes | str, where: str = "ismrmrd_header") -> Dict[str, Any]:
    """Matrix sizes and zero padding from an ISMRMRD XML header (fastMRI's reading).

    Returns ``encoding_size`` and ``recon_size`` as ``(x, y, z)`` tuples and
    ``padding_left`` / ``padding_right``: the acquired phase-encode columns are
    ``[padding_left, padding_right)`` of the k-space width. ``where`` names the
    file in error messages.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ValueError(f"{where}: ismrmrd_header is not valid XML ({e})") from None
    enc = ("encoding", "encodedSpace", "matrixSize")
    rec = ("encoding", "reconSpace", "matrixSize")
    lims = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    enc_size = tuple(_find_int(root, enc + (a,), where) for a in "xyz")
    recon_size = tuple(_find_int(root, rec + (a,), where) for a in "xyz")
    center = _find_int(root, lims + ("center",), where)
    maximum = _find_int(root, lims + ("maximum",), where) + 1
    padding_left = enc_size[1] // 2 - center
    return {"encoding_size": enc_size, "recon_size": recon_size,
            "padding_left": padding_left, "padding_right": padding_left + maximum}


def write_fastmri_h5(path: str | os.PathLike, kspace: np.ndarray, *,
                     target: Optional[np.ndarray] = None,
                     header: Optional[bytes] = None,
                     attrs: Optional[Mapping[str, Any]] = None,
                     extra: Optional[Mapping[str, np.ndarray]] = None,
                     compression: Optional[str] = None) -> Path:
    """Write one fastMRI-format volume atomically (temp file, fsync, ``os.replace``).

    Args:
        kspace: complex ``(slices, H, W)`` or ``(slices, coils, H, W)``; stored complex64.
        target: float ``(slices, h, w)`` magnitude; stored float32 as
            ``reconstruction_esc`` (3-D k-space) or ``reconstruction_rss`` (4-D).
        header: ``ismrmrd_header`` bytes (see :func:`ismrmrd_header`); default: full
            matrix, recon = min(320, H) x min(320, W).
        attrs: file attributes (``max``/``norm`` default to the target's).
        extra: further datasets, e.g. ``fastfn_labels``.
    """
    path = Path(path)
    kspace = np.asarray(kspace)
    if kspace.ndim not in (3, 4) or not np.iscomplexobj(kspace):
        raise ValueError(f"{path}: kspace must be complex (slices, H, W) or (slices, coils, H, W), "
                         f"got {kspace.dtype} {kspace.shape}")
    multicoil = kspace.ndim == 4
    all_attrs: Dict[str, Any] = {"acquisition": "UNKNOWN", "patient_id": path.stem}
    if target is not None:
        target = np.asarray(target, dtype=np.float32)
        if target.ndim != 3 or target.shape[0] != kspace.shape[0]:
            raise ValueError(f"{path}: target must be (slices={kspace.shape[0]}, h, w), "
                             f"got {target.shape}")
        all_attrs["max"] = float(target.max())
        all_attrs["norm"] = float(np.linalg.norm(target.ravel()))
    all_attrs.update(attrs or {})
    if header is None:
        h, w = kspace.shape[-2:]
        header = ismrmrd_header((h, w, 1), (min(320, h), min(320, w), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            chunks = (1,) + kspace.shape[1:]
            f.create_dataset("kspace", data=kspace.astype(np.complex64, copy=False),
                             chunks=chunks, compression=compression)
            if target is not None:
                f.create_dataset(TARGET_KEYS[multicoil], data=target,
                                 chunks=(1,) + target.shape[1:], compression=compression)
            f.create_dataset("ismrmrd_header", data=np.bytes_(header))
            for key, value in (extra or {}).items():
                value = np.asarray(value)
                chunks = (1,) + value.shape[1:] if value.ndim >= 2 else None
                f.create_dataset(key, data=value, chunks=chunks, compression=compression)
            for key, value in all_attrs.items():
                f.attrs[key] = value
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
