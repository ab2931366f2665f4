"""How a trial computes: its device, its precision (bf16 autocast or float32) and the memory
layout of its batches and weights (``TrialConfig.precision``).

The decoded cache and the augmentations hand out channels-last uint8 batches. GPU steps and
bf16 steps run channels-last, the model converted to match (on this project's development
CPU, resnet18 at 64 px in bf16: inference about 35 % faster than on NCHW, training on par).
On the CPU in float32 it depends on what the convolutions do (torch 2.14, 2 cores,
resnet18 at 64 px): training steps are faster on contiguous NCHW (batch 32: 98 vs 83
images/s), so a trial that trains convolutions gets contiguous batches; a frozen backbone
only runs forward passes without gradients, which are faster channels-last (batch 256:
417-441 vs 298-300 images/s on 2 threads, 241 vs 156 on one; on an AMD EPYC without
AMX, torch 2.14.1: 536-548 vs 397-405 on 2 threads, 323 vs 248 on one), so a frozen trial
stays channels-last.
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
        trains_convolutions: Whether backward passes run through the convolutions
            (``False`` for a frozen backbone: channels-last also in float32 on the CPU).
    """

    def __init__(
        self,
        precision: str,
        normalization: tuple,
        device: torch.device | None = None,
        *,
        trains_convolutions: bool = True,
    ):
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.bf16 = uses_bf16(precision, self.device)
        self.channels_last = self.bf16 or self.device.type == "cuda" or not trains_convolutions
        self.normalize = Normalize(*normalization).to(self.device)

    @property
    def dtype_name(self) -> str:
        """``bf16`` or ``fp32``: what the forward passes compute in (a feature-store key)."""
        return "bf16" if self.bf16 else "fp32"

    @property
    def layout_name(self) -> str:
        """``channels_last`` or ``nchw``: the layout of the convolutions (a feature-store key:
        the two sum in different orders)."""
        return "channels_last" if self.channels_last else "nchw"

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
