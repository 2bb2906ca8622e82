"""Weight shapes per TP size: the built-in DeepSeek-V3, config.json files of real models (tests/data/models/,
written from their published values), and explicit shapes with split rules. Every expected shape is worked out
by hand here from the model's sizes and vLLM's layers; config-level cases go through the schema and make_plan."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import SCHEMA, TEST_CONFIG, make_workdir, snakemake, validated
from snakemake.exceptions import WorkflowError

from w8a8_tuner.plan.config import schema_error_message
from w8a8_tuner.plan.settings import result_settings
from w8a8_tuner.plan.shapes import ShapeError, model_shapes
from w8a8_tuner.plan.sweep import ConfigError, make_plan

MODELS = Path(__file__).parent / "data" / "models"
DEEPSEEK_V3, KIMI_K2 = MODELS / "deepseek-v3.json", MODELS / "kimi-k2.json"
QWEN3_MOE, QWEN3_DENSE = MODELS / "qwen3-30b-a3b-fp8.json", MODELS / "qwen3-32b-fp8.json"
LLAMA = MODELS / "llama-3.1-70b-fp8-block.json"


def planned(given=None, **changes):
    """The plan of the CI config with `changes`, validated by the schema as the workflow does; `given`: the keys
    the user set (default: the CI config's and `changes`')."""
    from snakemake.utils import validate

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg.update(changes)
    given = set(cfg) if given is None else given
    validate(cfg, str(SCHEMA))
    return make_plan(cfg, given=given)


def message(**changes) -> str:
    """What the workflow says for the CI config with `changes` ('' if it is accepted)."""
    try:
        planned(**changes)
    except WorkflowError as e:
        return schema_error_message(e)
    except ConfigError as e:
        return str(e)
    return ""


def model_config(path, *tp_sizes, **changes):
    """The plan of `path` at these TP sizes."""
    return planned(model_config=str(path), shapes=[], tp_sizes=list(tp_sizes), **changes)


def written(tmp_path, source, **changes):
    """A copy of the config.json `source` with keys changed (None: removed)."""
    config = json.loads(source.read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return path


# --- DeepSeek-V3 (built in) ------------------------------------------------------------------

def deepseek_by_hand(tp, heads=128):
    """DeepSeek-V3's GEMMs at one rank of TP=tp, as current vLLM builds them: hidden 7168, q_lora_rank 1536,
    kv_lora_rank 512, qk_nope 128, qk_rope 64, v_head 128, intermediate 18432, moe_intermediate 2048, 1 shared
    expert. (Kimi-K2: the same with 64 heads.)"""
    return sorted({
        (1536 + 512 + 64, 7168),  # fused_qkv_a_proj: q_a_proj + kv_a_proj_with_mqa, replicated
        (heads * (128 + 64) // tp, 1536),  # q_b_proj, column-parallel
        (heads * (128 + 128) // tp, 512),  # kv_b_proj, column-parallel
        (7168, heads * 128 // tp),  # o_proj, row-parallel
        (2 * 18432 // tp, 7168),  # dense layers' gate_up_proj, column-parallel
        (7168, 18432 // tp),  # dense layers' down_proj, row-parallel
        (2 * 2048 * 1 // tp, 7168),  # the shared expert's gate_up_proj
        (7168, 2048 * 1 // tp),  # the shared expert's down_proj
    })


def test_deepseek_v3_tp8_runs_8_shapes():
    # 8, not the 14 of vLLM's tuning script: its list also holds the unsplit shapes and the separate
    # q_a/kv_a projections (576, 7168), which current vLLM runs fused as (2112, 7168).
    assert model_shapes("deepseek_v3", 8) == [(512, 7168), (2112, 7168), (3072, 1536), (4096, 512), (4608, 7168),
                                              (7168, 256), (7168, 2048), (7168, 2304)]


@pytest.mark.parametrize("tp", [1, 2, 4, 8, 16])
def test_deepseek_v3_per_tp(tp):
    assert model_shapes("deepseek_v3", tp) == deepseek_by_hand(tp)
    assert len(model_shapes("deepseek_v3", tp)) == 8  # no two layers share a shape within one TP size


def test_28_distinct_over_tp_1_2_4_8():
    # 4 x 8 shapes; the replicated (2112, 7168) is one shape for all four; and TP=1's shared-expert down_proj
    # (7168, 2048) is TP=8's o_proj (7168, 128 * 128 / 8): 32 - 3 - 1 = 28.
    union = set()
    for tp in (1, 2, 4, 8):
        union |= set(model_shapes("deepseek_v3", tp))
    assert len(union) == 28


def test_separate_a_projections_are_not_run():
    for tp in (1, 8):
        shapes = model_shapes("deepseek_v3", tp)
        assert (2112, 7168) in shapes and (576, 7168) not in shapes and (1536, 7168) not in shapes


def test_split_off_block_boundary_is_an_error():
    # vLLM checks each part of the merged gate_up at TP=32: 18432 / 32 = 576, first
    with pytest.raises(ShapeError, match=r"tp_sizes: tp=32 splits N=18432 into 576, not a multiple of block_n=128 "
                                         r"\(mlp.gate_up_proj of model deepseek_v3\)"):
        model_shapes("deepseek_v3", 32)
    with pytest.raises(ShapeError, match="tp_sizes: tp=16 splits K=18432 into 1152, not a multiple of block_k=256"):
        model_shapes("deepseek_v3", 16, (128, 256))


def test_tp_must_divide_the_heads():
    with pytest.raises(ShapeError, match=r"tp_sizes: tp=3 does not divide num_attention_heads=128 \(model deepseek"):
        model_shapes("deepseek_v3", 3)


def test_built_in_model_is_its_config_file():
    plan = model_config(DEEPSEEK_V3, 1, 8)
    assert plan.shapes_by_tp == {1: deepseek_by_hand(1), 8: deepseek_by_hand(8)}
    assert plan.block_shape == (128, 128)
    default = planned(shapes=[], tp_sizes=[1, 8])
    assert [(r.tp, r.n, r.k, r.layers) for r in default.shape_table.rows] == [
        (r.tp, r.n, r.k, r.layers) for r in plan.shape_table.rows]


# --- config.json of other models --------------------------------------------------------------

def test_kimi_k2():
    plan = model_config(KIMI_K2, 8, 16)
    assert plan.shapes_by_tp[8] == deepseek_by_hand(8, heads=64) == sorted([
        (2112, 7168), (64 * 192 // 8, 1536), (64 * 256 // 8, 512), (7168, 64 * 128 // 8),
        (36864 // 8, 7168), (7168, 18432 // 8), (4096 // 8, 7168), (7168, 2048 // 8)])
    assert plan.shapes_by_tp[16] == deepseek_by_hand(16, heads=64)
    # 61 layers, the first dense: 60 MoE layers of 384 routed experts
    assert any("384 routed experts in 60 MoE layers (moe_intermediate_size=2048) run in the fused-MoE kernel" in note
               for note in plan.shape_table.notes)


def qwen3_moe_by_hand(tp):
    """Qwen3-30B-A3B: hidden 2048, 32 heads, 4 KV heads of 128; each rank holds max(1, 4 / tp) KV heads."""
    kv_per_rank = max(1, 4 // tp)
    return sorted([((32 // tp + 2 * kv_per_rank) * 128, 2048),  # qkv_proj
                   (2048, 32 * 128 // tp)])  # o_proj; no dense MLP: every layer is MoE


def test_qwen3_moe():
    plan = model_config(QWEN3_MOE, 1, 4, 8, 16)
    assert plan.shapes_by_tp[1] == [(2048, 4096), ((32 + 2 * 4) * 128, 2048)]
    assert plan.shapes_by_tp[4] == [((8 + 2 * 1) * 128, 2048), (2048, 1024)] == qwen3_moe_by_hand(4)
    # tp=8 > 4 KV heads: each rank holds one (replicated), so N = (32 / 8 + 2 * 1) * 128, not 5120 / 8
    assert plan.shapes_by_tp[8] == [((4 + 2 * 1) * 128, 2048), (2048, 512)] == qwen3_moe_by_hand(8)
    assert plan.shapes_by_tp[16] == qwen3_moe_by_hand(16) == [((2 + 2) * 128, 2048), (2048, 256)]
    assert any("128 routed experts in 48 MoE layers (moe_intermediate_size=768)" in n for n in plan.shape_table.notes)


def test_qwen3_moe_dense_layers(tmp_path):
    # mlp_only_layers makes layer 0 dense: its MLP of intermediate_size 6144 runs here
    plan = model_config(written(tmp_path, QWEN3_MOE, mlp_only_layers=[0]), 4)
    assert plan.shapes_by_tp[4] == sorted(qwen3_moe_by_hand(4) + [(2 * 6144 // 4, 2048), (2048, 6144 // 4)])


def test_qwen3_dense():
    plan = model_config(QWEN3_DENSE, 8)
    # Qwen3-32B: hidden 5120, 64 heads of 128 (o_proj's K is 64 * 128 = 8192, not hidden), 8 KV heads,
    # intermediate 25600
    assert plan.shapes_by_tp[8] == sorted([((64 // 8 + 2 * 8 // 8) * 128, 5120), (5120, 64 * 128 // 8),
                                           (2 * 25600 // 8, 5120), (5120, 25600 // 8)])
    assert plan.shape_table.notes == ()  # no routed experts


def test_qwen3_dense_intermediate_off_block_grid_at_tp16():
    assert message(model_config=str(QWEN3_DENSE), shapes=[], tp_sizes=[16]) == (
        f"tp_sizes: tp=16 splits N=25600 into 1600, not a multiple of block_n=128 "
        f"(mlp.gate_up_proj of model_config {QWEN3_DENSE})")


def test_llama():
    plan = model_config(LLAMA, 8, 16)
    # Llama-3.1-70B: hidden 8192, 64 heads, head_dim = 8192 / 64 = 128 (no head_dim key), 8 KV heads,
    # intermediate 28672
    assert plan.shapes_by_tp[8] == sorted([((64 // 8 + 2 * 8 // 8) * 128, 8192), (8192, 64 * 128 // 8),
                                           (2 * 28672 // 8, 8192), (8192, 28672 // 8)])
    # tp=16 > 8 KV heads: each rank holds one
    assert plan.shapes_by_tp[16] == sorted([((64 // 16 + 2 * 1) * 128, 8192), (8192, 64 * 128 // 16),
                                            (2 * 28672 // 16, 8192), (8192, 28672 // 16)])


def test_mistral_head_dim_from_the_config(tmp_path):
    # Mistral-Small-24B: hidden 5120, 32 heads of head_dim 128 (not 5120 / 32 = 160), 8 KV heads
    path = written(tmp_path, LLAMA, architectures=["MistralForCausalLM"], hidden_size=5120, num_attention_heads=32,
                   num_key_value_heads=8, head_dim=128, intermediate_size=32768)
    assert model_config(path, 4).shapes_by_tp[4] == sorted([((32 // 4 + 2 * 8 // 4) * 128, 5120), (5120, 32 * 128 // 4),
                                                            (2 * 32768 // 4, 5120), (5120, 32768 // 4)])


def test_deepseek_v32_adds_the_indexer(tmp_path):
    path = written(tmp_path, DEEPSEEK_V3, architectures=["DeepseekV32ForCausalLM"], index_n_heads=64,
                   index_head_dim=128, index_topk=2048)
    plan = model_config(path, 8)
    assert plan.shapes_by_tp[8] == sorted(deepseek_by_hand(8) + [(64 * 128, 1536)])  # indexer wq_b, replicated


def test_block_shape_from_the_config_when_left_out(tmp_path):
    path = written(tmp_path, DEEPSEEK_V3, quantization_config={"quant_method": "fp8", "weight_block_size": [128, 256]})
    cfg_keys = set(yaml.safe_load(TEST_CONFIG.read_text())) | {"model_config", "shapes", "tp_sizes"}
    plan = model_config(path, 8, given=cfg_keys)
    assert plan.block_shape == (128, 256)
    assert f"block_shape [128, 256]: {path}'s quantization_config.weight_block_size" in plan.shape_table.notes


def test_explicit_shapes_replace_model():
    plan = planned(shapes=[[384, 256], [256, 512], [384, 256]], tp_sizes=[4, 8])
    assert plan.shapes_by_tp == {4: [(256, 512), (384, 256)], 8: [(256, 512), (384, 256)]}


def test_explicit_shapes_with_split_rules():
    plan = planned(shapes=[[7168, 2048, "k"], [4096, 7168, "n"], [2112, 7168, "none"], [256, 512]], tp_sizes=[1, 8])
    assert plan.shapes_by_tp[1] == [(256, 512), (2112, 7168), (4096, 7168), (7168, 2048)]
    assert plan.shapes_by_tp[8] == [(256, 512), (4096 // 8, 7168), (2112, 7168), (7168, 2048 // 8)]


# Qwen3-235B-A22B's qkv_proj: hidden 4096, 64 query heads and 4 KV heads of 128: N = (64 + 2 * 4) * 128 = 9216.
QWEN3_235B_QKV = [9216, 4096, "qkv", 64, 4, 128]


def test_qkv_rule_replicates_kv_heads_as_vllm_does():
    """[N, K, "n"] gave 9216 / 8 = 1152 at tp=8, where vLLM runs 64 / 8 = 8 query heads and max(1, 4 / 8) = 1 KV
    head (replicated) per rank: (8 + 2 * 1) * 128 = 1280."""
    plan = planned(shapes=[QWEN3_235B_QKV], tp_sizes=[1, 2, 4, 8, 16])
    assert plan.shapes_by_tp == {1: [(9216, 4096)], 2: [((32 + 2 * 2) * 128, 4096)], 4: [((16 + 2 * 1) * 128, 4096)],
                                 8: [((8 + 2 * 1) * 128, 4096)], 16: [((4 + 2 * 1) * 128, 4096)]}
    assert planned(shapes=[[9216, 4096, "n"]], tp_sizes=[8]).shapes_by_tp[8] == [(1152, 4096)]  # the old answer


def test_qkv_rule_is_the_arithmetic_of_a_config_json(tmp_path):
    """The explicit rule and a config.json of that model give the same qkv_proj shape at every TP size."""
    path = written(tmp_path, QWEN3_MOE, hidden_size=4096, num_attention_heads=64, num_key_value_heads=4, head_dim=128,
                   moe_intermediate_size=1536, num_hidden_layers=94)
    tps = [1, 2, 4, 8, 16, 32, 64]
    by_config = model_config(path, *tps).shape_table.rows
    by_rule = planned(shapes=[QWEN3_235B_QKV], tp_sizes=tps).shape_table.rows
    assert [(r.tp, r.n, r.k) for r in by_rule] == [(r.tp, r.n, r.k) for r in by_config if "qkv_proj" in r.layers[0]]


@pytest.mark.parametrize("shape,tp,needle", [
    ([9216, 4096, "qkv", 64, 4], 8, 'shapes[0]: [9216, 4096, \'qkv\', 64, 4]: a "qkv" rule is [N, K, "qkv", heads, '
                                    'kv_heads, head_dim], e.g. [9216, 4096, "qkv", 64, 4, 128]'),
    ([9216, 4096, "qkv", 64, 8, 128], 8, "shapes[0]: N=9216 is not (heads + 2 x kv_heads) x head_dim = (64 + 2 x 8) x "
                                         "128 = 10240"),
    ([832 * 128, 4096, "qkv", 64, 384, 128], 8, "shapes[0]: heads=64 is not a multiple of kv_heads=384"),
    ([9216, 4096, "n", 64, 4, 128], 8,
     'shapes[0]: [9216, 4096, \'n\', 64, 4, 128]: only a "qkv" rule takes head counts'),
    (QWEN3_235B_QKV, 3, "tp_sizes: tp=3 does not divide num_attention_heads=64 (shapes[0] of shapes)"),
    ([18 * 128, 4096, "qkv", 12, 3, 128], 4,
     "tp_sizes: tp=4 and num_key_value_heads=3 (shapes[0] of shapes): one must"),
    ([10 * 100, 4096, "qkv", 8, 1, 100], 1, "shapes[0] has an output part of N=800, not a multiple of block_n=128"),
    ([9216, 4096, "qkv", 0, 4, 128], 8, "shapes[0][3]: 0 is less than the minimum of 1"),
])
def test_qkv_rule_errors_name_the_entry(shape, tp, needle):
    assert needle in message(shapes=[shape], tp_sizes=[tp])


def test_shapes_are_not_in_the_fingerprint():
    tuning = validated(**yaml.safe_load(TEST_CONFIG.read_text()))["tuning"]
    a = planned(shapes=[[256, 512]], tp_sizes=[8])
    b = planned(model_config=str(QWEN3_MOE), shapes=[], tp_sizes=[4, 8])
    assert result_settings(a, tuning) == result_settings(b, tuning)


def test_shapes_tsv():
    table = model_config(QWEN3_MOE, 8).shape_table
    assert table.tsv().splitlines() == [
        "tp\tN\tK\tlayers\tsplit\tsource\tnote",
        f"8\t768\t2048\tself_attn.qkv_proj\tn\t{QWEN3_MOE}\t",
        f"8\t2048\t512\tself_attn.o_proj\tk\t{QWEN3_MOE}\t",
        f"8\t-\t-\tmlp.experts\t-\t{QWEN3_MOE}\t128 routed experts in 48 MoE layers (moe_intermediate_size=768) "
        "run in the fused-MoE kernel, not this GEMM: not tuned here",
    ]


# --- errors name the file, the key and the value ----------------------------------------------

def test_unknown_architecture(tmp_path):
    path = written(tmp_path, LLAMA, architectures=["GPT2LMHeadModel"])
    assert message(model_config=str(path), shapes=[]) == (
        f"model_config: {path}: architecture GPT2LMHeadModel is not known here; known: DeepseekV3ForCausalLM, "
        "DeepseekV32ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, LlamaForCausalLM, MistralForCausalLM; "
        "for another model, give its shapes with shapes: [[N, K, split], ...] (README: Which shapes), or take them "
        "from the engine's log of a run with shapes_from_log: path/to/engine.log")
    no_list = written(tmp_path, LLAMA, architectures=None)
    assert "shapes: [[N, K, split], ...]" in message(model_config=str(no_list), shapes=[])
    assert "shapes_from_log: path/to/engine.log" in message(model_config=str(no_list), shapes=[])


def test_missing_key(tmp_path):
    path = written(tmp_path, QWEN3_MOE, num_key_value_heads=None)
    assert message(model_config=str(path), shapes=[]) == (
        f"model_config: {path}: key 'num_key_value_heads' is missing (Qwen3MoeForCausalLM needs it)")


def test_mistyped_key(tmp_path):
    path = written(tmp_path, KIMI_K2, kv_lora_rank="512")
    assert message(model_config=str(path), shapes=[]) == (
        f"model_config: {path}: kv_lora_rank='512' is not a whole number >= 0")


@pytest.mark.parametrize("text,needle", [("{", "not valid JSON"), ("[1]", "expected a JSON object, got list")])
def test_not_a_config_file(tmp_path, text, needle):
    path = tmp_path / "config.json"
    path.write_text(text)
    assert message(model_config=str(path), shapes=[]).startswith(f"model_config: {path}: {needle}")


def test_missing_file(tmp_path):
    assert message(model_config=str(tmp_path / "nope.json"), shapes=[]).startswith(
        f"model_config: {tmp_path / 'nope.json'}: cannot read it")


def test_bad_split_rule():
    assert message(shapes=[[256, 512, "rows"]]) == "shapes[0][2]: 'rows' is not one of ['n', 'k', 'none', 'qkv']"


def test_split_rule_off_the_block_grid():
    assert message(shapes=[[256, 512], [1000, 7168, "n"]], tp_sizes=[8]) == (
        "tp_sizes: tp=8 splits N=1000 into 125, not a multiple of block_n=128 (shapes[1] of shapes)")
    assert message(shapes=[[7168, 2048, "k"]], tp_sizes=[32]) == (
        "tp_sizes: tp=32 splits K=2048 into 64, not a multiple of block_k=128 (shapes[0] of shapes)")


def test_block_shape_conflict():
    assert message(model_config=str(KIMI_K2), shapes=[], block_shape=[128, 256]) == (
        f"block_shape: [128, 256], but model_config {KIMI_K2} has quantization_config.weight_block_size [128, 128]; "
        "leave block_shape out, or set it to that")


def test_shapes_and_model_config_together():
    assert message(model_config=str(KIMI_K2)).startswith(f"shapes and model_config: '{KIMI_K2}' are both set")


# --- the real snakemake -----------------------------------------------------------------------

@pytest.mark.e2e
def test_shapes_target_writes_the_table(tmp_path):
    wd = make_workdir(tmp_path, shapes=[], model_config=str(QWEN3_MOE), tp_sizes=[4, 8])
    run = snakemake(wd, "--cores", "1", "shapes")
    assert run.returncode == 0, run.stderr[-3000:]
    tsv = wd / "results" / "shapes.tsv"
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("4", str((8 + 2) * 128), "2048", "self_attn.qkv_proj"), ("4", "2048", "1024", "self_attn.o_proj"),
        ("4", "-", "-", "mlp.experts"),
        ("8", str((4 + 2) * 128), "2048", "self_attn.qkv_proj"), ("8", "2048", "512", "self_attn.o_proj"),
        ("8", "-", "-", "mlp.experts")]
    assert "self_attn.qkv_proj" in run.stdout and "run in the fused-MoE kernel" in run.stderr
    assert not list((wd / "results").rglob("*.json")) and not list((wd / "results").rglob("M*.tsv"))  # tunes nothing
    assert {p.relative_to(wd / "results") for p in (wd / "results").rglob("*")} == {Path("shapes.tsv")}
    # Another config makes the table again (the profile's mtime trigger alone would keep the old one).
    again = snakemake(wd, "--cores", "1", "--config", "tp_sizes=[8]", "--", "shapes")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [line.split("\t")[0] for line in tsv.read_text().splitlines()[1:]] == ["8", "8", "8"]


def table_of(path, tp):
    """shapes.tsv's (N, K) rows of one TP size, as model_config computes them in-process."""
    return [(str(n), str(k)) for n, k in model_config(path, tp).shapes_by_tp[tp]]


@pytest.mark.e2e
def test_shapes_follow_every_config_change_and_need_no_device(tmp_path):
    """Three model_config files in one folder: the third run said "Nothing to be done" and kept the second model's
    table (its marker input always had the same text, whose checksum Snakemake had recorded). And with
    backend cuda, device_name auto and no GPU, `snakemake shapes` stopped asking for a device_name."""
    wd = make_workdir(tmp_path, shapes=[], backend="cuda", device_name="auto")
    tsv = wd / "results" / "shapes.tsv"
    for path in (QWEN3_MOE, QWEN3_DENSE, LLAMA, LLAMA):  # the last run: the table is current, and printed again
        run = snakemake(wd, "--cores", "1", "--config", f"model_config={path}", "tp_sizes=[8]", "--", "shapes")
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Nothing to be done" not in run.stdout + run.stderr
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line.split("\t")[1] != "-"]
        assert [(r[1], r[2]) for r in rows] == table_of(path, 8) and {r[5] for r in rows} == {str(path)}
        printed = [line.split()[1:3] for line in run.stdout.splitlines() if line.startswith("   8 ")]
        assert [tuple(p) for p in printed] == table_of(path, 8), run.stdout
    assert {p.relative_to(wd / "results") for p in (wd / "results").rglob("*")} == {Path("shapes.tsv")}
    assert not list(wd.rglob("shapes.stale"))


@pytest.mark.e2e
def test_shapes_from_an_engine_log_through_snakemake(tmp_path):
    from test_shapes_from_log import VLLM_LOG

    wd = make_workdir(tmp_path, shapes=[], backend="cuda", device_name="auto", tp_sizes=[8])  # no device needed
    run = snakemake(wd, "--cores", "1", "--config", f"shapes_from_log={VLLM_LOG}", "--", "shapes")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split("\t") for line in (wd / "results" / "shapes.tsv").read_text().splitlines()[1:]]
    assert [(int(r[1]), int(r[2])) for r in rows] == sorted(set(deepseek_by_hand(8)) - {(512, 7168)})
    bad = snakemake(wd, "-n", "--config", f"shapes_from_log={VLLM_LOG}", "device_name=NVIDIA_H100_80GB_HBM3")
    assert bad.returncode != 0
    assert (f"Invalid configuration: device_name: 'NVIDIA_H100_80GB_HBM3', but shapes_from_log {VLLM_LOG} was "
            "logged on NVIDIA_H200") in bad.stdout + bad.stderr, bad.stdout[-2000:]
