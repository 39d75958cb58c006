"""One module per `dynix` command; `COMMANDS` is what the group offers."""

from .cache import cache
from .patch import patch
from .pins import pins
from .serve import serve
from .status import status

COMMANDS = [pins, patch, serve, status, cache]
