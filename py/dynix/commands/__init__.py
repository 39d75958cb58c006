"""One module per `dynix` command. `COMMANDS` names each command's module and object, and the
one-line summary `dynix --help` lists; a command's module is imported only when that command
runs or shows its own help, to keep start-up short. A test checks each summary against the
command's own help text."""

COMMANDS = {
    "pins": ("pins:pins", "Every upstream source the flake builds from, pinned by hash."),
    "patch": (
        "patch:patch",
        "Apply PACKAGE's patch series (patches/PACKAGE/series) to the unpacked source tree DIR.",
    ),
    "build": (
        "build:build",
        "Build INSTALLABLES (default: the flake in this folder) and print their store paths.",
    ),
    "cache": (
        "cache:cache",
        "Binary caches: add them, push signed builds, pull trusting their key, see what they hold.",
    ),
    "doctor": (
        "doctor:doctor",
        "Check Nix, caches, builders, aarch64 emulation, GPUs and the stack's services and ports.",
    ),
    "driver": (
        "driver:driver",
        "Find the host's NVIDIA driver libraries and link them into dynix's driver folder.",
    ),
    "serve": (
        "serve:serve",
        "Run Dynamo's serving stack: etcd and NATS, then the graph, supervised.",
    ),
    "status": ("status:status", "Show the serving stack: components, PIDs, ports, health."),
    "image": ("image:image", "OCI images of Nix closures: build, push, inspect."),
    "sbom": ("sbom:sbom", "Write the SBOM of the runtime closure of INSTALLABLES."),
}
