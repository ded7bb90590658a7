"""Entry point for launchers: ``deepspeed ... --module trainer.main ARGS`` / ``torchrun -m trainer.main ARGS``."""

import sys

from trainer.train import main_from_args

if __name__ == "__main__":
    sys.exit(main_from_args(sys.argv[1:]))
