"""``python -m elevenfactor``: the command line."""

from elevenfactor.cli import main

main()
