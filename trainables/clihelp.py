"""The ``--help`` style of every command: each option with its default and its choices.

Every parser of the project (``tuner run|rank|report|submit|inspect|download|models|init``,
``python -m trainables.classify``, ...) uses :class:`HelpFormatter`; the tests check that
each option has a help text, shows its default and lists its choices.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: X)`` to each option.

    The default is shown where the option has one (not ``None`` or a switch's ``False``)
    and its help does not already say it; choices appear in the option's ``{a,b,c}``
    (or, with a ``metavar``, in its help text).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or default is None or default is False:
            return text
        if default == argparse.SUPPRESS or (isinstance(default, list | tuple) and not default):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)"


def choices_text(choices) -> str:
    """``"one of a, b, c"`` for a help text whose option shows a metavar instead."""
    return "one of " + ", ".join(str(c) for c in choices)
