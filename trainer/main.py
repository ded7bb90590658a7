"""Entry point for launchers: ``deepspeed ... --module trainer.main ARGS`` / ``torchrun -m trainer.main ARGS``."""

import sys

from trainer.cli import rank_main

if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1:]))
