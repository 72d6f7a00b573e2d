#!/usr/bin/env bash
# Import the development checkout's real magnitude images (../shared/data, see its
# README) into fastMRI folders with a train/val split, for robust-training runs on
# real anatomy:
#
#   bash scripts/real_data.sh [OUT]        (default OUT: real_data)
#
#   OUT/colin27/{train,val}   brain_t1_colin27.npz: 50 T1 slices, zero-padded to
#                             217x217, blocks of 5 adjacent slices, one volume per
#                             block; val = blocks 2 and 7 (10 slices), train = the
#                             other 8 (40 slices)
#   OUT/brain_pd/{train,val}  brain_pd_fse.npz: 20 PD FSE slices, blocks of 4; val =
#                             blocks 1 and 3 (8 slices), train = the other 3 (12 slices)
#
# Whole blocks of adjacent slices go to one side, so no validation slice has its
# neighbour in training. Every volume is resampled to SIZE x SIZE (default 128, the
# demo's scale; SIZE=256 for the full matrix) and gets the importer's simulated
# acquisition (smooth phase, complex Gaussian noise at SNR 30, single coil; seed =
# the block number). The shoulder slice (one image) is left out: a single slice
# gives neither a training set nor a useful false-negative rate.
#
# Environment: SHARED_DATA (default ../shared/data beside the checkout), SIZE, VENV.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
SHARED_DATA="${SHARED_DATA:-$ROOT/../shared/data}"
SIZE="${SIZE:-128}"
OUT="${1:-real_data}"

if [ ! -d "$SHARED_DATA" ]; then
    echo "real_data.sh: no real data at $SHARED_DATA (a development checkout's ../shared/data);" \
         "set SHARED_DATA to a folder holding brain_t1_colin27.npz and brain_pd_fse.npz" >&2
    exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# name  source file  block size  validation blocks
split_set() {
    local name="$1" src="$2" block="$3" val_blocks="$4"
    "$VENV/bin/python" - "$SHARED_DATA/$src" "$TMP/$name" "$block" "$val_blocks" <<'EOF'
import sys
from pathlib import Path

import numpy as np

src, out, block, val_blocks = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
images = np.load(src)["images"].astype(np.float32)
n, h, w = images.shape
side = max(h, w)  # zero-pad to a square so that the resampling keeps the aspect ratio
padded = np.zeros((n, side, side), np.float32)
padded[:, (side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = images
val = {int(b) for b in val_blocks.split(",")}
for b in range(n // block):
    split = "val" if b in val else "train"
    (out / split).mkdir(parents=True, exist_ok=True)
    np.savez(out / split / f"{out.name}_block{b:02d}.npz", images=padded[b * block:(b + 1) * block])
EOF
    for split in train val; do
        mkdir -p "$OUT/$name/$split"
        for f in "$TMP/$name/$split"/*.npz; do
            local stem seed
            stem="$(basename "$f" .npz)"
            seed="$((10#${stem##*block}))"
            "$VENV/bin/fastfn" data import "$f" --out "$OUT/$name/$split" --size "$SIZE" \
                --snr 30 --seed "$seed" --name "$stem" >/dev/null
        done
        echo "$OUT/$name/$split: $(ls "$OUT/$name/$split" | wc -l) volumes"
    done
}

split_set colin27 brain_t1_colin27.npz 5 2,7
split_set brain_pd brain_pd_fse.npz 4 1,3
