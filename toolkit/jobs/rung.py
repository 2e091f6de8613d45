"""Entry point kept for halving jobs queued before the split (`python -m toolkit.jobs.rung ...`): forwards to
toolkit.study.rung, which new jobs run."""

import sys

from toolkit.study.rung import main

if __name__ == "__main__":
    sys.exit(main())
