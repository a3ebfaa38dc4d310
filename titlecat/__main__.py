"""`python -m titlecat predict ...`: the `titlecat` console script without the script on PATH."""

from .cli import app

app(prog_name="titlecat")
