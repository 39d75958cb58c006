# Dynamo's Rust workspace (v0.2.0): the binaries the Python SDK runs (`http`, the OpenAI
# frontend; `llmctl`, which registers models; `metrics` and `mock_worker`; `dynamo-run`) and
# `libdynamo_llm_capi.so`, through which the patched vLLM publishes KV-cache events
# (VLLM_KV_CAPI_PATH).
{
  lib,
  rustPlatform,
  fetchPin,
  pins,
  protobuf,
  pkg-config,
  oniguruma,
}:
let
  pin = pins.dynamo;
  src = fetchPin "dynamo";
in
rustPlatform.buildRustPackage {
  pname = "dynamo-runtime";
  inherit (pin) version;
  inherit src;

  # The lock's git crates (candle, llguidance, mistral.rs, bindgen_cuda) are vendored from the
  # hashes pinned in pkgs/pins.toml, [dynamo.build-hashes]; one per repository and commit.
  cargoLock = {
    lockFile = "${src}/Cargo.lock";
    outputHashes = pin.buildHashes;
  };

  # Two crates are called `http` (the frontend and a crates.io dependency): name the frontend by
  # path. dynamo-run is built without its in-process engines (mistral.rs, vLLM, SGLang):
  # vLLM runs as Dynamo graph workers instead.
  buildNoDefaultFeatures = true;
  cargoBuildFlags = [
    "--package=llmctl"
    "--package=metrics"
    "--package=dynamo-run"
    "--package=libdynamo_llm"
  ];
  preBuild = ''
    cargoBuildFlags="$cargoBuildFlags --package=file://$PWD/components/http"
  '';

  nativeBuildInputs = [
    protobuf # etcd-client's gRPC stubs (tonic-build)
    pkg-config
    rustPlatform.bindgenHook
  ];
  buildInputs = [ oniguruma ];
  env.RUSTONIG_SYSTEM_LIBONIG = true;

  # The workspace tests need running etcd and NATS servers.
  doCheck = false;

  postInstall = ''
    test -x $out/bin/http && test -x $out/bin/llmctl && test -x $out/bin/metrics
    test -e $out/lib/libdynamo_llm_capi.so
  '';

  meta = {
    description = "NVIDIA Dynamo's distributed runtime: OpenAI frontend, llmctl, metrics, KV C API";
    homepage = "https://github.com/ai-dynamo/dynamo";
    license = lib.licenses.asl20;
    platforms = [
      "aarch64-linux"
      "x86_64-linux"
    ];
  };
}
