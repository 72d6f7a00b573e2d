"""The op-ready copies of recent masks, so that a mask the wrapper has to copy keeps its
column plan across calls.

The C++ ops key a mask's column plan (and k0's prepared measurement) on the mask
tensor they receive: the same view of the same live storage at the same version. A
mask that needs a copy before the op can take it (a bool mask, float32 beside
complex128 data, a batch to materialise) would be a new tensor, hence a new key, on
every call: every DC layer of a network would build its plan again, and on a GPU each
build is a copy of the mask to the host, a stream synchronisation. This memo hands out
the same copy while the source mask is unchanged.

An entry holds its source view strongly (masks are small; at most ``ENTRIES`` are
kept), so the source's storage cannot be freed and its address reused while the entry
exists: equal data pointers mean the same storage, and an equal version counter means
no in-place write since (a write through any view bumps it).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

import torch

ENTRIES = 8


def _keyable(t: torch.Tensor) -> bool:
    """A plain tensor with storage and a version counter, outside tracing: fake, meta,
    functorch-wrapped and inference tensors, and masks that take part in autograd, are
    copied on every call as before."""
    return (type(t) is torch.Tensor and t.device.type != "meta" and not t.requires_grad
            and not t.is_inference() and not torch.compiler.is_compiling()
            and not torch._C._functorch.is_functorch_wrapped_tensor(t))


class MaskMemo:
    """Copies made by ``make`` from a source mask, reused while the source is unchanged."""

    def __init__(self, entries: int = ENTRIES):
        self._entries: OrderedDict[Hashable, tuple[torch.Tensor, int, torch.Tensor]] = OrderedDict()
        self._capacity = entries
        self.enabled = True  # off: make() on every call (fastfn.ops.masked_fft.column_caches_disabled)

    def get(self, source: torch.Tensor, extra: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``make()`` (a copy derived from ``source`` and ``extra`` alone), or the copy an
        earlier call made for the same unchanged ``source`` view and ``extra``."""
        if not self.enabled or not _keyable(source):
            return make()
        key = (source.data_ptr(), source.storage_offset(), tuple(source.shape), source.stride(),
               source.dtype, source.device, extra)
        hit = self._entries.get(key)
        if hit is not None and hit[1] == source._version:
            self._entries.move_to_end(key)
            return hit[2]
        made = make()
        self._entries[key] = (source, source._version, made)
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return made

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
