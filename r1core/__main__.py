"""`python -m r1core …` is the `r1core` command (so `torchrun … -m r1core train …` works)."""
from r1core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
