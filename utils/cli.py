"""A positional file argument for the Hydra scripts (Hydra itself takes only `key=value`).

    sys.argv = positional_to_override(sys.argv, "generate.video_path")
    # script.py "my clip (1).mp4" k=v  ->  script.py "generate.video_path='my clip (1).mp4'" k=v
"""
from __future__ import annotations

from pathlib import Path

# Hydra options whose value is the next argument (not a positional input).
HYDRA_OPTIONS_WITH_VALUE = frozenset({"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                                      "--config-dir", "-cd", "--experimental-rerun"})


def hydra_quote(value: str) -> str:
    """`value` single-quoted for Hydra's override grammar (parses back to exactly `value`): quotes get
    a backslash, and backslashes that precede a quote (or the closing quote) are doubled."""
    out, run = [], 0
    for c in str(value):
        out.append("\\" * run + "\\'" if c == "'" else c)
        run = run + 1 if c == "\\" else 0
    return "'" + "".join(out) + "\\" * run + "'"


def positional_to_override(argv: list[str], key: str) -> list[str]:
    """argv (program name first) with its first positional argument (no option, and no `=` unless it
    names an existing file) turned into the quoted override `key='<argument>'`."""
    out, skip = list(argv), False
    for i, arg in enumerate(out[1:], 1):
        if skip or arg in HYDRA_OPTIONS_WITH_VALUE:
            skip = not skip
            continue
        if arg and not arg.startswith("-") and ("=" not in arg or Path(arg).is_file()):
            out[i] = f"{key}={hydra_quote(arg)}"
            break
    return out
