"""dynix: build, ship and run NVIDIA Dynamo's disaggregated serving stack with Nix."""

# The same as pyproject.toml's `project.version`, which Nix reads (pkgs/stack.nix) and a test
# compares with this. A constant, not importlib.metadata: that lookup scans every installed
# distribution and costs each command that prints the version tens of milliseconds.
__version__ = "0.1.0"
