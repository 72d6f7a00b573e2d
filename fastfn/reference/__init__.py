"""Pure-PyTorch reference implementations of every fastfn op: the tests' oracle.

Library code never imports this package; tests and benchmarks compare against it.
"""
from fastfn.reference.features import feature_step, insert_features
from fastfn.reference.masked_fft import data_consistency, dc_weight, fft2c, ifft2c, undersample

__all__ = ["fft2c", "ifft2c", "undersample", "data_consistency", "dc_weight", "insert_features", "feature_step"]
