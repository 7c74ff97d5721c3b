"""``python -m atmorep``: the command line, also where the ``atmorep`` script is not on PATH."""

from atmorep.cli import app

app(prog_name="atmorep")
