"""``python -m brevetti_pipe``: the same as the ``brevetti-pipe`` command."""

from brevetti_pipe.cli import console

if __name__ == "__main__":
    console()
