# The environment of the stack's GPU processes that Nix knows, in one place: what every program
# of the stack environment that starts vLLM workers (dynix, dynamo, vllm) is wrapped with. What
# only the host knows (where its NVIDIA driver is) dynix adds when it runs: see `dynix driver`.
{
  lib,
  vllm,
  dynamo-runtime,
  cudaCapabilities,
}:
{
  # vLLM's NCCL, by path rather than found by name.
  VLLM_NCCL_SO_PATH = vllm.ncclLibrary;
  # The patched vLLM publishes KV-cache events through Dynamo's C library.
  VLLM_KV_CAPI_PATH = "${dynamo-runtime}/lib/libdynamo_llm_capi.so";
  # The compute capabilities the kernels were built for, which `dynix doctor` checks GPUs against.
  DYNIX_CUDA_CAPABILITIES = lib.concatStringsSep ";" cudaCapabilities;
}
