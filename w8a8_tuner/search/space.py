"""Launch parameters, the search space over them, and which configs are worth timing at a point."""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass, fields

from kernels.blocks import cdiv
from kernels.knobs import KNOBS, empty_parts, has_knobs

# The six launch parameters, in the order vLLM's JSON files list them.
PARAMS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")
# SGLang's Hopper knobs (kernels.knobs): an entry that carries one runs SGLang's Hopper kernel on sm90.
KNOB_PARAMS = tuple(KNOBS)
ALL_PARAMS = PARAMS + KNOB_PARAMS

# Symbolic BLOCK_SIZE_K values of the config (resolved per block shape, block_k_values).
BLOCK_K_AUTO = "auto"        # the largest power of two dividing block_k, and half of it when that is >= 32
BLOCK_K_FULL = "block_k"     # the largest power of two dividing block_k (block_k itself when it is one)


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
    SWAP_AB: bool = False
    SPLIT_K: int = 1

    @property
    def knobs(self) -> bool:
        """Whether this config carries a Hopper knob (runs SGLang's Hopper kernel, which vLLM does not have)."""
        return has_knobs(asdict(self))

    def as_dict(self) -> dict[str, int | bool]:
        """The JSON entry of an engine's config file, and the launch keywords: the six parameters, plus
        SWAP_AB and SPLIT_K only when a knob is set (an entry without them runs the plain kernel)."""
        entry: dict[str, int | bool] = {p: int(getattr(self, p)) for p in PARAMS}
        if self.knobs:
            entry.update(SWAP_AB=bool(self.SWAP_AB), SPLIT_K=int(self.SPLIT_K))
        return entry

    def label(self) -> str:
        base = "M{}_N{}_K{}_G{}_w{}_s{}".format(*(getattr(self, p) for p in PARAMS))
        return base + ("_ab" if self.SWAP_AB else "") + (f"_sk{self.SPLIT_K}" if self.SPLIT_K != 1 else "")

    @classmethod
    def from_label(cls, label: str) -> "Config":
        parts = label.split("_")
        six, rest = parts[:len(PARAMS)], parts[len(PARAMS):]
        knobs = {}
        if rest[:1] == ["ab"]:
            knobs["SWAP_AB"], rest = True, rest[1:]
        if rest[:1] and rest[0].startswith("sk") and rest[0][2:].isdigit():
            knobs["SPLIT_K"], rest = int(rest[0][2:]), rest[1:]
        if (len(six) != len(PARAMS) or [p[:1] for p in six] != ["M", "N", "K", "G", "w", "s"] or rest
                or not all(p[1:].isdigit() for p in six)):
            raise ValueError(f"not a config label: {label!r} (expected e.g. M16_N64_K128_G1_w4_s3, "
                             "optionally with _ab and _sk<SPLIT_K>)")
        return cls(*(int(p[1:]) for p in six), **knobs)

    def accumulators_per_thread(self) -> float:
        """fp32 accumulator values each thread of a program holds (BLOCK_SIZE_M x BLOCK_SIZE_N over its threads)."""
        return self.BLOCK_SIZE_M * self.BLOCK_SIZE_N / (32 * self.num_warps)


assert tuple(f.name for f in fields(Config)) == ALL_PARAMS


# num_stages of that fallback per engine and operand type: vLLM's fp8_utils.py uses 2, its int8_utils.py 3;
# SGLang's fp8_kernel.py and int8_kernel.py (w8a8_block_{fp8,int8}_matmul) 3. The rest is alike.
DEFAULT_NUM_STAGES = {("vllm", "fp8"): 2, ("vllm", "int8"): 3, ("sglang", "fp8"): 3, ("sglang", "int8"): 3}


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


def block_k_values(block_k: int, symbol: str) -> list[int]:
    """What a symbolic BLOCK_SIZE_K means for this block_k: a K step must stay within one scale group,
    so BLOCK_SIZE_K divides block_k (and is a power of two, for tl.arange)."""
    largest = block_k & -block_k  # the largest power of two dividing block_k
    if symbol == BLOCK_K_FULL:
        return [largest]
    if symbol == BLOCK_K_AUTO:
        return [largest // 2, largest] if largest // 2 >= 32 else [largest]
    raise SpaceError(f"BLOCK_SIZE_K: {symbol!r} is neither a list nor {BLOCK_K_AUTO!r} or {BLOCK_K_FULL!r}")


def resolve(values: dict, block_shape, where: str) -> dict:
    """A space or region with its BLOCK_SIZE_K made concrete for this block shape: a symbol becomes the
    values that fit; listed values that do not divide block_k are an error naming `where`."""
    block_k = block_shape[1]
    bk = values["BLOCK_SIZE_K"]
    if isinstance(bk, str):
        return {**values, "BLOCK_SIZE_K": block_k_values(block_k, bk)}
    bad = [v for v in bk if block_k % v]
    if bad:
        fits = block_k_values(block_k, BLOCK_K_AUTO)
        raise SpaceError(f"{where}.BLOCK_SIZE_K: {bad} do not divide block_k={block_k} (a K step must stay "
                         f"within one scale group; {BLOCK_K_AUTO!r} picks what fits: {fits})")
    return values


def expand(space: dict) -> list[Config]:
    """Cross product of the per-parameter value lists (the knobs too, where given), in a stable order."""
    missing = [p for p in PARAMS if p not in space]
    if missing:
        raise SpaceError(f"search_space lacks {', '.join(missing)}")
    lists = [sorted(set(space[p])) for p in PARAMS] + [sorted(set(space.get(k, [v]))) for k, v in KNOBS.items()]
    return [Config(*values) for values in itertools.product(*lists)]


def is_knob_region(region: dict) -> bool:
    """A search_space_extra region that lists SWAP_AB or SPLIT_K: it adds only configs that carry a knob."""
    return any(k in region for k in KNOB_PARAMS)


def region_configs(region: dict) -> list[Config]:
    configs = expand(region)
    return [c for c in configs if c.knobs] if is_knob_region(region) else configs


def valid_configs(space: dict, block_shape) -> tuple[Config, ...]:
    """Every config of the space the kernel can run correctly for this block shape (a BLOCK_SIZE_K that
    does not divide block_k is an error naming it, not a silent cut of the space)."""
    configs = tuple(expand(resolve(space, block_shape, "search_space")))
    if not configs:
        raise SpaceError("search_space: no valid config is left")
    return configs


def configs_at(space: dict, extra: list[dict], block_shape, M: int | None = None) -> tuple[Config, ...]:
    """The configs tuned at batch size M (None: at any M): the cross product of `space`, plus the configs of
    each `extra` region (search_space_extra) whose [min_M, max_M] holds M."""
    configs = set(valid_configs(space, block_shape))
    for i, region in enumerate(extra):
        if M is None or region["min_M"] <= M <= region["max_M"]:
            configs.update(region_configs(resolve(region, block_shape, f"search_space_extra[{i}]")))
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
        key = (c.BLOCK_SIZE_M, c.BLOCK_SIZE_N, c.BLOCK_SIZE_K, c.num_warps, c.num_stages, c.SWAP_AB, c.SPLIT_K)
        by_rest.setdefault(key, []).append(c)
    for group in by_rest.values():
        tiles_m = cdiv(M, group[0].BLOCK_SIZE_M)
        whole = sorted((c for c in group if c.GROUP_SIZE_M >= tiles_m or tiles_m == 1),
                       key=lambda c: c.GROUP_SIZE_M)
        for c in group:
            rep[c] = whole[0] if c in whole else c
    return rep


def pruned_at(configs, M: int, K: int, max_accumulators: int | None = None) -> dict[Config, str]:
    """Why each config not worth timing at (M, K) is left out, as a TSV note; the others are timed.

    - a split of K that leaves parts without a K step (they would only write zeros: a coarser split
      does the same work in fewer programs);
    - `max_accumulators` (tuning.prune_accumulators): BLOCK_SIZE_M x BLOCK_SIZE_N / threads at or above it
      (register spills: never within 3.9x of the best at any measured point, BENCHMARKS.md);
    - the same program order as another config at this M (prune_equivalent): exact."""
    configs = list(configs)
    reasons: dict[Config, str] = {}
    for c in configs:
        empty = empty_parts(K, c.BLOCK_SIZE_K, c.SPLIT_K) if c.SPLIT_K > 1 else 0
        if empty:
            reasons[c] = (f"SPLIT_K={c.SPLIT_K} leaves {empty} parts without a K step "
                          f"(K={K}: {cdiv(K, c.BLOCK_SIZE_K)} steps of {c.BLOCK_SIZE_K})")
        elif max_accumulators and c.accumulators_per_thread() >= max_accumulators:
            reasons[c] = (f"{c.accumulators_per_thread():g} fp32 accumulators per thread >= {max_accumulators} "
                          "(tuning.prune_accumulators)")
    rest = [c for c in configs if c not in reasons]
    rep = prune_equivalent(rest, M)
    reasons.update({c: f"same program order as {rep[c].label()} at M={M}" for c in rest if rep[c] != c})
    return reasons


def timed_at(configs, M: int, K: int, max_accumulators: int | None = None) -> list[Config]:
    """The configs a point (M, K) times (what the tuner compiles and runs): those pruned_at leaves in."""
    reasons = pruned_at(configs, M, K, max_accumulators)
    return [c for c in configs if c not in reasons]


def sample(configs, k: int, seed: int) -> list[Config]:
    """k configs drawn at random (reproducibly for a seed), or all of them if there are fewer."""
    pool = sorted(configs)
    return sorted(random.Random(seed).sample(pool, min(k, len(pool))))
