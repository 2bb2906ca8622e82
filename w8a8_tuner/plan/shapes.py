"""Weight shapes (N, K) one rank runs per tensor-parallel size, with the layers each serves.

From one of four sources: explicit `shapes` ([N, K], or [N, K, split] to split them per TP size),
`model_config` (a local Hugging Face config.json, read by plan.models), `shapes_from_log` (the files an
engine's log says it did not find, read by plan.logs), or the built-in `model` (DeepSeek-V3, through the
same code from its published config values).
"""

from __future__ import annotations

from dataclasses import dataclass

from w8a8_tuner.plan.logs import KEY as LOG_KEY
from w8a8_tuner.plan.logs import EngineLog, log_model, read_engine_log
from w8a8_tuner.plan.models import (
    NO_SPLIT,
    SPLIT_K,
    SPLIT_N,
    SPLIT_QKV,
    Linear,
    Model,
    ShapeError,
    built_in_model,
    load_model_config,
    qkv_linear,
)

__all__ = ["ShapeError", "ShapeRow", "ShapeTable", "model_shapes", "shape_table"]

TSV_COLUMNS = ("tp", "N", "K", "layers", "split", "source", "note")


@dataclass(frozen=True)
class ShapeRow:
    """One (N, K) a rank runs at one TP size, the layers that run it, and how TP split each of them."""

    tp: int
    n: int
    k: int
    layers: tuple[str, ...]
    splits: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class ShapeTable:
    """Every TP size's shapes; `model` says where they come from and what runs elsewhere."""

    rows: tuple[ShapeRow, ...]
    model: Model
    block_shape: tuple[int, int]
    notes: tuple[str, ...]
    log: EngineLog | None = None  # shapes_from_log: what the engine's log says about its run

    def shapes_by_tp(self) -> dict[int, list[tuple[int, int]]]:
        by_tp: dict[int, list[tuple[int, int]]] = {}
        for row in self.rows:
            by_tp.setdefault(row.tp, []).append((row.n, row.k))
        return by_tp

    def tsv(self) -> str:
        """results/shapes.tsv: a row per tuned shape and TP size, and one per layer run elsewhere."""
        lines = ["\t".join(TSV_COLUMNS)]
        for tp in dict.fromkeys(row.tp for row in self.rows):
            lines += [f"{r.tp}\t{r.n}\t{r.k}\t{','.join(r.layers)}\t{','.join(r.splits)}\t{r.source}\t"
                      for r in self.rows if r.tp == tp]
            lines += [f"{tp}\t-\t-\t{layer}\t-\t{self.model.source}\t{why}" for layer, why in self.model.elsewhere]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """The table for a terminal: tp, N, K, split, layers; then the notes."""
        width = max([len(str(r.n)) for r in self.rows] + [len(str(r.k)) for r in self.rows] + [5])
        lines = [f"{'tp':>4} {'N':>{width}} {'K':>{width}}  {'split':<9} layers"]
        lines += [f"{r.tp:>4} {r.n:>{width}} {r.k:>{width}}  {','.join(r.splits):<9} {', '.join(r.layers)}"
                  for r in self.rows]
        return "\n".join(lines + [f"note: {note}" for note in self.notes]) + "\n"


def check_heads(heads: int, kv_heads: int, tp: int, where: str) -> None:
    """vLLM gives each rank num_attention_heads / tp heads, and splits the KV heads over the ranks or, when
    tp exceeds them, gives each rank one (tp must then be a multiple of them)."""
    if heads and heads % tp:
        raise ShapeError(f"tp_sizes: tp={tp} does not divide num_attention_heads={heads} ({where})")
    if kv_heads and (kv_heads % tp if kv_heads >= tp else tp % kv_heads):
        raise ShapeError(f"tp_sizes: tp={tp} and num_key_value_heads={kv_heads} ({where}): one must divide the "
                         "other (vLLM splits the KV heads over the ranks, or each rank holds one)")


def _rank_parts(linear: Linear, tp: int) -> list[tuple[int, int | float, bool]]:
    """(whole part, what one rank holds of it, whether TP divided it) for each output part."""
    if linear.split != SPLIT_N or tp == 1:
        return [(p, p, False) for p in linear.parts]
    kv_parts = linear.parts[-2:] if linear.kv_heads else ()
    parts = [(p, p // tp if p % tp == 0 else p / tp, True) for p in linear.parts[:len(linear.parts) - len(kv_parts)]]
    for p in kv_parts:
        divided = linear.kv_heads >= tp  # else each rank holds one KV head (QKVParallelLinear replicates them)
        parts.append((p, p // tp, True) if divided else (p, p // linear.kv_heads, False))
    return parts


def rank_shape(linear: Linear, tp: int, block_shape: tuple[int, int], where: str) -> tuple[int, int]:
    """(N, K) one rank runs of `linear`. A part off the block grid cannot be served (vLLM refuses to load
    it, and the scales would straddle ranks), so it is an error, not a shape: every part TP divides, and
    every part but the last of a merged weight (vLLM's validate_fp8_block_shape)."""
    block_n, block_k = block_shape
    if not all(linear.parts) or not linear.k:  # sizes of 0 the config file's checks let through (a sum of two)
        what = f"no output (N={sum(linear.parts)})" if not all(linear.parts) else "no input (K=0)"
        raise ShapeError(f"{linear.name} of {where} has {what}: a size it is built from is 0")
    parts = _rank_parts(linear, tp)
    for i, (whole, part, divided) in enumerate(parts):
        if part % block_n == 0 or not divided and i == len(parts) - 1:
            continue
        if divided:
            raise ShapeError(f"tp_sizes: tp={tp} splits N={whole} into {part:g}, not a multiple of block_n={block_n} "
                             f"({linear.name} of {where})")
        raise ShapeError(f"{where}: {linear.name} has an output part of N={whole}, not a multiple of "
                         f"block_n={block_n}: vLLM cannot load it block-quantized")
    k = linear.k
    if linear.split == SPLIT_K and tp > 1:
        if k % (tp * block_k):
            raise ShapeError(f"tp_sizes: tp={tp} splits K={k} into {k / tp:g}, not a multiple of block_k={block_k} "
                             f"({linear.name} of {where})")
        k //= tp
    return int(sum(part for _, part, _ in parts)), k


def rank_rows(model: Model, tp: int, block_shape: tuple[int, int]) -> list[ShapeRow]:
    """The distinct (N, K) one rank runs at `tp`, sorted, each with the layers that run it."""
    check_heads(model.heads, model.kv_heads, tp, model.where)
    layers: dict[tuple[int, int], list[Linear]] = {}
    for linear in model.linears:
        if linear.heads and not model.heads:  # an explicit qkv shape carries its own head counts
            check_heads(linear.heads, linear.kv_heads, tp, f"{linear.name} of {model.where}")
        layers.setdefault(rank_shape(linear, tp, block_shape, model.where), []).append(linear)
    return [ShapeRow(tp, n, k, tuple(lin.name for lin in served), tuple(dict.fromkeys(lin.split for lin in served)),
                     model.source)
            for (n, k), served in sorted(layers.items())]


QKV_EXAMPLE = '[9216, 4096, "qkv", 64, 4, 128] (Qwen3-235B-A22B: 64 query heads, 4 KV heads of 128)'


def explicit_linear(i: int, shape: list) -> Linear:
    """One `shapes` entry as a layer: [N, K] is tuned as given at every TP size; [N, K, "n" | "k" | "none"] is
    split like a column-parallel, row-parallel or replicated layer; [N, K, "qkv", heads, kv_heads, head_dim]
    like a merged q/k/v layer, whose KV heads vLLM replicates when tp exceeds them (so "n" would be wrong)."""
    name, n, k = f"shapes[{i}]", int(shape[0]), int(shape[1])
    split = shape[2] if len(shape) > 2 else NO_SPLIT
    if split != SPLIT_QKV:
        if len(shape) > 3:
            raise ShapeError(f"{name}: {shape}: only a \"qkv\" rule takes head counts; [N, K, split] has 3 items")
        return Linear(name, (n,), k, split)
    if len(shape) != 6:
        raise ShapeError(f"{name}: {shape}: a \"qkv\" rule is [N, K, \"qkv\", heads, kv_heads, head_dim], "
                         f"e.g. {QKV_EXAMPLE}")
    heads, kv_heads, head_dim = (int(v) for v in shape[3:])
    if (heads + 2 * kv_heads) * head_dim != n:
        raise ShapeError(f"{name}: N={n} is not (heads + 2 x kv_heads) x head_dim = ({heads} + 2 x {kv_heads}) x "
                         f"{head_dim} = {(heads + 2 * kv_heads) * head_dim}")
    if heads % kv_heads:
        raise ShapeError(f"{name}: heads={heads} is not a multiple of kv_heads={kv_heads} (each KV head serves "
                         "a group of query heads)")
    return qkv_linear(name, k, heads, kv_heads, head_dim)


def explicit_model(shapes: list) -> Model:
    """`shapes` as layers (explicit_linear)."""
    return Model("shapes", "shapes", tuple(explicit_linear(i, shape) for i, shape in enumerate(shapes)))


SOURCES = ("shapes", "model_config", LOG_KEY)


def source_model(config: dict, log: EngineLog | None = None) -> Model:
    """The one source of shapes the config names: explicit shapes, a model_config file, an engine's log (`log`,
    read already), or the built-in model."""
    given = [key for key in SOURCES if config.get(key)]
    if len(given) > 1:
        raise ShapeError(f"{' and '.join(given)}: {config[given[-1]]!r} are both set; give one (shapes: these weight "
                         f"shapes; model_config: the shapes of that model; {LOG_KEY}: the shapes an engine's log "
                         "names)")
    if config.get("shapes"):
        return explicit_model(config["shapes"])
    if config.get("model_config"):
        return load_model_config(config["model_config"])
    if log is not None:
        return log_model(log)
    return built_in_model(config["model"])


def resolve_block_shape(config: dict, model: Model, given=None) -> tuple[int, int]:
    """block_shape, or the model file's quantization_config.weight_block_size when block_shape is left at its
    default (not in `given`, the keys the user set; None: all of them); a conflict with a block_shape the
    user set is an error, never a silent choice."""
    configured = (int(config["block_shape"][0]), int(config["block_shape"][1]))
    if model.block_shape is None or model.block_shape == configured:
        return configured
    if given is None or "block_shape" in given:
        raise ShapeError(f"block_shape: {list(configured)}, but {model.where} has {model.block_shape_source} "
                         f"{list(model.block_shape)}; leave block_shape out, or set it to that")
    return model.block_shape


def _notes(model: Model, block_shape: tuple[int, int], configured: list) -> tuple[str, ...]:
    notes = [f"{model.source}: {layer}: {why}" for layer, why in model.elsewhere] + list(model.notes)
    if model.key == "model_config" and model.block_shape is None:
        notes.append(f"{model.source} has no quantization_config.weight_block_size (not a block-FP8 checkpoint?); "
                     f"block_shape {list(block_shape)} is used")
    elif model.block_shape is not None and list(model.block_shape) != list(configured):
        notes.append(f"block_shape {list(block_shape)}: {model.source}'s {model.block_shape_source}")
    return tuple(notes)


def shape_table(config: dict, given=None) -> ShapeTable:
    """Every configured TP size's shapes from a schema-valid config; `given` as in resolve_block_shape."""
    log = read_engine_log(config[LOG_KEY]) if config.get(LOG_KEY) else None
    model = source_model(config, log)
    block_shape = resolve_block_shape(config, model, given)
    rows = [row for tp in config["tp_sizes"] for row in rank_rows(model, int(tp), block_shape)]
    return ShapeTable(tuple(rows), model, block_shape, _notes(model, block_shape, config["block_shape"]), log)


def model_shapes(model: str, tp: int, block_shape=(128, 128)) -> list[tuple[int, int]]:
    """Distinct (N, K) one rank of a built-in model runs at tensor-parallel size `tp`, sorted."""
    return [(row.n, row.k) for row in rank_rows(built_in_model(model), tp, tuple(block_shape))]
