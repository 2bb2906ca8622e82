"""Launch parameters, the search space over them, and the rules that make a config invalid."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields

# The six launch parameters, in the order vLLM's JSON files list them.
PARAMS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")

# vLLM's benchmark_w8a8_block_fp8.py space: 4 * 5 * 2 * 4 * 2 * 4 = 1280 configs.
DEFAULT_SPACE = {
    "BLOCK_SIZE_M": [16, 32, 64, 128, 256],
    "BLOCK_SIZE_N": [32, 64, 128, 256],
    "BLOCK_SIZE_K": [64, 128],
    "GROUP_SIZE_M": [1, 16, 32, 64],
    "num_warps": [4, 8],
    "num_stages": [2, 3, 4, 5],
}


@dataclass(frozen=True, order=True)
class Config:
    BLOCK_SIZE_M: int
    BLOCK_SIZE_N: int
    BLOCK_SIZE_K: int
    GROUP_SIZE_M: int
    num_warps: int
    num_stages: int

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}

    def launch_kwargs(self) -> dict[str, int]:
        return self.as_dict()

    def label(self) -> str:
        return "M{}_N{}_K{}_G{}_w{}_s{}".format(*(getattr(self, p) for p in PARAMS))


assert tuple(f.name for f in fields(Config)) == PARAMS


def vllm_default_config(block_shape) -> Config:
    """The config vLLM falls back to when no tuned file matches."""
    block_n, block_k = block_shape
    return Config(BLOCK_SIZE_M=64, BLOCK_SIZE_N=block_n, BLOCK_SIZE_K=block_k,
                  GROUP_SIZE_M=32, num_warps=4, num_stages=2)


def invalid_reason(config: Config, block_shape) -> str | None:
    """Why a config can never be right for this kernel (None if it can).

    The kernel reads one K scale per K step, so a K step must not straddle two
    scale groups: BLOCK_SIZE_K has to divide block_k.
    """
    block_k = block_shape[1]
    if block_k % config.BLOCK_SIZE_K:
        return f"BLOCK_SIZE_K={config.BLOCK_SIZE_K} does not divide block_k={block_k}"
    return None


def expand(space: dict[str, list[int]]) -> list[Config]:
    """Cross product of the per-parameter value lists, in a stable order."""
    missing = [p for p in PARAMS if p not in space]
    if missing:
        raise ValueError(f"search_space lacks {', '.join(missing)}")
    return [Config(*values) for values in itertools.product(*(sorted(set(space[p])) for p in PARAMS))]


def valid_configs(space: dict[str, list[int]], block_shape) -> list[Config]:
    return [c for c in expand(space) if invalid_reason(c, block_shape) is None]


def prune_equivalent(configs: list[Config], M: int) -> dict[Config, Config]:
    """Map each config to the one that runs the same program order at batch size M.

    With t = cdiv(M, BLOCK_SIZE_M) row tiles, every GROUP_SIZE_M >= t puts all row
    tiles in one group (and with t == 1 every GROUP_SIZE_M does): the same tiles
    run in the same order, so only the smallest such GROUP_SIZE_M needs timing.
    """
    rep: dict[Config, Config] = {}
    by_rest: dict[tuple, list[Config]] = {}
    for c in configs:
        by_rest.setdefault((c.BLOCK_SIZE_M, c.BLOCK_SIZE_N, c.BLOCK_SIZE_K, c.num_warps, c.num_stages), []).append(c)
    for group in by_rest.values():
        tiles_m = -(-M // group[0].BLOCK_SIZE_M)
        whole = sorted((c for c in group if c.GROUP_SIZE_M >= tiles_m or tiles_m == 1),
                       key=lambda c: c.GROUP_SIZE_M)
        for c in group:
            rep[c] = whole[0] if c in whole else c
    return rep
