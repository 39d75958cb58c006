# etcd 3.5, where Dynamo keeps its service registry and NIXL its metadata. etcd 3.5 is three Go
# modules (server, etcdctl, etcdutl), each with its own vendor tree: three builds, one package.
{
  lib,
  buildGoModule,
  symlinkJoin,
  fetchPin,
  pins,
}:
let
  pin = pins.etcd;
  src = fetchPin "etcd";

  module =
    name: extra:
    buildGoModule (
      {
        pname = "etcd-${name}";
        inherit (pin) version;
        inherit src;
        modRoot = "./${name}";
        vendorHash = pin.buildHashes.${name};
        env.CGO_ENABLED = 0;
        # The upstream tests need a running cluster and network namespaces.
        doCheck = false;
        meta.license = lib.licenses.asl20;
      }
      // extra
    );

  server = module "server" {
    # The module's binary is called `server`; everyone calls it etcd.
    preInstall = ''
      mv "$GOPATH/bin/server" "$GOPATH/bin/etcd"
    '';
    ldflags = [ "-X go.etcd.io/etcd/api/v3/version.GitSHA=${builtins.substring 0 7 pin.args.rev}" ];
  };
  etcdctl = module "etcdctl" { };
  etcdutl = module "etcdutl" { };
in
symlinkJoin {
  name = "etcd-${pin.version}";
  paths = [
    server
    etcdctl
    etcdutl
  ];
  passthru = { inherit server etcdctl etcdutl; };
  meta = {
    description = "Distributed reliable key-value store (server, etcdctl, etcdutl)";
    homepage = "https://etcd.io";
    license = lib.licenses.asl20;
    mainProgram = "etcd";
    platforms = lib.platforms.linux;
  };
}
