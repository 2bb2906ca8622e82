import pytest

from w8a8_tuner.plan.shapes import ShapeError, model_shapes, shapes_for


def test_tp8_has_14_distinct_shapes():
    shapes = model_shapes("deepseek_v3", 8)
    assert len(shapes) == 14
    assert (4608, 7168) in shapes and (7168, 2304) in shapes and (512, 7168) in shapes
    assert (576, 7168) in shapes  # replicated


@pytest.mark.parametrize("tp,count", [(1, 10), (2, 14), (4, 14), (8, 14)])
def test_counts_per_tp(tp, count):
    assert len(model_shapes("deepseek_v3", tp)) == count


def test_33_distinct_over_tp_1_2_4_8():
    union = set()
    for tp in (1, 2, 4, 8):
        union |= set(model_shapes("deepseek_v3", tp))
    assert len(union) == 33


def test_split_rules():
    tp4 = set(model_shapes("deepseek_v3", 4))
    assert (36864 // 4, 7168) in tp4 and (7168, 18432 // 4) in tp4 and (7168, 18432) in tp4


def test_split_off_block_boundary_is_an_error():
    with pytest.raises(ShapeError, match="tp_sizes: tp=32 splits K=18432 into 576, not a multiple of block_k=128"):
        model_shapes("deepseek_v3", 32)


def test_explicit_shapes_replace_model():
    assert shapes_for(8, "deepseek_v3", [[384, 256], [256, 512], [384, 256]]) == [(256, 512), (384, 256)]
