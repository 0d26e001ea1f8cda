"""WSGI entry for production: `gunicorn 'backend.wsgi:app' --bind 0.0.0.0:9090 --threads 8`.

One gunicorn worker with threads is the intended shape: the LLM reply cache and the k-NN demo index
live in the process, and LLM calls are I/O bound.
"""

from __future__ import annotations

import logging
import os

from backend.app import create_app

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
