"""Every preset that follows a reference recipe holds that recipe's numbers (shared/DESIGN.md section 5 for HRM,
shared/TRM.md section 4 for TRM), and the data order is the reference's: one shuffled pass per eval_interval."""

import pytest

from helpers import make_dataset
from hrm_shared.core.config import preset
from hrm_shared.core.iterator import TrainIterator

HRM_1K = dict(epochs=20000, eval_interval=2000, lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0,
              puzzle_emb_weight_decay=1.0, global_batch_size=768, lr_min_ratio=1.0, lr_warmup_steps=2000)
HRM_ARC = dict(epochs=100000, eval_interval=10000, lr=1e-4, puzzle_emb_lr=1e-2, weight_decay=0.1,
               puzzle_emb_weight_decay=0.1, global_batch_size=768)
TRM_1K = dict(epochs=50000, eval_interval=5000, lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0,
              puzzle_emb_weight_decay=1.0, global_batch_size=768, ema=True, ema_rate=0.999)
TRM_ARC = dict(epochs=100000, eval_interval=10000, lr=1e-4, puzzle_emb_lr=1e-2, weight_decay=0.1,
               puzzle_emb_weight_decay=0.1, global_batch_size=768, ema=True, ema_rate=0.999)
HRM_MODEL = dict(hidden_size=512, num_heads=8, H_layers=4, L_layers=4, H_cycles=2, L_cycles=2, halt_max_steps=16,
                 pos_encodings="rope", forward_dtype="bfloat16", loss_type="stablemax_cross_entropy")
TRM_MODEL = dict(hidden_size=512, num_heads=8, L_layers=2, H_cycles=3, halt_max_steps=16, puzzle_emb_len=16,
                 puzzle_emb_ndim=512, forward_dtype="bfloat16", loss_type="stablemax_cross_entropy")

RECIPES = {
    "sudoku": ({**HRM_MODEL}, HRM_1K),
    "maze": ({**HRM_MODEL}, HRM_1K),
    "arc-agi-1": ({**HRM_MODEL}, HRM_ARC),
    "arc-agi-2": ({**HRM_MODEL}, HRM_ARC),
    "sudoku-full": ({**HRM_MODEL, "L_cycles": 8, "halt_max_steps": 8, "pos_encodings": "learned",
                     "loss_type": "softmax_cross_entropy"},
                    dict(epochs=100, eval_interval=10, lr_min_ratio=0.1, global_batch_size=2304, lr=3e-4,
                         puzzle_emb_lr=3e-4, weight_decay=0.1, puzzle_emb_weight_decay=0.1)),
    "trm-sudoku": ({**TRM_MODEL, "mlp_t": True, "pos_encodings": "none", "L_cycles": 6}, TRM_1K),
    "trm-sudoku-att": ({**TRM_MODEL, "mlp_t": False, "pos_encodings": "rope", "L_cycles": 6}, TRM_1K),
    "trm-maze": ({**TRM_MODEL, "mlp_t": False, "L_cycles": 4}, TRM_1K),
    "trm-arc-agi-1": ({**TRM_MODEL, "mlp_t": False, "L_cycles": 4}, TRM_ARC),
    "trm-arc-agi-2": ({**TRM_MODEL, "mlp_t": False, "L_cycles": 4}, TRM_ARC),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_preset_holds_the_reference_recipe(name):
    model, train = preset(name)
    expected_model, expected_train = RECIPES[name]
    assert {k: getattr(model, k) for k in expected_model} == expected_model
    assert {k: getattr(train, k) for k in expected_train} == expected_train


def test_one_pass_covers_eval_interval_epochs_and_drops_at_most_one_partial_batch(tmp_path):
    data = make_dataset(tmp_path / "ds", groups=10, puzzles_per_group=1, examples_per_puzzle=1)  # 10 examples a pass
    per_epoch, per_interval = TrainIterator(data, 4, seed=0), TrainIterator(data, 4, seed=0, epochs_per_pass=6)
    for _ in range(15):  # 60 examples: 6 epochs
        next(per_epoch)
        next(per_interval)
    assert per_interval.passes == 1 and per_interval.epoch == pytest.approx(6.0)  # 60 of 60 examples used
    assert per_epoch.epoch > 7.0  # 2 of 10 examples dropped every epoch: 15 batches need more than 7 epochs


def test_a_train_split_smaller_than_a_batch_trains(tmp_path):
    data = make_dataset(tmp_path / "ds", groups=3, puzzles_per_group=1, examples_per_puzzle=1)  # 3 examples
    iterator = TrainIterator(data, 8, seed=0, epochs_per_pass=10)
    batch = next(iterator)
    assert batch["inputs"].shape[0] == 8


def test_a_position_saved_with_one_epoch_per_pass_resumes_with_it(tmp_path):
    data = make_dataset(tmp_path / "ds")
    old = TrainIterator(data, 8, seed=0)
    for _ in range(3):
        next(old)
    state = old.state_dict()
    del state["epochs_per_pass"]  # as positions were saved before the field existed
    resumed = TrainIterator(data, 8, seed=0, epochs_per_pass=5)
    resumed.load_state_dict(state)
    for _ in range(20):
        a, b = next(old), next(resumed)
        assert all((a[k] == b[k]).all() for k in a)
