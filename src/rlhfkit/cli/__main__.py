"""``python -m rlhfkit.cli``: the same as the ``rlhf`` command."""

from rlhfkit.cli import main

main()
