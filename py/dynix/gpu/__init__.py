"""The host's NVIDIA GPUs and driver, for a stack whose programs Nix built.

Programs built by Nix use Nix's glibc, which never reads the host's `/etc/ld.so.cache`: the
driver's `libcuda.so.1` and `libnvidia-ml.so.1` are not found by bare name. dynix finds them
where hosts put them (`driver`), links only them into a private folder keyed by the driver's
version (`folder`), and gives that folder to the processes it starts (`workerenv`).
"""
