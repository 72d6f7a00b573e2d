"""Benchmark of the fastfn ops against the pure-PyTorch reference and the floor.

    python benchmarks/bench_ops.py [--device cpu|cuda] [--quick] --json PATH

For each case it times the fastfn op, the reference (fastfn.reference, the textbook
fastMRI pipeline) and the floor: one forward and one inverse torch.fft.fft along W over
the same data (per coil), no shifts, no mask; for forward+backward cases the floor is
that pair run forward and backward through autograd. The three are timed in turn in
every round; the times are medians over rounds and the ratios medians of the rounds'
ratios (on a shared machine the speed drifts between seconds, a round's ratio much
less). Prints a table and writes
{"device", "torch", "threads", "quick", "cases": [{"name", "op", "mode",
 "fastfn_ms", "reference_ms", "floor_ms", "speedup_vs_reference", "ratio_to_floor",
 "ratio_to_floor_range"}], "host_cost_us": {"floor", "fft2c", "undersample",
 "dc_hard", "dc_soft"}}.

host_cost_us: microseconds per call on a 1 x 8 x 8 input, where the transforms cost
nothing, so what remains is the host side (Python wrapper, dispatch, column plan,
ATen FFT calls, launches). On a GPU at fastMRI batch sizes that is a large part of
each call.

Cases (masked FFT): single-coil 320x320 batch 16 and multi-coil 15 coils 640x368
batch 2 (fastMRI knee sizes), 4x random column mask; undersample, hard DC and soft
DC (lam a learnable tensor); forward, and forward+backward (gradients for x, and lam
when soft). The DC cases are one-shot calls: k0's measurement (the ifft along H of its
sampled columns) is dropped before each, so each call prepares it. The `prepared`
cases are a cascade's setting: 10 forward DC calls on one k0, the first preparing the
measurement that the other nine reuse; their times are for the 10 calls (10 reference
calls, 10 floor pairs), their ratios per call. Other op families add their builders to
CASE_BUILDERS.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Callable

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _common import (paired_ratio, print_table, run_info, time_interleaved_ms,  # noqa: E402
                     write_json_atomic)
from masked_fft_inputs import dc_inputs  # noqa: E402

from fastfn import ops  # noqa: E402
from fastfn.reference import masked_fft as ref  # noqa: E402


@dataclass
class Case:
    """One benchmark row: three zero-argument callables doing the same amount of work."""
    name: str
    op: str
    mode: str  # "forward" or "forward+backward"
    fastfn: Callable[[], object]
    reference: Callable[[], object]
    floor: Callable[[], object]


def _fft_pair_floor(data: torch.Tensor, backward: bool) -> Callable[[], object]:
    leaf = data.detach().clone().requires_grad_(backward)
    grad = torch.ones_like(data) if backward else None

    def run():
        out = torch.fft.ifft(torch.fft.fft(leaf, dim=-1), dim=-1)
        if backward:
            out.backward(grad)
        return out
    return run


def _forward_backward(fn: Callable[..., torch.Tensor], leaves: list[torch.Tensor],
                      grad: torch.Tensor) -> Callable[[], object]:
    def run():
        for t in leaves:
            t.grad = None
        out = fn()
        out.backward(grad)
        return out
    return run


def _masked_fft_case(size_name: str, d: dict, op: str, mode: str,
                     floor: Callable[[], object]) -> Case:
    """One (size, op, mode) case over the inputs d of masked_fft_inputs.dc_inputs."""
    x, k0, mask, sens = d["x"], d["k0"], d["mask"], d.get("sens")
    bwd = mode != "forward"
    if op == "undersample":
        # acts on what is acquired: the image, or multi-coil the coil images
        img = (x if sens is None else sens * x.unsqueeze(1)).detach().clone().requires_grad_(bwd)
        leaves = [img]

        def fast():
            return ops.undersample(img, mask)

        def slow():
            return ref.undersample(img, mask)
    else:
        xl = x.detach().clone().requires_grad_(bwd)
        lam = None if op == "dc_hard" else torch.tensor(0.1, device=x.device, requires_grad=bwd)
        leaves = [xl] + ([lam] if lam is not None else [])

        def fast():
            # one-shot: k0's measurement prepared in the call (the first DC layer of a network)
            forget_measurements()
            return ops.data_consistency(xl, k0, mask, lam=lam, sens=sens)

        def slow():
            return ref.data_consistency(xl, k0, mask, lam=lam, sens=sens)
    if bwd:
        g = torch.ones_like(fast())
        fast, slow = _forward_backward(fast, leaves, g), _forward_backward(slow, leaves, g)
    return Case(f"{size_name}:{op}:{mode}", op, mode, fast, slow, floor)


def forget_measurements() -> None:
    """Drops the prepared measurements of k0 (the plans stay), so that the next DC call
    measures k0 as a one-shot call would."""
    torch.ops.fastfn._column_measurement_cache_reset()


def _prepared_case(size_name: str, d: dict, op: str, floor: Callable[[], object]) -> Case:
    """A cascade's setting: LAYERS forward DC calls on one k0 (the first prepares its
    measurement, the others reuse it) against as many reference calls and floor pairs,
    so that the ratios are per call."""
    x, k0, mask, sens = d["x"], d["k0"], d["mask"], d.get("sens")
    lam = None if op == "dc_hard" else torch.tensor(0.1, device=x.device)

    def fast():
        forget_measurements()
        for _ in range(LAYERS):
            out = ops.data_consistency(x, k0, mask, lam=lam, sens=sens)
        return out

    def slow():
        for _ in range(LAYERS):
            out = ref.data_consistency(x, k0, mask, lam=lam, sens=sens)
        return out

    def floors():
        for _ in range(LAYERS):
            out = floor()
        return out
    return Case(f"{size_name}:{op} prepared x{LAYERS}:forward", op, "forward", fast, slow, floors)


LAYERS = 10  # DC layers of the prepared cases (a 10-cascade network)


def masked_fft_cases(device: torch.device) -> list[Case]:
    sizes = [("single-coil 320x320 b16", dict(B=16, H=320, W=320, coils=None)),
             ("multi-coil 15x640x368 b2", dict(B=2, H=640, W=368, coils=15))]
    cases = []
    for size_name, cfg in sizes:
        d = dc_inputs(cfg["B"], cfg["H"], cfg["W"], coils=cfg["coils"], device=device, accel=4, seed=0)
        for mode in ("forward", "forward+backward"):
            # the floor runs over the k-space-sized data: (B, H, W) or (B, C, H, W)
            floor = _fft_pair_floor(d["k0"], mode != "forward")
            for op in ("undersample", "dc_hard", "dc_soft"):
                cases.append(_masked_fft_case(size_name, d, op, mode, floor))
            if mode == "forward":
                cases += [_prepared_case(size_name, d, op, floor) for op in ("dc_hard", "dc_soft")]
    return cases


CASE_BUILDERS: list[Callable[[torch.device], list[Case]]] = [masked_fft_cases]


def host_cost_us(device: torch.device, calls: int, rounds: int = 5) -> dict[str, float]:
    """Median per-call time in microseconds of each op on a 1 x 8 x 8 input (column mask),
    `calls` calls per round, the ops taking turns in every round; the DC calls reuse k0's
    measurement, as the layers of a network do."""
    d = dc_inputs(1, 8, 8, device=device, accel=2, seed=0)
    x, k0, mask = d["x"], d["k0"], d["mask"]
    lam = torch.tensor(0.1, device=device)
    fns = {"floor": lambda: torch.fft.ifft(torch.fft.fft(k0, dim=-1), dim=-1),
           "fft2c": lambda: ops.fft2c(x),
           "undersample": lambda: ops.undersample(x, mask),
           "dc_hard": lambda: ops.data_consistency(x, k0, mask),
           "dc_soft": lambda: ops.data_consistency(x, k0, mask, lam=lam)}
    t = time_interleaved_ms(fns, rounds, warmup=20, number=calls)
    return {k: 1e3 * statistics.median(v) for k, v in t.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="one round (under a minute on 2 CPU cores)")
    p.add_argument("--json", required=True, help="output JSON path")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    repeats = 1 if args.quick else 9
    torch.manual_seed(0)
    rows = []
    for build in CASE_BUILDERS:
        for case in build(device):
            # warm-up: the fastfn op (extension, plans) and the floor; the reference's first
            # call costs what its later ones do, and it is the slowest by far
            case.fastfn()
            case.floor()
            t = time_interleaved_ms({"fastfn": case.fastfn, "reference": case.reference,
                                     "floor": case.floor}, repeats, warmup=0)
            fast, slow, floor = (statistics.median(t[k]) for k in ("fastfn", "reference", "floor"))
            rows.append({"name": case.name, "op": case.op, "mode": case.mode, "fastfn_ms": fast,
                         "reference_ms": slow, "floor_ms": floor,
                         "speedup_vs_reference": paired_ratio(t["reference"], t["fastfn"]),
                         "ratio_to_floor": paired_ratio(t["fastfn"], t["floor"]),
                         "ratio_to_floor_range": [min(a / b for a, b in zip(t["fastfn"], t["floor"])),
                                                  max(a / b for a, b in zip(t["fastfn"], t["floor"]))]})
            print_table(rows[-1:], ["name", "fastfn_ms", "reference_ms", "floor_ms",
                                    "speedup_vs_reference", "ratio_to_floor"])
    print()
    print_table(rows, ["name", "fastfn_ms", "reference_ms", "floor_ms", "speedup_vs_reference",
                       "ratio_to_floor"])
    host = host_cost_us(device, calls=200 if args.quick else 1000)
    print("\nhost cost per call, 1 x 8 x 8 input (us): "
          + ", ".join(f"{k} {v:.1f}" for k, v in host.items()))
    result = {**run_info(device), "quick": args.quick, "cases": rows, "host_cost_us": host}
    write_json_atomic(args.json, result)
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
