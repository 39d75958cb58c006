# The pins of pins.toml as fetch descriptions. Builtins only, so that it evaluates without
# nixpkgs (the tests evaluate it with plain `nix eval`).
#
#   import ./pins.nix { }                    -> { pins, forSystem, fakeHash }
#   (import ./pins.nix { }).forSystem "aarch64-linux"
#     -> { <name> = { name, kind, version, fetcher, args, fetch, buildHashes, alternativeOf }; }
#
# `fetcher` names the nixpkgs function and `args` are its arguments (fetchurl, fetchFromGitHub,
# dockerTools.pullImage); `fetch` is the fixed-output download itself (url, whether it is
# unpacked, hash). An "unresolved" hash becomes `fakeHash`, with a warning naming the pin and the
# command that records the real value, so Nix reports the true hash on first use.
{
  pinsFile ? ./pins.toml,
}:
let
  raw = builtins.fromTOML (builtins.readFile pinsFile);

  fakeHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

  resolveHash =
    name: what: command: value:
    if value == "unresolved" then
      builtins.trace
        "warning: pin '${name}' has no ${what} yet; using a fake hash, so Nix will report the real one (then record it with `${command}`)"
        fakeHash
    else
      value;

  sourceHash = name: resolveHash name "hash" "dynix pins lock ${name}";

  required =
    name: entry: key:
    entry.${key} or (throw "pins.toml: pin '${name}' (kind ${entry.kind or "?"}) has no '${key}'");

  baseName = url: builtins.baseNameOf url;

  # Per-kind: what to fetch and which nixpkgs fetcher takes it.
  file =
    name: entry:
    let
      url = required name entry "url";
      hash = sourceHash name (required name entry "hash");
    in
    {
      fetcher = "fetchurl";
      args = { inherit url hash; };
      fetch = {
        inherit url hash;
        name = baseName url;
        unpack = false;
      };
    };

  github =
    name: entry:
    let
      owner = required name entry "owner";
      repo = required name entry "repo";
      # A commit, or a tag where no commit is recorded (the archive of a tag is the same tree).
      rev = entry.rev or entry.tag or (throw "pins.toml: pin '${name}' (kind github) has no 'rev' or 'tag'");
      hash = sourceHash name (required name entry "hash");
    in
    {
      fetcher = "fetchFromGitHub";
      args = { inherit owner repo rev hash; };
      fetch = {
        url = "https://github.com/${owner}/${repo}/archive/${rev}.tar.gz";
        inherit hash;
        name = "source";
        unpack = true;
      };
    };

  oci =
    name: entry: system:
    let
      perSystem =
        (required name entry "systems").${system}
          or (throw "pins.toml: pin '${name}' has no image for ${system}");
      digest =
        if perSystem.digest == "unresolved" then
          throw "pin '${name}' has no image digest for ${system} yet; record it with `dynix pins lock ${name}` on a machine that can reach ${entry.image}"
        else
          perSystem.digest;
      hash = resolveHash name "hash for ${system}" "nix build, then dynix pins set ${name} --build-hash ${system}=HASH" perSystem.hash;
    in
    {
      fetcher = "dockerTools.pullImage";
      args = {
        imageName = required name entry "image";
        imageDigest = digest;
        # `sha256` (an SRI string is fine there): older pullImage versions take no `hash`.
        sha256 = hash;
        finalImageName = entry.image;
        finalImageTag = required name entry "tag";
        os = "linux";
        arch = perSystem.arch;
      };
      fetch = {
        url = "docker://${entry.image}@${digest}";
        inherit hash;
        name = "${baseName entry.image}-${entry.tag}";
        unpack = false;
      };
    };

  kinds = {
    pypi = name: entry: _system: file name entry;
    url = name: entry: _system: file name entry;
    github = name: entry: _system: github name entry;
    inherit oci;
  };

  buildHashes =
    name: entry:
    builtins.mapAttrs (
      key: resolveHash name "build hash '${key}'" "dynix pins set ${name} --build-hash ${key}=HASH"
    ) (entry.build-hashes or { });

  describe =
    system: name: entry:
    let
      kind = required name entry "kind";
      make = kinds.${kind} or (throw "pins.toml: pin '${name}' has unknown kind '${kind}'");
    in
    {
      inherit name kind;
      version = entry.version or "";
      alternativeOf = entry.alternative-of or null;
      buildHashes = buildHashes name entry;
    }
    // make name entry system;

  forSystem = system: builtins.mapAttrs (describe system) raw;
in
{
  inherit fakeHash forSystem;
  # The raw table, as written.
  pins = raw;
  names = builtins.attrNames raw;
}
