"""Stand-in for a re-export left where SGLang's fp8_kernel.py was (tests only): it defines no loader, so
the files go beside kernels/ops/quantization/fp8_kernel.py."""

from sglang.kernels.ops.quantization.fp8_kernel import *  # noqa: F403
