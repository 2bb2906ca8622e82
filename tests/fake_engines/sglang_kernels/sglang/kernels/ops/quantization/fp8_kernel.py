"""Stand-in for SGLang's kernels/ops/quantization/fp8_kernel.py (tests only): its config loader, and nothing else."""

import json
import os


def get_w8a8_block_fp8_configs(N, K, block_n, block_k, device_name):
    """As SGLang kernels/ops/quantization/fp8_kernel.py finds a file: the configs folder beside this module,
    the engine's name for it (the engine takes device_name from torch; here it is an argument), batch sizes as
    ints; None: its default."""
    json_file_name = f"N={N},K={K},device_name={device_name},dtype=fp8_w8a8,block_shape=[{block_n}, {block_k}].json"
    config_file_path = os.path.join(os.path.dirname(os.path.realpath(__file__)), "configs", json_file_name)
    if os.path.exists(config_file_path):
        with open(config_file_path) as f:
            return {int(key): val for key, val in json.load(f).items()}
    return None
