"""`fastfn data synth|import|default`: make fastMRI-format data (thin layer over fastfn.data)."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("data", help="generate synthetic knee data or import images / raw k-space",
                       description="Write fastMRI-format .h5 volumes: synthetic knees, imported "
                                   "magnitude images (simulated acquisition) or raw k-space.")
    cmds = p.add_subparsers(dest="data_command", metavar="ACTION")
    cmds.required = True

    s = cmds.add_parser("synth", help="generate synthetic knee volumes",
                        description="Generate deterministic knee-like PD volumes in fastMRI format "
                                    "(kspace, reconstruction_esc/_rss, ismrmrd_header, anatomy labels "
                                    "'fastfn_labels') and, beside the folder, OUT_annotations.csv "
                                    "(fastMRI+-style boxes of the menisci and cartilage).",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--volumes", type=int, default=10, help="number of volumes (files)")
    s.add_argument("--slices", type=int, default=20, help="slices per volume")
    s.add_argument("--coils", type=int, default=None,
                   help="simulated receive coils (multi-coil files); omit for single-coil")
    s.add_argument("--size", type=int, default=320, help="k-space matrix (square)")
    s.add_argument("--seed", type=int, default=0, help="random seed (volume v uses [seed, v])")
    s.add_argument("--snr", type=float, default=30.0, help="mean tissue signal / noise std (0: no noise)")
    s.add_argument("--crop-size", type=int, default=None, help="target size (default min(320, size))")
    s.add_argument("--annotations", default=None, metavar="CSV",
                   help="where to write the box annotations (default: OUT_annotations.csv beside OUT)")
    s.set_defaults(func=run_synth)

    i = cmds.add_parser("import", help="import images (DICOM/NIfTI/npy/npz) or raw k-space",
                        description="Import a DICOM series folder or file, a NIfTI file or a "
                                    ".npy/.npz magnitude stack (the acquisition is simulated and the "
                                    "file says so in its attributes), or raw complex k-space "
                                    "(.npy/.npz with --axes or an 'axes' entry) as one fastMRI-format "
                                    "volume.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    i.add_argument("src", help="input file or DICOM folder")
    i.add_argument("--out", required=True, help="output folder")
    i.add_argument("--kind", choices=("auto", "images", "kspace"), default="auto",
                   help="auto: complex arrays are k-space, everything else images")
    i.add_argument("--axes", default=None,
                   help="k-space axis order, e.g. 'slice,coil,ky,kx' (ky = phase encode)")
    i.add_argument("--key", default=None, help="array name inside an .npz")
    i.add_argument("--name", default=None, help="output file stem (default: the input's)")
    i.add_argument("--size", type=int, default=None, help="images: resample slices to SIZE x SIZE")
    i.add_argument("--coils", type=int, default=None, help="images: simulated coils (omit: single-coil)")
    i.add_argument("--snr", type=float, default=30.0, help="images: simulated SNR (0: no noise)")
    i.add_argument("--seed", type=int, default=0, help="images: seed of the simulation")
    i.add_argument("--crop-size", type=int, default=None, help="target size (default min(320, H, W))")
    i.set_defaults(func=run_import)

    d = cmds.add_parser("default", help="print (and create once) the cached default synthetic set",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--split", default="train", choices=("train", "val", "test"))
    d.add_argument("--size", type=int, default=320)
    d.add_argument("--coils", type=int, default=None)
    d.set_defaults(func=run_default)


def run_synth(args) -> int:
    from fastfn.data import write_synthetic_dataset
    from fastfn.data.annotations import annotations_path
    csv_path = args.annotations or annotations_path(args.out)
    paths = write_synthetic_dataset(args.out, args.volumes, args.slices, coils=args.coils,
                                    size=args.size, seed=args.seed,
                                    snr=args.snr if args.snr > 0 else None, crop_size=args.crop_size,
                                    annotations=csv_path)
    print(json.dumps({"out": str(args.out), "files": [p.name for p in paths], "annotations": str(csv_path)}))
    return 0


def _is_complex_array(src: str, key) -> bool:
    import numpy as np
    if not src.lower().endswith((".npy", ".npz")):
        return False
    data = np.load(src, allow_pickle=False, mmap_mode="r") if src.lower().endswith(".npy") else np.load(src)
    if isinstance(data, np.ndarray):
        return np.iscomplexobj(data)
    names = list(data.keys())
    k = key or ("kspace" if "kspace" in names else None)
    return k is not None and k in names and np.iscomplexobj(data[k])


def run_import(args) -> int:
    try:
        return _import(args)
    except ImportError as e:  # an optional reader (pydicom, nibabel) is missing
        raise RuntimeError(str(e)) from None


def _import(args) -> int:
    from fastfn.data import import_images, import_kspace
    kind = args.kind
    if kind == "auto":
        kind = "kspace" if _is_complex_array(args.src, args.key) else "images"
    if kind == "kspace":
        path = import_kspace(args.src, args.out, axes=args.axes, key=args.key, name=args.name,
                             crop_size=args.crop_size)
    else:
        path = import_images(args.src, args.out, size=args.size, coils=args.coils,
                             snr=args.snr if args.snr > 0 else None, seed=args.seed,
                             name=args.name, key=args.key, crop_size=args.crop_size)
    print(json.dumps({"out": str(path), "kind": kind}))
    return 0


def run_default(args) -> int:
    from fastfn.data import default_data
    print(default_data(args.split, size=args.size, coils=args.coils))
    return 0
