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
}:
let
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
  # This environment's own programs come first for everything dynix starts (`dynamo serve` and
  # the workers it starts inherit the environment); the patched vLLM publishes KV-cache events
  # through Dynamo's C library, and loads NCCL from VLLM_NCCL_SO_PATH, which only vLLM's own
  # wrapper sets: the workers import vllm instead, so it is set here, for `dynix` and `dynamo`.
  postBuild = ''
    for program in dynix dynamo; do
      wrapProgram $out/bin/$program \
        --prefix PATH : $out/bin \
        --set-default VLLM_KV_CAPI_PATH ${dynamo-runtime}/lib/libdynamo_llm_capi.so \
        --set-default VLLM_NCCL_SO_PATH ${python3.pkgs.vllm.ncclLibrary}
    done
  '';
  passthru = { inherit python; };
  meta = {
    description = "NVIDIA Dynamo ${stack.versions.dynamo} + vLLM ${stack.versions.vllm} + NIXL + nats-server + etcd, run by dynix";
    mainProgram = "dynix";
    platforms = [
      "aarch64-linux"
      "x86_64-linux"
    ];
  };
}
