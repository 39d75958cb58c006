# The stack as data: systems, per-system facts, versions, sources and patch series. Builtins
# only, so that the tests evaluate it with plain Nix; the flake and the overlay read it.
{
  pinsFile ? ./pins.toml,
}:
let
  pins = import ./pins.nix { inherit pinsFile; };
  patches = import ../patches { };
  project = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project;
in
{
  inherit pins patches;

  # The capability checks and formats (pkgs/cuda-capabilities.nix).
  capabilities = import ./cuda-capabilities.nix { };

  systems = [
    "aarch64-linux"
    "x86_64-linux"
  ];

  # What differs between the two systems, in the names each tool uses.
  platforms = {
    aarch64-linux = {
      ociArch = "arm64";
      # CUDA's name for server-class aarch64 (GB200's Grace CPU); Jetson is a different target.
      cudaTarget = "sbsa-linux";
      debianMultiarch = "aarch64-linux-gnu";
    };
    x86_64-linux = {
      ociArch = "amd64";
      cudaTarget = "x86_64-linux";
      debianMultiarch = "x86_64-linux-gnu";
    };
  };

  cuda = {
    # nixos-25.05's default cudaPackages (12.8): the first with Blackwell kernels.
    version = "12.8";
    # H100 (9.0) and GB200/B200 (10.0): what vLLM's kernels are built for. Override with
    # nixpkgs' `config.cudaCapabilities` or
    # `dynix-stack.overrideScope (final: prev: { cudaCapabilities = [ ... ]; })`.
    capabilities = [
      "9.0"
      "10.0"
    ];
  };

  versions = {
    dynix = project.version;
    vllm = pins.pins.vllm.version;
    dynamo = pins.pins.dynamo.version;
    nixl = pins.pins.nixl.version;
    nats-server = pins.pins.nats-server.version;
    etcd = pins.pins.etcd.version;
    ngc-pytorch = pins.pins.ngc-pytorch.tag;
  };
}
