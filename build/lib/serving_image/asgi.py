"""The ASGI application for gunicorn's import string.

With ``preload`` (the default, for more than one worker) gunicorn imports this once, in its
parent process, which loads the model here and then forks the workers; without it (one worker;
GPUs, since CUDA does not survive a fork) each worker imports it and loads its own copy.
"""

import logging

from serving_image.app import create_app
from serving_image.model_state import preload
from serving_image.settings import ServerSettings

settings = ServerSettings.from_env()
logging.basicConfig(format="%(levelname)s:     [%(name)s] %(message)s",
                    level=settings.log_level.upper())
app = create_app(settings, preload(settings) if settings.preloads else None)
