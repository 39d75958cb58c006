"""dynix: build, ship and run NVIDIA Dynamo's disaggregated serving stack with Nix."""


def __getattr__(name: str) -> str:
    # `dynix.__version__`, read from the installed metadata only when asked for: importing
    # importlib.metadata costs every command tens of milliseconds at start-up
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("dynix")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0.0.0+unknown"
    raise AttributeError(f"module 'dynix' has no attribute {name!r}")
