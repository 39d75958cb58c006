"""One module per `dynix` command; `COMMANDS` is what the group offers."""

from .build import build
from .cache import cache
from .doctor import doctor
from .patch import patch
from .pins import pins
from .serve import serve
from .status import status

COMMANDS = [pins, patch, build, cache, doctor, serve, status]
