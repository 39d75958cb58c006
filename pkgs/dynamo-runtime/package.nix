# Dynamo's Rust workspace (v0.2.0): the binaries the Python SDK runs (`http`, the OpenAI
# frontend; `llmctl`, which registers models; `metrics` and `mock_worker`; `dynamo-run`) and
# `libdynamo_llm_capi.so`, through which the patched vLLM publishes KV-cache events
# (VLLM_KV_CAPI_PATH).
{
  lib,
  rustPlatform,
  fetchgit,
  fetchPin,
  pins,
  protobuf,
  pkg-config,
  oniguruma,
}:
let
  pin = pins.dynamo;
  src = fetchPin "dynamo";
  # Dynamo's Cargo.lock, carried here (lock/, a verbatim copy of the pinned source's): read at
  # evaluation, it would have to be fetched first (import from derivation). The build checks the
  # copy against the source's (cargoSetupHook's Cargo.lock comparison).
  lockFile = ./lock/Cargo.lock;

  # The lock's git sources, fetched exactly as importCargoLock fetches them (the same fetchgit
  # arguments, so the same fixed-output derivations), one per pinned build hash. `dynix pins lock
  # --build` builds these to learn the hashes.
  gitSources =
    let
      packages = (builtins.fromTOML (builtins.readFile lockFile)).package;
      crate =
        key:
        lib.findFirst (p: "${p.name}-${p.version}" == key)
          (throw "pins.toml: [dynamo.build-hashes] names '${key}', which is no crate of Dynamo's Cargo.lock")
          packages;
      parseGit = source: builtins.match "git\\+([^?]+)(\\?(rev|tag|branch)=(.*))?#(.*)" source;
    in
    lib.mapAttrs (
      key: hash:
      let
        parts = parseGit (crate key).source or "";
      in
      if parts == null then
        throw "pins.toml: [dynamo.build-hashes] names '${key}', which is no git crate"
      else
        fetchgit {
          url = builtins.elemAt parts 0;
          rev = builtins.elemAt parts 4;
          sha256 = hash;
        }
    ) pin.buildHashes;
in
rustPlatform.buildRustPackage {
  pname = "dynamo-runtime";
  inherit (pin) version;
  inherit src;

  # The lock's git crates (candle, llguidance, mistral.rs, bindgen_cuda) are vendored from the
  # hashes pinned in pkgs/pins.toml, [dynamo.build-hashes]; one per repository and commit.
  cargoLock = {
    inherit lockFile;
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

  passthru = { inherit gitSources; };

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
