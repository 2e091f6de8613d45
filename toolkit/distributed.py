"""Entry point kept for jobs queued before the package layout (`python -m toolkit.distributed ...`).

New jobs run `python -m toolkit.training.distributed`; this module only forwards to it.
"""

from toolkit.training.distributed import main

if __name__ == "__main__":
    raise SystemExit(main())
