"""One module per `dynix` command; `COMMANDS` is what the group offers."""

from .patch import patch
from .pins import pins

COMMANDS = [pins, patch]
