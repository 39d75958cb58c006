"""One module per `dynix` command. `COMMANDS` names each command's module and object; a command's
module is imported only when that command runs (or help lists it), to keep start-up short."""

COMMANDS = {
    "pins": "pins:pins",
    "patch": "patch:patch",
    "build": "build:build",
    "cache": "cache:cache",
    "doctor": "doctor:doctor",
    "serve": "serve:serve",
    "status": "status:status",
    "image": "image:image",
    "sbom": "sbom:sbom",
}
