"""A model's block-FP8 linear layers, read from its Hugging Face config.json, as vLLM builds them.

Each architecture lists the linear layers that vLLM quantizes with the checkpoint's block-FP8 scheme
(the weights this GEMM runs), whole, with how tensor parallelism splits each; plan.shapes turns them
into the (N, K) one rank runs. Never listed, because they never run in this kernel: embeddings and
lm_head (not fp8), MoE routers (vLLM builds them unquantized), and routed experts (the fused-MoE
kernel, tuned with configs of its own); a model that has routed experts says so in `elsewhere`.

Read from vLLM's vllm/model_executor/models/deepseek_v2.py, qwen3.py, qwen3_moe.py and llama.py, with
layers/linear.py for how each layer kind splits (SGLang's deepseek_v2.py builds the same layers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPLIT_N = "n"  # column-parallel: each rank holds N / tp output rows
SPLIT_K = "k"  # row-parallel: each rank holds K / tp input columns
NO_SPLIT = "none"  # replicated: every rank holds the whole weight
SPLIT_QKV = "qkv"  # merged q, k, v: column-parallel with KV heads replicated when tp exceeds them
SPLITS = (SPLIT_N, SPLIT_K, NO_SPLIT)


class ShapeError(ValueError):
    pass


@dataclass(frozen=True)
class Linear:
    """One block-FP8 linear layer, whole (before TP): its output parts (a merged layer such as gate_up
    has several, each loaded on its own block boundary), its input size K, and how TP splits it."""

    name: str
    parts: tuple[int, ...]
    k: int
    split: str
    # qkv_proj: its last two parts are this many KV heads, which the ranks replicate when tp exceeds them;
    # `heads` query heads, which TP must divide
    kv_heads: int = 0
    heads: int = 0


@dataclass(frozen=True)
class Model:
    """What plan.shapes needs of a model: its layers, the head counts TP must divide, its block size."""

    key: str  # the config key that named it: model_config, model or shapes
    source: str  # the config.json path, the built-in model's name, or "shapes"
    linears: tuple[Linear, ...]
    heads: int = 0  # attention heads: TP must divide them
    kv_heads: int = 0  # GQA KV heads: TP divides them, or they divide TP (each rank then holds one)
    block_shape: tuple[int, int] | None = None  # quantization_config.weight_block_size
    block_shape_source: str = "quantization_config.weight_block_size"  # where block_shape comes from, for messages
    # (layer, why it is not tuned here) for layers that run in another kernel
    elsewhere: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """The config key and value that named the model, for messages."""
        return self.key if self.key == self.source else f"{self.key} {self.source}"


class _Keys:
    """One config.json's values; a missing or mistyped key is an error naming the file, the key and the architecture."""

    def __init__(self, config: dict, source: str, architecture: str):
        self.config, self.source, self.architecture = config, source, architecture

    def error(self, what: str) -> ShapeError:
        return ShapeError(f"model_config: {self.source}: {what}")

    def int(self, key: str) -> int:
        value = self.nullable_int(key)
        if value is None:
            raise self.error(f"{key} is null; {self.architecture} needs a number")
        return value

    def nullable_int(self, key: str) -> int | None:
        if key not in self.config:
            raise self.error(f"key {key!r} is missing ({self.architecture} needs it)")
        return self._checked(key, self.config[key])

    def optional_int(self, key: str, absent: int | None) -> int | None:
        """A key Hugging Face's config class gives a default (`absent`) when the file leaves it out."""
        return self._checked(key, self.config.get(key, absent))

    def size(self, key: str) -> int:
        """A count or dimension a layer is built from (heads, hidden size, ...): 0 would leave a GEMM empty."""
        return self._positive(key, self.int(key))

    def optional_size(self, key: str, absent: int | None = None, none: str = "") -> int | None:
        """A size the file may leave out or set to null (`none` says what null means), but never 0."""
        value = self.optional_int(key, absent)
        return None if value is None else self._positive(key, value, none)

    def _positive(self, key: str, value: int, none: str = "") -> int:
        if value < 1:
            raise self.error(f"{key}={value!r} is not a size (a whole number >= 1{'; null: ' + none if none else ''}); "
                             f"{self.architecture} builds its layers from it")
        return value

    def _checked(self, key: str, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise self.error(f"{key}={value!r} is not a whole number >= 0")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self.config.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self.error(f"{key}={value!r} is not a list of layer numbers")
        return value


def _mlp(prefix: str, hidden: int, intermediate: int) -> list[Linear]:
    """SwiGLU MLP: gate and up merged into one column-parallel GEMM (N = 2 * intermediate), down row-parallel."""
    return [Linear(f"{prefix}.gate_up_proj", (intermediate, intermediate), hidden, SPLIT_N),
            Linear(f"{prefix}.down_proj", (hidden,), intermediate, SPLIT_K)]


def _routed(experts: int, moe_layers: int, moe_intermediate: int) -> tuple[str, str]:
    return ("mlp.experts", f"{experts} routed experts in {moe_layers} MoE layers (moe_intermediate_size="
                           f"{moe_intermediate}) run in the fused-MoE kernel, not this GEMM: not tuned here")


def _block_shape(keys: _Keys) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
    """quantization_config.weight_block_size, and notes on what the quantization config leaves out."""
    quant = keys.config.get("quantization_config") or {}
    if not isinstance(quant, dict):
        raise keys.error(f"quantization_config={quant!r} is not a mapping")
    size = quant.get("weight_block_size")
    notes = []
    skipped = quant.get("ignored_layers") or quant.get("modules_to_not_convert") or []
    if skipped:
        # vLLM leaves these modules unquantized: their shapes are still listed, and tuning them costs only time
        notes.append(f"{keys.source}: quantization_config leaves {len(skipped)} modules unquantized "
                     "(ignored_layers/modules_to_not_convert); the shapes listed include any of them")
    if size is None:
        return None, tuple(notes)
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise keys.error(f"quantization_config.weight_block_size={size!r} is not [block_n, block_k]")
    return (size[0], size[1]), tuple(notes)


def qkv_linear(name: str, hidden: int, heads: int, kv_heads: int, head_dim: int) -> Linear:
    """q, k and v merged into one column-parallel GEMM (vLLM's QKVParallelLinear): each rank holds heads / tp
    query heads and max(1, kv_heads / tp) KV heads (replicated when tp exceeds them); plan.shapes splits it.
    Used for config.json models and for an explicit `[N, K, "qkv", heads, kv_heads, head_dim]` shape."""
    return Linear(name, (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim), hidden, SPLIT_N,
                  kv_heads=kv_heads, heads=heads)


def _gqa_attention(keys: _Keys) -> tuple[list[Linear], int, int]:
    """Llama-style attention: qkv_proj (qkv_linear), o_proj row-parallel."""
    hidden, heads = keys.size("hidden_size"), keys.size("num_attention_heads")
    kv_heads = keys.size("num_key_value_heads")
    head_dim = keys.optional_size("head_dim", none="hidden_size // num_attention_heads") or hidden // heads
    if head_dim < 1:
        raise keys.error(f"no head_dim, and hidden_size={hidden} // num_attention_heads={heads} is 0")
    qkv = qkv_linear("self_attn.qkv_proj", hidden, heads, kv_heads, head_dim)
    return [qkv, Linear("self_attn.o_proj", (hidden,), heads * head_dim, SPLIT_K)], heads, kv_heads


def dense_gqa(keys: _Keys) -> dict:
    """Qwen3ForCausalLM, LlamaForCausalLM, MistralForCausalLM: GQA attention and a dense MLP in every layer."""
    attention, heads, kv_heads = _gqa_attention(keys)
    mlp = _mlp("mlp", keys.size("hidden_size"), keys.size("intermediate_size"))
    return {"linears": attention + mlp, "heads": heads, "kv_heads": kv_heads}


def qwen3_moe(keys: _Keys) -> dict:
    """Qwen3MoeForCausalLM: GQA attention; a layer is MoE unless mlp_only_layers or decoder_sparse_step make it
    dense (then a dense MLP of intermediate_size); no shared experts."""
    attention, heads, kv_heads = _gqa_attention(keys)
    layers, experts = keys.size("num_hidden_layers"), keys.int("num_experts")
    # Hugging Face's Qwen3MoeConfig defaults: every layer sparse
    step, dense_only = keys.optional_int("decoder_sparse_step", 1), set(keys.int_list("mlp_only_layers"))
    moe = [i for i in range(layers) if i not in dense_only and experts > 0 and step and (i + 1) % step == 0]
    linears = list(attention)
    if len(moe) < layers:
        linears += _mlp("mlp", keys.size("hidden_size"), keys.size("intermediate_size"))
    elsewhere = (_routed(experts, len(moe), keys.size("moe_intermediate_size")),) if moe else ()
    return {"linears": linears, "heads": heads, "kv_heads": kv_heads, "elsewhere": elsewhere}


def deepseek_v3(keys: _Keys) -> dict:
    """DeepseekV3ForCausalLM (DeepSeek-V3/R1, Kimi-K2): MLA attention, dense MLPs in the first
    first_k_dense_replace layers, then MoE layers whose shared experts are one dense MLP.

    Current vLLM (and SGLang) runs q_a_proj and kv_a_proj_with_mqa as one replicated GEMM, fused_qkv_a_proj,
    N = q_lora_rank + kv_lora_rank + qk_rope_head_dim (2112 for DeepSeek-V3), so the separate q_a_proj
    (1536, 7168) and kv_a_proj_with_mqa (576, 7168) that older vLLM ran (and vLLM's tuning script still lists)
    run only for a model without q_lora_rank (DeepSeek-V2-Lite style): kv_a_proj_with_mqa and q_proj then.
    kv_b_proj runs here in prefill only (decode uses its weight absorbed into bf16 matmuls). Not covered: vLLM
    options that change the split (sequence-parallel MoE replicates the shared experts; a fused shared
    expert, as on ROCm's AITER, moves them into the fused-MoE kernel).
    """
    hidden, heads = keys.size("hidden_size"), keys.size("num_attention_heads")
    keys.nullable_int("q_lora_rank")  # must be there (null or a size)
    q_lora = keys.optional_size("q_lora_rank", none="no q LoRA, as DeepSeek-V2-Lite")
    kv_lora = keys.size("kv_lora_rank")
    nope, rope, v_dim = keys.int("qk_nope_head_dim"), keys.int("qk_rope_head_dim"), keys.size("v_head_dim")
    if q_lora:
        attention = [Linear("self_attn.fused_qkv_a_proj", (q_lora, kv_lora + rope), hidden, NO_SPLIT),
                     Linear("self_attn.q_b_proj", (heads * (nope + rope),), q_lora, SPLIT_N)]
    else:
        attention = [Linear("self_attn.q_proj", (heads * (nope + rope),), hidden, SPLIT_N),
                     Linear("self_attn.kv_a_proj_with_mqa", (kv_lora + rope,), hidden, NO_SPLIT)]
    attention += [Linear("self_attn.kv_b_proj", (heads * (nope + v_dim),), kv_lora, SPLIT_N),
                  Linear("self_attn.o_proj", (hidden,), heads * v_dim, SPLIT_K)]
    layers, first_dense = keys.size("num_hidden_layers"), keys.int("first_k_dense_replace")
    experts, every = keys.nullable_int("n_routed_experts"), keys.optional_int("moe_layer_freq", 1) or 1
    moe = [i for i in range(layers) if experts and i >= first_dense and i % every == 0]
    linears = attention
    if len(moe) < layers:
        linears += _mlp("mlp", hidden, keys.size("intermediate_size"))
    moe_intermediate = keys.size("moe_intermediate_size") if moe else 0
    shared = keys.nullable_int("n_shared_experts") if moe else 0
    if shared:
        linears += _mlp("mlp.shared_experts", hidden, moe_intermediate * shared)
    elsewhere = (_routed(experts, len(moe), moe_intermediate),) if moe else ()
    return {"linears": linears, "heads": heads, "elsewhere": elsewhere}


def deepseek_v32(keys: _Keys) -> dict:
    """DeepseekV32ForCausalLM: DeepSeek-V3's layers plus the sparse-attention indexer's wq_b, a replicated
    block-FP8 GEMM (its wk runs in bf16, merged with the unquantized weights_proj)."""
    model = deepseek_v3(keys)
    wq_b = Linear("self_attn.indexer.wq_b", (keys.size("index_n_heads") * keys.size("index_head_dim"),),
                  keys.size("q_lora_rank"), NO_SPLIT)
    return {**model, "linears": model["linears"] + [wq_b]}


ARCHITECTURES = {
    "DeepseekV3ForCausalLM": deepseek_v3,
    "DeepseekV32ForCausalLM": deepseek_v32,
    "Qwen3ForCausalLM": dense_gqa,
    "Qwen3MoeForCausalLM": qwen3_moe,
    "LlamaForCausalLM": dense_gqa,
    "MistralForCausalLM": dense_gqa,
}


# What to do for a model whose architecture is not known here: the two sources that need no architecture.
OTHER_MODELS = ("for another model, give its shapes with shapes: [[N, K, split], ...] (README: Which shapes), "
                "or take them from the engine's log of a run with shapes_from_log: path/to/engine.log")


def model_from_config(config: dict, source: str, key: str = "model_config") -> Model:
    """The layers of the first architecture in `config` that is known here (vLLM also takes the first it supports)."""
    names = config.get("architectures")
    if not isinstance(names, list) or not names:
        raise ShapeError(f"{key}: {source}: no 'architectures' list naming the model class; known: "
                         f"{', '.join(ARCHITECTURES)}; {OTHER_MODELS}")
    known = [name for name in names if name in ARCHITECTURES]
    if not known:
        raise ShapeError(f"{key}: {source}: architecture {', '.join(map(str, names))} is not known here; known: "
                         f"{', '.join(ARCHITECTURES)}; {OTHER_MODELS}")
    keys = _Keys(config, source, known[0])
    block_shape, notes = _block_shape(keys)
    parts = ARCHITECTURES[known[0]](keys)
    return Model(key, source, tuple(parts.pop("linears")), block_shape=block_shape, notes=notes, **parts)


def load_model_config(path: str) -> Model:
    """A local config.json (nothing is downloaded); every problem is an error naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ShapeError(f"model_config: {path}: cannot read it (from {Path.cwd()}): {e.strerror or e}") from e
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ShapeError(f"model_config: {path}: not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ShapeError(f"model_config: {path}: expected a JSON object, got {type(config).__name__}")
    return model_from_config(config, path)


# DeepSeek-V3/R1's published config.json (deepseek-ai/DeepSeek-V3), the keys read above: the built-in
# model `deepseek_v3` runs through the same code as a model_config file. No quantization_config: the
# built-in model takes its block size from the block_shape key.
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_attention_heads": 128,
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
}

BUILT_IN = {"deepseek_v3": DEEPSEEK_V3}


def built_in_model(name: str) -> Model:
    if name not in BUILT_IN:
        raise ShapeError(f"model: unknown model {name!r}; known: {', '.join(sorted(BUILT_IN))}")
    return model_from_config(BUILT_IN[name], name, key="model")
