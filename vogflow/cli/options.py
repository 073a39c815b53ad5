"""The value types of the command-line options: a bad number is refused while parsing, with
argparse's usage line, before any command runs."""

from __future__ import annotations

import argparse

# Every command's help keeps its own line breaks (the examples are laid out by hand).
FORMATTER = argparse.RawDescriptionHelpFormatter


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return number


def non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative; give 0 or more")
    return number


def fraction(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not strictly between 0 and 1")
    return number


def windows(value: str) -> tuple[str, ...]:
    from vogflow.config.names import WINDOWS

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in WINDOWS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected a comma-separated list without repeats of {', '.join(WINDOWS)}"
        )
    return names


def window(value: str) -> int:
    number = int(value)
    if number < 2:
        raise argparse.ArgumentTypeError(
            f"{value!r}: a window needs at least 2 checkpoints (VoG is a spread)"
        )
    return number


def stream_mode(value: str) -> bool | str:
    modes = {"auto": "auto", "true": True, "false": False}
    if value.lower() not in modes:
        raise argparse.ArgumentTypeError(f"{value!r} is not allowed; valid: auto, true, false")
    return modes[value.lower()]
