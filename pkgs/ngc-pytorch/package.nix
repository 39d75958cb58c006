# NVIDIA's PyTorch container (nvcr.io/nvidia/pytorch:25.03-py3), pulled by digest for this
# system's architecture: the base of the image flavour (`dynix image build --base`). The result is
# a docker-archive tarball. Unfree: fetchPin pulls it with the CUDA-enabled package set, which
# allows NVIDIA's licences only (overlays/default.nix). While its digest is unresolved, building
# it fails with the command that records the digest; evaluating it does not.
{
  fetchPin,
  pins,
}:
let
  pin = pins.ngc-pytorch;
  image = fetchPin "ngc-pytorch";
in
if pin.unresolved != [ ] then
  image
else
  image.overrideAttrs (old: {
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
