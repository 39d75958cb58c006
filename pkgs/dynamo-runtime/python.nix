# ai-dynamo-runtime: the `dynamo._core` extension (Rust, built with maturin) and the `dynamo.runtime`
# / `dynamo.llm` Python modules on top of it. PyPI only ever had x86_64 wheels of 0.2.0.
{
  lib,
  buildPythonPackage,
  rustPlatform,
  fetchPin,
  pins,
  dynamo-runtime,
  # protoc, the compiler (not the Python library of the same name): passed by the overlay.
  protobuf,
  pkg-config,
  pydantic,
  uvloop,
  nats-py,
}:
let
  src = fetchPin "dynamo";
in
buildPythonPackage {
  pname = "ai-dynamo-runtime";
  inherit (pins.dynamo) version;
  pyproject = true;
  inherit src;

  # A workspace of its own with its own lock, which has no git crates. Carried here like the
  # workspace's (see package.nix): no fetch at evaluation; the build compares it with the source's.
  cargoDeps = rustPlatform.importCargoLock {
    lockFile = ./lock/lib/bindings/python/Cargo.lock;
  };
  cargoRoot = "lib/bindings/python";
  buildAndTestSubdir = "lib/bindings/python";

  nativeBuildInputs = [
    rustPlatform.cargoSetupHook
    rustPlatform.maturinBuildHook
    protobuf
    pkg-config
  ];

  dependencies = [
    pydantic
    uvloop
    nats-py
  ];
  # Upstream pins pydantic to 2.10.x; the nixpkgs one is newer and API-compatible for this use.
  pythonRelaxDeps = [ "pydantic" ];

  pythonImportsCheck = [ "dynamo._core" ];

  passthru = { inherit dynamo-runtime; };

  meta = {
    description = "Python bindings of NVIDIA Dynamo's distributed runtime (dynamo._core)";
    homepage = "https://github.com/ai-dynamo/dynamo";
    license = lib.licenses.asl20;
    platforms = [
      "aarch64-linux"
      "x86_64-linux"
    ];
  };
}
