"""The two optimizers of HRM training in PyTorch (shared/DESIGN.md section 5).

AdamATan2 updates every trainable parameter as the reference's CUDA kernel does; SignSGD updates the rows of the puzzle
table (a buffer, outside autograd) that a batch looked up, from the gradient of those rows. Both take the lr of each
step as an argument (shared/core/schedule.py).
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from hrm_shared.core.errors import HRMError
from hrm_torch.model import PuzzleEmbedding

ALIGN = 128  # elements: each parameter of AdamATan2.flat starts 512 bytes (float32) into an aligned allocation


class AdamATan2:
    """Adam with atan2 in place of the epsilon-guarded division, decoupled weight decay applied first.

    For step t = 1, 2, ...: p *= 1 - lr*wd; m += (1-b1)(g - m); v += (1-b2)(g^2 - v);
    p -= lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t)). State: m, v per parameter (float32, like the
    parameter) and the step count. Only parameters with requires_grad are updated: buffers (H_init, L_init, the
    puzzle table) never are.

    The optimizer keeps the parameters, the moments, the flat gradient and one work buffer as flat [N] tensors: the
    model's parameters become views of `flat` (their values unchanged), so a step allocates nothing and is a handful
    of whole-model kernels whatever the number of parameters, compiled into one, and the gradient crosses processes
    as one flat tensor. Each parameter starts at a multiple of ALIGN elements (as a tensor of its own would, for
    vector loads and matmul kernels); the gaps hold zeros and stay zero. Build the optimizer after the model is on
    its device and in its dtype: a parameter replaced afterwards (model.to(), model.float()) is an HRMError at the
    next update, not a silently stale one.
    """

    def __init__(self, model: nn.Module, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.1) -> None:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.betas = betas
        self.weight_decay = weight_decay
        self.step = 0
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1:
            raise HRMError(f"AdamATan2 needs every trainable parameter in one dtype (float32 master weights); the "
                           f"model has {sorted(map(str, dtypes))}")
        self._offsets = [0]
        for p in self.params:
            self._offsets.append(-(-(self._offsets[-1] + p.numel()) // ALIGN) * ALIGN)
        self.flat = self.params[0].new_zeros(self._offsets[-1])
        for p, view in zip(self.params, self._views(self.flat)):
            view.copy_(p.detach())
            p.data = view
        self._pointers = [p.data_ptr() for p in self.params]
        self.m, self.v, self._gradient = (torch.zeros_like(self.flat) for _ in range(3))
        self._gradients = self._views(self._gradient)
        self._work: torch.Tensor | None = None  # the eager update's scratch [N], made on its first step
        self._scalars = torch.zeros(3, dtype=self.flat.dtype, device=self.flat.device)  # decay, correction, size
        self._compiled = None

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """`flat` [N] cut into views shaped like the parameters, in order."""
        return [flat[start:start + p.numel()].view_as(p) for start, p in zip(self._offsets, self.params)]

    def _check_parameters(self) -> None:
        """An HRMError when a parameter no longer lives in `flat` (the model was moved or cast after the optimizer
        was made, or another AdamATan2 took the parameters into its own `flat`), which would leave it untrained."""
        for name, p, pointer in zip(self.names, self.params, self._pointers):
            if p.data_ptr() != pointer:
                raise HRMError(f"parameter {name!r} was replaced after the optimizer was made (model.to(), a dtype "
                               f"cast, or a second optimizer built on the model); move and cast the model first, "
                               f"then build the Trainer, one per model")

    def flat_gradient(self) -> torch.Tensor:
        """The parameters' .grad copied into the flat gradient buffer [N] (the layout of `flat`), kept across steps
        and overwritten by the next call (every parameter must have a .grad)."""
        torch._foreach_copy_(self._gradients, [p.grad for p in self.params])
        return self._gradient

    @torch.no_grad()
    def update(self, gradients: torch.Tensor, lr: float) -> None:
        """One step with learning rate `lr` on `gradients` [N], flat in flat_gradient() order (the parameters' .grad,
        or their sum over processes). Launches kernels only: no host synchronisation, and no new tensor (the
        compiled update takes its three numbers in a buffer)."""
        self._check_parameters()
        self.step += 1
        b1, b2 = self.betas
        decay, size = 1 - lr * self.weight_decay, -lr / (1 - b1 ** self.step)
        correction = math.sqrt(1 - b2 ** self.step)
        if self._compiled is not None:
            self._scalars.copy_(torch.tensor((decay, correction, size), dtype=torch.float64))
            self._compiled(gradients, self._scalars)
            return
        if self._work is None:
            self._work = torch.empty_like(self.flat)
        self.flat.mul_(decay)
        self.m.lerp_(gradients, 1 - b1)  # m + (1-b1)(g - m)
        self.v.lerp_(torch.square(gradients, out=self._work), 1 - b2)
        denom = torch.sqrt(self.v, out=self._work).div_(correction)
        # atan2 (not atan of a quotient) keeps m = v = 0 at 0, as the kernel does.
        torch.atan2(self.m, denom, out=self._work)
        self.flat.add_(self._work, alpha=size)

    def compile(self) -> None:
        """Run later updates as one torch.compile graph (one fused loop over the N parameters); lr and the step's
        corrections reach it in a device tensor, so no step recompiles it. Values follow the eager update within
        float32 rounding (the compiler fuses and reorders)."""
        self._compiled = torch.compile(self._fused)

    def _fused(self, gradients: torch.Tensor, scalars: torch.Tensor) -> None:
        """The update with (decay, correction, step size) in `scalars` [3]: the eager one's formula, for
        torch.compile to fuse."""
        b1, b2 = self.betas
        decay, correction, size = scalars.unbind()
        self.m.lerp_(gradients, 1 - b1)
        self.v.lerp_(gradients.square(), 1 - b2)
        self.flat.copy_(self.flat * decay + torch.atan2(self.m, self.v.sqrt() / correction) * size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{"step": int64 0-dim, "<parameter name>.m": m, "<parameter name>.v": v}: views of the moments, not copies;
        names as in `model.named_parameters()`."""
        state = {"step": torch.tensor(self.step, dtype=torch.int64)}
        for name, m, v in zip(self.names, self._views(self.m), self._views(self.v)):
            state[f"{name}.m"], state[f"{name}.v"] = m, v
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a state written by `state_dict` (either backend's, as tensors); missing, extra or misshapen entries are
        an HRMError naming the entry."""
        expected = self.state_dict()
        for name in expected:
            if name not in state:
                raise HRMError(f"optimizer state: {name!r} is missing; the state was saved for a different model")
            if tuple(state[name].shape) != tuple(expected[name].shape):
                raise HRMError(f"optimizer state: {name!r} has shape {tuple(state[name].shape)}, the model needs "
                               f"{tuple(expected[name].shape)}")
        extra = sorted(set(state) - set(expected))
        if extra:
            raise HRMError(f"optimizer state: unexpected entry {extra[0]!r}; the state was saved for a different model")
        self.step = int(state["step"])
        for name, tensor in expected.items():
            if name != "step":
                tensor.copy_(state[name])


class SignSGD:
    """Sparse SignSGD with decoupled weight decay for the puzzle table: only the rows a batch looked up change. Its
    work tensors are kept across steps of the same batch size, so a step allocates nothing."""

    def __init__(self, puzzle_emb: PuzzleEmbedding, weight_decay: float = 0.1) -> None:
        self.puzzle_emb = puzzle_emb
        self.weight_decay = weight_decay
        self._work: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, ids: torch.Tensor, gradients: torch.Tensor, lr: float) -> None:
        """ids [B] int, gradients [B, ndim] of the rows looked up for them: sum the gradients of rows sharing an id,
        then for each id present p = p * (1 - lr*wd) - lr * sign(g), in place. Static shapes (no unique): no host
        synchronisation on the GPU."""
        weights, work = self.puzzle_emb.weights, self._buffers(ids, gradients)
        summed = _id_sums(ids, gradients, work["equal"], work["same"], work["summed"])
        index = work["index"].copy_(ids)
        rows = torch.index_select(weights, 0, index, out=work["rows"]).mul_(1 - lr * self.weight_decay)
        rows.sub_(summed.sign_().mul_(lr))
        # Rows sharing an id carry the same value, so the order of the writes does not matter.
        weights.index_copy_(0, index, rows)

    def _buffers(self, ids: torch.Tensor, gradients: torch.Tensor) -> dict[str, torch.Tensor]:
        """The work tensors for a batch of ids [B] and gradients [B, ndim], made on the first step of a batch size."""
        B, ndim = gradients.shape
        if "rows" not in self._work or self._work["rows"].shape != (B, ndim):
            weights = self.puzzle_emb.weights
            self._work = {"equal": torch.empty(B, B, dtype=torch.bool, device=ids.device),
                          "same": gradients.new_empty(B, B), "summed": gradients.new_empty(B, ndim),
                          "index": torch.empty(B, dtype=torch.long, device=ids.device),
                          "rows": weights.new_empty(B, ndim)}
        return self._work


def _id_sums(ids: torch.Tensor, gradients: torch.Tensor, equal: torch.Tensor, same: torch.Tensor,
             out: torch.Tensor) -> torch.Tensor:
    """For each row of ids [N] int, the sum of the gradients [N, ndim] float32 of every row with its id, written to
    `out` [N, ndim]; `equal` [N, N] bool and `same` [N, N] float32 are work space.

    A matmul with the 0/1 matrix of equal ids, not a scatter-add (index_add_): on CUDA a scatter-add adds with
    atomics in an order that can change from run to run, a matmul adds in a fixed order, so a resumed run repeats
    the update bit for bit. Zeros add exactly, so each sum is the scatter-add's up to the order of its terms.
    """
    same.copy_(torch.eq(ids[:, None], ids[None, :], out=equal))  # the 0/1 matrix [N, N]
    return torch.matmul(same, gradients, out=out)


class EMA:
    """The exponential moving average of the trainable parameters (shared/TRM.md section 4): a shadow copied from the
    parameters at the start, then after each optimizer step shadow = rate * shadow + (1 - rate) * parameter, with no
    bias correction. Buffers (H_init, L_init, the puzzle table) are not averaged."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.rate = rate
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters' current values into the shadow, in place."""
        torch._foreach_mul_(self.shadow, self.rate)
        torch._foreach_add_(self.shadow, self.params, alpha=1 - self.rate)

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block the model's parameters hold the shadow; afterwards their own values again."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, raw)

    def raw_state(self) -> dict[str, np.ndarray]:
        """{parameter name: float32 numpy copy} of the parameters themselves (not the shadow), for exact resume."""
        return {name: p.detach().to("cpu", torch.float32).numpy().copy() for name, p in zip(self.names, self.params)}

    @torch.no_grad()
    def load_raw_state(self, raw: dict[str, np.ndarray]) -> None:
        """Keep the model's current parameters as the shadow and set the parameters to `raw` (as raw_state wrote it):
        a model loaded from an averaged checkpoint resumes with both. A missing or misshapen entry is an HRMError."""
        for name, p in zip(self.names, self.params):
            if name not in raw or tuple(raw[name].shape) != tuple(p.shape):
                raise HRMError(f"training state: raw weight {name!r} is missing or misshapen; it was saved for "
                               f"another config")
        self.shadow = [p.detach().clone() for p in self.params]
        for name, p in zip(self.names, self.params):
            p.copy_(torch.from_numpy(np.asarray(raw[name], dtype=np.float32)))

