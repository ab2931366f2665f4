"""How a trial computes: its device, its precision (bf16 autocast or float32) and the memory
layout of its batches and weights (``TrialConfig.precision``).

The decoded cache and the augmentations hand out channels-last uint8 batches. GPU steps and
bf16 steps run channels-last, the model converted to match (on this project's development
CPU, resnet18 at 64 px in bf16: inference about 35 % faster than on NCHW, training on par);
float32 convolutions on the CPU are faster on contiguous NCHW (training about 20 % faster,
inference about 25 %), so batches are made contiguous there.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from trainables.augment import Normalize


def cpu_has_bf16_units() -> bool:
    """Whether this CPU has AMX-BF16 tile units (where bf16 autocast trains faster than fp32).

    Without them oneDNN emulates bf16 with AVX-512 or slower paths, which is no faster than
    fp32; the flag comes from PyTorch's CPU feature probe, else from ``/proc/cpuinfo``.
    """
    try:
        return bool(torch._C._cpu._get_cpu_capability().get("amx_bf16", False))
    except (AttributeError, RuntimeError):
        try:
            return " amx_bf16" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether forward passes run under bf16 autocast for ``precision`` on ``device``."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or cpu_has_bf16_units()


class Arithmetic:
    """The device, autocast and layout of one trial's forward passes.

    Args:
        precision: ``TrialConfig.precision`` (``auto``, ``fp32`` or ``bf16``).
        normalization: The model's input (mean, std), applied to every uint8 batch.
        device: Where to compute (default: the GPU when there is one, else the CPU).
    """

    def __init__(
        self,
        precision: str,
        normalization: tuple,
        device: torch.device | None = None,
    ):
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.bf16 = uses_bf16(precision, self.device)
        self.channels_last = self.bf16 or self.device.type == "cuda"
        self.normalize = Normalize(*normalization).to(self.device)

    @property
    def dtype_name(self) -> str:
        """``bf16`` or ``fp32``: what the forward passes compute in (a feature-store key)."""
        return "bf16" if self.bf16 else "fp32"

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device, channels-last where the batches are."""
        if self.channels_last:
            return model.to(self.device, memory_format=torch.channels_last)
        return model.to(self.device)

    def autocast(self):
        """bf16 autocast of forward passes, else nothing."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the model's float input, on the device, in the fastest layout."""
        x = self.normalize(x.to(self.device, non_blocking=True))
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()
