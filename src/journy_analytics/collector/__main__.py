"""``python -m journy_analytics.collector [options]`` is ``journy collector [options]``."""

from __future__ import annotations

import sys

from journy_analytics.cli import main

if __name__ == "__main__":
    sys.exit(main(["collector", *sys.argv[1:]]))
