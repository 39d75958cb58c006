# NVIDIA's PyTorch container (nvcr.io/nvidia/pytorch:25.03-py3), pulled by digest for this
# system's architecture: the base of the image flavour (`dynix image build --base`). The result is
# a docker-archive tarball. Unfree: it comes from the CUDA-enabled package set, which allows
# NVIDIA's licences only (overlays/default.nix).
{
  lib,
  dockerTools,
  pins,
}:
let
  pin = pins.ngc-pytorch;
in
(dockerTools.pullImage pin.args).overrideAttrs (old: {
  passthru = (old.passthru or { }) // {
    imageReference = "${pin.args.imageName}@${pin.args.imageDigest}";
  };
  meta = (old.meta or { }) // {
    description = "NVIDIA NGC PyTorch container ${pin.args.finalImageTag}, pinned by digest";
    homepage = "https://catalog.ngc.nvidia.com/orgs/nvidia/containers/pytorch";
    license = {
      shortName = "NVIDIA DLC License";
      fullName = "NVIDIA Deep Learning Container License";
      free = false;
      redistributable = false;
    };
  };
})
