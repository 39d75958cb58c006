# The whole serving stack in one environment: a Python with vLLM (Dynamo-patched, CUDA), Dynamo's
# SDK and runtime and NIXL; nats-server and etcd; dynix to run it (`dynix serve`). Named for its
# main target, GB200 (aarch64-linux); the x86_64-linux build is the same stack.
{
  lib,
  symlinkJoin,
  makeWrapper,
  python3,
  dynamo-runtime,
  nats-server,
  etcd,
  dynix,
  stack,
  cudaCapabilities,
}:
let
  workerEnv = import ./worker-env.nix {
    inherit lib dynamo-runtime cudaCapabilities;
    inherit (python3.pkgs) vllm;
  };
  setWorkerEnv = lib.concatStringsSep " " (
    lib.mapAttrsToList (name: value: "--set-default ${name} ${lib.escapeShellArg value}") workerEnv
  );
  # Outside `dynix serve` (which finds the host's NVIDIA driver itself), the stack's programs get
  # the driver folder from `dynix driver --env`; on NixOS /run/opengl-driver/lib serves as it is.
  findDriver = lib.escapeShellArg ''[ -n "''${DYNIX_DRIVER_DIR-}" ] || eval "$(${placeholder "out"}/bin/dynix driver --env 2>/dev/null)"'';
  python = python3.withPackages (ps: [
    ps.vllm
    ps.ai-dynamo
    ps.ai-dynamo-runtime
    ps.nixl
  ]);
in
symlinkJoin {
  name = "dynamo-stack-${stack.versions.dynamo}";
  paths = [
    python
    nats-server
    etcd
    dynix
  ];
  nativeBuildInputs = [ makeWrapper ];
  # This environment's own programs come first for everything dynix starts; every program that
  # starts vLLM workers gets the worker environment (./worker-env.nix).
  postBuild = ''
    wrapProgram $out/bin/dynix --prefix PATH : $out/bin ${setWorkerEnv}
    for program in dynamo vllm; do
      if [ -e $out/bin/$program ]; then
        wrapProgram $out/bin/$program --prefix PATH : $out/bin ${setWorkerEnv} --run ${findDriver}
      fi
    done
  '';
  passthru = { inherit python workerEnv; };
  meta = {
    description = "NVIDIA Dynamo ${stack.versions.dynamo} + vLLM ${stack.versions.vllm} + NIXL + nats-server + etcd, run by dynix";
    mainProgram = "dynix";
    platforms = [
      "aarch64-linux"
      "x86_64-linux"
    ];
  };
}
