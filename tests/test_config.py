import json

import pytest

from hrm_shared.core.config import PRESETS, HRMConfig, TrainConfig, apply_overrides, preset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import count_parameters


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_round_trips_through_json(tmp_path, name):
    model, train = preset(name)
    model.save(tmp_path / "m.json")
    train.save(tmp_path / "t.json")
    assert type(model).load(tmp_path / "m.json") == model
    assert TrainConfig.load(tmp_path / "t.json") == train
    assert type(model).from_dict(model.to_dict()) == model


def test_defaults_match_design():
    m, t = HRMConfig(), TrainConfig()
    assert (m.hidden_size, m.num_heads, m.head_dim, m.H_layers, m.L_layers) == (512, 8, 64, 4, 4)
    assert (m.H_cycles, m.L_cycles, m.halt_max_steps, m.halt_exploration_prob) == (2, 2, 16, 0.1)
    assert m.intermediate_size == 1536 and m.puzzle_emb_len == 1
    assert (t.global_batch_size, t.lr, t.puzzle_emb_lr, t.weight_decay, t.lr_warmup_steps) == (768, 1e-4, 1e-2, 0.1,
                                                                                               2000)
    assert (t.beta1, t.beta2, t.lr_min_ratio) == (0.9, 0.95, 1.0)


def test_presets_follow_reference_recipes():
    _, sudoku = preset("sudoku")
    assert (sudoku.epochs, sudoku.eval_interval, sudoku.weight_decay, sudoku.puzzle_emb_lr) == (20000, 2000, 1.0, 1e-4)
    full_model, full = preset("sudoku-full")
    assert (full_model.L_cycles, full_model.halt_max_steps, full_model.pos_encodings) == (8, 8, "learned")
    assert full_model.loss_type == "softmax_cross_entropy"
    assert (full.global_batch_size, full.lr, full.lr_min_ratio, full.epochs) == (2304, 3e-4, 0.1, 100)


def test_puzzle_prefix_length():
    assert HRMConfig(puzzle_emb_ndim=0).puzzle_emb_len == 0
    assert HRMConfig(hidden_size=64, num_heads=2, puzzle_emb_ndim=65).puzzle_emb_len == 2


def test_from_dict_ignores_unknown_keys_with_a_warning():
    with pytest.warns(UserWarning, match="not_a_field"):
        m = HRMConfig.from_dict({"hidden_size": 128, "num_heads": 2, "not_a_field": 1})
    assert m.hidden_size == 128


def test_overrides_are_typed():
    model, train = apply_overrides(*preset("tiny"), ["hidden_size=128", "lr=3e-4", "train.seed=7",
                                                     "pos_encodings=learned"])
    assert model.hidden_size == 128 and train.lr == 3e-4 and train.seed == 7 and model.pos_encodings == "learned"
    assert isinstance(train.lr, float)


@pytest.mark.parametrize("override, message", [
    ("hidden_size=big", "hidden_size='big' is not a valid int"),
    ("no_such_key=1", "unknown config key 'no_such_key'"),
    ("lr", "not of the form key=value"),
    ("forward_dtype=float16", "forward_dtype='float16' is not one of"),
    ("model.lr=1", "unknown config key 'model.lr'"),
    ("num_heads=3", "must split into num_heads=3"),
    ("eval_interval=7", "must divide epochs"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(HRMError, match=message):
        apply_overrides(*preset("tiny"), [override])


def test_wrong_type_in_json_is_an_error(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"hidden_size": 1.5}))
    with pytest.raises(HRMError, match="hidden_size=1.5 must be of type int"):
        HRMConfig.load(tmp_path / "c.json")
    with pytest.raises(HRMError, match="unknown preset"):
        preset("nope")


@pytest.mark.parametrize("name, vocab_size, seq_len, expected", [
    ("trm-sudoku", 11, 81, 5_028_866), ("trm-sudoku-att", 11, 81, 6_828_034), ("trm-maze", 6, 900, 6_822_914),
    ("trm-arc-agi-1", 12, 900, 6_829_058)])
def test_trm_presets_have_the_reference_sizes(name, vocab_size, seq_len, expected):
    """The trainable parameters shared/TRM.md section 1 counted by instantiating the reference."""
    model, train = preset(name)
    assert count_parameters(model.replace(vocab_size=vocab_size, seq_len=seq_len)) == expected
    assert train.ema and train.ema_rate == 0.999 and model.puzzle_emb_len == 16 and model.L_layers == 2
