"""`wyoming-minerva` / `python -m wyoming_minerva`: parse flags, configure logging, run."""

from __future__ import annotations

import asyncio
import logging
import sys

from .allocator import limit_heap_growth
from .app import run
from .cli import parse_settings
from .errors import MinervaError
from .settings import ConfigError


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except MinervaError as err:
        print(f"wyoming-minerva: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO, format=settings.log_format)
    limit_heap_growth()
    try:
        asyncio.run(run(settings))
    except ConfigError as err:  # found at start: a voice, speaker, wake word or model path that is not there
        logging.getLogger("wyoming_minerva").error("%s", err)
        return 2
    except MinervaError as err:
        logging.getLogger("wyoming_minerva").error("%s", err)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
