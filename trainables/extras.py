"""Optional packages: which extra of ``pyproject.toml`` installs each, and the error when missing.

The core install trains torchvision models and writes Parquet. A few features need more
(``pip install -e ".[EXTRA]"``); each is declared here once, so every error that names a
missing package also names the extra that installs it:

* ``timm``: ``model: timm/<name>`` (:mod:`trainables.timm_models`).
* ``tracking``: the ``tracking:`` spec key (:mod:`tuner.tracking`): ``tensorboard``,
  ``mlflow`` (the ``mlflow-skinny`` client) and ``wandb``.
"""

from __future__ import annotations

import importlib.util

#: Importable module -> (extra that installs it, pip package of the module).
MODULES: dict[str, tuple[str, str]] = {
    "timm": ("timm", "timm"),
    "tensorboard": ("tracking", "tensorboard"),
    "mlflow": ("tracking", "mlflow-skinny"),
    "wandb": ("tracking", "wandb"),
}


class MissingExtraError(ImportError):
    """An optional package a feature needs is not installed (the message names the extra)."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(module: str) -> str:
    """``pip install -e ".[extra]"`` (or the package alone) for one optional module."""
    extra, package = MODULES[module]
    return f'pip install -e ".[{extra}]" (or pip install {package})'


def missing_message(module: str, what: str) -> str:
    """Why ``what`` cannot work here and the command that fixes it."""
    return f"{what} needs the optional package {module!r}, which is not installed: " + (
        install_hint(module)
    )


def require(module: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra when ``module`` is not installed.

    Args:
        module: A key of :data:`MODULES`.
        what: The feature that needs it, for the message (``"model 'timm/resnet50'"``).
    """
    if not installed(module):
        raise MissingExtraError(missing_message(module, what))
