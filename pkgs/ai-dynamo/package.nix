# ai-dynamo: Dynamo's Python SDK and `dynamo` CLI (`dynamo serve graphs.disagg:Frontend …`),
# with the Rust binaries it runs put where it looks for them, and Dynamo's LLM examples (graphs,
# components, configs) installed under share/dynamo/examples/llm for `dynix serve`.
{
  lib,
  buildPythonPackage,
  fetchPin,
  patchesFor,
  pins,
  dynamo-runtime,
  hatchling,
  ai-dynamo-runtime,
  bentoml,
  circus,
  distro,
  fastapi,
  kubernetes,
  pytest,
  typer,
  types-psutil,
}:
buildPythonPackage {
  pname = "ai-dynamo";
  inherit (pins.dynamo) version;
  pyproject = true;

  src = fetchPin "dynamo";
  # patches/dynamo: the SDK's runtime dependency on pytest>=8.3.4 relaxed to pytest.
  patches = patchesFor "dynamo";
  patchFlags = [
    "-p1"
    "--fuzz=0"
  ];

  build-system = [ hatchling ];

  # hatch_build.py copies these into dynamo/sdk/cli/bin/ inside the wheel.
  env.DYNAMO_BIN_PATH = "${dynamo-runtime}/bin";

  dependencies = [
    ai-dynamo-runtime
    bentoml
    circus
    distro
    fastapi
    kubernetes
    pytest
    typer
    types-psutil
  ];
  # Exact pins upstream (bentoml==1.4.8, fastapi==0.115.6, kubernetes==32.0.1, …) that the
  # pinned nixpkgs satisfies with nearby releases.
  pythonRelaxDeps = true;

  postInstall = ''
    mkdir -p $out/share/dynamo/examples
    cp -r examples/llm $out/share/dynamo/examples/llm
  '';

  pythonImportsCheck = [ "dynamo.sdk" ];

  meta = {
    description = "NVIDIA Dynamo's Python SDK, CLI and LLM serving graphs";
    homepage = "https://github.com/ai-dynamo/dynamo";
    license = lib.licenses.asl20;
    mainProgram = "dynamo";
    platforms = [
      "aarch64-linux"
      "x86_64-linux"
    ];
  };
}
