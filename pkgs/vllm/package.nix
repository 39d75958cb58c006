# vLLM 0.8.4 with Dynamo's KV-disaggregation patch and our fixes (patches/vllm/series), built
# with CUDA against the PyTorch of the pinned nixpkgs: the hand procedure's "compile vLLM against
# the PyTorch container", made reproducible.
{
  lib,
  buildPythonPackage,
  callPackage,
  fetchPin,
  patchesFor,
  pins,
  cudaPackages,
  cudaCapabilities,
  # pkgs/cuda-capabilities.nix
  capabilities,
  symlinkJoin,
  autoAddDriverRunpath,
  # build
  cmake,
  ninja,
  jinja2,
  packaging,
  setuptools,
  setuptools-scm,
  wheel,
  # run
  aiohttp,
  blake3,
  cachetools,
  cloudpickle,
  compressed-tensors,
  depyf,
  einops,
  fastapi,
  filelock,
  gguf,
  huggingface-hub,
  importlib-metadata,
  lark,
  llguidance,
  lm-format-enforcer,
  mistral-common,
  msgspec,
  numba,
  numpy,
  nvidia-ml-py,
  openai,
  opencv-python-headless,
  opentelemetry-api,
  opentelemetry-exporter-otlp,
  opentelemetry-sdk,
  outlines,
  partial-json-parser,
  pillow,
  prometheus-client,
  prometheus-fastapi-instrumentator,
  protobuf,
  psutil,
  py-cpuinfo,
  pydantic,
  python-json-logger,
  pyyaml,
  python-multipart,
  pyzmq,
  ray,
  requests,
  scipy,
  sentencepiece,
  six,
  tiktoken,
  tokenizers,
  torch,
  torchvision,
  tqdm,
  transformers,
  typing-extensions,
  uvicorn,
  uvloop,
  watchfiles,
  xgrammar,
}:
let
  sources = callPackage ./sources.nix { inherit fetchPin; };
  cudaVersion = cudaPackages.cudaMajorMinorVersion or cudaPackages.cudaVersion;
  ncclLibrary = "${lib.getLib cudaPackages.nccl}/lib/libnccl.so";

  # The CUDA libraries vLLM's CMake (through torch's CMake config) looks for under one root.
  mergedCudaLibraries = with cudaPackages; [
    cuda_cudart
    cuda_cccl
    cuda_nvrtc
    cuda_nvtx
    libcublas
    libcurand
    libcusolver
    libcusparse
  ];
  # One CUDA tree: nvcc (CMAKE_CUDA_COMPILER is CUDA_HOME/bin/nvcc) and the libraries above,
  # each with its binaries, libraries and headers.
  cudaRoot = symlinkJoin {
    name = "cuda-root-${cudaVersion}";
    paths = lib.concatMap (p: [
      (lib.getBin p)
      (lib.getLib p)
      (lib.getDev p)
    ]) ([ cudaPackages.cuda_nvcc ] ++ mergedCudaLibraries);
  };
  archList = capabilities.torchArchList cudaCapabilities;
in
buildPythonPackage {
  pname = "vllm";
  inherit (pins.vllm) version;
  pyproject = true;
  # Built with the compiler PyTorch was built with (CUDA needs a matching host compiler).
  stdenv = torch.stdenv;

  src = fetchPin "vllm";
  # Dynamo's patch (pinned) first, then ours: numba unpinned, torch pins dropped (what
  # use_existing_torch.py does), platform detection looking up the `vllm` distribution. No fuzz,
  # as `dynix patch` applies them: a changed upstream line fails loudly.
  patches = patchesFor "vllm";
  patchFlags = [
    "-p1"
    "--fuzz=0"
  ];

  build-system = [
    cmake
    jinja2
    ninja
    packaging
    setuptools
    setuptools-scm
    torch
    wheel
  ];
  nativeBuildInputs = [
    cudaPackages.cuda_nvcc
    autoAddDriverRunpath
  ];
  buildInputs =
    mergedCudaLibraries
    ++ (with cudaPackages; [
      nccl
      cudnn
      libcufile
    ]);
  dontUseCmakeConfigure = true;
  # Passed to CMake by setup.py (patch 0005), after vLLM's own arguments. vLLM's kernels are
  # built for cudaCapabilities, whatever PyTorch itself was built for.
  cmakeFlags = [
    (lib.cmakeFeature "CUDA_TOOLKIT_ROOT_DIR" "${cudaRoot}")
    (lib.cmakeFeature "TORCH_CUDA_ARCH_LIST" archList)
    (lib.cmakeFeature "CUTLASS_NVCC_ARCHS_ENABLED" (capabilities.cmakeArchitectures cudaCapabilities))
    (lib.cmakeFeature "CAFFE2_USE_CUDNN" "ON")
    (lib.cmakeFeature "CAFFE2_USE_CUFILE" "ON")
    (lib.cmakeFeature "CUTLASS_ENABLE_CUBLAS" "ON")
  ];

  env = {
    VLLM_TARGET_DEVICE = "cuda";
    CUDA_HOME = "${cudaRoot}";
    # Also read from the environment by torch's CMake config and by torch.utils.cpp_extension.
    TORCH_CUDA_ARCH_LIST = archList;
    # Nothing is cloned at build time: CMake takes these trees.
    VLLM_CUTLASS_SRC_DIR = "${sources.cutlass}";
    VLLM_FLASH_ATTN_SRC_DIR = "${sources.flash-attn}";
    FLASH_MLA_SRC_DIR = "${sources.flashmla}";
  };
  preConfigure = ''
    export MAX_JOBS="$NIX_BUILD_CORES"
  '';

  # requirements/common.txt and cuda.txt, less what this stack never imports: torchaudio (no
  # import in vllm/ at all) and xformers (only the attention fallback for GPUs before sm_80, for
  # dtypes or head sizes FlashAttention lacks, and vision encoders; upstream installs it on
  # x86_64 only, so aarch64 never had it). Added: uvloop and python-multipart, which the OpenAI
  # server module imports and needs at import (a Form() route; fastapi[standard] upstream), and
  # setuptools, which triton needs on Python 3.12.
  dependencies = [
    aiohttp
    blake3
    cachetools
    cloudpickle
    compressed-tensors
    depyf
    einops
    fastapi
    filelock
    gguf
    huggingface-hub
    importlib-metadata
    lark
    llguidance
    lm-format-enforcer
    mistral-common
    msgspec
    numba
    numpy
    nvidia-ml-py
    openai
    opencv-python-headless
    opentelemetry-api
    opentelemetry-exporter-otlp
    opentelemetry-sdk
    outlines
    partial-json-parser
    pillow
    prometheus-client
    prometheus-fastapi-instrumentator
    protobuf
    psutil
    py-cpuinfo
    pydantic
    python-json-logger
    pyyaml
    python-multipart
    pyzmq
    ray
    requests
    scipy
    setuptools
    sentencepiece
    six
    tiktoken
    tokenizers
    torch
    torchvision
    tqdm
    transformers
    typing-extensions
    uvicorn
    uvloop
    watchfiles
    xgrammar
  ];
  # vLLM pins exact releases (outlines==0.1.11, xgrammar==0.1.18, …); the pinned nixpkgs has
  # neighbours of them.
  pythonRelaxDeps = true;
  # Not packaged in nixpkgs; only used for OpenTelemetry's LLM span names.
  pythonRemoveDeps = [ "opentelemetry-semantic-conventions-ai" ];

  # vLLM's own `vllm` program; the stack's workers get it from pkgs/dynamo-arm/worker-env.nix.
  makeWrapperArgs = [ "--set-default VLLM_NCCL_SO_PATH ${ncclLibrary}" ];

  # Importing vllm probes the GPU through NVML, which the build sandbox does not have.
  pythonImportsCheck = [ ];
  # The test suite needs GPUs and model downloads.
  doCheck = false;

  passthru = {
    # Dynamo's workers import vllm rather than run its wrapper: dynamo-arm sets this for them.
    inherit ncclLibrary;
    inherit sources cudaCapabilities;
    inherit cudaVersion;
  };

  meta = {
    description = "vLLM ${pins.vllm.version} with NVIDIA Dynamo's KV-cache disaggregation patch";
    homepage = "https://github.com/vllm-project/vllm";
    license = lib.licenses.asl20;
    platforms = [
      "aarch64-linux"
      "x86_64-linux"
    ];
  };
}
