"""The middle-level family of tests/midlevel.py in PyTorch: HRM's modules with M_level in each L update's injection."""

import torch

from hrm_torch.layers import CosSin, ReasoningModule
from hrm_torch.model import HRM, HRMInner


class MidInner(HRMInner):
    """HRM's network with M_level: z_L = L(z_L, M(z_H, x)); the one-step gradient through the last L and H updates."""

    def build_levels(self, config) -> None:
        super().build_levels(config)
        self.M_level = ReasoningModule(config, config.M_layers)

    def updates(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, cos_sin: CosSin | None, start: int,
                stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Updates start..stop-1 of a segment's H_cycles * (L_cycles L updates, then an H update)."""
        for k in range(start, stop):
            if k % (self.config.L_cycles + 1) < self.config.L_cycles:
                z_L = self.L_level(z_L, self.M_level(z_H, x, cos_sin), cos_sin)
            else:
                z_H = self.H_level(z_H, z_L, cos_sin)
        return z_H, z_L

    def detached_cycles(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, cos_sin: CosSin | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.grad != "one_step":
            return z_H, z_L
        with torch.no_grad():
            return self.updates(z_H, z_L, x, cos_sin, 0, self.config.H_cycles * (self.config.L_cycles + 1) - 2)

    def differentiated_cycles(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, cos_sin: CosSin | None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.config.H_cycles * (self.config.L_cycles + 1)
        return self.updates(z_H, z_L, x, cos_sin, total - 2 if self.config.grad == "one_step" else 0, total)


class MidHRM(HRM):
    inner_class = MidInner
