"""The ASGI application for uvicorn's import string (each worker process builds its own)."""

import logging

from serving_image.app import create_app
from serving_image.settings import ServerSettings

settings = ServerSettings.from_env()
logging.basicConfig(format="%(levelname)s:     [%(name)s] %(message)s",
                    level=settings.log_level.upper())
app = create_app(settings)
