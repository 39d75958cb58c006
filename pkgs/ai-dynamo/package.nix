# ai-dynamo: Dynamo's Python SDK and `dynamo` CLI (`dynamo serve graphs.disagg:Frontend …`),
# with the Rust binaries it runs put where it looks for them, and Dynamo's LLM examples (graphs,
# components, configs) installed under share/dynamo/examples/llm for `dynix serve`.
{
  lib,
  buildPythonPackage,
  python,
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
  # Exact pins upstream (fastapi==0.115.6, kubernetes==32.0.1, …) that the pinned nixpkgs
  # satisfies with nearby releases; bentoml is the 1.4.8 it pins (pkgs/bentoml).
  pythonRelaxDeps = true;

  # Upstream's wheel has a regular (empty) dynamo/__init__.py, while ai-dynamo-runtime's
  # dynamo.runtime, dynamo.llm and dynamo._core live in a `dynamo` folder without one. Where each
  # package is its own sys.path entry (this package's bin/dynamo wrapper, the import check) the
  # regular package hides the others; without the file `dynamo` is one namespace (PEP 420)
  # across all entries, and a merged environment is unchanged.
  postInstall = ''
    rm "$out/${python.sitePackages}/dynamo/__init__.py"
    rm -f "$out/${python.sitePackages}"/dynamo/__pycache__/__init__.*
    mkdir -p $out/share/dynamo/examples
    cp -r examples/llm $out/share/dynamo/examples/llm
  '';

  # The CLI (`dynamo serve`) imports much that `dynamo.sdk` alone does not (bentoml's
  # `_internal.utils.args`, circus, typer, kubernetes).
  pythonImportsCheck = [
    "dynamo.sdk"
    "dynamo.sdk.cli.cli"
  ];

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
