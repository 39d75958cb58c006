# Which CUDA capabilities the stack's kernels are built for, and whether PyTorch has them.
# Builtins only, so that the tests evaluate it with plain Nix; the overlay uses it.
#
# nixpkgs' torch builds kernels only for the capabilities in both `config.cudaCapabilities`
# and its own list per CUDA version (`lib.intersectLists`), and drops the rest without a word;
# what it kept is `torch.cudaCapabilities`. vLLM's own kernels follow TORCH_CUDA_ARCH_LIST,
# whatever torch was built for, but a GPU that torch has no kernels for fails at its first
# tensor operation. So:
#
#   torchPlan { requested = [ "9.0" "10.0" ]; torchBuilds = torch.cudaCapabilities;
#               rebuild = "if-needed"; }
#     -> { missing = [ ... ]; rebuild = true/false; }   or a throw naming what is missing.
#
# rebuild: "never" (throw when torch lacks a requested capability), "if-needed" (rebuild torch
# for the requested capabilities then, and only then), "always".
{ }:
let
  inherit (builtins)
    concatStringsSep
    elem
    filter
    map
    replaceStrings
    ;

  # "10.0+PTX" and "10.0" name the same real architecture.
  real = cap: replaceStrings [ "+PTX" ] [ "" ] cap;
  dropDot = cap: replaceStrings [ "." ] [ "" ] (real cap);

  missing = requested: built: filter (cap: !(elem (real cap) (map real built))) requested;

  show = caps: if caps == [ ] then "none" else concatStringsSep ", " caps;
in
{
  inherit missing;

  # vLLM's TORCH_CUDA_ARCH_LIST: "9.0;10.0".
  torchArchList = caps: concatStringsSep ";" caps;

  # CMake's CUDA architectures (CUTLASS_NVCC_ARCHS_ENABLED): "90;100".
  cmakeArchitectures = caps: concatStringsSep ";" (map dropDot caps);

  torchPlan =
    {
      requested,
      torchBuilds,
      rebuild ? "if-needed",
    }:
    let
      lacking = missing requested torchBuilds;
    in
    if !(elem rebuild [
      "never"
      "if-needed"
      "always"
    ]) then
      throw "dynix: torchRebuild must be \"never\", \"if-needed\" or \"always\", not \"${toString rebuild}\""
    else if requested == [ ] then
      throw "dynix: no CUDA capabilities requested (cudaCapabilities is empty)"
    else if lacking != [ ] && rebuild == "never" then
      throw (
        "dynix: the pinned nixpkgs' PyTorch builds kernels for CUDA capabilities ${show torchBuilds}, "
        + "not for ${show lacking} that the stack is asked to serve (cudaCapabilities = ${show requested}); "
        + "vLLM would start there and fail at its first tensor operation. Either rebuild PyTorch for "
        + "them (dynix-stack.overrideScope (final: prev: { torchRebuild = \"if-needed\"; }), which "
        + "compiles PyTorch: hours) or leave them out of cudaCapabilities."
      )
    else
      {
        missing = lacking;
        rebuild = rebuild == "always" || lacking != [ ];
      };
}
