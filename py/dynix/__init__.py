"""dynix: build, ship and run NVIDIA Dynamo's disaggregated serving stack with Nix."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dynix")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
