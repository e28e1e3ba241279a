"""Both backends hold exactly the canonical tensors of a config (shared/DESIGN.md section 2, "Canonical names"); the
file-for-file twin check is tests/test_contract.py."""


import numpy as np
import pytest

from backends import tiny_config, tiny_weights
from hrm_shared.core.config import preset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import canonical_shapes, count_parameters

UNTRAINED = {"H_init", "L_init", "puzzle_emb.weights"}


@pytest.mark.parametrize("pos_encodings", ["rope", "learned"])
@pytest.mark.parametrize("puzzle_emb_ndim, P", [(0, 0), (64, 1), (100, 2)])
def test_model_tensors_are_the_canonical_shapes(backend, pos_encodings, puzzle_emb_ndim, P):
    config = tiny_config(pos_encodings=pos_encodings, puzzle_emb_ndim=puzzle_emb_ndim, H_layers=2, L_layers=1)
    assert config.puzzle_emb_len == P
    weights = tiny_weights(config)
    model = backend.build(config, weights)
    state = backend.model.canonical_state(model)
    assert {k: v.shape for k, v in state.items()} == canonical_shapes(config)
    assert all(v.dtype == np.float32 and np.array_equal(v, weights[k]) for k, v in state.items())
    trainable = backend.trainable_shapes(model)
    assert set(trainable) == set(canonical_shapes(config)) - UNTRAINED
    assert sum(int(np.prod(s)) for s in trainable.values()) == count_parameters(config)


@pytest.mark.parametrize("name, vocab_size, expected", [("sudoku", 11, 27_275_266), ("maze", 6, 27_270_146),
                                                        ("arc", 12, 27_276_290)])
def test_parameter_count_of_the_paper_models(name, vocab_size, expected):
    config = preset(name)[0].replace(vocab_size=vocab_size, seq_len=81 if name == "sudoku" else 900)
    assert count_parameters(config) == expected
    shapes = canonical_shapes(config)
    assert config.intermediate_size == 1536 and shapes["H_level.layers.3.mlp.gate_up_proj.weight"] == (3072, 512)
    assert "embed_pos.embedding_weight" not in shapes and shapes["puzzle_emb.weights"] == (1, 512)


def test_shapes_need_the_dataset_sizes():
    with pytest.raises(HRMError, match="vocab_size"):
        canonical_shapes(preset("sudoku")[0])


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("L_level.layers.1.mlp.down_proj.weight"), "'L_level.layers.1.mlp.down_proj.weight' is missing"),
    (lambda w: w.update({"embed_pos.embedding_weight": np.zeros((17, 64), np.float32)}),
     "unexpected tensor 'embed_pos.embedding_weight'"),
    (lambda w: w.update({"lm_head.weight": np.zeros((11, 64), np.float32)}),
     r"'lm_head.weight' has shape \(11, 64\).*\(10, 64\)"),
])
def test_loading_is_strict_and_names_the_tensor(backend, change, message):
    config = tiny_config()
    weights = tiny_weights(config)
    model = backend.build(config, weights)
    change(weights)
    with pytest.raises(HRMError, match=message):
        backend.model.load_canonical(model, weights)
