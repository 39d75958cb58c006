# The sources vLLM's CMake build would clone at configure time, handed to it instead: CUTLASS
# (headers) and vLLM's forks of flash-attention and FlashMLA. The two forks carry CUTLASS as a
# git submodule at csrc/cutlass; it is filled with the pinned CUTLASS.
{
  runCommand,
  fetchPin,
}:
let
  cutlass = fetchPin "cutlass";
  withCutlass =
    name:
    runCommand "${name}-source" { } ''
      cp -r --no-preserve=mode ${fetchPin name} $out
      rm -rf $out/csrc/cutlass
      ln -s ${cutlass} $out/csrc/cutlass
    '';
in
{
  inherit cutlass;
  flash-attn = withCutlass "vllm-flash-attn";
  flashmla = withCutlass "flashmla";
}
