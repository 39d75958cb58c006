# The dynix CLI. Nix, skopeo, nats-server, etcd and Dynamo's SDK (without vLLM: enough for the
# echo graph) are on its PATH, after the caller's own, so that inside the full stack environment
# (`dynamo-arm`) that environment's `dynamo`, with vLLM, is the one used.
{
  lib,
  python3,
  python3Packages,
  nix,
  skopeo,
  nats-server,
  etcd,
  stack,
}:
let
  root = ../..;
  sdk = python3.withPackages (ps: [ ps.ai-dynamo ]);
in
python3Packages.buildPythonApplication {
  pname = "dynix";
  version = stack.versions.dynix;
  pyproject = true;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/pyproject.toml")
      (root + "/README.md")
      (root + "/py")
      (root + "/pkgs/pins.toml")
      (root + "/patches")
    ];
  };

  build-system = [ python3Packages.setuptools ];
  dependencies = with python3Packages; [
    click
    tomlkit
    # the layer compressors: their versions are part of an image's bytes
    isal
    zstandard
  ];

  # The pins and patches this dynix was built with, for use outside a checkout.
  postInstall = ''
    mkdir -p $out/share/dynix
    cp pkgs/pins.toml $out/share/dynix/pins.toml
    cp -r patches $out/share/dynix/patches
  '';
  makeWrapperArgs = [
    "--suffix PATH : ${
      lib.makeBinPath [
        nix
        skopeo
        nats-server
        etcd
        sdk
      ]
    }"
    "--set-default DYNIX_DATA_DIR ${placeholder "out"}/share/dynix"
  ];

  pythonImportsCheck = [ "dynix.cli" ];

  meta = {
    description = "Build, ship and run NVIDIA Dynamo's disaggregated LLM serving stack with Nix";
    license = lib.licenses.asl20;
    mainProgram = "dynix";
    platforms = lib.platforms.linux;
  };
}
