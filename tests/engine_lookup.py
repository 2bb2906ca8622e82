"""How vLLM and SGLang find and read a tuned file, re-written here from their source (not from
w8a8_tuner.results.naming), so a test can check the workflow's files against each engine's lookup.

Each engine's get_w8a8_block_{fp8,int8}_configs(N, K, block_n, block_k) builds the name from
torch.cuda.get_device_name() with spaces as '_', looks in the `configs` folder beside its source
file, json.loads it and makes the keys ints; the matmul wrapper then takes the key nearest to M
(`min(configs.keys(), key=lambda x: abs(x - M))`: the first of two equally near keys in the file's
order, the smaller one in a file sorted by batch size).
"""

import json
from pathlib import Path

# The f-strings of the four loaders, verbatim apart from the variable names:
#   vLLM   vllm/model_executor/layers/quantization/utils/fp8_utils.py   get_w8a8_block_fp8_configs
#   vLLM   vllm/model_executor/layers/quantization/utils/int8_utils.py  get_w8a8_block_int8_configs
#   SGLang python/sglang/srt/layers/quantization/fp8_kernel.py          get_w8a8_block_fp8_configs
#   SGLang python/sglang/srt/layers/quantization/int8_kernel.py         get_w8a8_block_int8_configs
NAMES = {
    ("vllm", "fp8"): "N={N},K={K},device_name={device_name},dtype=fp8_w8a8,block_shape=[{block_n},{block_k}].json",
    ("vllm", "int8"): "N={N},K={K},device_name={device_name},dtype=int8_w8a8,block_shape=[{block_n}, {block_k}].json",
    ("sglang", "fp8"): "N={N},K={K},device_name={device_name},dtype=fp8_w8a8,block_shape=[{block_n}, {block_k}].json",
    ("sglang", "int8"): "N={N},K={K},device_name={device_name},dtype=int8_w8a8,block_shape=[{block_n}, {block_k}].json",
}


def engine_file_name(engine: str, input_type: str, N: int, K: int, raw_device_name: str, block_shape) -> str:
    device_name = raw_device_name.replace(" ", "_")
    return NAMES[(engine, input_type)].format(N=N, K=K, device_name=device_name, block_n=block_shape[0],
                                              block_k=block_shape[1])


def engine_configs(folder, engine: str, input_type: str, N: int, K: int, raw_device_name: str, block_shape):
    """The engine's get_w8a8_block_*_configs with `folder` as its configs folder: {int M: dict} or None."""
    path = Path(folder) / engine_file_name(engine, input_type, N, K, raw_device_name, block_shape)
    if not path.exists():
        return None
    with open(path) as f:
        return {int(key): val for key, val in json.load(f).items()}


def engine_pick(folder, engine: str, input_type: str, N: int, K: int, raw_device_name: str, block_shape, M: int):
    """The launch parameters the engine's matmul wrapper uses at batch size M (None: its default)."""
    configs = engine_configs(folder, engine, input_type, N, K, raw_device_name, block_shape)
    if not configs:
        return None
    return configs[min(configs.keys(), key=lambda x: abs(x - M))]
