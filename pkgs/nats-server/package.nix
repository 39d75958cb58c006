# nats-server, the message bus of Dynamo's control plane (run as `nats-server -js`: the prefill
# queue uses JetStream). Built from the pinned source.
{
  lib,
  buildGoModule,
  fetchPin,
  pins,
}:
let
  pin = pins.nats-server;
in
buildGoModule {
  pname = "nats-server";
  inherit (pin) version;
  src = fetchPin "nats-server";
  vendorHash = pin.buildHashes.vendor;

  env.CGO_ENABLED = 0;
  # The test suite starts clusters on fixed ports and takes tens of minutes.
  doCheck = false;

  meta = {
    description = "High-performance message server for NATS, with JetStream";
    homepage = "https://nats.io";
    license = lib.licenses.asl20;
    mainProgram = "nats-server";
    platforms = lib.platforms.linux;
  };
}
