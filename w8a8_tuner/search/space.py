"""Launch parameters, the search space over them, and which configs are worth timing at a batch size."""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass, fields

from kernels.blocks import cdiv

# The six launch parameters, in the order vLLM's JSON files list them.
PARAMS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")


class SpaceError(ValueError):
    """A search space that yields no valid config, or holds values the kernel cannot take."""


@dataclass(frozen=True, order=True)
class Config:
    BLOCK_SIZE_M: int
    BLOCK_SIZE_N: int
    BLOCK_SIZE_K: int
    GROUP_SIZE_M: int
    num_warps: int
    num_stages: int

    def as_dict(self) -> dict[str, int]:
        """The JSON entry of an engine's config file, and the kernel's launch keywords."""
        return {k: int(v) for k, v in asdict(self).items()}

    def label(self) -> str:
        return "M{}_N{}_K{}_G{}_w{}_s{}".format(*(getattr(self, p) for p in PARAMS))

    @classmethod
    def from_label(cls, label: str) -> "Config":
        parts = label.split("_")
        if len(parts) != len(PARAMS) or [p[:1] for p in parts] != ["M", "N", "K", "G", "w", "s"]:
            raise ValueError(f"not a config label: {label!r} (expected e.g. M16_N64_K128_G1_w4_s3)")
        return cls(*(int(p[1:]) for p in parts))


assert tuple(f.name for f in fields(Config)) == PARAMS


# num_stages of that fallback per engine and operand type: vLLM's fp8_utils.py uses 2, its int8_utils.py 3;
# SGLang's fp8_kernel.py and int8_kernel.py (w8a8_block_{fp8,int8}_matmul) 3. The rest is alike.
DEFAULT_NUM_STAGES = {("vllm", "fp8"): 2, ("vllm", "int8"): 3, ("sglang", "fp8"): 3, ("sglang", "int8"): 3}
ENGINE_TITLES = {"vllm": "vLLM", "sglang": "SGLang"}


def vllm_default_config(block_shape, *, input_type: str) -> Config:
    """The config vLLM falls back to when no tuned file matches."""
    return engine_default_config("vllm", block_shape, input_type=input_type)


def engine_default_config(engine: str, block_shape, *, input_type: str) -> Config:
    """The config the engine tuned for (the `engine` setting) falls back to when no tuned file matches."""
    block_n, block_k = block_shape
    return Config(BLOCK_SIZE_M=64, BLOCK_SIZE_N=block_n, BLOCK_SIZE_K=block_k, GROUP_SIZE_M=32, num_warps=4,
                  num_stages=DEFAULT_NUM_STAGES[(default_owner(engine), input_type)])


def default_owner(engine: str) -> str:
    """Whose fallback config verify compares with for an `engine` setting: that engine's (`both`: vLLM's)."""
    return "sglang" if engine == "sglang" else "vllm"


def expand(space: dict[str, list[int]]) -> list[Config]:
    """Cross product of the per-parameter value lists, in a stable order."""
    missing = [p for p in PARAMS if p not in space]
    if missing:
        raise SpaceError(f"search_space lacks {', '.join(missing)}")
    return [Config(*values) for values in itertools.product(*(sorted(set(space[p])) for p in PARAMS))]


def valid_configs(space: dict[str, list[int]], block_shape) -> tuple[Config, ...]:
    """Every config of the space the kernel can run correctly for this block shape.

    The kernel reads one K scale per K step, so a K step must not straddle two scale
    groups: BLOCK_SIZE_K has to divide block_k. A value that breaks this is an error
    naming it (not a silent cut of the space)."""
    block_k = block_shape[1]
    bad_k = [v for v in space["BLOCK_SIZE_K"] if block_k % v]
    if bad_k:
        raise SpaceError(f"search_space.BLOCK_SIZE_K: {bad_k} do not divide block_k={block_k} "
                         "(a K step must stay within one scale group)")
    configs = tuple(expand(space))
    if not configs:
        raise SpaceError("search_space: no valid config is left")
    return configs


def configs_at(space: dict[str, list[int]], extra: list[dict], block_shape, M: int | None = None
               ) -> tuple[Config, ...]:
    """The configs tuned at batch size M (None: at any M): the cross product of `space`, plus the cross
    product of each `extra` region (search_space_extra) whose [min_M, max_M] holds M. An extra
    BLOCK_SIZE_K that does not divide block_k is skipped: the default regions serve every block shape."""
    configs = set(valid_configs(space, block_shape))
    for region in extra:
        if M is None or region["min_M"] <= M <= region["max_M"]:
            values = {p: region[p] for p in PARAMS}
            values["BLOCK_SIZE_K"] = [v for v in values["BLOCK_SIZE_K"] if block_shape[1] % v == 0]
            configs.update(expand(values))
    return tuple(sorted(configs))


def settings_configs(settings: dict, M: int | None = None) -> tuple[Config, ...]:
    """configs_at for a sweep's result settings (w8a8_tuner.plan.settings)."""
    return configs_at(settings["search_space"], settings.get("search_space_extra", []), settings["block_shape"], M)


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
        tiles_m = cdiv(M, group[0].BLOCK_SIZE_M)
        whole = sorted((c for c in group if c.GROUP_SIZE_M >= tiles_m or tiles_m == 1),
                       key=lambda c: c.GROUP_SIZE_M)
        for c in group:
            rep[c] = whole[0] if c in whole else c
    return rep


def distinct_at(configs, M: int) -> list[Config]:
    """The configs that run a program order of their own at batch size M (what the tuner times)."""
    rep = prune_equivalent(list(configs), M)
    return [c for c in configs if rep[c] == c]


def sample(configs, k: int, seed: int) -> list[Config]:
    """k configs drawn at random (reproducibly for a seed), or all of them if there are fewer."""
    pool = sorted(configs)
    return sorted(random.Random(seed).sample(pool, min(k, len(pool))))
